// Dropout kernel (cuda/kernels/dropout.cuh) on the CPU through the SIMT layer: the same masks and
// values, bit for bit, as mman::Dropout for every size, probability, mode, view and schedule.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/kernels/dropout.cuh"
#include "mman/error.h"
#include "mman/layers/dropout.h"
#include "mman/rng.h"
#include "mman/simt/simt.h"

namespace mman {
namespace {

using simt::EmulationOptions;
using simt::ScopedEmulation;

std::vector<float> random_values(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.uniform(-3, 3));
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(KernelsDropout, ForwardAndBackwardEqualTheCpuLayerBitForBit) {
  const DropoutKey key{2024, 9};
  for (long long n : {1LL, 255LL, 256LL, 257LL, 3001LL})
    for (float p : {0.0f, 0.1f, 0.5f, 0.9f})
      for (Mode mode : {Mode::Train, Mode::Eval}) {
        const Dropout layer(p, 7);
        const std::vector<float> x = random_values(static_cast<size_t>(n), 5 + static_cast<uint64_t>(n));
        std::vector<float> ref(x.size()), ref_back(x.size());
        DropoutContext ctx;
        layer.forward(x.data(), ref.data(), n, mode, key, ctx);
        layer.backward(x.data(), ref_back.data(), n, ctx);
        for (const EmulationOptions& o : simt::test_schedules()) {
          SCOPED_TRACE("n " + std::to_string(n) + ", p " + std::to_string(p) +
                       (mode == Mode::Train ? ", train, " : ", eval, ") + simt::describe(o));
          ScopedEmulation scope(o);
          std::vector<float> y(x.size(), NAN), back(x.size(), NAN);
          kernels::dropout_forward_launch(layer, x.data(), y.data(), n, mode, key, nullptr);
          kernels::dropout_backward_launch(layer, x.data(), back.data(), n, mode, key, nullptr);
          EXPECT_TRUE(same_bits(y, ref));
          EXPECT_TRUE(same_bits(back, ref_back));
          std::vector<float> inplace = x;  // y may alias x
          kernels::dropout_forward_launch(layer, inplace.data(), inplace.data(), n, mode, key, nullptr);
          EXPECT_TRUE(same_bits(inplace, ref));
        }
      }
}

// A column block of a wider matrix (the MMA's modality m inside [rows x 3d]) gets the mask the
// CPU gives the same block stored on its own; the other columns are untouched.
TEST(KernelsDropout, StridedViewNumbersElementsAsTheContiguousMatrix) {
  const DropoutKey key{3, 4};
  const Dropout layer(0.3f, 12);
  const long long rows = 37, d = 45, ld = 3 * d, col0 = d;
  const std::vector<float> x = random_values(static_cast<size_t>(rows * ld), 8);
  std::vector<float> block(static_cast<size_t>(rows * d)), ref(block.size());
  for (long long r = 0; r < rows; ++r)
    for (long long c = 0; c < d; ++c) block[static_cast<size_t>(r * d + c)] = x[static_cast<size_t>(r * ld + col0 + c)];
  DropoutContext ctx;
  layer.forward(block.data(), ref.data(), rows * d, Mode::Train, key, ctx);
  for (const EmulationOptions& o : simt::test_schedules()) {
    SCOPED_TRACE(simt::describe(o));
    ScopedEmulation scope(o);
    std::vector<float> y = x;
    kernels::dropout_forward_launch(layer, x.data() + col0, y.data() + col0,
                                    kernels::dropout_view(rows, d, ld, ld, "test"), Mode::Train, key, nullptr);
    for (long long r = 0; r < rows; ++r)
      for (long long c = 0; c < ld; ++c) {
        const size_t i = static_cast<size_t>(r * ld + c);
        const float want = c >= col0 && c < col0 + d ? ref[static_cast<size_t>(r * d + c - col0)] : x[i];
        ASSERT_EQ(y[i], want) << "row " << r << ", column " << c;
      }
  }
}

// More elements than the grid has threads: the grid-stride loop covers the rest.
TEST(KernelsDropout, GridStrideCoversMoreElementsThanThreads) {
  const long long n = kernels::kElementwiseMaxBlocks * kernels::kElementwiseThreads + 777;
  const Dropout layer(0.2f, 1);
  const DropoutKey key{1, 1};
  const std::vector<float> x = random_values(static_cast<size_t>(n), 3);
  std::vector<float> ref(x.size()), y(x.size(), NAN);
  DropoutContext ctx;
  layer.forward(x.data(), ref.data(), n, Mode::Train, key, ctx);
  EmulationOptions fast;
  fast.order = simt::ThreadOrder::Forward;
  fast.check_shared = false;  // no shared memory here; keeps the 1M-thread launch quick
  ScopedEmulation scope(fast);
  kernels::dropout_forward_launch(layer, x.data(), y.data(), n, Mode::Train, key, nullptr);
  EXPECT_TRUE(same_bits(y, ref));
}

TEST(KernelsDropout, BadViewsAreErrorsAndEmptyOnesNoOps) {
  EXPECT_THROW(kernels::dropout_view(2, 5, 4, 5, "test"), Error);
  EXPECT_THROW(kernels::dropout_view(-1, 5, 5, 5, "test"), Error);
  const Dropout layer(0.5f, 0);
  EXPECT_THROW(kernels::dropout_forward_launch(layer, nullptr, nullptr, -3, Mode::Train, {}, nullptr), Error);
  kernels::dropout_forward_launch(layer, nullptr, nullptr, 0, Mode::Train, {}, nullptr);
}

}  // namespace
}  // namespace mman
