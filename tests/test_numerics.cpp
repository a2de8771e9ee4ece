// Extreme inputs through the real layers and models: softmax, loss, LSTM, MMA (cosine and scaled dot), whole models, and the trainer's stop on a non-finite loss.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "mman/data/batch.h"
#include "mman/data/protocol.h"
#include "mman/error.h"
#include "mman/layers/activation.h"
#include "mman/layers/loss.h"
#include "mman/layers/lstm.h"
#include "mman/layers/mma.h"
#include "mman/models/model.h"
#include "mman/train/checkpoint.h"
#include "mman/train/trainer.h"
#include "support/nan_stop.h"
#include "support/test_support.h"
#include "support/tiny_dataset.h"

// References are computed here in double from the definitions (not from the code under
// test), so "correct" means: equal to the exact value up to float rounding of the result.
namespace mman {
namespace {

constexpr float kMax = std::numeric_limits<float>::max();

bool all_finite(const float* p, int64_t n) {
  return std::all_of(p, p + n, [](float v) { return std::isfinite(v); });
}
bool all_finite(const std::vector<float>& v) { return all_finite(v.data(), static_cast<int64_t>(v.size())); }

// softmax of one group, in double with the maximum subtracted.
std::vector<double> softmax_ref(const std::vector<double>& x) {
  const double mx = *std::max_element(x.begin(), x.end());
  std::vector<double> y(x.size());
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) sum += (y[i] = std::exp(x[i] - mx));
  for (double& v : y) v /= sum;
  return y;
}

const std::vector<std::vector<float>> kExtremeRows = {
    {1e4f, -1e4f, 0.0f, 1.0f},           // openSMILE-sized magnitudes
    {1e4f, 1e4f + 1.0f, 1e4f - 1.0f, 0.0f},  // large and nearly equal
    {kMax, -kMax, 0.0f, kMax},           // the float range, ties at the top
    {-1e30f, -1e30f, -1e30f, -1e30f},    // all equal and hugely negative
    {3e38f, 3e38f, -3e38f, 1e38f},
    {0.0f, 0.0f, 0.0f, 0.0f},
};

TEST(Numerics, SoftmaxOfExtremeLogitsIsFiniteAndExact) {
  for (const int group : {4, 2}) {  // one softmax per row, and binary4's pairs
    for (const std::vector<float>& row : kExtremeRows) {
      std::vector<float> y(4);
      softmax_forward(row.data(), 4, 1, 4, group, y.data(), 4);
      ASSERT_TRUE(all_finite(y));
      for (int g0 = 0; g0 < 4; g0 += group) {
        const std::vector<double> ref = softmax_ref(std::vector<double>(row.begin() + g0, row.begin() + g0 + group));
        for (int i = 0; i < group; ++i) EXPECT_NEAR(y[static_cast<size_t>(g0 + i)], ref[static_cast<size_t>(i)], 1e-6);
      }
      std::vector<float> dy = {1.0f, -2.0f, 0.5f, 3.0f}, dx(4);
      softmax_backward(y.data(), 4, dy.data(), 4, 1, 4, group, dx.data(), 4);
      EXPECT_TRUE(all_finite(dx));
    }
  }
}

TEST(Numerics, CrossEntropyOfExtremeLogitsIsFiniteAndExact) {
  Tensor logits(static_cast<int64_t>(kExtremeRows.size()), 4);
  for (size_t r = 0; r < kExtremeRows.size(); ++r) std::copy_n(kExtremeRows[r].data(), 4, logits.row(static_cast<int64_t>(r)));
  const std::vector<int32_t> targets = {1, 0, 1, 3, 2, 0};  // row 2's target has logit -max
  Tensor dlogits;
  const LossResult loss = masked_cross_entropy(logits, targets.data(), 1, &dlogits);
  // Reference: mean over rows of logsumexp(x) - x_target = log(sum exp(x - max)) -
  // (x_target - max), in double (with the offsets taken first: max + log(...) would
  // round log(...) away for |max| beyond 1e16).
  double ref = 0;
  for (size_t r = 0; r < kExtremeRows.size(); ++r) {
    const std::vector<double> x(kExtremeRows[r].begin(), kExtremeRows[r].end());
    const double mx = *std::max_element(x.begin(), x.end());
    double s = 0;
    for (double v : x) s += std::exp(v - mx);
    ref += std::log(s) - (x[static_cast<size_t>(targets[r])] - mx);
  }
  ref /= static_cast<double>(kExtremeRows.size());
  ASSERT_TRUE(std::isfinite(loss.loss));
  EXPECT_NEAR(loss.loss, ref, 1e-12 * std::fabs(ref) + 1e-9);  // ~1e38: finite, not Inf
  ASSERT_TRUE(all_finite(dlogits.data(), dlogits.size()));
  for (size_t r = 0; r < kExtremeRows.size(); ++r) {
    const std::vector<double> p = softmax_ref(std::vector<double>(kExtremeRows[r].begin(), kExtremeRows[r].end()));
    for (int c = 0; c < 4; ++c)
      EXPECT_NEAR(dlogits.at(static_cast<int64_t>(r), c),
                  (p[static_cast<size_t>(c)] - (c == targets[r] ? 1.0 : 0.0)) / static_cast<double>(kExtremeRows.size()),
                  1e-6);
  }
  // binary4 heads over the same logits (two heads of two columns: targets 0 or 1).
  const std::vector<int32_t> head_targets = {1, 0, 1, 0, -1, 0};
  const LossResult heads = masked_cross_entropy(logits, head_targets.data(), 2, &dlogits);
  EXPECT_TRUE(std::isfinite(heads.loss));
  EXPECT_TRUE(all_finite(dlogits.data(), dlogits.size()));
}

// One LSTM layer in double, PyTorch's equations (gates i, f, g, o), one conversation.
std::vector<double> lstm_ref(const ParamStore& ps, const std::vector<float>& x, int steps, int in, int h) {
  auto p = [&](const char* name) { return ps.value(ps.find(name)); };
  const float *wih = p("lstm.weight_ih_l0"), *whh = p("lstm.weight_hh_l0"), *bih = p("lstm.bias_ih_l0"),
              *bhh = p("lstm.bias_hh_l0");
  std::vector<double> hs(static_cast<size_t>(h), 0.0), cs(static_cast<size_t>(h), 0.0), out;
  auto sigmoid = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  for (int t = 0; t < steps; ++t) {
    std::vector<double> g(static_cast<size_t>(4 * h));
    for (int j = 0; j < 4 * h; ++j) {
      double s = static_cast<double>(bih[j]) + bhh[j];
      for (int i = 0; i < in; ++i) s += static_cast<double>(wih[j * in + i]) * x[static_cast<size_t>(t * in + i)];
      for (int i = 0; i < h; ++i) s += static_cast<double>(whh[j * h + i]) * hs[static_cast<size_t>(i)];
      g[static_cast<size_t>(j)] = s;
    }
    for (int j = 0; j < h; ++j) {
      const double i_ = sigmoid(g[static_cast<size_t>(j)]), f = sigmoid(g[static_cast<size_t>(h + j)]),
                   gg = std::tanh(g[static_cast<size_t>(2 * h + j)]), o = sigmoid(g[static_cast<size_t>(3 * h + j)]);
      cs[static_cast<size_t>(j)] = f * cs[static_cast<size_t>(j)] + i_ * gg;
      hs[static_cast<size_t>(j)] = o * std::tanh(cs[static_cast<size_t>(j)]);
    }
    out.insert(out.end(), hs.begin(), hs.end());
  }
  return out;
}

TEST(Numerics, LstmSaturatesCleanlyForHugeInputs) {
  // Inputs of one sign per step times a scale: x W has no cancellation between large
  // terms, so float and double agree on every gate however large the scale.
  const int steps = 7, in = 3, h = 5;
  for (const double scale : {1.0, 1e4, 1e6, 1e12, 1e30}) {
    SCOPED_TRACE("scale " + std::to_string(scale));
    ParamStore ps;
    Lstm lstm(ps, "lstm", LstmConfig{in, h, 1, 0.0f, false});
    Rng rng(11);
    lstm.init(ps, rng);
    std::vector<float> x(static_cast<size_t>(steps * in));
    for (int t = 0; t < steps; ++t)
      for (int i = 0; i < in; ++i)
        x[static_cast<size_t>(t * in + i)] = static_cast<float>((t % 3 == 1 ? -1 : 1) * scale * (0.5 + 0.25 * i));
    const PackedLayout layout = PackedLayout::from_lengths({steps});
    Tensor y;
    LstmContext ctx;
    lstm.forward(ps, layout, x.data(), y, Mode::Eval, DropoutKey{}, 0, ctx);
    ASSERT_TRUE(all_finite(y.data(), y.size()));
    const std::vector<double> ref = lstm_ref(ps, x, steps, in, h);
    for (int64_t i = 0; i < y.size(); ++i) {
      EXPECT_LE(std::fabs(y.data()[i]), 1.0f);
      EXPECT_NEAR(y.data()[i], ref[static_cast<size_t>(i)], 2e-5) << i;
    }
    std::vector<float> dy(static_cast<size_t>(y.size()), 1.0f), dx(x.size());
    ps.zero_grads();
    lstm.backward(ps, layout, x.data(), dy.data(), dx.data(), ctx);
    EXPECT_TRUE(all_finite(dx));
    EXPECT_TRUE(all_finite(ps.grads()));
  }
}

// alpha of one row and query from q and k, in double, cosine or scaled dot.
std::vector<double> attention_ref(const MmaContext& ctx, int64_t r, int m, int mc, int d, bool cosine) {
  std::vector<double> e(static_cast<size_t>(mc));
  auto dot = [&](const float* a, const float* b) {
    double s = 0;
    for (int c = 0; c < d; ++c) s += static_cast<double>(a[c]) * b[c];
    return s;
  };
  const float* q = ctx.q[static_cast<size_t>(m)].row(r);
  for (int n = 0; n < mc; ++n) {
    const float* k = ctx.k[static_cast<size_t>(n)].row(r);
    e[static_cast<size_t>(n)] =
        cosine ? dot(q, k) / (std::max<double>(std::sqrt(dot(q, q)), kMmaCosineEps) *
                              std::max<double>(std::sqrt(dot(k, k)), kMmaCosineEps))
               : dot(q, k) / std::sqrt(static_cast<double>(d));
  }
  return softmax_ref(e);
}

struct MmaRun {
  ParamStore ps;
  Mma mma;
  MmaContext ctx;
  Tensor out;
  std::vector<Tensor> x;
};

// An MMA over three modalities with inputs of magnitude `scale` (zero rows included),
// forward and backward; every value must be finite and alpha exact.
void check_mma(MmaScore score, double scale, bool zero_query, bool check_backward = true) {
  const int rows = 6, d = 4;
  MmaRun run;
  MmaConfig cfg;
  cfg.modalities = {"audio", "visual", "text"};
  cfg.dims = {3, 5, 2};
  cfg.d_model = d;
  cfg.dropout = 0.0f;
  cfg.score = score;
  run.mma = Mma(run.ps, "mma.", cfg, 0);
  Rng rng(5);
  run.mma.init(run.ps, rng);
  if (zero_query) {  // q of audio is 0 for every row: cosine is undefined, clamped to 0
    for (const char* name : {"mma.q.audio.weight", "mma.q.audio.bias"}) {
      const int id = run.ps.find(name);
      std::fill_n(run.ps.value(id), run.ps.info(id).size, 0.0f);
    }
  }
  std::vector<const float*> xp;
  for (int m = 0; m < 3; ++m) {
    Tensor t(rows, cfg.dims[static_cast<size_t>(m)]);
    for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(scale * rng.uniform(-1.0, 1.0));
    std::fill_n(t.row(2), t.cols(), 0.0f);  // an all-zero input row
    run.x.push_back(std::move(t));
  }
  for (const Tensor& t : run.x) xp.push_back(t.data());
  run.mma.forward(run.ps, rows, xp.data(), run.out, Mode::Train, DropoutKey{1, 2}, run.ctx);
  ASSERT_TRUE(all_finite(run.out.data(), run.out.size()));
  ASSERT_TRUE(all_finite(run.ctx.alpha.data(), run.ctx.alpha.size()));
  for (int64_t r = 0; r < rows; ++r)
    for (int m = 0; m < 3; ++m) {
      const std::vector<double> ref = attention_ref(run.ctx, r, m, 3, d, score == MmaScore::Cosine);
      for (int n = 0; n < 3; ++n) EXPECT_NEAR(run.ctx.alpha.at(r, 3 * m + n), ref[static_cast<size_t>(n)], 1e-6);
      if (zero_query && m == 0) {
        for (int n = 0; n < 3; ++n) EXPECT_NEAR(run.ctx.alpha.at(r, n), 1.0 / 3.0, 1e-7);  // all scores 0
      }
    }
  if (!check_backward) return;
  Tensor dout(rows, run.out.cols());
  for (int64_t i = 0; i < dout.size(); ++i) dout.data()[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  std::vector<Tensor> dx(3);
  std::vector<float*> dxp;
  for (int m = 0; m < 3; ++m) {
    dx[static_cast<size_t>(m)].resize(rows, cfg.dims[static_cast<size_t>(m)]);
    dxp.push_back(dx[static_cast<size_t>(m)].data());
  }
  run.ps.zero_grads();
  run.mma.backward(run.ps, rows, xp.data(), dout, dxp.data(), run.ctx);
  EXPECT_TRUE(all_finite(run.ps.grads()));
  for (const Tensor& t : dx) EXPECT_TRUE(all_finite(t.data(), t.size()));
}

TEST(Numerics, CosineAttentionIsFiniteForZeroAndHugeVectors) {
  for (const double scale : {1.0, 1e4, 1e8, 1e20, 1e30}) {
    SCOPED_TRACE("scale " + std::to_string(scale));
    check_mma(MmaScore::Cosine, scale, false);
    // A zero query's score gradient is k / (eps |k|) (torch's eps clamp, eps = 1e-8): for
    // inputs of 1e20 the exact weight gradient is ~1e48, beyond float, so the backward is
    // checked up to 1e8 and the forward everywhere.
    check_mma(MmaScore::Cosine, scale, true, scale <= 1e8);
  }
}

TEST(Numerics, ScaledDotAttentionIsFiniteForHugeVectors) {
  for (const double scale : {1.0, 1e4, 1e8}) {
    SCOPED_TRACE("scale " + std::to_string(scale));
    check_mma(MmaScore::ScaledDot, scale, false);
  }
  // q.k of 1e20-sized vectors is 1e40: Inf in float, so the scores are kept in double and
  // the attention stays finite. Its exact gradient (dq = de k, about 1e40) is beyond
  // float itself, so only the forward is checked there; the trainer stops on such a
  // gradient (the gradient-norm check) rather than stepping with it.
  check_mma(MmaScore::ScaledDot, 1e20, false, false);
}

// Every model type, forward + loss + backward on features of openSMILE-like magnitude
// (unnormalised) and on all-zero features: loss, logits and gradients finite.
TEST(Numerics, WholeModelsStayFiniteOnUnnormalisedAndZeroFeatures) {
  test::TinySpec spec;
  const Dataset base = test::tiny_dataset(spec);
  const LabelProtocol protocol = make_protocol("iemocap4", base.label_names);
  DataShape shape;
  shape.modalities = base.modalities;
  for (int m = 0; m < 3; ++m) shape.dims.push_back(base.dim(m));
  shape.num_outputs = protocol.num_outputs();
  auto tiny = [](const std::string& type, MmaScore score = MmaScore::ScaledDot) {
    ModelConfig c;
    c.type = type;
    c.hidden = 6;
    c.fc = 5;
    c.d_model = 4;
    c.score = score;
    return c;
  };
  std::vector<ModelConfig> configs = {tiny("clstm_speech"), tiny("clstm_ef"), tiny("clstm_mma"),
                                      tiny("clstm_mma", MmaScore::Cosine)};
  ModelConfig lf = tiny("clstm_lf");
  lf.subnets = {tiny("clstm_speech"), tiny("clstm_visual"), tiny("clstm_text")};
  ModelConfig mm = tiny("mman");
  mm.subnets = {tiny("clstm_mma", MmaScore::Cosine), tiny("clstm_speech"), tiny("clstm_visual"), tiny("clstm_text")};
  configs.push_back(lf);
  configs.push_back(mm);
  std::vector<int> convs(static_cast<size_t>(base.num_conversations()));
  for (int c = 0; c < base.num_conversations(); ++c) convs[static_cast<size_t>(c)] = c;

  for (const double scale : {0.0, 1e4, 1e6}) {
    Dataset ds = base;
    for (Tensor& t : ds.features)
      for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(t.data()[i] * scale);
    Batch batch;
    make_batch(ds, protocol, convs, batch);
    for (const ModelConfig& config : configs) {
      SCOPED_TRACE(config.type + " at scale " + std::to_string(scale));
      std::unique_ptr<Model> model = make_model(config, shape);
      Rng rng(3);
      model->init(rng);
      const Tensor& logits = model->forward(batch, Mode::Train, DropoutKey{7, 1});
      ASSERT_TRUE(all_finite(logits.data(), logits.size()));
      Tensor dlogits;
      const LossResult loss = masked_cross_entropy(logits, batch.targets.data(), protocol.heads, &dlogits);
      EXPECT_TRUE(std::isfinite(loss.loss));
      model->params().zero_grads();
      model->backward(batch, dlogits);
      EXPECT_TRUE(all_finite(model->params().grads()));
    }
  }
}

// NaN must reach the loss: every layer propagates it (a ReLU returning 0 for NaN hid a
// poisoned input, and only the gradient showed it).
TEST(Numerics, NanInputsReachTheLogits) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x = {nan, -1.0f, 2.0f, -0.0f}, y(4);
  relu_forward(x.data(), y.data(), 4);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 2.0f);
  EXPECT_EQ(y[3], 0.0f);

  test::TinySpec spec;
  Dataset ds = test::tiny_dataset(spec);
  const LabelProtocol protocol = make_protocol("iemocap4", ds.label_names);
  DataShape shape{ds.modalities, {ds.dim(0), ds.dim(1), ds.dim(2)}, protocol.num_outputs(), 1};
  ds.features[0].at(0, 1) = nan;  // first utterance of conversation 0, audio
  for (const char* type : {"clstm_speech", "clstm_ef", "clstm_mma"}) {
    SCOPED_TRACE(type);
    ModelConfig config;
    config.type = type;
    config.hidden = 6;
    config.fc = 5;
    config.d_model = 4;
    std::unique_ptr<Model> model = make_model(config, shape);
    init_model(*model, 1);
    Batch batch;
    make_batch(ds, protocol, {0, 1}, batch);
    for (const Mode mode : {Mode::Train, Mode::Eval}) {
      const Tensor& logits = model->forward(batch, mode, DropoutKey{1, 1});
      const int b0 = batch.conv_index[0] == 0 ? 0 : 1;  // conversation 0's slot in the batch
      EXPECT_TRUE(std::isnan(logits.at(batch.layout.row(b0, 0), 0)));
      const LossResult loss = masked_cross_entropy(logits, batch.targets.data(), 1, nullptr);
      EXPECT_TRUE(std::isnan(loss.loss));
    }
  }
}

// A loss that turns NaN mid-run (here: a feature poisoned after epoch 1, which
// read_dataset would refuse; in practice a diverging model) stops training with the
// model, epoch and batch named, and the state file keeps epoch 1 intact.
TEST(Numerics, TrainerStopsOnANonFiniteLossAndKeepsTheLastGoodState) {
  test::TempDir dir;
  test::TinySpec spec;
  spec.valid_lengths = {3, 2};
  Dataset ds = test::tiny_dataset(spec);
  const LabelProtocol protocol = make_protocol("iemocap4", ds.label_names);
  const SplitIndices splits = resolve_splits(ds, 0.0, 0);
  DataShape shape{ds.modalities, {ds.dim(0), ds.dim(1), ds.dim(2)}, protocol.num_outputs(), 1};
  ModelConfig config;
  config.type = "clstm_speech";
  config.hidden = 6;
  config.fc = 5;
  std::unique_ptr<Model> model = make_model(config, shape);
  init_model(*model, 0);

  const test::SavedState saved = test::expect_nan_loss_stops_and_keeps_epoch_1(*model, ds, protocol, splits, dir);
  EXPECT_EQ(saved.state.batch, 0);
  EXPECT_TRUE(all_finite(saved.values));
}

}  // namespace
}  // namespace mman
