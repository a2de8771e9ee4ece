// Helpers shared by the custom kernels: float arithmetic that nvcc may not fuse into FMAs (for
// results bit-identical to the CPU), block-wide sums of any type, and grid-size arithmetic.
#pragma once
#include <cmath>
#include <cstdint>

#include "cuda/kernels/reduce.cuh"
#include "mman/simt/simt.h"

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

// Sum of `v` (any arithmetic type: double for losses and norms, long long for counts) over a
// 1-D block of kBlock threads (a power of two), returned to every thread. A shared-memory
// tree whose association order depends only on kBlock, so the result is reproducible. The
// trailing barrier lets the caller reuse `scratch` (kBlock elements).
template <int kBlock, class T>
MMAN_DEVICE T block_tree_sum(T v, MMAN_SHARED_PTR(T) scratch) {
  static_assert(kBlock > 0 && (kBlock & (kBlock - 1)) == 0, "kBlock must be a power of two");
  const int t = static_cast<int>(threadIdx.x);
  scratch[t] = v;
  __syncthreads();
  for (int s = kBlock / 2; s > 0; s /= 2) {
    if (t < s) {
      const T a = scratch[t], b = scratch[t + s];
      scratch[t] = static_cast<T>(a + b);
    }
    __syncthreads();
  }
  const T total = scratch[0];
  __syncthreads();
  return total;
}

// Sum of `v` over the 32 lanes of a warp (butterfly: every lane gets the same value, because
// each step adds the same two partial sums on both partners).
MMAN_DEVICE float warp_sum(float v) { return warp_reduce(v, SumOp{}); }

// ceil(n / d) for positive d.
MMAN_HOST_DEVICE long long ceil_div(long long n, long long d) { return (n + d - 1) / d; }

}  // namespace mman::kernels
