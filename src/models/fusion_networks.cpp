// Late-fusion networks: clstm_lf (cLSTM block over sub-network softmax outputs) and mman (Linear).
#include <atomic>
#include <exception>
#include <vector>

#include "mman/error.h"
#include "mman/layers/activation.h"
#include "mman/layers/linear.h"
#include "mman/models/clstm.h"
#include "src/core/parallel.h"
#include "src/models/frozen_cache.h"
#include "src/models/networks.h"

namespace mman {

namespace {

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
    if (FrozenOutputCache::available()) {
      cache_.resize(subs_.size());
      for (size_t s = 0; s < subs_.size(); ++s) cache_[s].set_params(params, prefix + "subnets." + c.subnets[s].name + ".");
    }
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
    // A chunk must not throw (src/core/parallel.h): the first error (e.g. a batch without
    // a sub-network's modality) is carried out and rethrown here.
    std::exception_ptr error;
    std::atomic<bool> failed{false};
    detail::parallel_chunks(static_cast<int>(frozen_runs_.size()), [&](int i) {
      const int s = frozen_runs_[static_cast<size_t>(i)];
      try {
        if (!cache_.empty() && cache_[s].begin(params, batch, keys_)) {
          cache_[s].load(batch, probs_.data(), width, s * outputs_, outputs_, &cached_attention_[s]);
          attention_cached_[s] = 1;
          return;
        }
        run_sub(s, Mode::Eval);
        if (!cache_.empty())
          cache_[s].store(batch, probs_.data(), width, s * outputs_, outputs_, subs_[s]->attention());
      } catch (...) {
        if (!failed.exchange(true)) error = std::current_exception();
      }
    });
    if (error) std::rethrow_exception(error);
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
  std::vector<Tensor> sub_logits_;
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
