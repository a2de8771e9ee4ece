// Row-major sgemm wrapper over CBLAS: the one place the CPU backend calls BLAS.
#pragma once

namespace mman {

// C[M x N] = alpha * op(A) * op(B) + beta * C, all row-major. op(A) is [M x K]:
// A is [M x K] (lda >= K) or, with trans_a, [K x M] (lda >= M); likewise B.
//
// Threads (src/core/blas.cpp): OpenBLAS always runs single-threaded (set_num_threads
// keeps its own pool at one thread, so it never spins against OpenMP's); a product
// large enough to pay for a parallel region is split by blocks of C's rows or columns
// over the OpenMP team, one single-threaded sgemm per thread. The split depends only on
// the sizes and the thread count, so results are deterministic for a fixed thread
// count. Called from inside a parallel region it runs on the calling thread.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc);

// The same product on the calling thread only (for work already split among threads).
void gemm_serial(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc);

}  // namespace mman
