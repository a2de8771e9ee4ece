// Row-major sgemm wrapper over CBLAS: the one place the CPU backend calls BLAS.
#pragma once

namespace mman {

// C[M x N] = alpha * op(A) * op(B) + beta * C, all row-major. op(A) is [M x K]:
// A is [M x K] (lda >= K) or, with trans_a, [K x M] (lda >= M); likewise B.
//
// How (src/core/blas.cpp): on CPUs with AVX2+FMA, mman's packed kernels
// (src/core/packed_gemm.h) for alpha = 1 and beta = 0 or 1: every element of op(A) op(B)
// is one FMA chain over k, added to C when beta = 1, so a row of C depends only on its
// own row of op(A) (the same bits whatever other rows share the product, however it is
// split over threads). A product large enough to pay for it is split by blocks of
// columns over mman's helper threads (src/core/parallel.h). Otherwise single-threaded
// OpenBLAS calls (set_num_threads keeps OpenBLAS's own pool at one thread, so it never
// spins against OpenMP's), split over the OpenMP team by blocks of C. Results are
// deterministic for a fixed thread count. Inside a parallel region it runs on the
// calling thread.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc);

// The same product on the calling thread only (for work already split among threads).
void gemm_serial(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc);

}  // namespace mman
