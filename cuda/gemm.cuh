// Launcher of the row-major cuBLAS GEMM (cuda/gemm.cu): mman::gemm's contract on device pointers.
#pragma once
#include "mman/cuda/context.h"

namespace mman::cuda {

// C[M x N] = alpha * op(A) * op(B) + beta * C on the context's stream, all row-major with
// mman::gemm's (include/mman/blas.h) arguments and meaning: op(A) is [M x K], A is [M x K]
// (lda >= K) or, with trans_a, [K x M] (lda >= M); likewise B; ldc >= N. K == 0 gives
// C = beta * C (C is not read when beta == 0), M == 0 or N == 0 does nothing. Throws
// mman::Error for a negative size or a leading dimension that is too small.
void gemm_device(const CudaContext& ctx, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                 const float* d_a, int lda, const float* d_b, int ldb, float beta, float* d_c, int ldc);

}  // namespace mman::cuda
