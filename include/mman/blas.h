// Row-major sgemm wrapper over CBLAS: the one place the CPU backend calls BLAS.
#pragma once
#include <cblas.h>

namespace mman {

// C[M x N] = alpha * op(A) * op(B) + beta * C, all row-major. op(A) is [M x K]:
// A is [M x K] (lda >= K) or, with trans_a, [K x M] (lda >= M); likewise B.
inline void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // BLAS may not touch C when K == 0; we define it as C = beta * C
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace mman
