// Helpers shared by the custom kernels: float arithmetic that nvcc may not fuse into FMAs (for
// results bit-identical to the CPU), block-wide sums of any type, and grid-size arithmetic.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cuda/kernels/reduce.cuh"
#include "mman/error.h"
#include "mman/params.h"
#include "mman/simt/simt.h"
#include "mman/train/optimizer.h"

// `#pragma unroll` for nvcc; host compilers would warn about the unknown pragma.
#if defined(__CUDACC__)
#define MMAN_UNROLL _Pragma("unroll")
#else
#define MMAN_UNROLL
#endif

namespace mman::kernels {

// One IEEE round-to-nearest operation each, exactly what the CPU backend computes for `a * b`,
// `a + b`, `a / b` and std::sqrt(a) (GCC in ISO C++ mode on x86-64 does not contract). nvcc
// contracts `a * b + c` into one FMA by default, which rounds once instead of twice; the
// __f*_rn intrinsics are never contracted. Kernels that promise bit-identical results use these.
MMAN_HOST_DEVICE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
MMAN_HOST_DEVICE float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
MMAN_HOST_DEVICE float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
MMAN_HOST_DEVICE float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
MMAN_HOST_DEVICE float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

struct PlusOp {
  template <class T>
  MMAN_HOST_DEVICE T operator()(T a, T b) const { return a + b; }
};
struct MinOp {
  template <class T>
  MMAN_HOST_DEVICE T operator()(T a, T b) const { return b < a ? b : a; }
};

// op-reduction of `v` (any arithmetic type: double for losses and norms, long long for counts)
// over a 1-D block of kBlock threads (a power of two), returned to every thread. A shared-memory
// tree whose association order depends only on kBlock, so the result is reproducible. The
// trailing barrier lets the caller reuse `scratch` (kBlock elements).
template <int kBlock, class T, class Op>
MMAN_DEVICE T block_tree_reduce(T v, Op op, MMAN_SHARED_PTR(T) scratch) {
  static_assert(kBlock > 0 && (kBlock & (kBlock - 1)) == 0, "kBlock must be a power of two");
  const int t = static_cast<int>(threadIdx.x);
  scratch[t] = v;
  __syncthreads();
  for (int s = kBlock / 2; s > 0; s /= 2) {
    if (t < s) {
      const T a = scratch[t], b = scratch[t + s];
      scratch[t] = op(a, b);
    }
    __syncthreads();
  }
  const T total = scratch[0];
  __syncthreads();
  return total;
}

template <int kBlock, class T>
MMAN_DEVICE T block_tree_sum(T v, MMAN_SHARED_PTR(T) scratch) {
  return block_tree_reduce<kBlock>(v, PlusOp{}, scratch);
}

// Sum of `v` over the 32 lanes of a warp (butterfly: every lane gets the same value, because
// each step adds the same two partial sums on both partners).
MMAN_DEVICE float warp_sum(float v) { return warp_reduce(v, SumOp{}); }

// ceil(n / d) for positive d.
MMAN_HOST_DEVICE long long ceil_div(long long n, long long d) { return (n + d - 1) / d; }

// The trainable spans of a parameter arena (mman::trainable_spans) as kernels take them:
// bounds = {begin_0, end_0, begin_1, end_1, ...} (a device copy on the GPU), count spans, the
// longest one's length (to size the grid). Span s is handled by the blocks with blockIdx.y = s.
struct ArenaSpans {
  const long long* bounds = nullptr;
  int count = 0;
  long long longest = 0;
};

// The bounds table of `params`' trainable spans (copy it to the device and point an ArenaSpans
// at it); `longest` receives the longest span's length.
inline std::vector<long long> arena_span_bounds(const ParamStore& params, long long* longest) {
  std::vector<long long> bounds;
  *longest = 0;
  for (const auto& [begin, end] : trainable_spans(params)) {
    bounds.push_back(static_cast<long long>(begin));
    bounds.push_back(static_cast<long long>(end));
    *longest = std::max(*longest, static_cast<long long>(end - begin));
  }
  return bounds;
}

constexpr int kSpanThreads = 256;

// Grid for a loop over every span: blockIdx.y picks the span, blockIdx.x and threadIdx.x stride
// through it; at most max_blocks_x blocks per span.
inline simt::LaunchConfig span_config(const ArenaSpans& spans, long long max_blocks_x, simt::Stream stream) {
  MMAN_CHECK(spans.count >= 0 && spans.count <= 65535 && spans.longest >= 0,
             "arena spans: {} spans (at most 65535) of longest length {}", spans.count, spans.longest);
  const long long bx = std::max(1LL, std::min(max_blocks_x, ceil_div(spans.longest, kSpanThreads)));
  return {dim3(static_cast<unsigned>(bx), static_cast<unsigned>(spans.count < 1 ? 1 : spans.count)),
          dim3(kSpanThreads), 0, stream};
}

// First element and end of this thread's walk through span blockIdx.y, and its stride.
struct SpanWalk {
  long long first, end, stride;
};
MMAN_DEVICE SpanWalk span_walk(const long long* bounds) {
  const long long begin = bounds[2 * blockIdx.y], end = bounds[2 * blockIdx.y + 1];
  return {begin + static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x, end,
          static_cast<long long>(gridDim.x) * blockDim.x};
}

}  // namespace mman::kernels
