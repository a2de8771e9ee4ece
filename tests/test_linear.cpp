// Linear layer: forward against a naive reference, finite-difference gradients, accumulation, init.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "mman/error.h"
#include "mman/layers/linear.h"
#include "support/gradcheck.h"

namespace mman {
namespace {

std::vector<float> random_vector(Rng& rng, size_t n, double lo = -1.0, double hi = 1.0) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.uniform(lo, hi));
  return v;
}

Tensor random_tensor(Rng& rng, int64_t rows, int64_t cols) {
  Tensor t(rows, cols);
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  return t;
}

// Weighted sum of all outputs with fixed weights r: dL/dy = r.
double weighted_sum(const Tensor& y, const std::vector<float>& r) {
  double s = 0.0;
  for (int64_t i = 0; i < y.size(); ++i) s += static_cast<double>(y.data()[i]) * r[static_cast<size_t>(i)];
  return s;
}

TEST(Linear, RegistersPytorchNamesAndShapes) {
  ParamStore ps;
  Linear l(ps, "fc.", 7, 3);
  ASSERT_EQ(ps.count(), 2);
  EXPECT_EQ(ps.info(l.weight_id()).name, "fc.weight");
  EXPECT_EQ(ps.info(l.weight_id()).shape, (std::vector<int64_t>{3, 7}));
  EXPECT_EQ(ps.info(l.bias_id()).name, "fc.bias");
  EXPECT_EQ(ps.info(l.bias_id()).shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(ps.num_parameters(), 7 * 3 + 3);
  EXPECT_THROW(Linear(ps, "bad.", 0, 3), Error);
}

TEST(Linear, InitIsUniformWithinOneOverSqrtFanIn) {
  ParamStore ps;
  Linear l(ps, "", 64, 100);
  Rng rng(3);
  l.init(ps, rng);
  const double bound = 1.0 / 8.0;
  double lo = 1.0, hi = -1.0, sum = 0.0;
  const float* w = ps.value(l.weight_id());
  for (int i = 0; i < 6400; ++i) {
    lo = std::min(lo, static_cast<double>(w[i]));
    hi = std::max(hi, static_cast<double>(w[i]));
    sum += w[i];
  }
  EXPECT_GE(lo, -bound);
  EXPECT_LE(hi, bound);
  EXPECT_LT(lo, -0.95 * bound);  // the whole interval is used
  EXPECT_GT(hi, 0.95 * bound);
  // mean of 6400 uniforms: sd = bound / sqrt(3 * 6400); 5 sd
  EXPECT_LT(std::fabs(sum / 6400.0), 5.0 * bound / std::sqrt(3.0 * 6400.0));
  const float* b = ps.value(l.bias_id());
  bool nonzero = false;
  for (int i = 0; i < 100; ++i) {
    EXPECT_LE(std::fabs(b[i]), bound);
    nonzero = nonzero || b[i] != 0.0f;
  }
  EXPECT_TRUE(nonzero);
}

TEST(Linear, ForwardMatchesNaiveProduct) {
  ParamStore ps;
  Linear l(ps, "", 5, 4);
  Rng rng(1);
  l.init(ps, rng);
  const Tensor x = random_tensor(rng, 6, 5);
  Tensor y;
  l.forward(ps, x, y);
  ASSERT_EQ(y.rows(), 6);
  ASSERT_EQ(y.cols(), 4);
  const float* w = ps.value(l.weight_id());
  const float* b = ps.value(l.bias_id());
  for (int r = 0; r < 6; ++r)
    for (int j = 0; j < 4; ++j) {
      double ref = b[j];
      for (int i = 0; i < 5; ++i) ref += static_cast<double>(x.at(r, i)) * w[j * 5 + i];
      EXPECT_NEAR(y.at(r, j), ref, 1e-5);
    }
  Tensor wrong(6, 3);
  EXPECT_THROW(l.forward(ps, wrong, y), Error);
}

TEST(Linear, GradientsMatchFiniteDifferences) {
  ParamStore ps;
  Linear l(ps, "", 5, 3);
  Rng rng(2);
  l.init(ps, rng);
  Tensor x = random_tensor(rng, 7, 5);
  const std::vector<float> r = random_vector(rng, 7 * 3);
  Tensor y, dx;
  auto loss = [&]() {
    l.forward(ps, x, y);
    return weighted_sum(y, r);
  };
  loss();
  Tensor dy(7, 3);
  std::copy(r.begin(), r.end(), dy.data());
  ps.zero_grads();
  l.backward(ps, x, dy, &dx);

  std::vector<float> xs(x.data(), x.data() + x.size());
  std::vector<float> dxs(dx.data(), dx.data() + dx.size());
  auto loss_x = [&]() {
    std::copy(xs.begin(), xs.end(), x.data());
    return loss();
  };
  test::expect_gradient_matches(xs, dxs, loss_x, "dx");
  std::copy(xs.begin(), xs.end(), x.data());
  // Parameters are perturbed in place through the arena.
  std::vector<float>& values = ps.values();
  const std::vector<float> grads = ps.grads();
  test::expect_gradient_matches(values, grads, loss, "dparams");
}

TEST(Linear, BackwardAccumulatesParamsAndOverwritesInput) {
  ParamStore ps;
  Linear l(ps, "", 4, 3);
  Rng rng(4);
  l.init(ps, rng);
  const Tensor x = random_tensor(rng, 5, 4);
  const Tensor dy = random_tensor(rng, 5, 3);
  Tensor dx;
  ps.zero_grads();
  l.backward(ps, x, dy, &dx);
  const std::vector<float> once = ps.grads();
  const std::vector<float> dx_once(dx.data(), dx.data() + dx.size());
  l.backward(ps, x, dy, &dx);
  for (size_t i = 0; i < once.size(); ++i) EXPECT_FLOAT_EQ(ps.grads()[i], 2.0f * once[i]);
  for (size_t i = 0; i < dx_once.size(); ++i) EXPECT_FLOAT_EQ(dx.data()[i], dx_once[i]);
  // With a null dx only parameter gradients are produced.
  l.backward(ps, x, dy, nullptr);
  for (size_t i = 0; i < once.size(); ++i) EXPECT_NEAR(ps.grads()[i], 3.0f * once[i], 1e-5f);
}

TEST(Linear, ColumnBlocksMatchContiguousCalls) {
  ParamStore ps;
  Linear l(ps, "", 3, 2);
  Rng rng(5);
  l.init(ps, rng);
  // x is columns 2..4 of a [4 x 6] matrix; y goes to columns 1..2 of a [4 x 5] one.
  const Tensor wide = random_tensor(rng, 4, 6);
  Tensor x(4, 3);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 3; ++c) x.at(r, c) = wide.at(r, 2 + c);
  Tensor y_ref, y_wide(4, 5);
  l.forward(ps, x, y_ref);
  l.forward(ps, wide.data() + 2, 6, 4, y_wide.data() + 1, 5);
  for (int r = 0; r < 4; ++r)
    for (int j = 0; j < 2; ++j) EXPECT_FLOAT_EQ(y_wide.at(r, 1 + j), y_ref.at(r, j));
  EXPECT_EQ(y_wide.at(0, 0), 0.0f);  // columns outside the block untouched
  EXPECT_EQ(y_wide.at(3, 4), 0.0f);

  const Tensor dy = random_tensor(rng, 4, 2);
  Tensor dx_ref;
  ps.zero_grads();
  l.backward(ps, x, dy, &dx_ref);
  const std::vector<float> g_ref = ps.grads();
  Tensor dx_wide(4, 6);
  for (int64_t i = 0; i < dx_wide.size(); ++i) dx_wide.data()[i] = 1.0f;
  ps.zero_grads();
  l.backward(ps, wide.data() + 2, 6, 4, dy.data(), 2, dx_wide.data() + 2, 6, /*accumulate_dx=*/true);
  for (size_t i = 0; i < g_ref.size(); ++i) EXPECT_NEAR(ps.grads()[i], g_ref[i], 1e-6f);
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(dx_wide.at(r, 0), 1.0f);
    for (int c = 0; c < 3; ++c) EXPECT_NEAR(dx_wide.at(r, 2 + c), 1.0f + dx_ref.at(r, c), 1e-6f);
  }
}

TEST(Linear, ZeroRowsIsANoOp) {
  ParamStore ps;
  Linear l(ps, "", 3, 2);
  Tensor x(0, 3), y, dx;
  l.forward(ps, x, y);
  EXPECT_EQ(y.rows(), 0);
  Tensor dy(0, 2);
  ps.zero_grads();
  l.backward(ps, x, dy, &dx);
  for (float g : ps.grads()) EXPECT_EQ(g, 0.0f);
}

TEST(Linear, FrozenParametersGetNoGradientButInputGradFlows) {
  ParamStore ps;
  Linear l(ps, "fc.", 3, 2);
  Rng rng(6);
  l.init(ps, rng);
  const Tensor x = random_tensor(rng, 4, 3);
  const Tensor dy = random_tensor(rng, 4, 2);
  Tensor dx_ref, dx;
  ps.zero_grads();
  l.backward(ps, x, dy, &dx_ref);
  ps.zero_grads();
  ps.set_trainable("fc.", false);
  l.backward(ps, x, dy, &dx);
  for (float g : ps.grads()) EXPECT_EQ(g, 0.0f);
  for (int64_t i = 0; i < dx.size(); ++i) EXPECT_EQ(dx.data()[i], dx_ref.data()[i]);
}

}  // namespace
}  // namespace mman
