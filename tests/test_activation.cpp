// ReLU and grouped softmax: values, stability, finite-difference gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "mman/error.h"
#include "mman/layers/activation.h"
#include "mman/rng.h"
#include "support/gradcheck.h"

namespace mman {
namespace {

TEST(Relu, ForwardAndBackward) {
  const std::vector<float> x = {-2.0f, -0.0f, 0.0f, 0.5f, 3.0f};
  std::vector<float> y(5), dx(5);
  relu_forward(x.data(), y.data(), 5);
  EXPECT_EQ(y, (std::vector<float>{0.0f, 0.0f, 0.0f, 0.5f, 3.0f}));
  const std::vector<float> dy = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f};
  relu_backward(x.data(), dy.data(), dx.data(), 5);
  EXPECT_EQ(dx, (std::vector<float>{0.0f, 0.0f, 0.0f, 4.0f, 5.0f}));
  // The output carries the same sign pattern as the input.
  relu_backward(y.data(), dy.data(), dx.data(), 5);
  EXPECT_EQ(dx, (std::vector<float>{0.0f, 0.0f, 0.0f, 4.0f, 5.0f}));
  // In place.
  std::vector<float> z = x;
  relu_forward(z.data(), z.data(), 5);
  EXPECT_EQ(z, y);
}

TEST(Relu, GradientMatchesFiniteDifferences) {
  Rng rng(1);
  std::vector<float> x(40), r(40), y(40), dx(40);
  for (int i = 0; i < 40; ++i) {
    // Keep inputs away from the kink so central differences do not straddle it.
    const double mag = rng.uniform(0.1, 1.0);
    x[i] = static_cast<float>(i % 2 ? mag : -mag);
    r[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  }
  relu_backward(x.data(), r.data(), dx.data(), 40);
  auto loss = [&]() {
    relu_forward(x.data(), y.data(), 40);
    double s = 0.0;
    for (int i = 0; i < 40; ++i) s += static_cast<double>(y[i]) * r[i];
    return s;
  };
  test::expect_gradient_matches(x, dx, loss, "relu dx", 1e-2f);
}

TEST(Softmax, RowsSumToOneAndMatchDefinition) {
  const int rows = 3, cols = 6;
  Rng rng(2);
  std::vector<float> x(rows * cols), y(rows * cols);
  for (float& v : x) v = static_cast<float>(rng.uniform(-3.0, 3.0));
  softmax_forward(x.data(), cols, rows, cols, cols, y.data(), cols);
  for (int r = 0; r < rows; ++r) {
    double z = 0.0, s = 0.0;
    for (int c = 0; c < cols; ++c) z += std::exp(static_cast<double>(x[r * cols + c]));
    for (int c = 0; c < cols; ++c) {
      EXPECT_NEAR(y[r * cols + c], std::exp(static_cast<double>(x[r * cols + c])) / z, 1e-6);
      s += y[r * cols + c];
    }
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
  // Grouped: every pair of columns is its own softmax.
  softmax_forward(x.data(), cols, rows, cols, 2, y.data(), cols);
  for (int r = 0; r < rows; ++r)
    for (int g = 0; g < cols; g += 2) {
      const double a = x[r * cols + g], b = x[r * cols + g + 1];
      EXPECT_NEAR(y[r * cols + g], 1.0 / (1.0 + std::exp(b - a)), 1e-6);
      EXPECT_NEAR(y[r * cols + g] + y[r * cols + g + 1], 1.0, 1e-6);
    }
  EXPECT_THROW(softmax_forward(x.data(), cols, rows, cols, 4, y.data(), cols), Error);
}

TEST(Softmax, StableForHugeLogits) {
  const std::vector<float> x = {1e4f, -1e4f, 1e4f - 1.0f, 0.0f};
  std::vector<float> y(4);
  softmax_forward(x.data(), 4, 1, 4, 4, y.data(), 4);
  for (float v : y) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(y[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(y[2], std::exp(-1.0) / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_EQ(y[1], 0.0f);
}

TEST(Softmax, GradientMatchesFiniteDifferencesWithStrides) {
  // Rows of width 4 inside a matrix of stride 6; groups of 2 and of 4.
  for (int group : {2, 4}) {
    const int rows = 5, cols = 4, ld = 6;
    Rng rng(3 + group);
    std::vector<float> x(rows * ld), y(rows * ld), r(rows * ld), dx(rows * ld, 0.0f);
    for (float& v : x) v = static_cast<float>(rng.uniform(-2.0, 2.0));
    for (float& v : r) v = static_cast<float>(rng.uniform(-1.0, 1.0));
    auto loss = [&]() {
      softmax_forward(x.data(), ld, rows, cols, group, y.data(), ld);
      double s = 0.0;
      for (int i = 0; i < rows; ++i)
        for (int c = 0; c < cols; ++c) s += static_cast<double>(y[i * ld + c]) * r[i * ld + c];
      return s;
    };
    loss();
    softmax_backward(y.data(), ld, r.data(), ld, rows, cols, group, dx.data(), ld);
    for (int i = 0; i < rows; ++i)
      for (int c = cols; c < ld; ++c) EXPECT_EQ(dx[i * ld + c], 0.0f);  // outside the block: untouched
    test::expect_gradient_matches(x, dx, loss, group == 2 ? "softmax group 2" : "softmax group 4", 1e-2f);
  }
}

}  // namespace
}  // namespace mman
