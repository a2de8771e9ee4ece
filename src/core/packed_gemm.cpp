// Small-M GEMM against a panel-packed B, with AVX-512 / AVX2+FMA kernels chosen at run time.
//
// Why not sgemm: a recurrent step multiplies a handful of rows (the conversations of a
// batch) by the same [h x 4h] weights hundreds of times per batch, and OpenBLAS re-packs
// the whole weight matrix on every call (13% of a training epoch in its copy routine);
// packing once per batch and streaming the panels from cache makes the step compute-
// bound. The kernels are compiled for their instruction set with target attributes and
// picked by CPUID, so the library still builds for (and runs on) any x86-64.
#include "src/core/packed_gemm.h"

#include <algorithm>
#include <cstring>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MMAN_PACKED_X86 1
#endif

namespace mman::detail {
namespace {

constexpr int kP = kPackedPanel;

// What a kernel does with C: kStore C = sum; kContinue C = C + ... as one chain (C holds
// the partial sum of the earlier chunks of k); kAdd C = C + sum (the sum formed first, so
// that accumulating a product twice doubles it exactly).
constexpr int kStore = 0, kContinue = 1, kAdd = 2;

int panels_of(int n) { return (n + kP - 1) / kP; }

// Splits m rows into blocks of at most max_rows, as even as possible (10 -> 10, 20 ->
// 10 + 10, 13 with max 12 -> 7 + 6): one pass over the panel per block.
template <typename F>
void for_row_blocks(int m, int max_rows, F&& f) {
  const int blocks = (m + max_rows - 1) / max_rows;
  int r0 = 0;
  for (int b = 0; b < blocks; ++b) {
    const int rows = (m - r0) / (blocks - b);
    f(r0, rows);
    r0 += rows;
  }
}

// Element (r, j) of op(A): A [m x k] row-major or, transposed, A [k x m].
template <bool TA>
inline const float* a_at(const float* a, int lda, int r, int kk) {
  return TA ? a + static_cast<long>(kk) * lda + r : a + static_cast<long>(r) * lda + kk;
}

// Rows [r0, r0 + rows) of C for one panel and one chunk [k0, k0 + kc) of k.
template <bool TA>
void block_generic(int rows, int kc, const float* a, int lda, const float* panel, float* c, int ldc, int mode,
                   int cols) {
  float acc[kP];
  for (int r = 0; r < rows; ++r) {
    float* cr = c + static_cast<long>(r) * ldc;
    for (int j = 0; j < kP; ++j) acc[j] = mode == kContinue && j < cols ? cr[j] : 0.0f;
    for (int kk = 0; kk < kc; ++kk) {
      const float av = *a_at<TA>(a, lda, r, kk);
      const float* bk = panel + static_cast<size_t>(kk) * kP;
      for (int j = 0; j < kP; ++j) acc[j] += av * bk[j];
    }
    if (mode == kAdd)
      for (int j = 0; j < cols; ++j) acc[j] += cr[j];
    std::memcpy(cr, acc, static_cast<size_t>(cols) * sizeof(float));
  }
}

#ifdef MMAN_PACKED_X86

// Function attributes rather than #pragma GCC target: Clang (the fuzzing build) honours them too.
#define MMAN_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define MMAN_AVX2 __attribute__((target("avx2,fma")))

// MR rows x NV 16-float vectors: one 32-column panel (NV = 2; MR <= 12 keeps the 24
// accumulators, the B vectors and the broadcast in the 32 registers) or two adjacent
// panels (NV = 4, MR <= 6: for the few rows of a recurrent step, twice the independent
// FMA chains per row to hide the FMA latency). Panel v / 2 starts pstride floats after
// the first; masks[v] selects the valid columns of vector v.
template <int MR, int NV, bool TA>
MMAN_AVX512 void block_avx512(int k, const float* a, int lda, const float* panel, long pstride, float* c,
                              int ldc, int mode, const __mmask16* masks) {
  __m512 acc[MR][NV];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[r][v] = mode == kContinue ? _mm512_maskz_loadu_ps(masks[v], c + static_cast<long>(r) * ldc + 16 * v)
                                    : _mm512_setzero_ps();
  for (int kk = 0; kk < k; ++kk) {
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = _mm512_loadu_ps(panel + (v / 2) * pstride + static_cast<long>(kk) * kP + 16 * (v % 2));
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(*a_at<TA>(a, lda, r, kk));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  if (mode == kAdd) {
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], c + static_cast<long>(r) * ldc + 16 * v),
                                  acc[r][v]);
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      _mm512_mask_storeu_ps(c + static_cast<long>(r) * ldc + 16 * v, masks[v], acc[r][v]);
}

MMAN_AVX512 inline __mmask16 vector_mask(int cols, int v) {  // columns of vector v valid among `cols`
  const int valid = cols - 16 * v;
  return static_cast<__mmask16>(valid >= 16 ? 0xFFFF : valid <= 0 ? 0 : (1u << valid) - 1);
}

using BlockAvx512 = void (*)(int, const float*, int, const float*, long, float*, int, int, const __mmask16*);
constexpr int kMaxRowsAvx512 = 12, kMaxRowsAvx512Pair = 6;
template <bool TA>
constexpr BlockAvx512 kBlocksAvx512[kMaxRowsAvx512 + 1] = {nullptr,
                                                           block_avx512<1, 2, TA>,
                                                           block_avx512<2, 2, TA>,
                                                           block_avx512<3, 2, TA>,
                                                           block_avx512<4, 2, TA>,
                                                           block_avx512<5, 2, TA>,
                                                           block_avx512<6, 2, TA>,
                                                           block_avx512<7, 2, TA>,
                                                           block_avx512<8, 2, TA>,
                                                           block_avx512<9, 2, TA>,
                                                           block_avx512<10, 2, TA>,
                                                           block_avx512<11, 2, TA>,
                                                           block_avx512<12, 2, TA>};
template <bool TA>
constexpr BlockAvx512 kPairBlocksAvx512[kMaxRowsAvx512Pair + 1] = {nullptr,
                                                                   block_avx512<1, 4, TA>,
                                                                   block_avx512<2, 4, TA>,
                                                                   block_avx512<3, 4, TA>,
                                                                   block_avx512<4, 4, TA>,
                                                                   block_avx512<5, 4, TA>,
                                                                   block_avx512<6, 4, TA>};

template <bool TA>
MMAN_AVX512 void panel_avx512(int r0, int r1, int kc, const float* a, int lda, const float* panel, float* c,
                              int ldc, int mode, int cols) {
  const __mmask16 masks[2] = {vector_mask(cols, 0), vector_mask(cols, 1)};
  for_row_blocks(r1 - r0, kMaxRowsAvx512, [&](int b0, int rows) {
    const int r = r0 + b0;
    kBlocksAvx512<TA>[rows](kc, a_at<TA>(a, lda, r, 0), lda, panel, 0, c + static_cast<long>(r) * ldc, ldc,
                            mode, masks);
  });
}

// Two adjacent panels (the second pstride floats after the first) for at most 6 rows.
template <bool TA>
MMAN_AVX512 void pair_avx512(int r0, int r1, int kc, const float* a, int lda, const float* panel,
                             long pstride, float* c, int ldc, int mode, int cols) {
  const __mmask16 masks[4] = {vector_mask(cols, 0), vector_mask(cols, 1), vector_mask(cols, 2),
                              vector_mask(cols, 3)};
  kPairBlocksAvx512<TA>[r1 - r0](kc, a_at<TA>(a, lda, r0, 0), lda, panel, pstride,
                                 c + static_cast<long>(r0) * ldc, ldc, mode, masks);
}

template <int MR, bool TA>
MMAN_AVX2 void block_avx2(int k, const float* a, int lda, const float* half_panel, float* c, int ldc,
                          int mode, __m256i m0, __m256i m1) {
  __m256 c0[MR], c1[MR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    c0[r] = mode == kContinue ? _mm256_maskload_ps(c + static_cast<long>(r) * ldc, m0) : _mm256_setzero_ps();
    c1[r] =
        mode == kContinue ? _mm256_maskload_ps(c + static_cast<long>(r) * ldc + 8, m1) : _mm256_setzero_ps();
  }
  for (int kk = 0; kk < k; ++kk) {
    const __m256 b0 = _mm256_loadu_ps(half_panel + static_cast<long>(kk) * kP);
    const __m256 b1 = _mm256_loadu_ps(half_panel + static_cast<long>(kk) * kP + 8);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a_at<TA>(a, lda, r, kk));
      c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
    }
  }
  if (mode == kAdd) {
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      c0[r] = _mm256_add_ps(_mm256_maskload_ps(c + static_cast<long>(r) * ldc, m0), c0[r]);
      c1[r] = _mm256_add_ps(_mm256_maskload_ps(c + static_cast<long>(r) * ldc + 8, m1), c1[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    _mm256_maskstore_ps(c + static_cast<long>(r) * ldc, m0, c0[r]);
    _mm256_maskstore_ps(c + static_cast<long>(r) * ldc + 8, m1, c1[r]);
  }
}

using BlockAvx2 = void (*)(int, const float*, int, const float*, float*, int, int, __m256i, __m256i);
constexpr int kMaxRowsAvx2 = 6;
template <bool TA>
constexpr BlockAvx2 kBlocksAvx2[kMaxRowsAvx2 + 1] = {nullptr,           block_avx2<1, TA>, block_avx2<2, TA>,
                                                     block_avx2<3, TA>, block_avx2<4, TA>, block_avx2<5, TA>,
                                                     block_avx2<6, TA>};

MMAN_AVX2 __m256i lane_mask(int valid) {  // lanes 0..valid-1 on
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), idx);
}

template <bool TA>
MMAN_AVX2 void panel_avx2(int r0, int r1, int kc, const float* a, int lda, const float* panel, float* c,
                          int ldc, int mode, int cols) {
  for (int half = 0; half < 2; ++half) {
    const int hc = std::min(16, cols - half * 16);
    if (hc <= 0) break;
    const __m256i m0 = lane_mask(hc), m1 = lane_mask(hc - 8);
    for_row_blocks(r1 - r0, kMaxRowsAvx2, [&](int b0, int rows) {
      const int r = r0 + b0;
      kBlocksAvx2<TA>[rows](kc, a_at<TA>(a, lda, r, 0), lda, panel + half * 16,
                            c + static_cast<long>(r) * ldc + half * 16, ldc, mode, m0, m1);
    });
  }
}

// Transposed packing, 8 x 8 blocks at a time: panel rows kk..kk+7, columns j..j+7 are
// src rows j..j+7, columns kk..kk+7 (two unpack stages and a 128-bit lane exchange).
// Pure data movement, so the same bits as the scalar loop; about 3x its speed, which
// matters because every forward pass packs W_ih^T and W_hh^T of each LSTM layer.
MMAN_AVX2 inline void transpose8x8(const float* s, long ld, float* d, long ldd) {
  const __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + ld), r2 = _mm256_loadu_ps(s + 2 * ld),
               r3 = _mm256_loadu_ps(s + 3 * ld), r4 = _mm256_loadu_ps(s + 4 * ld),
               r5 = _mm256_loadu_ps(s + 5 * ld), r6 = _mm256_loadu_ps(s + 6 * ld),
               r7 = _mm256_loadu_ps(s + 7 * ld);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
               t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
               t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
               u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
               u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
               u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(d + 0 * ldd, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(d + 1 * ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(d + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(d + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(d + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(d + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(d + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(d + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

// One transposed panel (columns j0 .. j0+cols-1 of B, i.e. src rows), zero-padded to kP.
MMAN_AVX2 void pack_panel_transposed_avx2(const float* src, long ld, int k, int j0, int cols, float* panel) {
  const int k8 = k / 8 * 8, c8 = cols / 8 * 8;
  for (int kk = 0; kk < k8; kk += 8)
    for (int j = 0; j < c8; j += 8) transpose8x8(src + (j0 + j) * ld + kk, ld, panel + static_cast<long>(kk) * kP + j, kP);
  for (int j = 0; j < c8; ++j)  // the last k % 8 rows of the panel
    for (int kk = k8; kk < k; ++kk) panel[static_cast<long>(kk) * kP + j] = src[(j0 + j) * ld + kk];
  for (int j = c8; j < cols; ++j)  // the last cols % 8 columns
    for (int kk = 0; kk < k; ++kk) panel[static_cast<long>(kk) * kP + j] = src[(j0 + j) * ld + kk];
  if (cols < kP)
    for (int kk = 0; kk < k; ++kk) std::fill(panel + static_cast<long>(kk) * kP + cols, panel + (kk + 1L) * kP, 0.0f);
}

// dst [cols x rows] (row stride ldd) = the transpose of src [rows x cols] (row stride ld).
MMAN_AVX2 void transpose_avx2(const float* src, long ld, int rows, int cols, float* dst, long ldd) {
  const int r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  for (int i = 0; i < r8; i += 8) {
    for (int j = 0; j < c8; j += 8) transpose8x8(src + i * ld + j, ld, dst + j * ldd + i, ldd);
    for (int j = c8; j < cols; ++j)
      for (int ii = i; ii < i + 8; ++ii) dst[j * ldd + ii] = src[ii * ld + j];
  }
  for (int i = r8; i < rows; ++i)
    for (int j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * ld + j];
}

bool have_avx2() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return yes;
}

#endif  // MMAN_PACKED_X86

// One panel's contribution to rows [r0, r1) of C over one chunk of k.
using PanelFn = void (*)(int r0, int r1, int kc, const float* a, int lda, const float* panel, float* c,
                         int ldc, int mode, int cols);

template <bool TA>
void panel_generic(int r0, int r1, int kc, const float* a, int lda, const float* panel, float* c, int ldc,
                   int mode, int cols) {
  block_generic<TA>(r1 - r0, kc, a_at<TA>(a, lda, r0, 0), lda, panel, c + static_cast<long>(r0) * ldc, ldc,
                    mode, cols);
}

// Two adjacent panels for at most kPairRows rows (nullptr: the variant has none).
using PairFn = void (*)(int r0, int r1, int kc, const float* a, int lda, const float* panel, long pstride,
                        float* c, int ldc, int mode, int cols);
constexpr int kPairRows = 6;

struct Variant {
  PanelFn panel[2];  // [trans_a]
  PairFn pair[2];    // [trans_a]
  const char* isa;
};

Variant variant_named(const std::string& name) {
#ifdef MMAN_PACKED_X86
  __builtin_cpu_init();
  if (name == "avx512" && __builtin_cpu_supports("avx512f"))
    return {{panel_avx512<false>, panel_avx512<true>}, {pair_avx512<false>, pair_avx512<true>}, "avx512"};
  if (name == "avx2" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return {{panel_avx2<false>, panel_avx2<true>}, {nullptr, nullptr}, "avx2"};
#endif
  if (name == "generic") return {{panel_generic<false>, panel_generic<true>}, {nullptr, nullptr}, "generic"};
  return {{nullptr, nullptr}, {nullptr, nullptr}, nullptr};
}

const Variant& variant() {
  static const Variant v = [] {
    for (const char* isa : {"avx512", "avx2"}) {
      const Variant c = variant_named(isa);
      if (c.isa != nullptr) return c;
    }
    return variant_named("generic");
  }();
  return v;
}

// Without accumulation, k is processed in chunks of at most kMaxChunk (as even as
// possible): a chunk of a panel (kc x 32 floats) stays in L1 while the rows stream past
// it, and C carries the FMA chain from one chunk to the next (a stored and reloaded float
// is exact), so chunking changes no bits. Accumulating products (C + sum) run k whole.
constexpr int kMaxChunk = 384;

void run_rows(const Variant& v, int r0, int r1, const float* a, int lda, bool trans_a, const PackedMatrix& b,
              float* c, int ldc, bool accumulate);

// Products of many rows run in blocks of at most kMaxRows rows, each block through every
// panel: the block's rows of A (kMaxRows x a chunk of k, ~100 KB) then stay in L2 while
// the panels pass, instead of all of A being read from L3 again for every panel (an
// evaluation of 60 conversations is ~3,000 rows). Rows are independent, so the blocking
// changes no bits.
constexpr int kMaxRows = 96;

void run(const Variant& v, int r0, int r1, const float* a, int lda, bool trans_a, const PackedMatrix& b,
         float* c, int ldc, bool accumulate) {
#ifdef MMAN_PACKED_X86
  // A transposed (weight gradients, dY^T X): the kernels would broadcast each k step's
  // rows from one line of A far from the previous step's (a strided walk over all of A,
  // which straddles cache lines, for every panel), ~15% slower than on rows. So each row
  // block of op(A) is transposed once into rows (8 x 8 AVX2 transposes, a small cost next
  // to its reuse by every panel) and runs on the row kernels: the same FMA chains, so the
  // same bits.
  if (trans_a && std::strcmp(v.isa, "generic") != 0 && have_avx2()) {
    thread_local std::vector<float> rows_of_a;
    const int k = b.k;
    if (rows_of_a.size() < static_cast<size_t>(kMaxRows) * k) rows_of_a.resize(static_cast<size_t>(kMaxRows) * k);
    for_row_blocks(r1 - r0, kMaxRows, [&](int b0, int rows) {
      const int r = r0 + b0;
      transpose_avx2(a + r, lda, k, rows, rows_of_a.data(), k);
      run_rows(v, 0, rows, rows_of_a.data(), k, false, b, c + static_cast<long>(r) * ldc, ldc, accumulate);
    });
    return;
  }
#endif
  for_row_blocks(r1 - r0, kMaxRows, [&](int b0, int rows) {
    run_rows(v, r0 + b0, r0 + b0 + rows, a, lda, trans_a, b, c, ldc, accumulate);
  });
}

void run_rows(const Variant& v, int r0, int r1, const float* a, int lda, bool trans_a, const PackedMatrix& b,
              float* c, int ldc, bool accumulate) {
  if (r1 <= r0 || b.n <= 0) return;
  const int k = b.k, n = b.n;
  if (accumulate && k > kMaxChunk) {
    // C + sum with k in L1-sized chunks too: the whole sum is formed first in a scratch
    // block (chunk by chunk, as without accumulation), then added to C, which is what
    // the kernels' one-pass accumulation computes (kAdd): the same bits.
    thread_local std::vector<float> sum;
    const int rows = r1 - r0;
    if (sum.size() < static_cast<size_t>(rows) * n) sum.resize(static_cast<size_t>(rows) * n);
    run_rows(v, 0, rows, trans_a ? a + r0 : a + static_cast<long>(r0) * lda, lda, trans_a, b, sum.data(), n, false);
    for (int r = 0; r < rows; ++r) {
      float* cr = c + static_cast<long>(r0 + r) * ldc;
      const float* sr = sum.data() + static_cast<long>(r) * n;
      for (int j = 0; j < n; ++j) cr[j] = cr[j] + sr[j];
    }
    return;
  }
  if (k == 0) {
    if (!accumulate)
      for (int r = r0; r < r1; ++r)
        std::fill(c + static_cast<long>(r) * ldc, c + static_cast<long>(r) * ldc + n, 0.0f);
    return;
  }
  const int chunks = accumulate ? 1 : (k + kMaxChunk - 1) / kMaxChunk;
  const PanelFn fn = v.panel[trans_a ? 1 : 0];
  const PairFn pair = r1 - r0 <= kPairRows ? v.pair[trans_a ? 1 : 0] : nullptr;
  for (int ch = 0; ch < chunks; ++ch) {
    const int k0 = static_cast<int>(static_cast<long>(k) * ch / chunks);
    const int k1 = static_cast<int>(static_cast<long>(k) * (ch + 1) / chunks);
    const float* a_chunk = trans_a ? a + static_cast<long>(k0) * lda : a + k0;
    const int mode = accumulate ? kAdd : ch > 0 ? kContinue : kStore;
    for (int p = 0; p < panels_of(n);) {
      const float* panel = b.data + (static_cast<size_t>(p) * k + k0) * kP;
      if (pair != nullptr && p + 1 < panels_of(n)) {
        pair(r0, r1, k1 - k0, a_chunk, lda, panel, static_cast<long>(k) * kP, c + p * kP, ldc, mode,
             std::min(2 * kP, n - p * kP));
        p += 2;
      } else {
        fn(r0, r1, k1 - k0, a_chunk, lda, panel, c + p * kP, ldc, mode, std::min(kP, n - p * kP));
        p += 1;
      }
    }
  }
}

}  // namespace

int packed_panels(int n) { return panels_of(n); }

size_t packed_size(int k, int n) { return static_cast<size_t>(panels_of(n)) * k * kP; }

void pack_panels(const float* src, int ld, bool transposed, int k, int n, int p0, int p1, float* dst) {
  for (int p = p0; p < p1; ++p) {
    float* panel = dst + static_cast<size_t>(p) * k * kP;
    const int j0 = p * kP, cols = std::min(kP, n - j0);
#ifdef MMAN_PACKED_X86
    if (transposed && have_avx2()) {
      pack_panel_transposed_avx2(src, ld, k, j0, cols, panel);
      continue;
    }
#endif
    if (transposed) {
      // B[kk][j] = src[j][kk]: walk src rows (contiguous reads), scatter into the panel.
      if (cols < kP)
        for (int kk = 0; kk < k; ++kk)
          std::fill(panel + static_cast<size_t>(kk) * kP + cols, panel + (kk + 1) * static_cast<size_t>(kP),
                    0.0f);
      // In blocks of 64 rows of the panel (8 KB, in L1 while its 32 columns are filled).
      for (int kb = 0; kb < k; kb += 64) {
        const int ke = std::min(k, kb + 64);
        for (int j = 0; j < cols; ++j) {
          const float* s = src + static_cast<long>(j0 + j) * ld;
          for (int kk = kb; kk < ke; ++kk) panel[static_cast<size_t>(kk) * kP + j] = s[kk];
        }
      }
    } else {
      for (int kk = 0; kk < k; ++kk) {
        float* d = panel + static_cast<size_t>(kk) * kP;
        std::memcpy(d, src + static_cast<long>(kk) * ld + j0, static_cast<size_t>(cols) * sizeof(float));
        std::fill(d + cols, d + kP, 0.0f);
      }
    }
  }
}

PackedMatrix pack_b(const float* src, int ld, bool transposed, int k, int n, std::vector<float>& storage) {
  if (storage.size() < packed_size(k, n)) storage.resize(packed_size(k, n));
  pack_panels(src, ld, transposed, k, n, 0, panels_of(n), storage.data());
  return PackedMatrix{k, n, storage.data()};
}

void gemm_packed(int m, const float* a, int lda, const PackedMatrix& b, float* c, int ldc, bool accumulate) {
  run(variant(), 0, m, a, lda, false, b, c, ldc, accumulate);
}

void gemm_packed_rows(int r0, int r1, const float* a, int lda, bool trans_a, const PackedMatrix& b, float* c,
                      int ldc, bool accumulate) {
  run(variant(), r0, r1, a, lda, trans_a, b, c, ldc, accumulate);
}

void gemm_packed_panels(int m, int p0, int p1, const float* a, int lda, bool trans_a, const PackedMatrix& b,
                        float* c, int ldc, bool accumulate) {
  p1 = std::min(p1, panels_of(b.n));
  if (p1 <= p0) return;
  // The panels [p0, p1) form the packed matrix of columns [p0*kP, min(n, p1*kP)).
  const PackedMatrix sub{b.k, std::min(b.n, p1 * kP) - p0 * kP, b.data + static_cast<size_t>(p0) * b.k * kP};
  run(variant(), 0, m, a, lda, trans_a, sub, c + p0 * kP, ldc, accumulate);
}

void transpose(const float* src, long ld, int rows, int cols, float* dst, long ldd) {
#ifdef MMAN_PACKED_X86
  if (have_avx2()) {
    transpose_avx2(src, ld, rows, cols, dst, ldd);
    return;
  }
#endif
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) dst[static_cast<long>(j) * ldd + i] = src[static_cast<long>(i) * ld + j];
}

const char* packed_gemm_isa() { return variant().isa; }

bool gemm_packed_variant(const char* isa, int m, const float* a, int lda, bool trans_a, const PackedMatrix& b,
                         float* c, int ldc, bool accumulate) {
  const Variant v = variant_named(isa);
  if (v.isa == nullptr) return false;
  run(v, 0, m, a, lda, trans_a, b, c, ldc, accumulate);
  return true;
}

}  // namespace mman::detail
