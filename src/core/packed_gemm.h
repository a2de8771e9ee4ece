// Small-M GEMM against a pre-packed right-hand matrix: the LSTM's per-step recurrent products.
#pragma once
#include <cstddef>
#include <vector>

namespace mman::detail {

// B [k x n] stored in column panels of kPackedPanel floats: panel p holds columns
// p*kPackedPanel .. +kPackedPanel-1 of every row k contiguously (the last panel zero-
// padded), so that a kernel streams one panel once per block of rows.
constexpr int kPackedPanel = 32;

struct PackedMatrix {
  int k = 0, n = 0;
  const float* data = nullptr;  // ceil(n / kPackedPanel) * k * kPackedPanel floats
};

int packed_panels(int n);
size_t packed_size(int k, int n);  // floats
// Packs panels [p0, p1) of B (see pack_b) into dst, which holds packed_size(k, n) floats.
void pack_panels(const float* src, int ld, bool transposed, int k, int n, int p0, int p1, float* dst);

// Packs B [k x n] into `storage` (grown when too small, otherwise reused) and returns a
// view of it. With transposed, src is B^T stored row-major [n x k] (ld >= k), otherwise
// B itself row-major [k x n] (ld >= n).
PackedMatrix pack_b(const float* src, int ld, bool transposed, int k, int n, std::vector<float>& storage);

// C[m x n] (row stride ldc) = (accumulate ? C : 0) + A[m x k] (row stride lda) * B.
// Every element of the product is one sequential fused multiply-add chain over k (in k
// order, from 0), added to C when accumulating, so row r of the result does not depend on m, on the other
// rows, on how rows are split among threads, or on which kernel variant runs (AVX-512
// and AVX2+FMA give the same bits; the plain-C++ fallback for CPUs without FMA rounds
// each product). Hence a conversation's forward pass gives the same bits whatever else
// shares its batch. Single-threaded.
void gemm_packed(int m, const float* a, int lda, const PackedMatrix& b, float* c, int ldc, bool accumulate);

// Rows [r0, r1) of C = (accumulate ? C : 0) + op(A) * B, where op(A) is A [m x k]
// (lda >= k) or, with trans_a, the transpose of A [k x m] (lda >= m); c and a point at
// row / column 0 as for the whole product. For threads sharing one product by rows.
void gemm_packed_rows(int r0, int r1, const float* a, int lda, bool trans_a, const PackedMatrix& b, float* c,
                      int ldc, bool accumulate);

// Panels [p0, p1) (columns [p0*kPackedPanel, ...)) of the whole product, all m rows.
void gemm_packed_panels(int m, int p0, int p1, const float* a, int lda, bool trans_a, const PackedMatrix& b,
                        float* c, int ldc, bool accumulate);

// dst [cols x rows] (row stride ldd) = the transpose of src [rows x cols] (row stride ld):
// 8 x 8 AVX2 register transposes where the CPU has them. Data movement only.
void transpose(const float* src, long ld, int rows, int cols, float* dst, long ldd);

// The instruction set the kernels dispatch to on this CPU ("avx512", "avx2" or "generic").
const char* packed_gemm_isa();

// The product with a named variant ("avx512", "avx2", "generic"), for tests comparing
// them. Returns false (and computes nothing) when this CPU cannot run it.
bool gemm_packed_variant(const char* isa, int m, const float* a, int lda, bool trans_a, const PackedMatrix& b,
                         float* c, int ldc, bool accumulate);

}  // namespace mman::detail
