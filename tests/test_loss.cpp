// Masked cross-entropy (multi-class and binary4 heads): values, masking, stability, gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "mman/error.h"
#include "mman/layers/loss.h"
#include "mman/rng.h"
#include "support/gradcheck.h"

namespace mman {
namespace {

Tensor random_logits(Rng& rng, int rows, int cols, double scale = 2.0) {
  Tensor t(rows, cols);
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(rng.uniform(-scale, scale));
  return t;
}

TEST(CrossEntropy, MatchesDefinitionAndMasksRows) {
  Rng rng(1);
  const Tensor z = random_logits(rng, 5, 4);
  const std::vector<int32_t> t = {2, -1, 0, 3, -1};
  Tensor g;
  const LossResult res = masked_cross_entropy(z, t.data(), 1, &g);
  double expect = 0.0;
  int correct = 0;
  for (int r = 0; r < 5; ++r) {
    if (t[r] < 0) continue;
    double s = 0.0;
    int arg = 0;
    for (int c = 0; c < 4; ++c) {
      s += std::exp(static_cast<double>(z.at(r, c)));
      if (z.at(r, c) > z.at(r, arg)) arg = c;
    }
    expect += -std::log(std::exp(static_cast<double>(z.at(r, t[r]))) / s);
    correct += arg == t[r];
  }
  EXPECT_EQ(res.labelled, 3);
  EXPECT_EQ(res.scored, 3);
  EXPECT_EQ(res.correct, correct);
  EXPECT_NEAR(res.loss, expect / 3.0, 1e-9);
  for (int c = 0; c < 4; ++c) {
    EXPECT_EQ(g.at(1, c), 0.0f);
    EXPECT_EQ(g.at(4, c), 0.0f);
  }
  // Gradient of a labelled row sums to zero (softmax minus one-hot).
  double s = 0.0;
  for (int c = 0; c < 4; ++c) s += g.at(0, c);
  EXPECT_NEAR(s, 0.0, 1e-7);
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  Rng rng(2);
  Tensor z = random_logits(rng, 6, 5);
  const std::vector<int32_t> t = {4, 0, -1, 1, 2, 2};
  Tensor g;
  masked_cross_entropy(z, t.data(), 1, &g);
  std::vector<float> zs(z.data(), z.data() + z.size());
  const std::vector<float> gs(g.data(), g.data() + g.size());
  auto loss = [&]() {
    std::copy(zs.begin(), zs.end(), z.data());
    return masked_cross_entropy(z, t.data(), 1, nullptr).loss;
  };
  test::expect_gradient_matches(zs, gs, loss, "dlogits", 1e-2f);
}

TEST(CrossEntropy, FiniteForHugeLogitsAndZeroWithoutLabels) {
  Tensor z(2, 3);
  const float vals[] = {1e4f, -1e4f, 0.0f, -1e4f, -1e4f, 1e4f};
  std::copy(vals, vals + 6, z.data());
  const std::vector<int32_t> t = {1, 2};
  Tensor g;
  const LossResult res = masked_cross_entropy(z, t.data(), 1, &g);
  EXPECT_TRUE(std::isfinite(res.loss));
  EXPECT_NEAR(res.loss, (2e4 + 0.0) / 2.0, 1e-3);  // row 0 loses 2e4, row 1 is right with margin
  for (int64_t i = 0; i < g.size(); ++i) EXPECT_TRUE(std::isfinite(g.data()[i]));
  EXPECT_EQ(res.correct, 1);

  const std::vector<int32_t> none = {-1, -1};
  const LossResult empty = masked_cross_entropy(z, none.data(), 1, &g);
  EXPECT_EQ(empty.loss, 0.0);
  EXPECT_EQ(empty.labelled, 0);
  for (int64_t i = 0; i < g.size(); ++i) EXPECT_EQ(g.data()[i], 0.0f);
}

TEST(CrossEntropy, RejectsTargetsOutOfRangeAndBadHeadWidths) {
  Tensor z(2, 4);
  const std::vector<int32_t> bad = {0, 4};
  EXPECT_THROW(masked_cross_entropy(z, bad.data(), 1, nullptr), Error);
  const std::vector<int32_t> low = {-2, 0};
  EXPECT_THROW(masked_cross_entropy(z, low.data(), 1, nullptr), Error);
  Tensor z6(2, 6);
  const std::vector<int32_t> ok = {0, 1};
  EXPECT_THROW(masked_cross_entropy(z6, ok.data(), 4, nullptr), Error);  // 4 heads need 8 logits
}

TEST(BinaryHeads, LossIsMeanOverLabelledRowsAndHeads) {
  Rng rng(3);
  const int heads = 4;
  const Tensor z = random_logits(rng, 5, 2 * heads);
  const std::vector<int32_t> t = {0, 3, -1, 2, 1};
  Tensor g;
  const LossResult res = masked_cross_entropy(z, t.data(), heads, &g);
  // Independent form: two-way softmax CE = softplus(other - own) = log(1 + exp(z_other - z_own)).
  double total = 0.0;
  int correct = 0;
  for (int r = 0; r < 5; ++r) {
    if (t[r] < 0) continue;
    for (int k = 0; k < heads; ++k) {
      const double own = z.at(r, 2 * k + (t[r] == k ? 1 : 0));
      const double other = z.at(r, 2 * k + (t[r] == k ? 0 : 1));
      total += std::log1p(std::exp(other - own));
      correct += own > other;
    }
  }
  EXPECT_EQ(res.labelled, 4);
  EXPECT_EQ(res.scored, 16);
  EXPECT_EQ(res.correct, correct);
  EXPECT_NEAR(res.loss, total / 16.0, 1e-9);
  for (int c = 0; c < 2 * heads; ++c) EXPECT_EQ(g.at(2, c), 0.0f);
  const std::vector<int32_t> bad = {4, -1, -1, -1, -1};
  EXPECT_THROW(masked_cross_entropy(z, bad.data(), heads, nullptr), Error);
}

TEST(BinaryHeads, GradientMatchesFiniteDifferences) {
  Rng rng(4);
  Tensor z = random_logits(rng, 4, 8);
  const std::vector<int32_t> t = {1, -1, 0, 3};
  Tensor g;
  masked_cross_entropy(z, t.data(), 4, &g);
  std::vector<float> zs(z.data(), z.data() + z.size());
  const std::vector<float> gs(g.data(), g.data() + g.size());
  auto loss = [&]() {
    std::copy(zs.begin(), zs.end(), z.data());
    return masked_cross_entropy(z, t.data(), 4, nullptr).loss;
  };
  test::expect_gradient_matches(zs, gs, loss, "binary dlogits", 1e-2f);
}

}  // namespace
}  // namespace mman
