// Row-major GEMM on cuBLAS: the GPU counterpart of mman::gemm (include/mman/blas.h).
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>

#include "cuda/check.cuh"
#include "cuda/gemm.cuh"
#include "mman/error.h"

namespace mman::cuda {

void gemm_device(const CudaContext& ctx, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                 const float* d_a, int lda, const float* d_b, int ldb, float beta, float* d_c, int ldc) {
  MMAN_CHECK(m >= 0 && n >= 0 && k >= 0, "gemm_device: negative size M={} N={} K={}", m, n, k);
  MMAN_CHECK(ldc >= std::max(1, n), "gemm_device: ldc {} is smaller than N={}", ldc, n);
  if (m == 0 || n == 0) return;
  cublasHandle_t handle = ctx.cublas();
  if (k == 0) {  // BLAS leaves this case loosely defined; mman::gemm defines it as C = beta * C
    if (beta == 0.0f) {
      MMAN_CUDA_CHECK(cudaMemset2DAsync(d_c, static_cast<size_t>(ldc) * sizeof(float), 0,
                                        static_cast<size_t>(n) * sizeof(float), static_cast<size_t>(m),
                                        ctx.stream()));
    } else {
      // In place (C is both operands, untransposed, same leading dimension): C = beta C + 0 C.
      const float zero = 0.0f;
      MMAN_CUBLAS_CHECK(cublasSgeam(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, &beta, d_c, ldc, &zero, d_c, ldc, d_c, ldc));
    }
    return;
  }
  MMAN_CHECK(lda >= std::max(1, trans_a ? m : k), "gemm_device: lda {} is smaller than {} ({}A)", lda,
             trans_a ? m : k, trans_a ? "transposed " : "");
  MMAN_CHECK(ldb >= std::max(1, trans_b ? k : n), "gemm_device: ldb {} is smaller than {} ({}B)", ldb,
             trans_b ? k : n, trans_b ? "transposed " : "");
  MMAN_CHECK(d_a != nullptr && d_b != nullptr && d_c != nullptr, "gemm_device: null matrix pointer");
  // cuBLAS is column-major. A row-major [r x c] matrix with leading dimension ld is the
  // column-major [c x r] matrix with the same ld, i.e. its transpose, so the row-major
  // C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T: swap the operands (and M, N)
  // and keep each operand's own transpose flag.
  MMAN_CUBLAS_CHECK(cublasSgemm(handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m,
                                k, &alpha, d_b, ldb, d_a, lda, &beta, d_c, ldc));
}

}  // namespace mman::cuda
