// Grouped softmax kernels (cuda/kernels/softmax.cuh) on the CPU through the SIMT layer: the
// late-fusion probabilities equal mman::softmax_forward / softmax_backward bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/kernels/softmax.cuh"
#include "mman/error.h"
#include "mman/layers/activation.h"
#include "mman/rng.h"
#include "mman/simt/simt.h"

#ifdef MMAN_WITH_CUDA
#include "cuda/softmax.cuh"
#include "mman/cuda/buffer.h"
#include "mman/cuda/context.h"
#include "mman/cuda_info.h"
#endif

namespace mman {
namespace {

using simt::EmulationOptions;
using simt::ScopedEmulation;

std::vector<float> random_values(size_t n, uint64_t seed, double scale) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.uniform(-scale, scale));
  return v;
}

// (n == 0 compares nothing: memcmp must not see the null data() of an empty vector.)
bool same_bits(const float* a, const float* b, size_t n) { return n == 0 || std::memcmp(a, b, n * sizeof(float)) == 0; }

// Sub-network logits [rows x cols] into a column block of a wider matrix (stride ldy, columns
// col0..col0+cols), the late-fusion layout; then the backward from a gradient in that block.
// Every shape: one 4-class head, 6 classes, binary4's 4 heads of 2, one row, no rows.
TEST(KernelsGroupSoftmax, ForwardAndBackwardEqualTheCpuFunctionsOnAColumnBlock) {
  struct Case {
    long long rows;
    int cols, group;
  };
  for (const Case c : {Case{37, 4, 4}, Case{300, 6, 6}, Case{23, 8, 2}, Case{1, 4, 4}, Case{0, 4, 4}})
    for (double scale : {3.0, 80.0}) {  // 80: exp overflows without the max subtraction
      const long long ldx = c.cols, ldy = 3 * c.cols + 1, col0 = c.cols;
      const std::vector<float> x = random_values(static_cast<size_t>(c.rows * ldx), 5 + c.rows, scale);
      const std::vector<float> dy = random_values(static_cast<size_t>(c.rows * ldy), 7 + c.rows, 1.0);
      std::vector<float> ref(static_cast<size_t>(c.rows * ldy), -1.0f), ref_dx(static_cast<size_t>(c.rows * ldy), -1.0f);
      softmax_forward(x.data(), ldx, c.rows, c.cols, c.group, ref.data() + col0, ldy);
      softmax_backward(ref.data() + col0, ldy, dy.data() + col0, ldy, c.rows, c.cols, c.group, ref_dx.data() + col0,
                       ldy);
      for (const EmulationOptions& o : simt::test_schedules()) {
        SCOPED_TRACE("rows " + std::to_string(c.rows) + " cols " + std::to_string(c.cols) + " group " +
                     std::to_string(c.group) + " scale " + std::to_string(scale) + ", " + simt::describe(o));
        ScopedEmulation scope(o);
        std::vector<float> y(ref.size(), -1.0f), dx(ref.size(), -1.0f);
        const kernels::GroupSoftmaxShape fwd = kernels::group_softmax_shape(c.rows, c.cols, c.group, ldx, ldy, "test");
        kernels::group_softmax_forward_launch(x.data(), y.data() + col0, fwd, nullptr);
        const kernels::GroupSoftmaxShape bwd = kernels::group_softmax_shape(c.rows, c.cols, c.group, ldy, ldy, "test");
        kernels::group_softmax_backward_launch(y.data() + col0, dy.data() + col0, dx.data() + col0, bwd, nullptr);
        // Columns outside the block are untouched (-1), inside equal to the CPU's.
        EXPECT_TRUE(same_bits(y.data(), ref.data(), y.size()));
        EXPECT_TRUE(same_bits(dx.data(), ref_dx.data(), dx.size()));
      }
    }
}

// The probabilities of each group sum to one and are finite even for logits of 1e30
// (a check independent of the CPU function).
TEST(KernelsGroupSoftmax, GroupsSumToOneForHugeLogits) {
  const long long rows = 5;
  const int cols = 8, group = 2;
  std::vector<float> x = random_values(rows * cols, 3, 1e30);
  std::vector<float> y(x.size(), NAN);
  ScopedEmulation scope(simt::test_schedules().front());
  kernels::group_softmax_forward_launch(x.data(), y.data(), kernels::group_softmax_shape(rows, cols, group, cols, cols, "t"),
                                        nullptr);
  for (long long r = 0; r < rows; ++r)
    for (int g = 0; g < cols; g += group) {
      double s = 0;
      for (int j = 0; j < group; ++j) {
        const float p = y[static_cast<size_t>(r * cols + g + j)];
        ASSERT_TRUE(std::isfinite(p));
        s += p;
      }
      EXPECT_NEAR(s, 1.0, 1e-6);
    }
}

TEST(KernelsGroupSoftmax, RejectsShapesThatDoNotSplitIntoGroups) {
  EXPECT_THROW(kernels::group_softmax_shape(3, 6, 4, 6, 6, "fusion"), Error);
  EXPECT_THROW(kernels::group_softmax_shape(3, 6, 6, 5, 6, "fusion"), Error);
  try {
    kernels::group_softmax_shape(3, 6, 4, 6, 6, "fusion");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fusion: bad shape: 3 rows of 6 columns in groups of 4"), std::string::npos)
        << e.what();
  }
}

#ifdef MMAN_WITH_CUDA
// The same launchers natively on a GPU (skipped without one): equal to the CPU functions within
// a few ulps (the device's expf is not the host's).
TEST(KernelsGroupSoftmax, NativeLaunchersMatchTheCpuFunctions) {
  const CudaState state = query_cuda();
  if (!state.usable()) GTEST_SKIP() << "no usable CUDA device: " << state.unusable_reason;
  cuda::CudaContext ctx(0);
  const long long rows = 301, ldx = 8, ldy = 25, col0 = 8;
  const int cols = 8;
  for (int group : {8, 2}) {
    const std::vector<float> x = random_values(static_cast<size_t>(rows * ldx), 21, 5.0);
    const std::vector<float> dy = random_values(static_cast<size_t>(rows * ldy), 22, 1.0);
    std::vector<float> ref(static_cast<size_t>(rows * ldy), 0.0f), ref_dx(ref.size(), 0.0f);
    softmax_forward(x.data(), ldx, rows, cols, group, ref.data() + col0, ldy);
    softmax_backward(ref.data() + col0, ldy, dy.data() + col0, ldy, rows, cols, group, ref_dx.data() + col0, ldy);
    cuda::DeviceArray<float> dx_in(x.size()), d_y(ref.size()), d_dy(dy.size()), d_dx(ref.size());
    ctx.upload(dx_in.data(), x.data(), x.size() * sizeof(float));
    ctx.upload(d_dy.data(), dy.data(), dy.size() * sizeof(float));
    ctx.zero(d_y.data(), d_y.bytes());
    ctx.zero(d_dx.data(), d_dx.bytes());
    cuda::group_softmax_forward_device(dx_in.data(), d_y.data() + col0,
                                       kernels::group_softmax_shape(rows, cols, group, ldx, ldy, "test"), ctx.stream());
    cuda::group_softmax_backward_device(d_y.data() + col0, d_dy.data() + col0, d_dx.data() + col0,
                                        kernels::group_softmax_shape(rows, cols, group, ldy, ldy, "test"),
                                        ctx.stream());
    std::vector<float> y(ref.size()), dx(ref.size());
    ctx.download(y.data(), d_y.data(), d_y.bytes());
    ctx.download(dx.data(), d_dx.data(), d_dx.bytes());
    // exp within 2 ulp, the sum of `group` terms and one reciprocal: (group + 4) ulp relative;
    // the backward's dot product adds `group` more.
    const double u = 1.0 / (1 << 23);
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_NEAR(y[i], ref[i], (group + 4) * u * std::fabs(ref[i]) + 1e-30) << i;
      ASSERT_NEAR(dx[i], ref_dx[i], (2 * group + 8) * u * (std::fabs(dy[i]) + 1.0)) << i;
    }
  }
}
#endif

}  // namespace
}  // namespace mman
