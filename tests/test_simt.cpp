// Tests of the host SIMT emulation (mman/simt): CUDA semantics, the faults it must catch, and
// the example kernels of cuda/kernels/ against CPU references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "cuda/kernels/reduce.cuh"
#include "cuda/kernels/softmax.cuh"
#include "support/kernel_inputs.h"
#include "support/test_support.h"
#include "mman/error.h"
#include "mman/rng.h"
#include "mman/simt/simt.h"

// Test kernels live where kernel source lives, so they see the CUDA names the same way.
namespace mman::kernels {
namespace {

MMAN_KERNEL void index_kernel(unsigned* out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  unsigned* o = out + 6 * (block * blockDim.x * blockDim.y * blockDim.z + thread);
  o[0] = threadIdx.x, o[1] = threadIdx.y, o[2] = threadIdx.z;
  o[3] = blockIdx.x, o[4] = blockIdx.y, o[5] = blockIdx.z;
}

// Static and dynamic shared memory: what one thread writes, the others of its block read.
MMAN_KERNEL void shared_exchange_kernel(int* out) {
  MMAN_SHARED(int, fixed, 64);
  MMAN_SHARED_DYNAMIC(int, dynamic);
  const int t = static_cast<int>(threadIdx.x), n = static_cast<int>(blockDim.x);
  fixed[t] = 1000 * static_cast<int>(blockIdx.x) + t;
  dynamic[t] = -t;
  __syncthreads();
  out[blockIdx.x * n + t] = fixed[(t + 1) % n] + 100000 * dynamic[n - 1 - t];
}

// Records the order in which threads run, before and after a barrier.
MMAN_KERNEL void order_kernel(int* counter, int* before, int* after) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  before[i] = atomicAdd(counter, 1);
  __syncthreads();
  after[i] = atomicAdd(counter, 1);
}

// Every lane shuffles 1000 * warp + lane in each of the four modes.
MMAN_KERNEL void shuffle_kernel(int width, int b, int* idx, int* up, int* down, int* xr, double* idx_double) {
  const int t = static_cast<int>(threadIdx.x);
  const int v = 1000 * (t / 32) + t % 32;
  idx[t] = __shfl_sync(kFullMask, v, b, width);
  up[t] = __shfl_up_sync(kFullMask, v, static_cast<unsigned>(b), width);
  down[t] = __shfl_down_sync(kFullMask, v, static_cast<unsigned>(b), width);
  xr[t] = __shfl_xor_sync(kFullMask, v, b, width);
  idx_double[t] = __shfl_sync(kFullMask, 0.5 + v, b, width);
}

// BUG on purpose: block_sum_tree without the barrier inside the loop.
template <int kBlock>
MMAN_KERNEL void sum_missing_barrier_kernel(const float* x, float* out) {
  MMAN_SHARED(float, scratch, kBlock);
  const int t = static_cast<int>(threadIdx.x);
  scratch[t] = x[blockIdx.x * kBlock + t];
  __syncthreads();
  for (int s = kBlock / 2; s > 0; s /= 2) {
    if (t < s) scratch[t] = scratch[t] + scratch[t + s];
  }
  if (t == 0) out[blockIdx.x] = scratch[0];
}

// BUG on purpose: a broadcast slot is overwritten while other threads may still read it.
MMAN_KERNEL void broadcast_reuse_kernel(const float* x, float* y) {
  MMAN_SHARED(float, slot, 1);
  if (threadIdx.x == 0) slot[0] = x[0];
  __syncthreads();
  const float a = slot[0];
  if (threadIdx.x == 0) slot[0] = x[1];  // a __syncthreads() is missing above this line
  __syncthreads();
  y[threadIdx.x] = a + slot[0];
}

// BUG on purpose (with kTile == blockDim.x + 1): a stencil reads tile[t + 1], which for the
// last thread nobody wrote. With kTile == blockDim.x the same read is out of bounds.
template <int kTile>
MMAN_KERNEL void stencil_kernel(const float* x, float* y) {
  MMAN_SHARED(float, tile, kTile);
  const int t = static_cast<int>(threadIdx.x);
  tile[t] = x[t];
  __syncthreads();
  y[t] = tile[t] + tile[t + 1];
}

// BUG on purpose: a barrier only some threads reach.
MMAN_KERNEL void partial_barrier_kernel(int* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1;
}

// BUG on purpose: the two halves of the block wait at different barriers.
MMAN_KERNEL void split_barrier_kernel(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// BUG on purpose: threads past n return before the barrier the others wait at.
MMAN_KERNEL void early_return_kernel(const float* x, float* y, int n) {
  MMAN_SHARED(float, buf, 64);
  const int t = static_cast<int>(threadIdx.x);
  if (t >= n) return;
  buf[t] = x[t];
  __syncthreads();
  y[t] = buf[n - 1 - t];
}

// BUG on purpose: half of the warp leaves before a full-mask shuffle.
MMAN_KERNEL void shuffle_after_exit_kernel(float* y) {
  if (threadIdx.x % 32 < 16) return;
  y[threadIdx.x] = __shfl_down_sync(kFullMask, 1.0f, 1);
}

MMAN_KERNEL void shuffle_mask_kernel(float* y, unsigned mask) { y[threadIdx.x] = __shfl_xor_sync(mask, 1.0f, 1); }

// Counts the block's threads in shared memory, atomically or (BUG on purpose) not.
MMAN_KERNEL void shared_counter_kernel(int* out, bool atomic) {
  MMAN_SHARED(int, count, 1);
  if (threadIdx.x == 0) count[0] = 0;
  __syncthreads();
  if (atomic) {
    atomicAdd(&count[0], 1);
  } else {
    count[0] += 1;
  }
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = count[0];
}

// BUG on purpose: every block reads what only block 0 wrote, as if shared memory outlived it.
MMAN_KERNEL void stale_shared_kernel(float* out) {
  MMAN_SHARED(float, s, 1);
  if (blockIdx.x == 0 && threadIdx.x == 0) s[0] = 1.0f;
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

MMAN_KERNEL void barrier_kernel() { __syncthreads(); }

// Shared memory handed to a device function, and pointer arithmetic on it.
MMAN_DEVICE void store_strided(MMAN_SHARED_PTR(float) dst, const float* src, int n) {
  for (int i = static_cast<int>(threadIdx.x); i < n; i += static_cast<int>(blockDim.x)) dst[i] = src[i];
}

// Reverses each row of x [gridDim.x x cols] through dynamic shared memory of cols floats
// (blockDim.x may be smaller or larger than cols).
MMAN_KERNEL void reverse_rows_kernel(const float* x, float* y, int cols) {
  MMAN_SHARED_DYNAMIC(float, row);
  const float* xr = x + static_cast<long long>(blockIdx.x) * cols;
  store_strided(row, xr, cols / 2);
  store_strided(row + cols / 2, xr + cols / 2, cols - cols / 2);
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.x); i < cols; i += static_cast<int>(blockDim.x))
    y[static_cast<long long>(blockIdx.x) * cols + i] = row[cols - 1 - i];
}

}  // namespace
}  // namespace mman::kernels

namespace mman {
namespace {

using simt::EmulationOptions;
using simt::LaunchConfig;
using simt::ScopedEmulation;
using simt::ThreadOrder;
using simt::device::dim3;

constexpr double kEps = FLT_EPSILON;

EmulationOptions options(ThreadOrder order, bool check_shared = true, uint64_t seed = 1) {
  EmulationOptions o;
  o.order = order;
  o.check_shared = check_shared;
  o.seed = seed;
  return o;
}

std::vector<float> uniform(size_t n, uint64_t seed, double lo, double hi) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.uniform(lo, hi));
  return v;
}

// ---- execution model ----

TEST(Simt, ThreadAndBlockIndicesCoverA3dGridOnce) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const unsigned threads = 4 * 3 * 2, blocks = 3 * 2 * 2;
  std::vector<unsigned> out(6 * threads * blocks, 999);
  MMAN_LAUNCH((LaunchConfig{grid, block}), kernels::index_kernel, out.data());
  for (unsigned b = 0; b < blocks; ++b)
    for (unsigned t = 0; t < threads; ++t) {
      const unsigned* o = &out[6 * (b * threads + t)];
      EXPECT_EQ(o[0], t % 4);
      EXPECT_EQ(o[1], t / 4 % 3);
      EXPECT_EQ(o[2], t / 12);
      EXPECT_EQ(o[3], b % 3);
      EXPECT_EQ(o[4], b / 3 % 2);
      EXPECT_EQ(o[5], b / 6);
    }
}

TEST(Simt, StaticAndDynamicSharedMemoryAreOneRegionPerBlock) {
  for (const EmulationOptions& o : simt::test_schedules()) {
    SCOPED_TRACE(simt::describe(o));
    ScopedEmulation scope(o);
    const int n = 64, blocks = 3;
    std::vector<int> out(n * blocks, 0);
    MMAN_LAUNCH((LaunchConfig{dim3(blocks), dim3(n), n * sizeof(int)}), kernels::shared_exchange_kernel,
                out.data());
    for (int b = 0; b < blocks; ++b)
      for (int t = 0; t < n; ++t) EXPECT_EQ(out[b * n + t], 1000 * b + (t + 1) % n - 100000 * (n - 1 - t));
  }
}

TEST(Simt, DynamicSharedMemoryIsSizedByTheLaunch) {
  const int rows = 3;
  for (int cols : {1, 31, 64, 100}) {
    const std::vector<float> x = uniform(static_cast<size_t>(rows) * cols, 20 + cols, -1, 1);
    for (const EmulationOptions& o : simt::test_schedules()) {
      SCOPED_TRACE("cols " + std::to_string(cols) + ", " + simt::describe(o));
      ScopedEmulation scope(o);
      std::vector<float> y(x.size());
      MMAN_LAUNCH((LaunchConfig{dim3(rows), dim3(32), cols * sizeof(float)}), kernels::reverse_rows_kernel, x.data(),
                  y.data(), cols);
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) EXPECT_EQ(y[r * cols + c], x[r * cols + cols - 1 - c]);
    }
  }
  // One float too few: the last store is out of bounds of the dynamic region.
  const std::vector<float> x = uniform(64, 3, -1, 1);
  std::vector<float> y(64);
  const std::string err = test::error_message([&] {
    MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(32), 63 * sizeof(float)}), kernels::reverse_rows_kernel, x.data(),
                y.data(), 64);
  });
  EXPECT_NE(err.find("index 63 is out of bounds of shared array `row` (63 elements"), std::string::npos) << err;
}

TEST(Simt, ScheduleOrdersThreadsAndBlocksAsAsked) {
  const int n = 64, blocks = 8, total = n * blocks;
  const auto run = [&](const EmulationOptions& o, std::vector<int>& before, std::vector<int>& after) {
    ScopedEmulation scope(o);
    int counter = 0;
    before.assign(total, -1);
    after.assign(total, -1);
    MMAN_LAUNCH((LaunchConfig{dim3(blocks), dim3(n)}), kernels::order_kernel, &counter, before.data(), after.data());
    ASSERT_EQ(counter, 2 * total);
  };
  std::vector<int> before, after;
  run(options(ThreadOrder::Forward), before, after);
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < n; ++t) {
      EXPECT_EQ(before[b * n + t], 2 * n * b + t);
      EXPECT_EQ(after[b * n + t], 2 * n * b + n + t);
    }
  run(options(ThreadOrder::Reverse), before, after);
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < n; ++t) {
      EXPECT_EQ(before[b * n + t], 2 * n * (blocks - 1 - b) + (n - 1 - t));
      EXPECT_EQ(after[b * n + t], 2 * n * (blocks - 1 - b) + n + (n - 1 - t));
    }
  // Shuffled: within a block each interval is a permutation, drawn anew at the barrier, and
  // the block order is permuted too; another seed gives another schedule.
  std::vector<int> before1, after1, before2, after2;
  run(options(ThreadOrder::Shuffled, true, 1), before1, after1);
  run(options(ThreadOrder::Shuffled, true, 2), before2, after2);
  std::vector<int> identity_n(n), block_slot(blocks);
  std::iota(identity_n.begin(), identity_n.end(), 0);
  for (int b = 0; b < blocks; ++b) {
    const int base = *std::min_element(&before1[b * n], &before1[b * n] + n);
    ASSERT_EQ(base % (2 * n), 0);
    block_slot[b] = base / (2 * n);
    std::vector<int> first(&before1[b * n], &before1[b * n] + n), second(&after1[b * n], &after1[b * n] + n);
    for (int& v : first) v -= base;
    for (int& v : second) v -= base + n;
    EXPECT_NE(first, identity_n);
    EXPECT_NE(first, second);  // a new permutation after the barrier
    std::sort(first.begin(), first.end());
    std::sort(second.begin(), second.end());
    EXPECT_EQ(first, identity_n);
    EXPECT_EQ(second, identity_n);
  }
  std::vector<int> identity(blocks);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(block_slot, identity);
  EXPECT_NE(before1, before2);
}

// Expected shuffle results from the CUDA C Programming Guide's description of each intrinsic
// (the emulation implements PTX's shfl.sync definition instead).
TEST(Simt, WarpShufflesFollowCudaSemantics) {
  const int n = 64;
  for (int width : {32, 16, 8, 4, 1})
    for (int b : {0, 1, 2, 3, 5, 16, 31, 37}) {
      SCOPED_TRACE("width " + std::to_string(width) + ", b " + std::to_string(b));
      std::vector<int> idx(n), up(n), down(n), xr(n);
      std::vector<double> idx_double(n);
      MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(n)}), kernels::shuffle_kernel, width, b, idx.data(), up.data(),
                  down.data(), xr.data(), idx_double.data());
      for (int t = 0; t < n; ++t) {
        const int warp = t / 32, lane = t % 32, group = lane / width * width;
        const auto value = [&](int src_lane) { return 1000 * warp + src_lane; };
        EXPECT_EQ(idx[t], value(group + b % width)) << "lane " << lane;
        EXPECT_EQ(idx_double[t], 0.5 + value(group + b % width)) << "lane " << lane;
        EXPECT_EQ(up[t], lane - group < b ? value(lane) : value(lane - b)) << "lane " << lane;
        EXPECT_EQ(down[t], lane - group + b >= width ? value(lane) : value(lane + b)) << "lane " << lane;
        const int partner = lane ^ b;
        EXPECT_EQ(xr[t], partner >= group + width ? value(lane) : value(partner)) << "lane " << lane;
      }
    }
}

TEST(Simt, BadLaunchConfigurationsAreErrors) {
  std::vector<int> out(4096);
  EXPECT_NE(test::error_message([&] { MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(1025)}), kernels::partial_barrier_kernel, out.data()); })
                .find("1024"),
            std::string::npos);
  EXPECT_NE(test::error_message([&] { MMAN_LAUNCH((LaunchConfig{dim3(0), dim3(32)}), kernels::partial_barrier_kernel, out.data()); })
                .find("at least 1"),
            std::string::npos);
  EXPECT_NE(test::error_message([&] {
              MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(32), 64 * 1024}), kernels::partial_barrier_kernel, out.data());
            }).find("dynamic shared memory"),
            std::string::npos);
  EmulationOptions tiny_stack;
  tiny_stack.stack_bytes = 4096;
  ScopedEmulation scope(tiny_stack);
  EXPECT_NE(test::error_message([&] { MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(32)}), kernels::partial_barrier_kernel, out.data()); })
                .find("too small"),
            std::string::npos);
  // Device functions outside a launch are an error, not a crash.
  EXPECT_NE(test::error_message([] { simt::device::__syncthreads(); }).find("outside a kernel"), std::string::npos);
}

// ---- faults the emulation must catch ----

TEST(Simt, MissingBarrierInReductionIsReportedAsRaceInEverySchedule) {
  constexpr int kBlock = 256;
  const std::vector<float> x = uniform(2 * kBlock, 7, -1, 1);
  for (const EmulationOptions& o : simt::test_schedules()) {
    SCOPED_TRACE(simt::describe(o));
    ScopedEmulation scope(o);
    std::vector<float> out(2);
    const std::string err = test::error_message([&] {
      MMAN_LAUNCH((LaunchConfig{dim3(2), dim3(kBlock)}), kernels::sum_missing_barrier_kernel<kBlock>, x.data(),
                  out.data());
    });
    EXPECT_NE(err.find("shared-memory race"), std::string::npos) << err;
    EXPECT_NE(err.find("sum_missing_barrier_kernel<kBlock>"), std::string::npos) << err;
    EXPECT_NE(err.find("`scratch`"), std::string::npos) << err;
  }
}

TEST(Simt, MissingBarrierInReductionGivesWrongSumsWithoutTheDetector) {
  constexpr int kBlock = 256;
  const std::vector<float> x = uniform(kBlock, 8, 0.5, 1.5);  // positive: any lost term shows
  double ref = 0;
  for (float v : x) ref += v;
  int wrong = 0;
  for (ThreadOrder order : {ThreadOrder::Forward, ThreadOrder::Reverse, ThreadOrder::Shuffled}) {
    ScopedEmulation scope(options(order, false));
    float out = 0;
    MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(kBlock)}), kernels::sum_missing_barrier_kernel<kBlock>, x.data(), &out);
    wrong += !(std::fabs(out - ref) <= kBlock * kEps * ref);
  }
  EXPECT_GE(wrong, 1);
  // The same reduction with its barriers (the production block_sum_tree) is right.
  std::vector<float> partial(1);
  float out = 0;
  kernels::sum_launch(x.data(), kBlock, partial.data(), &out, kernels::SumAlgo::Tree, nullptr);
  EXPECT_NEAR(out, ref, kBlock * kEps * ref);
}

TEST(Simt, OverwritingABroadcastSlotTooEarlyIsAReportedRace) {
  const std::vector<float> x = {3.0f, 5.0f};
  for (const EmulationOptions& o : simt::test_schedules()) {
    SCOPED_TRACE(simt::describe(o));
    ScopedEmulation scope(o);
    std::vector<float> y(64);
    const std::string err = test::error_message(
        [&] { MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(64)}), kernels::broadcast_reuse_kernel, x.data(), y.data()); });
    EXPECT_NE(err.find("shared-memory race"), std::string::npos) << err;
    EXPECT_NE(err.find("`slot`[0]"), std::string::npos) << err;
  }
  // Without the detector the forward schedule shows the wrong values (thread 0 overwrites
  // the slot before the others read it).
  ScopedEmulation scope(options(ThreadOrder::Forward, false));
  std::vector<float> y(64);
  MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(64)}), kernels::broadcast_reuse_kernel, x.data(), y.data());
  EXPECT_EQ(y[0], 8.0f);
  EXPECT_EQ(y[1], 10.0f);
}

TEST(Simt, OffByOneReadOfUninitialisedSharedMemoryIsDetected) {
  const std::vector<float> x = uniform(64, 9, -1, 1);
  for (const EmulationOptions& o : simt::test_schedules()) {
    SCOPED_TRACE(simt::describe(o));
    ScopedEmulation scope(o);
    std::vector<float> y(64);
    const std::string err = test::error_message(
        [&] { MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(64)}), kernels::stencil_kernel<65>, x.data(), y.data()); });
    EXPECT_NE(err.find("no thread of this block has written"), std::string::npos) << err;
    EXPECT_NE(err.find("`tile`[64]"), std::string::npos) << err;
    EXPECT_NE(err.find("thread (63,0,0)"), std::string::npos) << err;
  }
  // Without the detector the poison shows up as NaN in exactly the element that read it.
  ScopedEmulation scope(options(ThreadOrder::Shuffled, false));
  std::vector<float> y(64);
  MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(64)}), kernels::stencil_kernel<65>, x.data(), y.data());
  for (int t = 0; t < 63; ++t) EXPECT_EQ(y[t], x[t] + x[t + 1]);
  EXPECT_TRUE(std::isnan(y[63]));
}

TEST(Simt, OutOfBoundsSharedIndexIsAnErrorEvenWithoutTheDetector) {
  const std::vector<float> x = uniform(64, 10, -1, 1);
  for (bool check : {true, false}) {
    ScopedEmulation scope(options(ThreadOrder::Shuffled, check));
    std::vector<float> y(64);
    const std::string err = test::error_message(
        [&] { MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(64)}), kernels::stencil_kernel<64>, x.data(), y.data()); });
    EXPECT_NE(err.find("index 64 is out of bounds of shared array `tile` (64 elements"), std::string::npos) << err;
  }
}

TEST(Simt, SharedMemoryIsPoisonedAtEveryBlockStart) {
  {
    ScopedEmulation scope(options(ThreadOrder::Forward, false));
    std::vector<float> out(4);
    MMAN_LAUNCH((LaunchConfig{dim3(4), dim3(32)}), kernels::stale_shared_kernel, out.data());
    EXPECT_EQ(out[0], 1.0f);
    for (int b = 1; b < 4; ++b) EXPECT_TRUE(std::isnan(out[b])) << "block " << b;
  }
  ScopedEmulation scope(options(ThreadOrder::Forward, true));
  std::vector<float> out(4);
  const std::string err =
      test::error_message([&] { MMAN_LAUNCH((LaunchConfig{dim3(4), dim3(32)}), kernels::stale_shared_kernel, out.data()); });
  EXPECT_NE(err.find("block (1,0,0)"), std::string::npos) << err;
  EXPECT_NE(err.find("no thread of this block has written"), std::string::npos) << err;
}

TEST(Simt, BarrierReachedByPartOfTheBlockIsReported) {
  std::vector<int> out(64);
  const std::string err =
      test::error_message([&] { MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(64)}), kernels::partial_barrier_kernel, out.data()); });
  EXPECT_NE(err.find("divergent barrier"), std::string::npos) << err;
  EXPECT_NE(err.find("16 threads wait at __syncthreads() at test_simt.cpp"), std::string::npos) << err;
  EXPECT_NE(err.find("48 threads exited"), std::string::npos) << err;
}

TEST(Simt, ThreadsAtDifferentBarriersAreReported) {
  std::vector<int> out(64);
  const std::string err =
      test::error_message([&] { MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(64)}), kernels::split_barrier_kernel, out.data()); });
  EXPECT_NE(err.find("different __syncthreads() calls"), std::string::npos) << err;
}

TEST(Simt, EarlyReturnBeforeABarrierIsReported) {
  const std::vector<float> x = uniform(64, 11, -1, 1);
  std::vector<float> y(64);
  // All threads in range: fine.
  MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(64)}), kernels::early_return_kernel, x.data(), y.data(), 64);
  for (int t = 0; t < 64; ++t) EXPECT_EQ(y[t], x[63 - t]);
  const std::string err = test::error_message(
      [&] { MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(64)}), kernels::early_return_kernel, x.data(), y.data(), 50); });
  EXPECT_NE(err.find("divergent barrier"), std::string::npos) << err;
  EXPECT_NE(err.find("14 threads exited"), std::string::npos) << err;
}

TEST(Simt, ShufflesNeedTheWholeWarpAndAFullMask) {
  std::vector<float> y(64);
  std::string err =
      test::error_message([&] { MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(64)}), kernels::shuffle_after_exit_kernel, y.data()); });
  EXPECT_NE(err.find("wait at a warp shuffle"), std::string::npos) << err;
  err = test::error_message(
      [&] { MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(48)}), kernels::shuffle_mask_kernel, y.data(), kernels::kFullMask); });
  EXPECT_NE(err.find("warp of only 16 threads"), std::string::npos) << err;
  err = test::error_message(
      [&] { MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(32)}), kernels::shuffle_mask_kernel, y.data(), 0x0000FFFFu); });
  EXPECT_NE(err.find("only full-mask"), std::string::npos) << err;
}

TEST(Simt, SharedAtomicsAreNoRaceButPlainIncrementsAre) {
  for (const EmulationOptions& o : simt::test_schedules()) {
    SCOPED_TRACE(simt::describe(o));
    ScopedEmulation scope(o);
    std::vector<int> out(3, 0);
    MMAN_LAUNCH((LaunchConfig{dim3(3), dim3(96)}), kernels::shared_counter_kernel, out.data(), true);
    EXPECT_EQ(out, std::vector<int>(3, 96));
    const std::string err = test::error_message(
        [&] { MMAN_LAUNCH((LaunchConfig{dim3(3), dim3(96)}), kernels::shared_counter_kernel, out.data(), false); });
    EXPECT_NE(err.find("shared-memory race"), std::string::npos) << err;
  }
}

TEST(Simt, LaunchesCannotNest) {
  // A kernel that launches a kernel (dynamic parallelism) is refused with a message.
  ScopedEmulation scope(options(ThreadOrder::Forward));
  const std::string err = test::error_message([] {
    simt::detail::KernelBody body{[](void*) { MMAN_LAUNCH((LaunchConfig{dim3(1), dim3(1)}), kernels::barrier_kernel); },
                                  nullptr};
    simt::detail::run_launch(simt::LaunchSite{"outer", __FILE__, __LINE__}, LaunchConfig{dim3(1), dim3(1)}, body);
  });
  EXPECT_NE(err.find("dynamic parallelism"), std::string::npos) << err;
}

// ---- example kernels against CPU references ----

// |computed - exact| <= n * eps * sum|x| bounds float summation in any association order.
TEST(SimtKernels, SumMatchesDoubleReferenceForManySizes) {
  for (long long n : {0LL, 1LL, 31LL, 255LL, 256LL, 257LL, 1000LL, 4099LL}) {
    const test::SumCase c = test::sum_case(n, 100 + static_cast<uint64_t>(n));
    for (kernels::SumAlgo algo : {kernels::SumAlgo::Tree, kernels::SumAlgo::Shuffle}) {
      float first = NAN;
      for (const EmulationOptions& o : simt::test_schedules()) {
        SCOPED_TRACE("n " + std::to_string(n) + ", " + simt::describe(o) +
                     (algo == kernels::SumAlgo::Tree ? ", tree" : ", shuffle"));
        ScopedEmulation scope(o);
        std::vector<float> partial(static_cast<size_t>(kernels::sum_partial_count(n)));
        float out = NAN;
        kernels::sum_launch(c.x.data(), n, partial.data(), &out, algo, nullptr);
        EXPECT_NEAR(out, c.sum, static_cast<double>(n) * kEps * c.abs_sum);
        // The association order is fixed by the algorithm, not by the schedule.
        if (std::isnan(first)) first = out;
        EXPECT_EQ(out, first);
      }
    }
  }
}

// 66536 elements: the most partials (256 blocks of 256 threads) and a grid-stride loop.
TEST(SimtKernels, SumOverAFullGrid) {
  const long long n = 256 * 256 + 1000;
  const std::vector<float> x = uniform(static_cast<size_t>(n), 5, -1, 1);
  double ref = 0, abs_sum = 0;
  for (float v : x) ref += v, abs_sum += std::fabs(v);
  ASSERT_EQ(kernels::sum_partial_count(n), 256);
  for (kernels::SumAlgo algo : {kernels::SumAlgo::Tree, kernels::SumAlgo::Shuffle}) {
    std::vector<float> partial(256);
    float out = NAN;
    kernels::sum_launch(x.data(), n, partial.data(), &out, algo, nullptr);
    EXPECT_NEAR(out, ref, static_cast<double>(n) * kEps * abs_sum);
  }
}

TEST(SimtKernels, SumRejectsANegativeCount) {
  float out = 0;
  EXPECT_THROW(kernels::sum_launch(nullptr, -1, nullptr, &out, kernels::SumAlgo::Tree, nullptr), Error);
}

// Error bound per element, relative: test::softmax_rows_cases().
TEST(SimtKernels, SoftmaxRowsMatchesDoubleReference) {
  for (const test::SoftmaxRowsCase& c : test::softmax_rows_cases()) {
    for (const EmulationOptions& o : simt::test_schedules()) {
      SCOPED_TRACE(std::to_string(c.rows) + "x" + std::to_string(c.cols) + ", " + simt::describe(o));
      ScopedEmulation scope(o);
      std::vector<float> y(c.x.size(), NAN);
      kernels::softmax_rows_launch(c.x.data(), y.data(), c.rows, c.cols, nullptr);
      for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], c.ref[i], c.tol * c.ref[i]) << "element " << i;
      std::vector<float> inplace = c.x;  // y may alias x
      kernels::softmax_rows_launch(inplace.data(), inplace.data(), c.rows, c.cols, nullptr);
      EXPECT_EQ(inplace, y);
    }
  }
}

TEST(SimtKernels, SoftmaxRowsChecksItsShape) {
  std::vector<float> x(4);
  EXPECT_THROW(kernels::softmax_rows_launch(x.data(), x.data(), 2, 0, nullptr), Error);
  EXPECT_THROW(kernels::softmax_rows_launch(x.data(), x.data(), -1, 2, nullptr), Error);
  kernels::softmax_rows_launch(x.data(), x.data(), 0, 2, nullptr);  // no rows: nothing to do
}

}  // namespace
}  // namespace mman
