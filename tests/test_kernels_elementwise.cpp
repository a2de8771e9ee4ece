// Elementwise activation kernels (cuda/kernels/elementwise.cuh) on the CPU through the SIMT layer:
// ReLU and the MMA standardisation's ReLU + dropout equal the CPU functions bit for bit, NaN
// (payload and sign), infinities, signed zeros and denormals included.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cuda/kernels/elementwise.cuh"
#include "mman/error.h"
#include "mman/layers/activation.h"
#include "mman/layers/dropout.h"
#include "mman/rng.h"
#include "mman/simt/simt.h"
#include "support/kernel_inputs.h"

namespace mman {
namespace {

using simt::EmulationOptions;
using simt::ScopedEmulation;

using test::from_bits;
using test::special_values;

bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

TEST(KernelsElementwise, ReluForwardAndBackwardEqualTheCpuFunctions) {
  for (long long n : {1LL, 100LL, 256LL, 1001LL}) {
    const test::ReluCase c = test::relu_random_case(n);
    for (const EmulationOptions& o : simt::test_schedules()) {
      SCOPED_TRACE("n " + std::to_string(n) + ", " + simt::describe(o));
      ScopedEmulation scope(o);
      std::vector<float> y(c.x.size(), NAN), back(c.x.size(), NAN);
      kernels::relu_forward_launch(c.x.data(), y.data(), n, nullptr);
      kernels::relu_backward_launch(c.x.data(), c.dy.data(), back.data(), n, nullptr);
      EXPECT_TRUE(same_bits(y.data(), c.want_y.data(), y.size()));
      EXPECT_TRUE(same_bits(back.data(), c.want_back.data(), back.size()));
    }
  }
}

// The MMA standardisation: x_hat = dropout(relu(W x + b)) as mman::Mma computes it (relu_forward,
// then Dropout::forward on the [rows x d] matrix), here on modality 1's columns of [rows x 3d];
// backward as Dropout::backward followed by relu_backward on x_hat.
TEST(KernelsElementwise, ReluDropoutEqualsReluThenDropoutOnAColumnBlock) {
  const DropoutKey key{11, 12};
  for (float p : {0.0f, 0.1f, 0.6f})
    for (Mode mode : {Mode::Train, Mode::Eval}) {
      const Dropout layer(p, 33);
      const test::ReluDropoutBlockCase c = test::relu_dropout_block_case(layer, mode, key);
      for (const EmulationOptions& o : simt::test_schedules()) {
        SCOPED_TRACE("p " + std::to_string(p) + (mode == Mode::Train ? ", train, " : ", eval, ") + simt::describe(o));
        ScopedEmulation scope(o);
        const kernels::DropoutView v = kernels::dropout_view(c.rows, c.d, c.ld, c.ld, "test");
        std::vector<float> y = c.x, back = c.dy;
        kernels::relu_dropout_forward_launch(layer, c.x.data() + c.col0, y.data() + c.col0, v, mode, key, nullptr);
        kernels::relu_dropout_backward_launch(layer, y.data() + c.col0, c.dy.data() + c.col0, back.data() + c.col0, v,
                                              mode, nullptr);
        // The whole matrices: the block's columns as the CPU's, the others untouched.
        ASSERT_TRUE(same_bits(y.data(), c.want_y.data(), y.size()));
        ASSERT_TRUE(same_bits(back.data(), c.want_back.data(), back.size()));
      }
    }
}

// Every special value as the input and as the incoming gradient of every other: NaN stays NaN
// with its bits through the ReLU (as relu_forward keeps it, so a poisoned input reaches the
// loss check), -0 becomes +0, and the backward passes dy only where act > 0 (NaN act: 0).
TEST(KernelsElementwise, ReluKeepsNanAndMatchesTheCpuOnEverySpecialValue) {
  const test::ReluCase c = test::relu_special_case();
  const std::vector<float>& x = c.x;
  const std::vector<float>& dy = c.dy;
  const std::vector<float>& ref = c.want_y;
  const std::vector<float>& ref_back = c.want_back;
  const long long n = c.n();
  ASSERT_TRUE(std::isnan(ref[2 * special_values().size()]));  // the reference keeps NaN (row of special[2])
  ScopedEmulation scope(simt::test_schedules().back());
  std::vector<float> y(x.size(), 1.0f), back(x.size(), 1.0f);
  kernels::relu_forward_launch(x.data(), y.data(), n, nullptr);
  kernels::relu_backward_launch(x.data(), dy.data(), back.data(), n, nullptr);
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_TRUE(same_bits(&y[i], &ref[i], 1)) << "relu(" << x[i] << "): kernel " << y[i] << ", cpu " << ref[i];
    ASSERT_TRUE(same_bits(&back[i], &ref_back[i], 1))
        << "relu'(" << x[i] << ") dy " << dy[i] << ": kernel " << back[i] << ", cpu " << ref_back[i];
  }
  // In place (y aliases x), as the MMA standardisation runs it.
  std::vector<float> inplace = x;
  kernels::relu_forward_launch(inplace.data(), inplace.data(), n, nullptr);
  EXPECT_TRUE(same_bits(inplace.data(), ref.data(), inplace.size()));
}

TEST(KernelsElementwise, NegativeCountsAreErrors) {
  EXPECT_THROW(kernels::relu_forward_launch(nullptr, nullptr, -1, nullptr), Error);
  EXPECT_THROW(kernels::relu_backward_launch(nullptr, nullptr, nullptr, -1, nullptr), Error);
  kernels::relu_forward_launch(nullptr, nullptr, 0, nullptr);
}

}  // namespace
}  // namespace mman
