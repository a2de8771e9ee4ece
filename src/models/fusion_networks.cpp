// Late-fusion networks: clstm_lf (cLSTM block over sub-network softmax outputs) and mman (Linear).
#include <algorithm>
#include <atomic>
#include <exception>
#include <memory>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "mman/error.h"
#include "mman/layers/activation.h"
#include "mman/layers/linear.h"
#include "mman/models/clstm.h"
#include "mman/threads.h"
#include "src/core/parallel.h"
#include "src/models/frozen_cache.h"
#include "src/models/networks.h"

namespace mman {

namespace {

// Runs body(i) for i in [0, count) on the pool (src/core/parallel.h), whose chunks must not
// throw: the first error is carried out and rethrown on the calling thread; chunks that
// start after it do nothing.
template <typename F>
void parallel_rethrowing(int count, F&& body) {
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  detail::parallel_chunks(count, [&](int i) {
    if (failed.load()) return;
    try {
      body(i);
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
  });
  if (error) std::rethrow_exception(error);
}

// Conversations per group of precompute_frozen() are cut at this many rows. Groups of
// similar length keep every recurrent step's product wide (a batch of the training plan
// runs its longest conversation's last steps on one or two rows), and a bound near the
// largest training batches' rows (IEMOCAP: up to ~700 at 10 conversations) keeps the
// sub-networks' buffers near the size training gives them. Measured on the synthetic
// IEMOCAP at 2 threads (bench/NOTES.md, change 17): 384 / 512 / 640 / 768 / 896 / 1024 rows
// gave mman's first stage-2 epoch in 0.26 / 0.24 / 0.22 / 0.20-0.21 / 0.20 / 0.22 s, and 768
// is the largest before peak memory grows (896: +50 MiB).
constexpr int64_t kPrecomputeRows = 768;

// Sub-networks run first; their class probabilities (softmax over the classes, or over
// each 2-way head for binary4) are written side by side into one [rows x S*O] matrix,
// sub-network s at columns [s*O, (s+1)*O), the input of the fusion part. A sub-network
// whose parameters are all frozen (stage 2) runs in Mode::Eval even when the model
// trains, and backward does no work for it at all.
class FusionNetwork : public Network {
 public:
  FusionNetwork(const ModelConfig& c, std::vector<std::unique_ptr<Network>> subnets, const DataShape& shape,
                ParamStore& params, const std::string& prefix, uint64_t slot_base)
      : subs_(std::move(subnets)),
        outputs_(shape.num_outputs),
        group_(shape.heads > 1 ? 2 : shape.num_outputs),
        lf_(c.type == "clstm_lf"),
        who_("model '" + c.name + "'") {
    prefix_ = prefix;
    const int width = static_cast<int>(subs_.size()) * outputs_;
    if (lf_) {
      top_ = ClstmBlock(params, prefix + "clstm.", block_config(c, width, outputs_), slot_base);
    } else {
      fusion_ = Linear(params, prefix + "fusion.", width, outputs_);
    }
    sub_logits_.resize(subs_.size());
    frozen_.assign(subs_.size(), false);
    for (size_t s = 0; s < subs_.size(); ++s) sub_prefixes_.push_back(prefix + "subnets." + c.subnets[s].name + ".");
    if (FrozenOutputCache::available()) {
      cache_.resize(subs_.size());
      for (size_t s = 0; s < subs_.size(); ++s) cache_[s].set_params(params, sub_prefixes_[s]);
    }
    precomputed_probs_.resize(subs_.size());
    cached_attention_.resize(subs_.size());
    attention_cached_.assign(subs_.size(), 0);
  }

  void init(ParamStore& params, Rng& rng) const override {
    for (const auto& s : subs_) s->init(params, rng);
    if (lf_)
      top_.init(params, rng);
    else
      fusion_.init(params, rng);
  }

  void forward(const ParamStore& params, const Batch& batch, Mode mode, const DropoutKey& key,
               Tensor& logits) override {
    const int64_t rows = batch.rows();
    const int s_count = static_cast<int>(subs_.size());
    const int width = s_count * outputs_;
    probs_.resize(rows, width);
    frozen_runs_.clear();
    auto run_sub = [&](int s, Mode sub_mode) {
      subs_[s]->forward(params, batch, sub_mode, key, sub_logits_[s]);
      softmax_forward(sub_logits_[s].data(), outputs_, rows, outputs_, group_, probs_.data() + s * outputs_, width);
    };
    for (int s = 0; s < s_count; ++s) {
      frozen_[s] = subs_[s]->frozen(params);
      attention_cached_[s] = 0;
      if (frozen_[s])
        frozen_runs_.push_back(s);
      else
        run_sub(s, mode);  // trains: runs in the model's mode, with every thread inside
    }
    // A frozen sub-network's probabilities come from its cache when every conversation
    // of the batch is there (exact: src/models/frozen_cache.h); otherwise it runs in
    // evaluation mode and fills the cache. The frozen sub-networks are independent: they
    // run side by side, one per thread (src/core/parallel.h; each serial inside, its
    // cache's parameter fingerprint included), with no synchronisation between them,
    // each writing its own columns. A row's result is the same whichever thread computes it.
    if (!frozen_runs_.empty() && !cache_.empty()) FrozenOutputCache::conversation_keys(batch, keys_);
    // The first error of a chunk (e.g. a batch without a sub-network's modality) is
    // rethrown here.
    parallel_rethrowing(static_cast<int>(frozen_runs_.size()), [&](int i) {
      const int s = frozen_runs_[static_cast<size_t>(i)];
      if (!cache_.empty() && cache_[s].begin(params, batch, keys_)) {
        cache_[s].load(batch, probs_.data(), width, s * outputs_, outputs_, &cached_attention_[s]);
        attention_cached_[s] = 1;
        return;
      }
      run_sub(s, Mode::Eval);
      if (!cache_.empty()) cache_[s].store(batch, probs_.data(), width, s * outputs_, outputs_, subs_[s]->attention());
    });
    if (lf_) {
      top_.forward(params, batch.layout, probs_.data(), logits, mode, key, top_ctx_);
    } else {
      logits.resize(rows, outputs_);
      fusion_.forward(params, probs_.data(), width, rows, logits.data(), outputs_);
    }
  }

  void backward(ParamStore& params, const Batch& batch, const Tensor& dlogits) override {
    const int64_t rows = batch.rows();
    MMAN_CHECK(probs_.rows() == rows && dlogits.rows() == rows && dlogits.cols() == outputs_,
               "{}: backward got dlogits [{} x {}] for a forward of [{} x {}]", who_, dlogits.rows(),
               dlogits.cols(), probs_.rows(), outputs_);
    const int s_count = static_cast<int>(subs_.size());
    const int width = s_count * outputs_;
    bool any_trainable = false;
    for (int s = 0; s < s_count; ++s) any_trainable = any_trainable || !frozen_[s];
    // The gradient w.r.t. the probabilities is only needed for sub-networks that train.
    float* dprobs = nullptr;
    if (any_trainable) {
      dprobs_.resize(rows, width);
      dprobs = dprobs_.data();
    }
    if (lf_)
      top_.backward(params, batch.layout, probs_.data(), dlogits, dprobs, top_ctx_);
    else
      fusion_.backward(params, probs_.data(), width, rows, dlogits.data(), outputs_, dprobs, width);
    for (int s = 0; s < s_count; ++s) {
      if (frozen_[s]) continue;
      dsub_.resize(rows, outputs_);
      softmax_backward(probs_.data() + s * outputs_, width, dprobs_.data() + s * outputs_, width, rows, outputs_,
                       group_, dsub_.data(), outputs_);
      subs_[s]->backward(params, batch, dsub_);
    }
  }

  // The frozen sub-networks' outputs for `conversations`, computed into their caches
  // (Model::precompute_frozen). The conversations are cut, longest first, into groups of
  // at most kPrecomputeRows rows; each (sub-network, group) pair is one task. A
  // sub-network computes one group at a time (it owns one forward context), so a free
  // thread takes the next group of the idle sub-network with the most work left: the
  // threads stay busy until the last groups, where running four whole sub-networks side
  // by side on two threads (forward()) leaves one thread idle for part of every batch.
  // A group's batch is built by the first task that needs it and freed once every frozen
  // sub-network has passed it: sub-networks of similar cost move through the groups
  // together, so a few groups are in memory at a time (a much cheaper sub-network lags and
  // keeps more alive). A group any of whose conversations a sub-network lacks is computed
  // whole (and counted). The stored bits are those a batch's own forward would give
  // (frozen_cache.h).
  int64_t precompute_frozen(const ParamStore& params, const Dataset& ds, const LabelProtocol& protocol,
                            const std::vector<int>& conversations, const std::function<bool()>& stop) override {
    for (int c : conversations)
      MMAN_CHECK(c >= 0 && c < ds.num_conversations(), "{}: conversation index {} is outside the data's {}", who_, c,
                 ds.num_conversations());
    if (cache_.empty() || conversations.empty()) return 0;
    std::vector<int> frozen;
    for (int s = 0; s < static_cast<int>(subs_.size()); ++s)
      if (subs_[static_cast<size_t>(s)]->frozen(params)) frozen.push_back(s);
    if (frozen.empty()) return 0;

    std::vector<int> order = conversations;
    std::sort(order.begin(), order.end());
    order.erase(std::unique(order.begin(), order.end()), order.end());
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return ds.conv_length(a) > ds.conv_length(b); });
    const int f_count = static_cast<int>(frozen.size());
    struct Group {
      std::vector<int> convs;
      int64_t rows = 0;
      int users_left = 0;  // frozen sub-networks that have not passed it yet
      std::mutex build;    // guards built, batch and keys until built
      bool built = false;
      Batch batch;
      std::vector<uint64_t> keys;
    };
    std::vector<std::unique_ptr<Group>> groups;
    int64_t all_rows = 0;
    for (int c : order) {
      const int64_t len = ds.conv_length(c);
      if (groups.empty() || groups.back()->rows + len > kPrecomputeRows) {
        groups.push_back(std::make_unique<Group>());
        groups.back()->users_left = f_count;
      }
      groups.back()->convs.push_back(c);
      groups.back()->rows += len;
      all_rows += len;
    }
    // More rows than a cache keeps: the later groups would evict the earlier ones before a
    // batch reads them. The batches compute (and cache) what they need instead.
    if (all_rows > FrozenOutputCache::capacity_rows()) return 0;
    const size_t group_count = groups.size();

    // Per frozen sub-network: its fingerprint refreshed (a change empties its cache), and
    // its work left: rows times its parameter count, its cost per row up to a constant.
    std::vector<double> work_left(frozen.size(), 0.0), per_row(frozen.size(), 0.0);
    for (int i = 0; i < f_count; ++i) {
      const size_t u = static_cast<size_t>(i);
      const std::string& p = sub_prefixes_[static_cast<size_t>(frozen[u])];
      for (const ParamInfo& info : params.infos())
        if (info.name.compare(0, p.size(), p) == 0) per_row[u] += static_cast<double>(info.size);
      work_left[u] = per_row[u] * static_cast<double>(all_rows);
    }
    parallel_rethrowing(f_count, [&](int i) { cache_[static_cast<size_t>(frozen[static_cast<size_t>(i)])].refresh(params); });

    std::mutex mutex;
    std::vector<size_t> next(frozen.size(), 0);  // each sub-network's next group
    std::vector<char> busy(frozen.size(), 0);
    int64_t computed = 0;
    // Set when a task fails or `stop` answers true: no task starts after it.
    std::atomic<bool> halt{false};
    // `stop` is the caller's (the trainer's hook): polled on the calling thread only.
    const std::thread::id caller = std::this_thread::get_id();
    // One chunk per thread, at most one per sub-network: a single frozen sub-network then
    // runs outside any chunk, with every thread inside its own products.
    parallel_rethrowing(std::min(num_threads(), f_count), [&](int) {
      for (;;) {
        if (halt.load()) return;
        if (stop && std::this_thread::get_id() == caller && stop()) {
          halt = true;
          return;
        }
        size_t u = 0;
        Group* g = nullptr;
        {
          std::lock_guard<std::mutex> lock(mutex);
          int pick = -1;
          for (int i = 0; i < f_count; ++i) {
            const size_t k = static_cast<size_t>(i);
            if (!busy[k] && next[k] < group_count && (pick < 0 || work_left[k] > work_left[static_cast<size_t>(pick)]))
              pick = i;
          }
          if (pick < 0) return;  // the sub-networks with groups left are all being computed
          u = static_cast<size_t>(pick);
          busy[u] = 1;
          g = groups[next[u]++].get();
          work_left[u] -= per_row[u] * static_cast<double>(g->rows);
        }
        // Releases the sub-network however the task ends. After a task that completed, the
        // last sub-network to pass a group frees its batch; after one that threw, no task
        // starts any more (the error reaches the caller).
        struct Release {
          std::mutex& m;
          char& busy;
          Group& group;
          std::atomic<bool>& halt;
          bool done = false;
          ~Release() {
            std::lock_guard<std::mutex> lock(m);
            busy = 0;
            if (!done) halt = true;
            if (done && --group.users_left == 0) {
              group.batch = Batch();
              group.keys = std::vector<uint64_t>();
            }
          }
        } release{mutex, busy[u], *g, halt};
        {
          std::lock_guard<std::mutex> lock(g->build);
          if (!g->built) {
            make_batch(ds, protocol, g->convs, g->batch);
            FrozenOutputCache::conversation_keys(g->batch, g->keys);
            g->built = true;
          }
        }
        const int s = frozen[u];
        FrozenOutputCache& cache = cache_[static_cast<size_t>(s)];
        if (!cache.contains(g->keys, g->batch.layout)) {
          Network& sub = *subs_[static_cast<size_t>(s)];
          Tensor& logits = sub_logits_[static_cast<size_t>(s)];
          Tensor& probs = precomputed_probs_[static_cast<size_t>(s)];
          const int64_t rows = g->batch.rows();
          sub.forward(params, g->batch, Mode::Eval, DropoutKey{}, logits);
          probs.resize(rows, outputs_);
          softmax_forward(logits.data(), outputs_, rows, outputs_, group_, probs.data(), outputs_);
          cache.store(g->keys, g->batch, probs.data(), outputs_, 0, outputs_, sub.attention());
          std::lock_guard<std::mutex> lock(mutex);
          computed += g->batch.layout.convs();
        }
        release.done = true;
      }
    });
    return computed;
  }

  const Tensor* attention() const override {
    for (size_t s = 0; s < subs_.size(); ++s) {
      if (attention_cached_[s]) {
        if (cache_[s].has_attention()) return &cached_attention_[s];
        continue;
      }
      if (const Tensor* a = subs_[s]->attention()) return a;
    }
    return nullptr;
  }

 private:
  std::vector<std::unique_ptr<Network>> subs_;
  int outputs_;
  int group_;
  bool lf_;
  std::string who_;
  ClstmBlock top_;  // clstm_lf
  Linear fusion_;   // mman
  ClstmBlockContext top_ctx_;
  std::vector<std::string> sub_prefixes_;  // "<prefix>subnets.<name>." of each sub-network
  std::vector<Tensor> sub_logits_;
  std::vector<Tensor> precomputed_probs_;  // per sub-network: a group's probabilities (precompute_frozen)
  std::vector<bool> frozen_;
  Tensor probs_, dprobs_, dsub_;
  std::vector<FrozenOutputCache> cache_;  // per sub-network; empty where caching is not exact
  std::vector<Tensor> cached_attention_;  // the last forward's attention of a cached sub-network
  std::vector<char> attention_cached_;    // whether sub-network s came from its cache last forward
                                          // (char, not bool: written from several threads)
  std::vector<int> frozen_runs_;          // frozen sub-networks of this forward
  std::vector<uint64_t> keys_;            // the batch's conversation keys (FrozenOutputCache)
};

}  // namespace

std::unique_ptr<Network> make_fusion_network(const ModelConfig& c, std::vector<std::unique_ptr<Network>> subnets,
                                             const DataShape& shape, ParamStore& params, const std::string& prefix,
                                             uint64_t slot_base) {
  return std::make_unique<FusionNetwork>(c, std::move(subnets), shape, params, prefix, slot_base);
}

}  // namespace mman
