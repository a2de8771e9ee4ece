// Lstm: finite-difference gradients, a naive per-conversation reference, PyTorch parity, invariants.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mman/error.h"
#include "mman/layers/lstm.h"
#include "src/layers/lstm_cell.h"
#include "support/gradcheck.h"
#include "support/test_support.h"

namespace mman {
namespace {

// A layer with PyTorch-style random weights, a packed batch and fixed loss weights w:
// the scalar loss of the gradient checks is sum(w .* y).
struct Fixture {
  LstmConfig cfg;
  ParamStore params;
  Lstm lstm;
  PackedLayout layout;
  std::vector<float> x, w;
};

Fixture make_fixture(const LstmConfig& cfg, const std::vector<int>& lengths, uint64_t seed,
                     double x_scale = 1.0) {
  Fixture s;
  s.cfg = cfg;
  s.lstm = Lstm(s.params, "lstm", cfg);
  Rng rng(seed);
  s.lstm.init(s.params, rng);
  s.layout = PackedLayout::from_lengths(lengths);
  s.x.resize(static_cast<size_t>(s.layout.rows() * cfg.input));
  for (float& v : s.x) v = static_cast<float>(x_scale * rng.normal());
  s.w.resize(static_cast<size_t>(s.layout.rows() * s.lstm.output_dim()));
  for (float& v : s.w) v = static_cast<float>(rng.uniform(-1.0, 1.0));
  return s;
}

LstmConfig config(int input, int hidden, int layers, bool bidirectional, float dropout = 0.0f) {
  LstmConfig c;
  c.input = input;
  c.hidden = hidden;
  c.layers = layers;
  c.bidirectional = bidirectional;
  c.dropout = dropout;
  return c;
}

double weighted_sum(const std::vector<float>& w, const Tensor& y) {
  double loss = 0.0;
  for (int64_t i = 0; i < y.size(); ++i) loss += static_cast<double>(w[static_cast<size_t>(i)]) * y.data()[i];
  return loss;
}

const DropoutKey kKey{1234, 7};
constexpr uint64_t kSlot = 3;

double loss_of(Fixture& s, Mode mode) {
  Tensor y;
  LstmContext ctx;
  s.lstm.forward(s.params, s.layout, s.x.data(), y, mode, kKey, kSlot, ctx);
  return weighted_sum(s.w, y);
}

// Runs forward + backward with dy = w on zeroed gradients; returns dx.
std::vector<float> analytic_gradients(Fixture& s, Mode mode) {
  Tensor y;
  LstmContext ctx;
  s.lstm.forward(s.params, s.layout, s.x.data(), y, mode, kKey, kSlot, ctx);
  s.params.zero_grads();
  std::vector<float> dx(s.x.size());
  s.lstm.backward(s.params, s.layout, s.x.data(), s.w.data(), dx.data(), ctx);
  return dx;
}

void check_all_gradients(const LstmConfig& cfg, Mode mode) {
  Fixture s = make_fixture(cfg, {5, 3, 3, 1}, 42);
  const std::vector<float> dx = analytic_gradients(s, mode);
  test::expect_gradient_matches(
      s.x, dx, [&] { return loss_of(s, mode); }, "dx");
  for (int id = 0; id < s.params.count(); ++id) {
    const ParamInfo& info = s.params.info(id);
    std::vector<float> values(s.params.value(id), s.params.value(id) + info.size);
    const std::vector<float> analytic(s.params.grad(id), s.params.grad(id) + info.size);
    auto loss = [&] {
      std::copy(values.begin(), values.end(), s.params.value(id));
      return loss_of(s, mode);
    };
    test::expect_gradient_matches(values, analytic, loss, info.name.c_str());
    std::copy(values.begin(), values.end(), s.params.value(id));
  }
}

TEST(LstmGradient, OneLayer) { check_all_gradients(config(4, 5, 1, false), Mode::Train); }
TEST(LstmGradient, TwoLayers) { check_all_gradients(config(3, 4, 2, false), Mode::Train); }
TEST(LstmGradient, TwoLayersWithDropout) { check_all_gradients(config(4, 5, 2, false, 0.4f), Mode::Train); }
TEST(LstmGradient, BidirectionalOneLayer) { check_all_gradients(config(5, 4, 1, true), Mode::Train); }
TEST(LstmGradient, BidirectionalTwoLayersWithDropout) {
  check_all_gradients(config(3, 6, 2, true, 0.3f), Mode::Train);
}
TEST(LstmGradient, EvalModeIgnoresDropout) { check_all_gradients(config(4, 4, 3, false, 0.5f), Mode::Eval); }

// ---- an independent reference: plain loops per conversation and time step, in double ----

double sigmoid_d(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// The documented dropout mask of layer k's output element e (see lstm.h).
float documented_mask(const DropoutKey& key, uint64_t slot, int k, int64_t e, float p) {
  const uint64_t stream =
      rng_key(key.seed, key.step * kDropoutStreamsPerStep + slot + static_cast<uint64_t>(k));
  return counter_uniform(stream, static_cast<uint64_t>(e)) < p ? 0.0f : 1.0f / (1.0f - p);
}

// Packed [rows x h*dirs] output of the layer computed conversation by conversation;
// parameters are looked up by their PyTorch names. With `train`, the masks of
// documented_mask are applied between layers.
std::vector<double> naive_lstm(const Fixture& s, bool train) {
  const LstmConfig& c = s.cfg;
  const int H = c.hidden, dirs = c.bidirectional ? 2 : 1, hd = H * dirs;
  const PackedLayout& lay = s.layout;
  using Seq = std::vector<std::vector<double>>;  // [t][feature]
  std::vector<Seq> in(static_cast<size_t>(lay.convs()));
  for (int b = 0; b < lay.convs(); ++b)
    for (int t = 0; t < lay.lengths[static_cast<size_t>(b)]; ++t) {
      const float* row = s.x.data() + lay.row(b, t) * c.input;
      in[static_cast<size_t>(b)].emplace_back(row, row + c.input);
    }
  std::vector<Seq> out;
  for (int k = 0; k < c.layers; ++k) {
    const int in_dim = k == 0 ? c.input : hd;
    out.assign(in.size(), Seq());
    for (int b = 0; b < lay.convs(); ++b)
      out[static_cast<size_t>(b)].assign(static_cast<size_t>(lay.lengths[static_cast<size_t>(b)]),
                                         std::vector<double>(static_cast<size_t>(hd)));
    for (int d = 0; d < dirs; ++d) {
      const std::string sfx = "_l" + std::to_string(k) + (d == 1 ? "_reverse" : "");
      auto tensor = [&](const std::string& name) {
        const int id = s.params.find("lstm." + name + sfx);
        EXPECT_GE(id, 0) << name << sfx;
        return s.params.value(id);
      };
      const float *w_ih = tensor("weight_ih"), *w_hh = tensor("weight_hh"), *b_ih = tensor("bias_ih"),
                  *b_hh = tensor("bias_hh");
      for (int b = 0; b < lay.convs(); ++b) {
        const int len = lay.lengths[static_cast<size_t>(b)];
        std::vector<double> h(static_cast<size_t>(H), 0.0), cell(static_cast<size_t>(H), 0.0),
            a(4 * static_cast<size_t>(H));
        for (int step = 0; step < len; ++step) {
          const int t = d == 0 ? step : len - 1 - step;
          const std::vector<double>& xt = in[static_cast<size_t>(b)][static_cast<size_t>(t)];
          for (int q = 0; q < 4 * H; ++q) {
            double v = static_cast<double>(b_ih[q]) + b_hh[q];
            for (int j = 0; j < in_dim; ++j)
              v += static_cast<double>(w_ih[q * in_dim + j]) * xt[static_cast<size_t>(j)];
            for (int j = 0; j < H; ++j) v += static_cast<double>(w_hh[q * H + j]) * h[static_cast<size_t>(j)];
            a[static_cast<size_t>(q)] = v;
          }
          for (int j = 0; j < H; ++j) {
            const double i = sigmoid_d(a[static_cast<size_t>(j)]),
                         f = sigmoid_d(a[static_cast<size_t>(H + j)]);
            const double g = std::tanh(a[static_cast<size_t>(2 * H + j)]),
                         o = sigmoid_d(a[static_cast<size_t>(3 * H + j)]);
            cell[static_cast<size_t>(j)] = f * cell[static_cast<size_t>(j)] + i * g;
            h[static_cast<size_t>(j)] = o * std::tanh(cell[static_cast<size_t>(j)]);
          }
          for (int j = 0; j < H; ++j)
            out[static_cast<size_t>(b)][static_cast<size_t>(t)][static_cast<size_t>(d * H + j)] =
                h[static_cast<size_t>(j)];
        }
      }
    }
    in = out;
    if (train && c.dropout > 0.0f && k < c.layers - 1)
      for (int b = 0; b < lay.convs(); ++b)
        for (int t = 0; t < lay.lengths[static_cast<size_t>(b)]; ++t)
          for (int j = 0; j < hd; ++j)
            in[static_cast<size_t>(b)][static_cast<size_t>(t)][static_cast<size_t>(j)] *=
                documented_mask(kKey, kSlot, k, lay.row(b, t) * hd + j, c.dropout);
  }
  std::vector<double> packed(static_cast<size_t>(lay.rows() * hd));
  for (int b = 0; b < lay.convs(); ++b)
    for (int t = 0; t < lay.lengths[static_cast<size_t>(b)]; ++t)
      for (int j = 0; j < hd; ++j)
        packed[static_cast<size_t>(lay.row(b, t) * hd + j)] =
            out[static_cast<size_t>(b)][static_cast<size_t>(t)][static_cast<size_t>(j)];
  return packed;
}

void expect_matches_naive(const LstmConfig& cfg, const std::vector<int>& lengths, Mode mode) {
  Fixture s = make_fixture(cfg, lengths, 7);
  Tensor y;
  LstmContext ctx;
  s.lstm.forward(s.params, s.layout, s.x.data(), y, mode, kKey, kSlot, ctx);
  const std::vector<double> ref = naive_lstm(s, mode == Mode::Train);
  ASSERT_EQ(static_cast<size_t>(y.size()), ref.size());
  int failures = 0;
  for (size_t i = 0; i < ref.size() && failures < 5; ++i) {
    // float32 state through <= 2 layers and a few dozen steps: errors of a few 1e-7.
    if (!(std::fabs(y.data()[i] - ref[i]) <= 1e-5 + 1e-5 * std::fabs(ref[i]))) {
      ++failures;
      ADD_FAILURE() << "y[" << i / y.cols() << "][" << i % y.cols() << "] = " << y.data()[i] << ", naive "
                    << ref[i];
    }
  }
}

const std::vector<int> kRagged = {6, 4, 4, 2, 1};

TEST(LstmNaive, OneLayer) { expect_matches_naive(config(5, 6, 1, false), kRagged, Mode::Eval); }
TEST(LstmNaive, TwoLayers) { expect_matches_naive(config(5, 6, 2, false), kRagged, Mode::Eval); }
TEST(LstmNaive, Bidirectional) { expect_matches_naive(config(3, 5, 1, true), kRagged, Mode::Eval); }
TEST(LstmNaive, BidirectionalTwoLayers) { expect_matches_naive(config(3, 5, 2, true), kRagged, Mode::Eval); }
TEST(LstmNaive, DropoutMasksFollowTheDocumentedStreams) {
  expect_matches_naive(config(4, 5, 3, true, 0.5f), kRagged, Mode::Train);
}
TEST(LstmNaive, SingleConversationAndEqualLengths) {
  expect_matches_naive(config(4, 5, 2, true), {7}, Mode::Eval);
  expect_matches_naive(config(4, 5, 2, true), {3, 3, 3}, Mode::Eval);
}
// Widths that are not a multiple of the vector length, and a batch wide enough for the
// cell's multi-threaded path (rows x h >= 2^15 per step).
TEST(LstmNaive, WideBatch) {
  std::vector<int> lengths(70, 3);
  for (size_t b = 0; b < 20; ++b) lengths[b] = 5;
  expect_matches_naive(config(9, 515, 1, true), lengths, Mode::Eval);
}

// ---- invariants ----

TEST(Lstm, ParametersHavePyTorchNamesShapesAndOrder) {
  ParamStore params;
  const Lstm lstm(params, "lstm", config(100, 300, 2, true));
  const std::vector<std::string> expected = {
      "lstm.weight_ih_l0",         "lstm.weight_hh_l0",         "lstm.bias_ih_l0",
      "lstm.bias_hh_l0",           "lstm.weight_ih_l0_reverse", "lstm.weight_hh_l0_reverse",
      "lstm.bias_ih_l0_reverse",   "lstm.bias_hh_l0_reverse",   "lstm.weight_ih_l1",
      "lstm.weight_hh_l1",         "lstm.bias_ih_l1",           "lstm.bias_hh_l1",
      "lstm.weight_ih_l1_reverse", "lstm.weight_hh_l1_reverse", "lstm.bias_ih_l1_reverse",
      "lstm.bias_hh_l1_reverse"};
  ASSERT_EQ(params.count(), 16);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(params.info(i).name, expected[static_cast<size_t>(i)]);
  EXPECT_EQ(params.info(0).shape, (std::vector<int64_t>{1200, 100}));
  EXPECT_EQ(params.info(1).shape, (std::vector<int64_t>{1200, 300}));
  EXPECT_EQ(params.info(2).shape, (std::vector<int64_t>{1200}));
  EXPECT_EQ(params.info(8).shape, (std::vector<int64_t>{1200, 600}));  // layer 1 reads both directions
  EXPECT_EQ(lstm.output_dim(), 600);

  // SPEC's clstm_speech count (1,265,804) minus its dense layers (300x200 + 200, 200x4 + 4).
  ParamStore speech;
  Lstm(speech, "lstm.", config(100, 300, 2, false));
  EXPECT_EQ(speech.num_parameters(), 1265804 - (300 * 200 + 200) - (200 * 4 + 4));
  EXPECT_EQ(speech.info(0).name, "lstm.weight_ih_l0");  // "lstm" and "lstm." name alike
}

TEST(Lstm, InitIsPyTorchUniformAndSeeded) {
  ParamStore a, b;
  const Lstm la(a, "", config(7, 16, 2, false)), lb(b, "", config(7, 16, 2, false));
  EXPECT_EQ(a.info(0).name, "weight_ih_l0");
  Rng ra(5), rb(5);
  la.init(a, ra);
  lb.init(b, rb);
  EXPECT_EQ(a.values(), b.values());
  double sum = 0.0, max_abs = 0.0;
  int64_t n = 0;
  for (const ParamInfo& p : a.infos())
    for (size_t i = 0; i < p.size; ++i) {
      const double v = a.values()[p.offset + i];
      sum += v;
      max_abs = std::max(max_abs, std::fabs(v));
      ++n;
    }
  EXPECT_LE(max_abs, 0.25);  // 1/sqrt(16)
  EXPECT_GT(max_abs, 0.24);
  EXPECT_NEAR(sum / static_cast<double>(n), 0.0, 0.01);
}

TEST(Lstm, PaddingIndependence) {
  // Conversation c (length 4) alone, and at position 1 of a batch {7, 4, 4, 2}.
  const LstmConfig cfg = config(4, 6, 2, true);
  Fixture batch = make_fixture(cfg, {7, 4, 4, 2}, 3);
  Fixture alone = make_fixture(cfg, {4}, 3);
  ASSERT_EQ(alone.params.values(), batch.params.values());
  const int hd = batch.lstm.output_dim();
  for (int t = 0; t < 4; ++t)
    std::copy_n(batch.x.data() + batch.layout.row(1, t) * cfg.input, cfg.input,
                alone.x.data() + t * cfg.input);
  // dy nonzero only on the conversation's rows, so its dx must not depend on the others.
  std::vector<float> dy_batch(batch.w.size(), 0.0f);
  for (int t = 0; t < 4; ++t)
    std::copy_n(alone.w.data() + t * hd, hd, dy_batch.data() + batch.layout.row(1, t) * hd);

  Tensor y_batch, y_alone;
  LstmContext c1, c2;
  batch.lstm.forward(batch.params, batch.layout, batch.x.data(), y_batch, Mode::Eval, kKey, 0, c1);
  alone.lstm.forward(alone.params, alone.layout, alone.x.data(), y_alone, Mode::Eval, kKey, 0, c2);
  std::vector<float> dx_batch(batch.x.size()), dx_alone(alone.x.size());
  batch.lstm.backward(batch.params, batch.layout, batch.x.data(), dy_batch.data(), dx_batch.data(), c1);
  alone.lstm.backward(alone.params, alone.layout, alone.x.data(), alone.w.data(), dx_alone.data(), c2);
  for (int t = 0; t < 4; ++t) {
    for (int j = 0; j < hd; ++j)
      EXPECT_NEAR(y_batch.at(batch.layout.row(1, t), j), y_alone.at(t, j), 1e-6) << "t " << t << " j " << j;
    for (int j = 0; j < cfg.input; ++j)
      EXPECT_NEAR(dx_batch[static_cast<size_t>(batch.layout.row(1, t) * cfg.input + j)],
                  dx_alone[static_cast<size_t>(t * cfg.input + j)], 1e-6)
          << "t " << t << " j " << j;
  }
  // The other conversations get exactly no gradient from this one's loss, and the
  // weight gradients are this conversation's alone.
  for (int b : {0, 2, 3})
    for (int t = 0; t < batch.layout.lengths[static_cast<size_t>(b)]; ++t)
      for (int j = 0; j < cfg.input; ++j)
        ASSERT_EQ(dx_batch[static_cast<size_t>(batch.layout.row(b, t) * cfg.input + j)], 0.0f)
            << b << " " << t;
  for (int id = 0; id < batch.params.count(); ++id)
    for (size_t i = 0; i < batch.params.info(id).size; ++i)
      ASSERT_NEAR(batch.params.grad(id)[i], alone.params.grad(id)[i], 1e-5) << batch.params.info(id).name;
}

TEST(Lstm, BackwardAccumulatesParameterGradientsAndOverwritesDx) {
  Fixture s = make_fixture(config(4, 5, 2, true, 0.3f), {5, 3, 3, 1}, 11);
  Tensor y;
  LstmContext ctx;
  s.lstm.forward(s.params, s.layout, s.x.data(), y, Mode::Train, kKey, kSlot, ctx);
  s.params.zero_grads();
  std::vector<float> dx1(s.x.size(), 0.0f), dx2(s.x.size(), std::numeric_limits<float>::quiet_NaN());
  s.lstm.backward(s.params, s.layout, s.x.data(), s.w.data(), dx1.data(), ctx);
  const std::vector<float> once = s.params.grads();
  s.lstm.backward(s.params, s.layout, s.x.data(), s.w.data(), dx2.data(), ctx);
  EXPECT_EQ(dx1, dx2);  // overwritten (the NaNs are gone), and ctx survived the first backward
  double max_abs = 0.0;
  for (size_t i = 0; i < once.size(); ++i) {
    EXPECT_NEAR(s.params.grads()[i], 2.0f * once[i], 1e-6 + 1e-5 * std::fabs(once[i])) << i;
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(once[i])));
  }
  EXPECT_GT(max_abs, 1e-3);

  // Without dx the parameter gradients are the same.
  s.params.zero_grads();
  s.lstm.backward(s.params, s.layout, s.x.data(), s.w.data(), nullptr, ctx);
  for (size_t i = 0; i < once.size(); ++i) EXPECT_EQ(s.params.grads()[i], once[i]) << i;
}

TEST(Lstm, FrozenParametersGetNoGradient) {
  Fixture s = make_fixture(config(4, 5, 2, false), {4, 2}, 12);
  s.params.set_trainable("lstm.weight_ih_l1", false);
  s.params.set_trainable("lstm.bias_hh_l0", false);
  Tensor y;
  LstmContext ctx;
  s.lstm.forward(s.params, s.layout, s.x.data(), y, Mode::Train, kKey, kSlot, ctx);
  s.params.zero_grads();
  s.lstm.backward(s.params, s.layout, s.x.data(), s.w.data(), nullptr, ctx);
  for (const ParamInfo& p : s.params.infos()) {
    double norm = 0.0;
    for (size_t i = 0; i < p.size; ++i) norm += std::fabs(s.params.grads()[p.offset + i]);
    if (p.trainable)
      EXPECT_GT(norm, 0.0) << p.name;
    else
      EXPECT_EQ(norm, 0.0) << p.name;
  }
}

TEST(Lstm, EvalModeHasNoDropoutAndIgnoresTheKey) {
  Fixture s = make_fixture(config(4, 5, 3, false, 0.5f), {5, 3, 1}, 13);
  Tensor a, b, train_a, train_b;
  LstmContext ctx;
  s.lstm.forward(s.params, s.layout, s.x.data(), a, Mode::Eval, DropoutKey{1, 1}, 0, ctx);
  s.lstm.forward(s.params, s.layout, s.x.data(), b, Mode::Eval, DropoutKey{2, 9}, 5, ctx);
  EXPECT_EQ(std::vector<float>(a.data(), a.data() + a.size()),
            std::vector<float>(b.data(), b.data() + b.size()));

  // The same weights without dropout in Train mode compute exactly the Eval function.
  Fixture nodrop = make_fixture(config(4, 5, 3, false, 0.0f), {5, 3, 1}, 13);
  nodrop.lstm.forward(nodrop.params, nodrop.layout, nodrop.x.data(), train_a, Mode::Train, DropoutKey{1, 1},
                      0, ctx);
  EXPECT_EQ(std::vector<float>(a.data(), a.data() + a.size()),
            std::vector<float>(train_a.data(), train_a.data() + train_a.size()));

  // Train mode with dropout does depend on the key.
  s.lstm.forward(s.params, s.layout, s.x.data(), train_a, Mode::Train, DropoutKey{1, 1}, 0, ctx);
  s.lstm.forward(s.params, s.layout, s.x.data(), train_b, Mode::Train, DropoutKey{1, 2}, 0, ctx);
  EXPECT_NE(std::vector<float>(train_a.data(), train_a.data() + train_a.size()),
            std::vector<float>(train_b.data(), train_b.data() + train_b.size()));
}

TEST(Lstm, DropoutMasksUseOneStreamPerLayer) {
  Fixture s = make_fixture(config(4, 8, 3, true, 0.4f), {9, 7, 7, 3}, 14);
  Tensor y;
  LstmContext ctx;
  const DropoutKey key{99, 12};
  s.lstm.forward(s.params, s.layout, s.x.data(), y, Mode::Train, key, 17, ctx);
  EXPECT_EQ(s.lstm.dropout_slots(), 2);
  const int hd = s.lstm.output_dim();
  for (int k = 0; k < 2; ++k) {
    const Tensor& m = ctx.masks[static_cast<size_t>(k)];
    ASSERT_EQ(m.rows(), s.layout.rows());
    ASSERT_EQ(m.cols(), hd);
    int64_t zeros = 0;
    for (int64_t e = 0; e < m.size(); ++e) {
      ASSERT_EQ(m.data()[e], documented_mask(key, 17, k, e, 0.4f)) << "layer " << k << " element " << e;
      zeros += m.data()[e] == 0.0f;
    }
    EXPECT_NEAR(static_cast<double>(zeros) / static_cast<double>(m.size()), 0.4, 0.1);
  }
  // Two layers, two different masks.
  EXPECT_NE(std::vector<float>(ctx.masks[0].data(), ctx.masks[0].data() + ctx.masks[0].size()),
            std::vector<float>(ctx.masks[1].data(), ctx.masks[1].data() + ctx.masks[1].size()));
}

TEST(Lstm, ExtremeInputsStayFinite) {
  // Unnormalised openSMILE features reach 1e4: every gate saturates.
  for (bool bi : {false, true}) {
    Fixture s = make_fixture(config(6, 5, 2, bi), {6, 4, 1}, 15, 1e4);
    for (size_t i = 0; i < s.x.size(); i += 3) s.x[i] = i % 2 ? 1e4f : -1e4f;
    Tensor y;
    LstmContext ctx;
    s.lstm.forward(s.params, s.layout, s.x.data(), y, Mode::Train, kKey, kSlot, ctx);
    for (int64_t i = 0; i < y.size(); ++i) {
      ASSERT_TRUE(std::isfinite(y.data()[i])) << i;
      ASSERT_LE(std::fabs(y.data()[i]), 1.0f) << i;
    }
    s.params.zero_grads();
    std::vector<float> dx(s.x.size());
    s.lstm.backward(s.params, s.layout, s.x.data(), s.w.data(), dx.data(), ctx);
    for (float v : dx) ASSERT_TRUE(std::isfinite(v));
    for (float v : s.params.grads()) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST(Lstm, ActivationsAreAccurateAndSafe) {
  std::vector<float> x;
  for (double v = -30.0; v <= 30.0; v += 0.0137) x.push_back(static_cast<float>(v));
  for (float v : {0.0f, 1e-30f, -1e-30f, 1e-6f, -3e-5f, 0.6249f, 0.625f, -0.6251f, 79.9f, 80.5f, -88.0f,
                  89.0f, 1e4f, -1e4f, 1e30f, -1e30f, std::numeric_limits<float>::infinity(),
                  -std::numeric_limits<float>::infinity()})
    x.push_back(v);
  std::vector<float> sig(x.size()), th(x.size());
  detail::lstm_activations(x.data(), static_cast<int>(x.size()), sig.data(), th.data());
  for (size_t i = 0; i < x.size(); ++i) {
    const double s_ref = 1.0 / (1.0 + std::exp(-static_cast<double>(x[i])));
    const double t_ref = std::tanh(static_cast<double>(x[i]));
    ASSERT_TRUE(std::isfinite(sig[i]) && std::isfinite(th[i])) << x[i];
    // A few float ulps relative, or an absolute 1e-30 where sigmoid underflows (its
    // exponent is clamped at 80 to stay away from denormals).
    EXPECT_LE(std::fabs(sig[i] - s_ref), 4 * 6e-8 * s_ref + 1e-30) << "sigmoid(" << x[i] << ")";
    EXPECT_LE(std::fabs(th[i] - t_ref), 4 * 6e-8 * std::fabs(t_ref) + 1e-45) << "tanh(" << x[i] << ")";
    EXPECT_GE(sig[i], 0.0f);
    EXPECT_LE(sig[i], 1.0f);
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  float s, t;
  detail::lstm_activations(&nan, 1, &s, &t);
  EXPECT_TRUE(std::isnan(s));
  EXPECT_TRUE(std::isnan(t));
}

TEST(Lstm, DeterministicAndBufferReuseSafe) {
  const LstmConfig cfg = config(5, 7, 2, true, 0.3f);
  Fixture a = make_fixture(cfg, {6, 5, 2}, 16);
  Fixture big = make_fixture(cfg, {9, 9, 8, 8, 4}, 17);
  auto run = [&](Fixture& s, LstmContext& ctx, Tensor& y, std::vector<float>& dx) {
    s.lstm.forward(s.params, s.layout, s.x.data(), y, Mode::Train, kKey, kSlot, ctx);
    s.params.zero_grads();
    dx.assign(s.x.size(), 0.0f);
    s.lstm.backward(s.params, s.layout, s.x.data(), s.w.data(), dx.data(), ctx);
  };
  LstmContext fresh, reused;
  Tensor y1, y2, y_big;
  std::vector<float> dx1, dx2, dx_big;
  run(a, fresh, y1, dx1);
  const std::vector<float> g1 = a.params.grads();
  // Same context through a bigger batch and back: stale buffer contents must not leak.
  run(big, reused, y_big, dx_big);
  run(a, reused, y2, dx2);
  EXPECT_EQ(std::vector<float>(y1.data(), y1.data() + y1.size()),
            std::vector<float>(y2.data(), y2.data() + y2.size()));
  EXPECT_EQ(dx1, dx2);
  EXPECT_EQ(g1, a.params.grads());
}

TEST(Lstm, RejectsBadConfigAndMismatchedCalls) {
  ParamStore p;
  EXPECT_THROW(Lstm(p, "a", config(0, 4, 1, false)), Error);
  EXPECT_THROW(Lstm(p, "b", config(3, 0, 1, false)), Error);
  EXPECT_THROW(Lstm(p, "c", config(3, 4, 0, false)), Error);
  EXPECT_THROW(Lstm(p, "d", config(3, 4, 2, false, 1.0f)), Error);
  EXPECT_THROW(Lstm(p, "e", config(3, 4, 2, false, -0.1f)), Error);
  try {
    Lstm(p, "f", config(3, 4, 2, false, 1.5f));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lstm 'f.'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("dropout"), std::string::npos) << e.what();
  }

  Fixture s = make_fixture(config(3, 4, 2, false, 0.2f), {3, 2}, 18);
  Tensor y;
  LstmContext ctx;
  std::vector<float> dx(s.x.size());
  // backward before any forward, or on another batch
  EXPECT_THROW(s.lstm.backward(s.params, s.layout, s.x.data(), s.w.data(), dx.data(), ctx), Error);
  s.lstm.forward(s.params, s.layout, s.x.data(), y, Mode::Train, kKey, kSlot, ctx);
  const PackedLayout other = PackedLayout::from_lengths({3, 3});
  EXPECT_THROW(s.lstm.backward(s.params, other, s.x.data(), s.w.data(), dx.data(), ctx), Error);
  const PackedLayout same_rows = PackedLayout::from_lengths({3, 1, 1});  // 5 rows, 3 steps, other sizes
  ASSERT_EQ(same_rows.rows(), s.layout.rows());
  EXPECT_THROW(s.lstm.backward(s.params, same_rows, s.x.data(), s.w.data(), dx.data(), ctx), Error);
  EXPECT_THROW(s.lstm.backward(s.params, s.layout, s.x.data(), s.w.data(), s.x.data(), ctx),
               Error);  // dx == x
  // a malformed layout, a parameter store without the layer, a default-constructed layer
  PackedLayout bad = s.layout;
  bad.step_offsets[1] = 1;
  EXPECT_THROW(s.lstm.forward(s.params, bad, s.x.data(), y, Mode::Eval, kKey, 0, ctx), Error);
  ParamStore empty;
  EXPECT_THROW(s.lstm.forward(empty, s.layout, s.x.data(), y, Mode::Eval, kKey, 0, ctx), Error);
  EXPECT_THROW(Lstm().forward(s.params, s.layout, s.x.data(), y, Mode::Eval, kKey, 0, ctx), Error);
  // dropout streams beyond the per-step budget
  EXPECT_THROW(
      s.lstm.forward(s.params, s.layout, s.x.data(), y, Mode::Train, kKey, kDropoutStreamsPerStep, ctx),
      Error);
  // an empty batch is fine
  const PackedLayout none = PackedLayout::from_lengths({});
  s.lstm.forward(s.params, none, nullptr, y, Mode::Train, kKey, kSlot, ctx);
  EXPECT_EQ(y.rows(), 0);
  s.lstm.backward(s.params, none, nullptr, nullptr, nullptr, ctx);
}

// ---- PyTorch parity (tests/torch/lstm_reference.py, float64 nn.LSTM on a PackedSequence) ----

struct TorchCase {
  LstmConfig cfg;
  std::vector<int> lengths;
};

// Relative agreement per element, with the tensor's RMS as the floor of the scale so
// that entries near zero are judged against the tensor's magnitude (an all-zero
// reference, like dW_hh of one-step conversations, must be matched exactly).
void expect_close(const float* got, const std::vector<double>& want, double rtol, const std::string& what) {
  double ss = 0.0;
  for (double v : want) ss += v * v;
  const double rms = want.empty() ? 0.0 : std::sqrt(ss / static_cast<double>(want.size()));
  int failures = 0;
  double worst = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]) / (std::fabs(want[i]) + rms + 1e-30);
    worst = std::max(worst, err);
    if (err > rtol && ++failures <= 5)
      ADD_FAILURE() << what << "[" << i << "]: mman " << got[i] << ", torch " << want[i];
  }
  ::testing::Test::RecordProperty("worst_" + what, std::to_string(worst));
}

TEST(LstmTorch, MatchesNnLstmOnPackedSequences) {
  const std::vector<TorchCase> cases = {
      {config(5, 6, 2, false), {7, 5, 5, 2, 1}},
      {config(5, 6, 2, true), {7, 5, 5, 2, 1}},
      {config(3, 4, 1, true), {1}},
      {config(100, 300, 1, false), {40, 33, 20, 12, 12}},
      {config(64, 96, 2, true), {30, 25, 25, 9, 3}},
  };
  test::TempDir dir;
  nlohmann::json meta;
  std::vector<Fixture> setups;
  for (size_t c = 0; c < cases.size(); ++c) {
    setups.push_back(make_fixture(cases[c].cfg, cases[c].lengths, 100 + c));
    Fixture& s = setups.back();
    const int hd = s.lstm.output_dim();
    nlohmann::json j;
    j["input"] = s.cfg.input;
    j["hidden"] = s.cfg.hidden;
    j["layers"] = s.cfg.layers;
    j["bidirectional"] = s.cfg.bidirectional;
    j["lengths"] = s.layout.lengths;
    nlohmann::json names = nlohmann::json::array();
    for (const ParamInfo& p : s.params.infos()) names.push_back(p.name.substr(5));  // drop "lstm."
    j["params"] = names;
    meta["cases"].push_back(j);
    // Parameters in registration order, then x and w conversation by conversation.
    std::ofstream out(dir.file("case" + std::to_string(c) + ".in.bin"), std::ios::binary);
    for (const ParamInfo& p : s.params.infos())
      out.write(reinterpret_cast<const char*>(s.params.value(s.params.find(p.name))),
                static_cast<std::streamsize>(p.size * sizeof(float)));
    for (int b = 0; b < s.layout.convs(); ++b)
      for (int t = 0; t < s.layout.lengths[static_cast<size_t>(b)]; ++t)
        out.write(reinterpret_cast<const char*>(s.x.data() + s.layout.row(b, t) * s.cfg.input),
                  static_cast<std::streamsize>(s.cfg.input * sizeof(float)));
    for (int b = 0; b < s.layout.convs(); ++b)
      for (int t = 0; t < s.layout.lengths[static_cast<size_t>(b)]; ++t)
        out.write(reinterpret_cast<const char*>(s.w.data() + s.layout.row(b, t) * hd),
                  static_cast<std::streamsize>(hd * sizeof(float)));
    ASSERT_TRUE(out.good());
  }
  std::ofstream(dir.file("meta.json")) << meta.dump();

  const std::string script = std::string(MMAN_TEST_SOURCE_DIR) + "/torch/lstm_reference.py";
  const test::CommandResult r = test::run_command(test::python_binary() + " " + script + " " + dir.path());
  if (r.exit_code == 3) GTEST_SKIP() << "PyTorch unavailable (torch could not be imported): " << r.output;
  ASSERT_EQ(r.exit_code, 0) << r.output;

  for (size_t c = 0; c < cases.size(); ++c) {
    SCOPED_TRACE("case " + std::to_string(c));
    Fixture& s = setups[c];
    const int hd = s.lstm.output_dim();
    const int64_t rows = s.layout.rows();
    std::ifstream in(dir.file("case" + std::to_string(c) + ".out.bin"), std::ios::binary);
    auto read = [&](size_t n) {
      std::vector<double> v(n);
      in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(double)));
      EXPECT_TRUE(in.good()) << "short output file";
      return v;
    };
    // Torch's outputs come conversation by conversation; put them in packed order.
    auto packed = [&](const std::vector<double>& conv_major, int width) {
      std::vector<double> p(conv_major.size());
      size_t i = 0;
      for (int b = 0; b < s.layout.convs(); ++b)
        for (int t = 0; t < s.layout.lengths[static_cast<size_t>(b)]; ++t, i += static_cast<size_t>(width))
          std::copy_n(conv_major.begin() + static_cast<int64_t>(i), width,
                      p.begin() + s.layout.row(b, t) * width);
      return p;
    };
    const std::vector<double> y_ref = packed(read(static_cast<size_t>(rows * hd)), hd);
    const std::vector<double> dx_ref = packed(read(static_cast<size_t>(rows * s.cfg.input)), s.cfg.input);

    Tensor y;
    LstmContext ctx;
    s.lstm.forward(s.params, s.layout, s.x.data(), y, Mode::Train, kKey, kSlot, ctx);
    s.params.zero_grads();
    std::vector<float> dx(s.x.size());
    s.lstm.backward(s.params, s.layout, s.x.data(), s.w.data(), dx.data(), ctx);
    expect_close(y.data(), y_ref, 1e-4, "y");
    expect_close(dx.data(), dx_ref, 1e-3, "dx");
    for (const ParamInfo& p : s.params.infos())
      expect_close(s.params.grad(s.params.find(p.name)), read(p.size), 1e-3, "d" + p.name);
    in.peek();
    EXPECT_TRUE(in.eof()) << "trailing data in torch output";
  }
}

}  // namespace
}  // namespace mman
