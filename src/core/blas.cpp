// gemm(): single-threaded OpenBLAS calls, split over the OpenMP team for large products.
#include "mman/blas.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <string>
#include <vector>

#include "mman/threads.h"
#include "src/core/packed_gemm.h"
#include "src/core/parallel.h"

extern "C" void openblas_set_num_threads(int);

namespace mman {
namespace {

// OpenBLAS starts with one thread per core; every call must find it at one (also in a
// program that never calls set_num_threads): two pools on the same cores spin against
// each other, and a multi-threaded OpenBLAS called from an OpenMP region can hang.
void blas_single_threaded() {
  static const bool done = (openblas_set_num_threads(1), true);
  (void)done;
}

// Below this many multiply-adds a product runs on one thread: a parallel region and a
// second packing of the shared operand cost more than the halved work (~1 M
// multiply-adds is ~20 us on one core).
constexpr double kParallelMinMacs = 1 << 20;

// [begin, end) of part `i` of `count` over `total` items, boundaries on multiples of
// `align` (except the end), as even as that allows.
void part(int total, int count, int i, int align, int* begin, int* end) {
  const int units = (total + align - 1) / align;
  const int u0 = static_cast<int>(static_cast<long>(units) * i / count);
  const int u1 = static_cast<int>(static_cast<long>(units) * (i + 1) / count);
  *begin = std::min(total, u0 * align);
  *end = std::min(total, u1 * align);
}

}  // namespace

void gemm_serial(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // BLAS may not touch C when K == 0; we define it as C = beta * C
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  blas_single_threaded();
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

namespace {

// OpenBLAS, split over the team by blocks of C (CPUs without the packed kernels, and
// alpha / beta other than 1 / {0, 1}).
void gemm_openblas(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                   const float* b, int ldb, float beta, float* c, int ldc, int threads) {
  if (threads <= 1) {
    gemm_serial(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Split the longer side of C; columns in multiples of 16 floats (whole vectors and
  // cache lines of C and B), rows in multiples of 4.
  const bool split_cols = n >= m;
  const int parts = std::min(threads, split_cols ? (n + 15) / 16 : (m + 3) / 4);
#pragma omp parallel num_threads(parts)
  {
    const int i = omp_get_thread_num(), count = omp_get_num_threads();
    int begin = 0, end = 0;
    if (split_cols) {
      part(n, count, i, 16, &begin, &end);
      if (end > begin)
        gemm_serial(trans_a, trans_b, m, end - begin, k, alpha, a, lda,
                    trans_b ? b + static_cast<long>(begin) * ldb : b + begin, ldb, beta, c + begin, ldc);
    } else {
      part(m, count, i, 4, &begin, &end);
      if (end > begin)
        gemm_serial(trans_a, trans_b, end - begin, n, k, alpha,
                    trans_a ? a + begin : a + static_cast<long>(begin) * lda, lda, b, ldb, beta,
                    c + static_cast<long>(begin) * ldc, ldc);
    }
  }
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  const int threads = omp_in_parallel() || detail::in_parallel_chunk() ? 1 : num_threads();
  const double macs = static_cast<double>(m) * n * std::max(k, 1);
  const int team = macs >= kParallelMinMacs ? threads : 1;
  static const bool have_kernels = std::string(detail::packed_gemm_isa()) != "generic";
  if (!have_kernels || alpha != 1.0f || (beta != 0.0f && beta != 1.0f) || k <= 0) {
    gemm_openblas(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, team);
    return;
  }
  // The packed kernels (src/core/packed_gemm.h): every element is one FMA chain over k,
  // so a row's result depends on nothing but its own row of op(A): the same bits
  // whatever rows share the product and however it is split. Threads split it by
  // blocks of B's column panels, claimed dynamically (src/core/parallel.h); each block
  // packs its own panels (n*k floats in all, small next to the m*n*k multiply-adds) and
  // computes all m rows for them, so no block waits for another. The packing buffer is
  // the calling thread's and only ever grows.
  // op(A) = A^T (weight gradients dY^T X) split over threads: transposed once into rows
  // here, by the caller, rather than by every block of panels (the kernels transpose
  // op(A) per block of rows, src/core/packed_gemm.cpp, which is best on one thread: the
  // block stays in L2); the row kernels then run the same FMA chains (same bits).
  thread_local std::vector<float> a_rows;
  if (trans_a && team > 1) {
    if (a_rows.size() < static_cast<size_t>(m) * k) a_rows.resize(static_cast<size_t>(m) * k);
    detail::transpose(a, lda, k, m, a_rows.data(), k);
    a = a_rows.data();
    lda = k;
    trans_a = false;
  }
  thread_local std::vector<float> storage;
  if (storage.size() < detail::packed_size(k, n)) storage.resize(detail::packed_size(k, n));
  float* packed = storage.data();
  const detail::PackedMatrix pb{k, n, packed};
  const bool accumulate = beta == 1.0f;
  const int panels = detail::packed_panels(n);
  const int blocks = std::min(panels, team > 1 ? 4 * team : 1);
  detail::parallel_chunks(blocks, [&](int i) {
    int p0 = 0, p1 = 0;
    part(panels, blocks, i, 1, &p0, &p1);
    detail::pack_panels(b, ldb, trans_b, k, n, p0, p1, packed);
    detail::gemm_packed_panels(m, p0, p1, a, lda, trans_a, pb, c, ldc, accumulate);
  });
}

}  // namespace mman
