// Forward passes give a conversation the same bits whatever shares its batch and whatever the thread count;
// the frozen-subnet cache is exact.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "mman/data/batch.h"
#include "mman/data/protocol.h"
#include "mman/data/synth.h"
#include "mman/error.h"
#include "mman/models/model.h"
#include "mman/threads.h"
#include "mman/train/trainer.h"
#include "src/core/packed_gemm.h"
#include "src/models/frozen_cache.h"

namespace mman {
namespace {

struct Data {
  Dataset ds;
  LabelProtocol protocol;
  DataShape shape;
};

const Data& data() {
  static const Data d = [] {
    Data x;
    x.ds = synth_dataset("iemocap", 3);
    x.protocol = make_protocol("iemocap4", x.ds.label_names);
    x.shape = data_shape_of(x.ds, x.protocol);
    return x;
  }();
  return d;
}

Batch batch_of(const std::vector<int>& convs) {
  Batch b;
  make_batch(data().ds, data().protocol, convs, b);
  return b;
}

// Rows of conversation `conv` (its utterances in order) of a [rows x cols] output.
std::vector<float> rows_of(const Tensor& out, const Batch& b, int conv) {
  int slot = -1;
  for (size_t i = 0; i < b.conv_index.size(); ++i)
    if (b.conv_index[i] == conv) slot = static_cast<int>(i);
  EXPECT_GE(slot, 0);
  std::vector<float> rows;
  for (int t = 0; t < b.layout.lengths[static_cast<size_t>(slot)]; ++t)
    rows.insert(rows.end(), out.row(b.layout.row(slot, t)), out.row(b.layout.row(slot, t)) + out.cols());
  return rows;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::unique_ptr<Model> model_of(const std::string& type, bool bidirectional = false) {
  ModelConfig c;
  c.type = type;
  c.bidirectional = bidirectional;
  auto m = make_model(c, data().shape);
  init_model(*m, 5);
  return m;
}

void require_packed_kernels() {
  if (std::string(detail::packed_gemm_isa()) == "generic")
    GTEST_SKIP() << "without AVX2+FMA the CPU backend falls back to OpenBLAS, whose row results may depend "
                    "on the batch";
}

TEST(BatchInvariance, EveryModelGivesAConversationTheSameBitsInAnyBatch) {
  require_packed_kernels();
  const Batch big = batch_of({0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  const Batch other = batch_of({11, 4, 17, 2});
  const Batch alone = batch_of({4});
  for (const char* type : {"clstm_speech", "clstm_ef", "clstm_mma", "clstm_lf", "mman"})
    for (bool bi : {false, true}) {
      auto m = model_of(type, bi);
      const std::vector<float> in_big = rows_of(m->forward(big, Mode::Eval, DropoutKey{}), big, 4);
      const std::vector<float> in_other = rows_of(m->forward(other, Mode::Eval, DropoutKey{}), other, 4);
      const std::vector<float> by_itself = rows_of(m->forward(alone, Mode::Eval, DropoutKey{}), alone, 4);
      EXPECT_TRUE(same_bits(in_big, in_other)) << type << " bidirectional " << bi;
      EXPECT_TRUE(same_bits(in_big, by_itself)) << type << " bidirectional " << bi;
    }
}

TEST(BatchInvariance, ForwardPassesDoNotDependOnTheThreadCount) {
  require_packed_kernels();
  const Batch b = batch_of({0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  for (const char* type : {"clstm_speech", "clstm_mma", "mman"})
    for (Mode mode : {Mode::Eval, Mode::Train}) {
      auto m = model_of(type);
      std::vector<float> out[2];
      for (int threads : {1, 2}) {
        set_num_threads(threads);
        const Tensor& logits = m->forward(b, mode, DropoutKey{7, 3});
        out[threads - 1].assign(logits.data(), logits.data() + logits.size());
      }
      EXPECT_TRUE(same_bits(out[0], out[1])) << type << (mode == Mode::Train ? " train" : " eval");
    }
  set_num_threads(0);
}

// Training too: every product is row-wise exact and split by columns, bias sums and the
// gradient norm have a fixed order, so a training step gives the same parameters for any
// thread count (a stronger property than the determinism per thread count that resume
// relies on).
TEST(BatchInvariance, TrainingDoesNotDependOnTheThreadCount) {
  require_packed_kernels();
  SplitIndices splits;
  for (int c = 0; c < 30; ++c) splits.train.push_back(c);
  for (const char* type : {"clstm_speech", "clstm_mma", "mman"}) {
    std::vector<float> params[2];
    for (int threads : {1, 2}) {
      auto m = model_of(type);
      TrainConfig tc;
      tc.max_epochs = 1;
      tc.patience = 0;
      tc.threads = threads;
      train_model(*m, data().ds, data().protocol, splits, tc);
      params[threads - 1] = m->params().values();
    }
    EXPECT_TRUE(same_bits(params[0], params[1])) << type;
  }
  set_num_threads(0);
}

// A fusion model whose sub-networks are frozen serves their probabilities from its cache
// after the first batch that contains a conversation; a model with the same weights but
// trainable sub-networks always recomputes them. Same bits, attention included.
TEST(FrozenSubnetCache, ServesExactlyWhatARecomputationGives) {
  require_packed_kernels();
  for (const char* type : {"mman", "clstm_lf"}) {
    auto cached = model_of(type), fresh = model_of(type);
    cached->params().set_trainable("subnets.", false);
    const std::vector<std::vector<int>> plan = {{0, 1, 2, 3}, {2, 5, 0}, {1, 3, 5, 6, 0}, {6}};
    for (int pass = 0; pass < 2; ++pass)
      for (const auto& convs : plan) {
        const Batch b = batch_of(convs);
        const Tensor& got = cached->forward(b, Mode::Train, DropoutKey{1, static_cast<uint64_t>(pass)});
        const std::vector<float> g(got.data(), got.data() + got.size());
        const Tensor& want = fresh->forward(b, Mode::Eval, DropoutKey{});
        // clstm_lf's top block runs dropout in training; compare in eval mode as well.
        const Tensor& got_eval = cached->forward(b, Mode::Eval, DropoutKey{});
        EXPECT_TRUE(same_bits(std::vector<float>(got_eval.data(), got_eval.data() + got_eval.size()),
                              std::vector<float>(want.data(), want.data() + want.size())))
            << type << " pass " << pass;
        if (std::string(type) == "mman") {
          EXPECT_TRUE(
              same_bits(g, std::vector<float>(want.data(), want.data() + want.size())));  // no dropout
          const Tensor* a = cached->attention();
          const Tensor* e = fresh->attention();
          ASSERT_TRUE(a != nullptr && e != nullptr);
          EXPECT_TRUE(same_bits(std::vector<float>(a->data(), a->data() + a->size()),
                                std::vector<float>(e->data(), e->data() + e->size())));
        }
      }
  }
}

// New weights in a frozen sub-network (copied in, loaded) are never answered from the
// cache of the old ones.
TEST(FrozenSubnetCache, ChangedSubnetWeightsAreRecomputed) {
  auto cached = model_of("mman");
  cached->params().set_trainable("subnets.", false);
  const Batch b = batch_of({0, 1, 2});
  const Tensor before = cached->forward(b, Mode::Eval, DropoutKey{});
  auto donor = model_of("clstm_speech");
  init_model(*donor, 99);
  cached->params().copy_from(donor->params(), "", "subnets.clstm_speech.");
  auto fresh = model_of("mman");
  fresh->params().copy_from(donor->params(), "", "subnets.clstm_speech.");
  const Tensor& after = cached->forward(b, Mode::Eval, DropoutKey{});
  const Tensor& want = fresh->forward(b, Mode::Eval, DropoutKey{});
  EXPECT_FALSE(same_bits(std::vector<float>(before.data(), before.data() + before.size()),
                         std::vector<float>(after.data(), after.data() + after.size())));
  for (int64_t i = 0; i < want.size(); ++i) ASSERT_NEAR(after.data()[i], want.data()[i], 1e-6) << i;
}

// precompute_frozen() fills the caches of the frozen sub-networks for many conversations
// at once (groups of similar length, spread over the threads); the batches that follow
// are then served from the caches (every forward a hit) with the bits their own forward
// would give, attention included, for any thread count and for binary4's 2-way heads.
TEST(FrozenSubnetCache, PrecomputedOutputsAreWhatTheBatchesWouldCompute) {
  require_packed_kernels();
  std::vector<int> convs;
  for (int c = 0; c < 40; ++c) convs.push_back(c);  // ~1,900 rows: several groups
  const std::vector<std::vector<int>> plan = {{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {39, 17, 25}, {30}};
  for (const char* protocol_name : {"iemocap4", "binary4"}) {
    const LabelProtocol protocol = make_protocol(protocol_name, data().ds.label_names);
    const DataShape shape = data_shape_of(data().ds, protocol);
    for (const char* type : {"mman", "clstm_lf"})
      for (int threads : {1, 2}) {
        SCOPED_TRACE(std::string(type) + ", " + protocol_name + ", threads " + std::to_string(threads));
        set_num_threads(threads);
        ModelConfig config;
        config.type = type;
        auto cached = make_model(config, shape), fresh = make_model(config, shape);
        init_model(*cached, 5);
        init_model(*fresh, 5);
        const int64_t subnets = static_cast<int64_t>(cached->subnet_configs().size());
        // Trainable sub-networks are computed with the batch, never ahead of it.
        EXPECT_EQ(cached->precompute_frozen(data().ds, protocol, convs), 0);
        cached->params().set_trainable("subnets.", false);
        std::vector<int> twice = convs;
        twice.insert(twice.end(), convs.begin(), convs.begin() + 5);  // a conversation listed twice counts once
        EXPECT_EQ(cached->precompute_frozen(data().ds, protocol, twice), subnets * 40);
        EXPECT_EQ(cached->precompute_frozen(data().ds, protocol, convs), 0) << "all cached already";
        const int64_t hits = FrozenOutputCache::hits(), misses = FrozenOutputCache::misses();
        for (const auto& part : plan) {
          Batch b;
          make_batch(data().ds, protocol, part, b);
          const Tensor& got = cached->forward(b, Mode::Eval, DropoutKey{});
          const std::vector<float> g(got.data(), got.data() + got.size());
          const Tensor& want = fresh->forward(b, Mode::Eval, DropoutKey{});
          EXPECT_TRUE(same_bits(g, std::vector<float>(want.data(), want.data() + want.size())));
          if (std::string(type) == "mman") {
            const Tensor* a = cached->attention();
            const Tensor* e = fresh->attention();
            ASSERT_TRUE(a != nullptr && e != nullptr);
            EXPECT_TRUE(same_bits(std::vector<float>(a->data(), a->data() + a->size()),
                                  std::vector<float>(e->data(), e->data() + e->size())));
          }
        }
        // Every frozen sub-network of every batch came from the cache (the fresh model's
        // trainable ones never ask it).
        EXPECT_EQ(FrozenOutputCache::misses() - misses, 0);
        EXPECT_EQ(FrozenOutputCache::hits() - hits, subnets * static_cast<int64_t>(plan.size()));
        // More conversations later: computed and added to what is cached.
        EXPECT_EQ(cached->precompute_frozen(data().ds, protocol, {40, 41}), subnets * 2);
        EXPECT_EQ(cached->precompute_frozen(data().ds, protocol, {0, 40, 41}), 0);
      }
  }
  set_num_threads(0);
}

// A stop answered between groups ends the precomputation early, keeping what was computed;
// a later call computes the rest. The hook is polled on the calling thread only.
TEST(FrozenSubnetCache, PrecomputationStopsBetweenGroupsWhenAsked) {
  require_packed_kernels();
  std::vector<int> all;
  for (int c = 0; c < data().ds.num_conversations(); ++c) all.push_back(c);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    auto m = model_of("mman");
    m->params().set_trainable("subnets.", false);
    const std::thread::id caller = std::this_thread::get_id();
    int polls = 0;
    bool other_thread = false;
    const int64_t first = m->precompute_frozen(data().ds, data().protocol, all, [&] {
      other_thread = other_thread || std::this_thread::get_id() != caller;
      return ++polls > 2;
    });
    EXPECT_FALSE(other_thread);
    EXPECT_GT(polls, 2);
    EXPECT_GT(first, 0) << "threads " << threads;
    EXPECT_LT(first, 4 * static_cast<int64_t>(all.size())) << "threads " << threads;
    EXPECT_EQ(first + m->precompute_frozen(data().ds, data().protocol, all), 4 * static_cast<int64_t>(all.size()));
  }
  set_num_threads(0);
}

// An error in a group (here: a label protocol built for other data, which make_batch
// rejects) reaches the caller as it is, at any thread count, and leaves the model usable.
TEST(FrozenSubnetCache, APrecomputationErrorReachesTheCallerAndLeavesTheModelUsable) {
  require_packed_kernels();
  std::vector<int> convs;
  for (int c = 0; c < 40; ++c) convs.push_back(c);
  LabelProtocol wrong = data().protocol;
  wrong.raw_to_class.push_back(-1);
  for (int threads : {1, 2, 4}) {
    set_num_threads(threads);
    auto m = model_of("mman");
    m->params().set_trainable("subnets.", false);
    try {
      m->precompute_frozen(data().ds, wrong, convs);
      ADD_FAILURE() << "expected mman::Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("label protocol"), std::string::npos) << e.what();
    }
    EXPECT_EQ(m->precompute_frozen(data().ds, data().protocol, convs), 4 * 40) << "threads " << threads;
  }
  set_num_threads(0);
}

TEST(FrozenSubnetCache, PrecomputingAConversationTheDataLacksIsAClearError) {
  require_packed_kernels();
  auto m = model_of("mman");
  m->params().set_trainable("subnets.", false);
  const int n = data().ds.num_conversations();
  try {
    m->precompute_frozen(data().ds, data().protocol, {0, n});
    FAIL() << "expected mman::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conversation index " + std::to_string(n) + " is outside the data"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace mman
