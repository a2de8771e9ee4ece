// Trainer: evaluation, learning, determinism, exact resume, early stopping, staged training with frozen subnets.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "mman/error.h"
#include "mman/layers/dropout.h"
#include "mman/train/trainer.h"
#include "support/test_support.h"
#include "support/tiny_dataset.h"

namespace mman {
namespace {

// A per-row linear classifier on the first modality with input dropout: small, fast and
// exactly differentiable, enough to exercise every path of the trainer independently of
// the real models.
class RowLinear : public Model {
 public:
  RowLinear(int in, int out, float dropout = 0.2f) : Model(make_config()), in_(in), out_(out), dropout_(dropout) {
    w_ = params_.add("out.weight", {out, in});
    b_ = params_.add("out.bias", {out});
  }
  void init(Rng& rng) override {
    const double k = 1.0 / std::sqrt(static_cast<double>(in_));
    for (const ParamInfo& p : params_.infos())
      for (size_t i = 0; i < p.size; ++i) params_.values()[p.offset + i] = static_cast<float>(rng.uniform(-k, k));
  }
  const Tensor& forward(const Batch& batch, Mode mode, const DropoutKey& key) override {
    const Tensor& x = batch.features[0];
    x_.resize(x.rows(), in_);
    const uint64_t stream = dropout_stream(key, 0);
    for (int64_t i = 0; i < x.size(); ++i)
      x_.data()[i] = mode == Mode::Train ? x.data()[i] * dropout_scale(stream, static_cast<uint64_t>(i), dropout_)
                                         : x.data()[i];
    logits_.resize(x.rows(), out_);
    for (int64_t r = 0; r < x.rows(); ++r)
      for (int o = 0; o < out_; ++o) {
        float s = params_.value(b_)[o];
        for (int j = 0; j < in_; ++j) s += params_.value(w_)[o * in_ + j] * x_.at(r, j);
        logits_.at(r, o) = s;
      }
    ++forwards;
    return logits_;
  }
  void backward(const Batch& batch, const Tensor& dlogits) override {
    if (!params_.info(w_).trainable) return;
    for (int64_t r = 0; r < dlogits.rows(); ++r)
      for (int o = 0; o < out_; ++o) {
        const float d = dlogits.at(r, o);
        params_.grad(b_)[o] += d;
        for (int j = 0; j < in_; ++j) params_.grad(w_)[o * in_ + j] += d * x_.at(r, j);
      }
  }
  int forwards = 0;

 private:
  static ModelConfig make_config() {
    ModelConfig c;
    c.type = "row_linear";
    c.name = "row_linear";
    return c;
  }
  int in_, out_;
  float dropout_;
  int w_, b_;
  Tensor x_, logits_;
};

// The file's raw labels as classes: with tiny_dataset's features (noise + raw label) the
// class is linearly decodable, so a linear model has something real to learn.
LabelProtocol raw_protocol(const Dataset& ds) {
  LabelProtocol p;
  p.name = "raw";
  p.class_names = ds.label_names;
  for (size_t k = 0; k < ds.label_names.size(); ++k) p.raw_to_class.push_back(static_cast<int>(k));
  return p;
}

struct Fixture {
  Dataset ds;
  LabelProtocol protocol;
  SplitIndices splits;
};

// Splits as tiny_dataset stores them: train, then valid, then test conversations.
Fixture make_fixture(int train = 12, int valid = 4, int test = 4, uint64_t seed = 3) {
  test::TinySpec spec;
  spec.train_lengths.clear();
  spec.valid_lengths.clear();
  spec.test_lengths.clear();
  Rng rng(seed);
  for (int i = 0; i < train; ++i) spec.train_lengths.push_back(3 + static_cast<int>(rng.below(10)));
  for (int i = 0; i < valid; ++i) spec.valid_lengths.push_back(3 + static_cast<int>(rng.below(10)));
  for (int i = 0; i < test; ++i) spec.test_lengths.push_back(3 + static_cast<int>(rng.below(10)));
  spec.seed = seed;
  Fixture f;
  f.ds = test::tiny_dataset(spec);
  f.protocol = raw_protocol(f.ds);
  int c = 0;
  for (int i = 0; i < train; ++i) f.splits.train.push_back(c++);
  for (int i = 0; i < valid; ++i) f.splits.valid.push_back(c++);
  for (int i = 0; i < test; ++i) f.splits.test.push_back(c++);
  f.splits.valid_from_file = true;
  return f;
}

TrainConfig quick_config(int epochs) {
  TrainConfig c;
  c.lr = 0.05;
  c.batch_size = 3;
  c.max_epochs = epochs;
  c.patience = 0;
  c.seed = 11;
  c.threads = 1;
  return c;
}

std::unique_ptr<RowLinear> row_model(const Fixture& f, uint64_t init_seed = 11) {
  auto m = std::make_unique<RowLinear>(static_cast<int>(f.ds.dim(0)), f.protocol.num_outputs());
  init_model(*m, init_seed);
  return m;
}

// Everything of two results that must agree between runs (wall times excepted).
void expect_same_result(const TrainResult& a, const TrainResult& b) {
  ASSERT_EQ(a.history.size(), b.history.size());
  for (size_t i = 0; i < a.history.size(); ++i) {
    EXPECT_EQ(a.history[i].epoch, b.history[i].epoch);
    EXPECT_EQ(a.history[i].train_loss, b.history[i].train_loss) << "epoch " << i + 1;
    EXPECT_EQ(a.history[i].train_accuracy, b.history[i].train_accuracy) << "epoch " << i + 1;
    EXPECT_EQ(a.history[i].valid_loss, b.history[i].valid_loss) << "epoch " << i + 1;
    EXPECT_EQ(a.history[i].valid_accuracy, b.history[i].valid_accuracy) << "epoch " << i + 1;
    EXPECT_EQ(a.history[i].valid_ua, b.history[i].valid_ua) << "epoch " << i + 1;
  }
  EXPECT_EQ(a.best_epoch, b.best_epoch);
  EXPECT_EQ(a.best_valid_accuracy, b.best_valid_accuracy);
  EXPECT_EQ(a.stopped_early, b.stopped_early);
  EXPECT_EQ(a.steps, b.steps);
}

// Tiny real models (SPEC architectures with small widths) for the staged tests.
ModelConfig tiny_config(const std::string& type) {
  ModelConfig c;
  c.type = type;
  c.name = type;
  c.hidden = 5;
  c.fc = 4;
  c.d_model = 6;
  return c;
}

ModelConfig tiny_composite(const std::string& type, const std::vector<std::string>& subnet_types) {
  ModelConfig c = tiny_config(type);
  for (const std::string& t : subnet_types) c.subnets.push_back(tiny_config(t));
  return c;
}

std::vector<float> tensor_values(const ParamStore& ps, const std::string& name) {
  const int id = ps.find(name);
  EXPECT_GE(id, 0) << name;
  if (id < 0) return {};
  return std::vector<float>(ps.value(id), ps.value(id) + ps.info(id).size);
}

}  // namespace

TEST(Evaluate, RowsFollowConversationOrderAndScoresMatch) {
  Fixture f = make_fixture();
  auto model = row_model(f);
  const std::vector<int> convs = {f.splits.test[2], f.splits.test[0], f.splits.valid[1]};
  const Evaluation ev = evaluate(*model, f.ds, f.protocol, convs, 2);
  int64_t rows = 0;
  for (int c : convs) rows += f.ds.conv_length(c);
  ASSERT_EQ(static_cast<int64_t>(ev.utterances.size()), rows);
  // Conversation by conversation, utterances in time order.
  int64_t out = 0;
  for (int c : convs)
    for (int64_t u = f.ds.conv_offsets[static_cast<size_t>(c)]; u < f.ds.conv_offsets[static_cast<size_t>(c) + 1]; ++u, ++out) {
      EXPECT_EQ(ev.utterances[static_cast<size_t>(out)], u);
      EXPECT_EQ(ev.targets[static_cast<size_t>(out)], f.protocol.map(f.ds.labels[static_cast<size_t>(u)]));
    }
  // Probabilities are a softmax whose argmax is the prediction; loss and metrics from them.
  double loss = 0;
  int scored = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    int arg = 0;
    for (int k = 0; k < f.protocol.num_outputs(); ++k) {
      sum += ev.probabilities.at(r, k);
      if (ev.probabilities.at(r, k) > ev.probabilities.at(r, arg)) arg = k;
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
    EXPECT_EQ(ev.predictions[static_cast<size_t>(r)], arg);
    const int t = ev.targets[static_cast<size_t>(r)];
    if (t >= 0) {
      loss -= std::log(static_cast<double>(ev.probabilities.at(r, t)));
      ++scored;
    }
  }
  ASSERT_GT(scored, 0);
  EXPECT_NEAR(ev.loss, loss / scored, 1e-5);
  EXPECT_EQ(ev.metrics.count, scored);
  const Metrics m = compute_metrics(f.protocol, ev.targets, ev.predictions);
  EXPECT_EQ(ev.metrics.accuracy, m.accuracy);
  EXPECT_TRUE(ev.attention.empty());
  // The batch size does not change anything for a row-wise model.
  const Evaluation one = evaluate(*model, f.ds, f.protocol, convs, 1);
  EXPECT_EQ(one.predictions, ev.predictions);
  EXPECT_NEAR(one.loss, ev.loss, 1e-12);
  EXPECT_THROW(evaluate(*model, f.ds, f.protocol, {0, 0}), Error);
  EXPECT_THROW(evaluate(*model, f.ds, f.protocol, {999}), Error);
}

TEST(Trainer, LearnsASimpleSignal) {
  Fixture f = make_fixture(16, 4, 6);
  auto model = row_model(f);
  const double before = evaluate(*model, f.ds, f.protocol, f.splits.test).metrics.accuracy;
  TrainConfig c = quick_config(80);
  c.lr = 0.1;
  const TrainResult r = train_model(*model, f.ds, f.protocol, f.splits, c);
  const Evaluation after = evaluate(*model, f.ds, f.protocol, f.splits.test);
  // Six classes: chance is 1/6 (0.11 before training). The class is the features' mean
  // offset, so a linear model separates most of it (0.76 when this test was written).
  EXPECT_GT(after.metrics.accuracy, 0.6) << "before training " << before;
  EXPECT_LT(r.history.back().train_loss, r.history.front().train_loss);
  EXPECT_EQ(r.history.size(), 80u);
  EXPECT_EQ(r.steps, 80 * 6);  // 16 conversations in batches of 3
  EXPECT_GT(r.trainable_parameters, 0);
}

TEST(Trainer, SameSeedGivesBitIdenticalWeights) {
  Fixture f = make_fixture();
  TrainConfig c = quick_config(4);
  auto a = row_model(f);
  auto b = row_model(f);
  const TrainResult ra = train_model(*a, f.ds, f.protocol, f.splits, c);
  const TrainResult rb = train_model(*b, f.ds, f.protocol, f.splits, c);
  EXPECT_EQ(a->params().values(), b->params().values());
  expect_same_result(ra, rb);
  // Another seed shuffles and drops out differently.
  c.seed = 12;
  auto d = row_model(f);
  train_model(*d, f.ds, f.protocol, f.splits, c);
  EXPECT_NE(a->params().values(), d->params().values());
}

// Stops mid-epoch (and, separately, at an epoch boundary), resumes in a fresh model from
// the state file, and must end bit-identical to the uninterrupted run.
TEST(Trainer, ResumeContinuesBitIdentically) {
  Fixture f = make_fixture();
  TrainConfig c = quick_config(5);
  c.patience = 2;
  c.clip_norm = 0.5;  // clipping active, part of the state-free path
  auto full = row_model(f);
  const TrainResult reference = train_model(*full, f.ds, f.protocol, f.splits, c);

  for (int stop_after : {7, 8, 12}) {  // 4 batches per epoch: 8 and 12 are epoch boundaries
    test::TempDir dir;
    TrainHooks hooks;
    hooks.state_path = [&](const std::string& name) { return dir.file(name + ".h5"); };
    int batches = 0;
    hooks.should_stop = [&] { return batches++ >= stop_after; };
    auto first = row_model(f);
    const TrainResult part = train_model(*first, f.ds, f.protocol, f.splits, c, hooks);
    EXPECT_TRUE(part.interrupted);
    EXPECT_EQ(part.steps, stop_after);
    ASSERT_TRUE(std::filesystem::exists(dir.file("row_linear.h5")));

    auto second = row_model(f, 999);  // different init: everything must come from the file
    hooks.should_stop = nullptr;
    hooks.resume = true;
    const TrainResult resumed = train_model(*second, f.ds, f.protocol, f.splits, c, hooks);
    EXPECT_FALSE(resumed.interrupted);
    expect_same_result(resumed, reference);
    EXPECT_EQ(second->params().values(), full->params().values()) << "stopped after " << stop_after;

    // A finished state returns its result without training again.
    auto third = row_model(f, 5);
    const TrainResult again = train_model(*third, f.ds, f.protocol, f.splits, c, hooks);
    EXPECT_EQ(third->forwards, 0);
    expect_same_result(again, reference);
    EXPECT_EQ(third->params().values(), full->params().values());

    // A state file of another seed is refused.
    TrainConfig other = c;
    other.seed = 99;
    auto fourth = row_model(f);
    EXPECT_THROW(train_model(*fourth, f.ds, f.protocol, f.splits, other, hooks), Error);
  }
}

TEST(Trainer, EarlyStoppingRestoresTheBestEpoch) {
  Fixture f = make_fixture(8, 3, 2);
  TrainConfig c = quick_config(80);
  c.patience = 3;
  auto model = row_model(f);
  std::vector<std::vector<float>> snapshots;  // parameters after each epoch
  TrainHooks hooks;
  hooks.on_epoch = [&](const std::string&, const EpochRecord& rec, int) {
    EXPECT_EQ(rec.epoch, static_cast<int>(snapshots.size()) + 1);
    snapshots.push_back(model->params().values());
  };
  const TrainResult r = train_model(*model, f.ds, f.protocol, f.splits, c, hooks);
  ASSERT_TRUE(r.stopped_early) << "validation accuracy kept improving for 80 epochs";
  // The best epoch: highest validation accuracy, the earliest on ties.
  int best = 1;
  for (const EpochRecord& e : r.history)
    if (e.valid_accuracy > r.history[static_cast<size_t>(best - 1)].valid_accuracy) best = e.epoch;
  EXPECT_EQ(r.best_epoch, best);
  EXPECT_EQ(r.best_valid_accuracy, r.history[static_cast<size_t>(best - 1)].valid_accuracy);
  EXPECT_EQ(static_cast<int>(r.history.size()), best + c.patience);
  EXPECT_EQ(model->params().values(), snapshots[static_cast<size_t>(best - 1)]);
  EXPECT_NE(model->params().values(), snapshots.back());
}

TEST(Trainer, WithoutValidationTheLastEpochIsKept) {
  Fixture f = make_fixture(6, 0, 2);
  TrainConfig c = quick_config(3);
  c.patience = 1;
  auto model = row_model(f);
  std::vector<float> last;
  TrainHooks hooks;
  hooks.on_epoch = [&](const std::string&, const EpochRecord&, int) { last = model->params().values(); };
  const TrainResult r = train_model(*model, f.ds, f.protocol, f.splits, c, hooks);
  EXPECT_EQ(r.best_epoch, 3);
  EXPECT_FALSE(r.stopped_early);
  EXPECT_EQ(model->params().values(), last);
}

TEST(Trainer, RejectsBadConfig) {
  Fixture f = make_fixture(3, 1, 1);
  auto model = row_model(f);
  TrainConfig c = quick_config(1);
  c.batch_size = 0;
  EXPECT_THROW(train_model(*model, f.ds, f.protocol, f.splits, c), Error);
  c = quick_config(0);
  EXPECT_THROW(train_model(*model, f.ds, f.protocol, f.splits, c), Error);
  SplitIndices empty = f.splits;
  empty.train.clear();
  EXPECT_THROW(train_model(*model, f.ds, f.protocol, empty, quick_config(1)), Error);
}

TEST(Trainer, ClippingByValueBoundsEveryStep) {
  // With a clamp of 1e-4 and lr 0.05 Adam still moves each weight by about lr per step
  // (Adam is scale-free), but a clamp that removes the sign would not: check the run
  // is deterministic and different from the unclipped one.
  Fixture f = make_fixture(6, 2, 2);
  TrainConfig c = quick_config(2);
  c.clip_norm = 0;
  auto plain = row_model(f);
  train_model(*plain, f.ds, f.protocol, f.splits, c);
  c.clip_value = 1e-4;
  auto clamped = row_model(f);
  train_model(*clamped, f.ds, f.protocol, f.splits, c);
  EXPECT_NE(plain->params().values(), clamped->params().values());
}

// Stage 1 trains the three uni-modal nets alone; stage 2 copies and freezes them and
// trains only the late-fusion top. The frozen parameters do not move and receive no
// gradient; mman then reuses the cached uni-modal nets and trains only clstm_mma.
TEST(Staged, FrozenSubnetsAndCacheReuse) {
  Fixture f = make_fixture(6, 2, 2);
  const DataShape shape = data_shape_of(f.ds, f.protocol);
  TrainConfig c = quick_config(2);
  c.lr = 1e-2;
  std::map<std::string, int> epochs_of;
  TrainHooks hooks;
  hooks.on_epoch = [&](const std::string& name, const EpochRecord&, int) { ++epochs_of[name]; };

  SubnetCache cache;
  auto lf = make_model(tiny_composite("clstm_lf", {"clstm_speech", "clstm_visual", "clstm_text"}), shape);
  init_model(*lf, c.seed);
  // Snapshot of the fusion part before stage 2 to see it train.
  std::vector<float> top_before;
  std::vector<std::string> frozen_names, top_names;
  for (const ParamInfo& p : lf->params().infos())
    (p.name.rfind("subnets.", 0) == 0 ? frozen_names : top_names).push_back(p.name);
  ASSERT_FALSE(top_names.empty());
  for (const std::string& n : top_names) {
    const auto v = tensor_values(lf->params(), n);
    top_before.insert(top_before.end(), v.begin(), v.end());
  }

  const StagedResult r = train_staged(*lf, f.ds, f.protocol, f.splits, c, &cache, hooks);
  EXPECT_FALSE(r.interrupted);
  ASSERT_EQ(r.subnets.size(), 3u);
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(epochs_of["clstm_speech"], 2);
  EXPECT_EQ(epochs_of["clstm_lf"], 2);
  // The composite's subnet tensors equal the stage-1 nets (untouched by stage 2) and got
  // no gradient in stage 2.
  for (const auto& [name, trained] : cache) {
    for (const ParamInfo& p : trained.model->params().infos()) {
      const std::string in_lf = "subnets." + name + "." + p.name;
      EXPECT_EQ(tensor_values(lf->params(), in_lf), tensor_values(trained.model->params(), p.name)) << in_lf;
      const int id = lf->params().find(in_lf);
      ASSERT_GE(id, 0);
      EXPECT_FALSE(lf->params().info(id).trainable);
      for (size_t i = 0; i < p.size; ++i) ASSERT_EQ(lf->params().grad(id)[i], 0.0f) << in_lf;
    }
  }
  std::vector<float> top_after;
  for (const std::string& n : top_names) {
    const auto v = tensor_values(lf->params(), n);
    top_after.insert(top_after.end(), v.begin(), v.end());
  }
  EXPECT_NE(top_after, top_before);
  EXPECT_EQ(r.result.trainable_parameters,
            lf->params().num_parameters(false) - [&] {
              int64_t n = 0;
              for (const auto& [name, t] : cache) n += t.model->params().num_parameters();
              return n;
            }());
  // A subnet trained in stage 1 is the same as the same config trained alone.
  auto alone = make_model(tiny_config("clstm_speech"), shape);
  init_model(*alone, c.seed);
  train_model(*alone, f.ds, f.protocol, f.splits, c);
  EXPECT_EQ(alone->params().values(), cache.at("clstm_speech").model->params().values());

  // mman reuses the three cached nets and trains only clstm_mma in stage 1.
  epochs_of.clear();
  auto mm = make_model(tiny_composite("mman", {"clstm_mma", "clstm_speech", "clstm_visual", "clstm_text"}), shape);
  init_model(*mm, c.seed);
  const StagedResult rm = train_staged(*mm, f.ds, f.protocol, f.splits, c, &cache, hooks);
  EXPECT_EQ(rm.subnets.size(), 4u);
  EXPECT_EQ(epochs_of.count("clstm_speech"), 0u);
  EXPECT_EQ(epochs_of["clstm_mma"], 2);
  EXPECT_EQ(epochs_of["mman"], 2);
  EXPECT_EQ(cache.size(), 4u);
  EXPECT_EQ(tensor_values(mm->params(), "subnets.clstm_text.out.bias"),
            tensor_values(cache.at("clstm_text").model->params(), "out.bias"));
  // MMA models export attention rows through evaluate().
  const Evaluation ev = evaluate(*mm, f.ds, f.protocol, f.splits.test);
  EXPECT_EQ(ev.attention.rows(), static_cast<int64_t>(ev.utterances.size()));
  EXPECT_EQ(ev.attention.cols(), 9);
}

// A staged run stopped inside stage 1 and resumed from its state files ends identical to
// the uninterrupted one (real models: LSTM, dropout, frozen subnets).
TEST(Staged, ResumeAcrossStagesIsBitIdentical) {
  Fixture f = make_fixture(5, 2, 1);
  const DataShape shape = data_shape_of(f.ds, f.protocol);
  TrainConfig c = quick_config(2);
  c.lr = 1e-2;
  const ModelConfig config = tiny_composite("clstm_lf", {"clstm_speech", "clstm_text"});

  auto ref = make_model(config, shape);
  init_model(*ref, c.seed);
  const StagedResult reference = train_staged(*ref, f.ds, f.protocol, f.splits, c);

  // 2 batches per epoch, 2 epochs per phase: stop in clstm_text's first epoch, then in
  // stage 2's second epoch.
  test::TempDir dir;
  TrainHooks hooks;
  hooks.state_path = [&](const std::string& name) { return dir.file(name + ".h5"); };
  int batches = 0;
  int stop_at = 5;
  hooks.should_stop = [&] { return batches++ == stop_at; };
  auto model = make_model(config, shape);
  init_model(*model, c.seed);
  StagedResult part = train_staged(*model, f.ds, f.protocol, f.splits, c, nullptr, hooks);
  EXPECT_TRUE(part.interrupted);
  hooks.resume = true;
  batches = 0;
  stop_at = 5;  // clstm_text: 3 batches left, then 2 of stage 2's 4: stops inside stage 2
  model = make_model(config, shape);
  init_model(*model, c.seed);  // stage 2 starts in this run: its fusion part must start as the reference's
  part = train_staged(*model, f.ds, f.protocol, f.splits, c, nullptr, hooks);
  EXPECT_TRUE(part.interrupted);
  EXPECT_EQ(part.subnets.size(), 2u);
  hooks.should_stop = nullptr;
  model = make_model(config, shape);
  init_model(*model, c.seed + 2);
  const StagedResult resumed = train_staged(*model, f.ds, f.protocol, f.splits, c, nullptr, hooks);
  EXPECT_FALSE(resumed.interrupted);
  EXPECT_EQ(model->params().values(), ref->params().values());
  expect_same_result(resumed.result, reference.result);
  ASSERT_EQ(resumed.subnets.size(), reference.subnets.size());
  for (size_t i = 0; i < resumed.subnets.size(); ++i) expect_same_result(resumed.subnets[i].second, reference.subnets[i].second);
}

}  // namespace mman
