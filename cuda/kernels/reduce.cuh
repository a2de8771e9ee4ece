// Block-wide reductions (shared-memory tree and warp-shuffle) and a two-pass float sum, written
// once for nvcc and the host SIMT emulation (mman/simt/simt.h); used by loss and norm kernels.
#pragma once
#include <cstdint>

#include "mman/error.h"
#include "mman/simt/simt.h"

namespace mman::kernels {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xFFFFFFFFu;

struct SumOp {
  MMAN_HOST_DEVICE float operator()(float a, float b) const { return a + b; }
};
struct MaxOp {
  MMAN_HOST_DEVICE float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Sum of `v` over a 1-D block of kBlock threads (a power of two), returned to every thread.
// Tree reduction in `scratch` (kBlock floats). The trailing barrier lets the caller reuse scratch.
template <int kBlock>
MMAN_DEVICE float block_sum_tree(float v, MMAN_SHARED_PTR(float) scratch) {
  static_assert(kBlock > 0 && (kBlock & (kBlock - 1)) == 0, "kBlock must be a power of two");
  const int t = static_cast<int>(threadIdx.x);
  scratch[t] = v;
  __syncthreads();
  for (int s = kBlock / 2; s > 0; s /= 2) {
    if (t < s) scratch[t] = scratch[t] + scratch[t + s];
    __syncthreads();
  }
  const float total = scratch[0];
  __syncthreads();
  return total;
}

// op-reduction of `v` over the 32 lanes of a warp; every lane gets the result (butterfly).
template <class Op>
MMAN_DEVICE float warp_reduce(float v, Op op) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// op-reduction of `v` over a 1-D block of kBlock threads (a multiple of 32, at most 1024),
// returned to every thread. Lane 0 of each warp gets its warp's result by shuffling down,
// publishes it in `scratch` (kBlock / 32 floats), then every warp reduces those. `identity`
// is op's neutral element. The trailing barrier lets the caller reuse scratch.
template <int kBlock, class Op>
MMAN_DEVICE float block_reduce(float v, Op op, float identity, MMAN_SHARED_PTR(float) scratch) {
  static_assert(kBlock % kWarpSize == 0 && kBlock <= 1024, "kBlock must be a multiple of 32, at most 1024");
  constexpr int kWarps = kBlock / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v = op(v, __shfl_down_sync(kFullMask, v, offset));
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float w = identity;
  if (lane < kWarps) w = scratch[lane];
  w = warp_reduce(w, op);
  __syncthreads();
  return w;
}

template <int kBlock>
MMAN_DEVICE float block_sum(float v, MMAN_SHARED_PTR(float) scratch) {
  return block_reduce<kBlock>(v, SumOp{}, 0.0f, scratch);
}

// partial[blockIdx.x] = sum of x[i] over this block's grid-stride share of [0, n).
template <int kBlock, bool kShuffle>
MMAN_KERNEL void sum_partials_kernel(const float* x, long long n, float* partial) {
  MMAN_SHARED(float, scratch, kShuffle ? kBlock / kWarpSize : kBlock);
  float v = 0.0f;
  const long long stride = static_cast<long long>(gridDim.x) * kBlock;
  for (long long i = static_cast<long long>(blockIdx.x) * kBlock + threadIdx.x; i < n; i += stride) v += x[i];
  v = kShuffle ? block_sum<kBlock>(v, scratch) : block_sum_tree<kBlock>(v, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = v;
}

enum class SumAlgo { Tree, Shuffle };
constexpr int kSumBlock = 256;
constexpr int kSumMaxPartials = 256;  // so the second pass is one block

// Number of floats of `partial` scratch sum_launch needs for n elements.
inline int sum_partial_count(long long n) {
  const long long blocks = (n + kSumBlock - 1) / kSumBlock;
  return static_cast<int>(blocks < 1 ? 1 : blocks > kSumMaxPartials ? kSumMaxPartials : blocks);
}

// *out = sum of x[0..n) in two passes (per-block partials, then one block over them). The
// association order depends only on n, so the result is deterministic.
inline void sum_launch(const float* x, long long n, float* partial, float* out, SumAlgo algo, simt::Stream stream) {
  MMAN_CHECK(n >= 0, "sum_launch: element count {} is negative", n);
  const int blocks = sum_partial_count(n);
  const simt::LaunchConfig first{dim3(static_cast<unsigned>(blocks)), dim3(kSumBlock), 0, stream};
  const simt::LaunchConfig second{dim3(1), dim3(kSumBlock), 0, stream};
  if (algo == SumAlgo::Tree) {
    MMAN_LAUNCH(first, sum_partials_kernel<kSumBlock, false>, x, n, partial);
    MMAN_LAUNCH(second, sum_partials_kernel<kSumBlock, false>, partial, static_cast<long long>(blocks), out);
  } else {
    MMAN_LAUNCH(first, sum_partials_kernel<kSumBlock, true>, x, n, partial);
    MMAN_LAUNCH(second, sum_partials_kernel<kSumBlock, true>, partial, static_cast<long long>(blocks), out);
  }
}

}  // namespace mman::kernels
