// Counter-based dropout: the documented mask, its rate, determinism, eval identity, gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "mman/error.h"
#include "mman/layers/dropout.h"
#include "support/gradcheck.h"

namespace mman {
namespace {

TEST(Dropout, MaskFollowsTheDocumentedFormula) {
  const float p = 0.3f;
  const uint64_t slot = 7;
  const DropoutKey key{12345, 42};
  Dropout d(p, slot);
  const int n = 1000;
  std::vector<float> x(n), y(n);
  for (int i = 0; i < n; ++i) x[i] = 1.0f + 0.001f * i;
  DropoutContext ctx;
  d.forward(x.data(), y.data(), n, Mode::Train, key, ctx);
  const uint64_t stream = rng_key(key.seed, key.step * kDropoutStreamsPerStep + slot);
  for (int i = 0; i < n; ++i) {
    const bool dropped = counter_uniform(stream, static_cast<uint64_t>(i)) < p;
    EXPECT_EQ(y[i], dropped ? 0.0f : x[i] * (1.0f / (1.0f - p))) << i;
  }
}

TEST(Dropout, RateIsCloseToP) {
  const int n = 200000;
  for (float p : {0.1f, 0.5f}) {
    Dropout d(p, 3);
    std::vector<float> x(n, 1.0f), y(n);
    DropoutContext ctx;
    d.forward(x.data(), y.data(), n, Mode::Train, DropoutKey{9, 1}, ctx);
    int dropped = 0;
    for (float v : y) dropped += v == 0.0f;
    const double sd = std::sqrt(p * (1.0 - p) / n);
    EXPECT_NEAR(static_cast<double>(dropped) / n, p, 5.0 * sd) << p;
  }
}

TEST(Dropout, StreamsDifferBySlotAndStepAndRepeatForTheSameKey) {
  const int n = 256;
  std::vector<float> x(n, 1.0f), a(n), b(n), c(n), e(n);
  DropoutContext ctx;
  Dropout(0.5f, 1).forward(x.data(), a.data(), n, Mode::Train, DropoutKey{5, 10}, ctx);
  Dropout(0.5f, 1).forward(x.data(), b.data(), n, Mode::Train, DropoutKey{5, 10}, ctx);
  Dropout(0.5f, 2).forward(x.data(), c.data(), n, Mode::Train, DropoutKey{5, 10}, ctx);
  Dropout(0.5f, 1).forward(x.data(), e.data(), n, Mode::Train, DropoutKey{5, 11}, ctx);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, e);
}

TEST(Dropout, EvalAndZeroProbabilityAreIdentity) {
  std::vector<float> x = {1.0f, -2.0f, 3.0f}, y(3), dx(3);
  DropoutContext ctx;
  Dropout(0.5f, 0).forward(x.data(), y.data(), 3, Mode::Eval, DropoutKey{1, 1}, ctx);
  EXPECT_EQ(y, x);
  Dropout(0.5f, 0).backward(x.data(), dx.data(), 3, ctx);
  EXPECT_EQ(dx, x);
  Dropout(0.0f, 0).forward(x.data(), y.data(), 3, Mode::Train, DropoutKey{1, 1}, ctx);
  EXPECT_EQ(y, x);
}

TEST(Dropout, RejectsInvalidProbabilityAndSlot) {
  EXPECT_THROW(Dropout(1.0f, 0), Error);
  EXPECT_THROW(Dropout(-0.1f, 0), Error);
  EXPECT_THROW(Dropout(0.1f, kDropoutStreamsPerStep), Error);
}

TEST(Dropout, GradientMatchesFiniteDifferencesWithFixedKey) {
  const int n = 50;
  Dropout d(0.4f, 11);
  const DropoutKey key{77, 3};
  std::vector<float> x(n), r(n), y(n), dx(n);
  Rng rng(1);
  for (int i = 0; i < n; ++i) {
    x[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
    r[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  }
  DropoutContext ctx;
  auto loss = [&]() {
    d.forward(x.data(), y.data(), n, Mode::Train, key, ctx);
    double s = 0.0;
    for (int i = 0; i < n; ++i) s += static_cast<double>(y[i]) * r[i];
    return s;
  };
  loss();
  d.backward(r.data(), dx.data(), n, ctx);
  int zeros = 0;
  for (float g : dx) zeros += g == 0.0f;
  EXPECT_GT(zeros, 0);  // some elements really are dropped
  EXPECT_LT(zeros, n);
  test::expect_gradient_matches(x, dx, loss, "dropout dx");
  // In place (dx aliases dy) gives the same result.
  std::vector<float> inplace = r;
  d.backward(inplace.data(), inplace.data(), n, ctx);
  EXPECT_EQ(inplace, dx);
}

}  // namespace
}  // namespace mman
