// gemm() and the packed small-M kernels: exact FMA-chain semantics, every variant, row independence, threads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "mman/blas.h"
#include "mman/rng.h"
#include "mman/threads.h"
#include "src/core/packed_gemm.h"

namespace mman {
namespace {

std::vector<float> random_vector(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.uniform(-1.0, 1.0));
  return v;
}

// op(A) [m x k]: A row-major [m x k] (lda = k) or, transposed, [k x m] (lda = m).
float a_elem(const std::vector<float>& a, bool trans_a, int m, int k, int r, int kk) {
  return trans_a ? a[static_cast<size_t>(kk) * m + r] : a[static_cast<size_t>(r) * k + kk];
}
// B [k x n]: row-major [k x n] or, transposed, stored as [n x k].
float b_elem(const std::vector<float>& b, bool trans_b, int k, int n, int kk, int j) {
  return trans_b ? b[static_cast<size_t>(j) * k + kk] : b[static_cast<size_t>(kk) * n + j];
}

// The documented result bit for bit: one fma chain over k in order from 0, then added to C.
std::vector<float> fma_chain(const std::vector<float>& a, bool trans_a, const std::vector<float>& b,
                             bool trans_b, int m, int n, int k, const std::vector<float>& c,
                             bool accumulate) {
  std::vector<float> out(static_cast<size_t>(m) * n);
  for (int r = 0; r < m; ++r)
    for (int j = 0; j < n; ++j) {
      float s = 0.0f;
      for (int kk = 0; kk < k; ++kk)
        s = std::fma(a_elem(a, trans_a, m, k, r, kk), b_elem(b, trans_b, k, n, kk, j), s);
      out[static_cast<size_t>(r) * n + j] = accumulate ? c[static_cast<size_t>(r) * n + j] + s : s;
    }
  return out;
}

struct Shape {
  int m, n, k;
};
// Row blocks of 1..12 and beyond, pairs of panels for at most 6 rows, partial and whole
// 32-column panels, k chunked (> 384) or not, and k = 0.
const Shape kShapes[] = {{1, 1, 1},      {3, 31, 7},    {5, 32, 300},    {4, 70, 50},
                         {6, 1200, 300}, {1, 96, 385},  {10, 1200, 300}, {12, 33, 385},
                         {13, 70, 64},   {25, 17, 800}, {7, 300, 1200},  {2, 5, 0}};

TEST(PackedGemm, EveryVectorVariantIsTheSequentialFmaChain) {
  int variants_run = 0;
  for (const char* isa : {"avx512", "avx2"}) {
    bool supported = true;
    for (const Shape& s : kShapes)
      for (bool trans_a : {false, true})
        for (bool accumulate : {false, true}) {
          const auto a = random_vector(static_cast<size_t>(s.m) * s.k, 1);
          const auto b = random_vector(static_cast<size_t>(s.k) * s.n, 2);
          auto c = random_vector(static_cast<size_t>(s.m) * s.n, 3);
          const auto expected = fma_chain(a, trans_a, b, false, s.m, s.n, s.k, c, accumulate);
          std::vector<float> storage;
          const detail::PackedMatrix pb = detail::pack_b(b.data(), s.n, false, s.k, s.n, storage);
          supported = detail::gemm_packed_variant(isa, s.m, a.data(), trans_a ? s.m : s.k, trans_a, pb,
                                                  c.data(), s.n, accumulate);
          if (!supported) break;
          ASSERT_EQ(0, std::memcmp(c.data(), expected.data(), c.size() * sizeof(float)))
              << isa << " m " << s.m << " n " << s.n << " k " << s.k << " trans_a " << trans_a
              << " accumulate " << accumulate;
        }
    variants_run += supported;
  }
  if (variants_run == 0) GTEST_SKIP() << "this CPU has neither AVX-512 nor AVX2+FMA";
}

TEST(PackedGemm, GenericVariantAndTransposedPackingAgreeWithTheReference) {
  for (const Shape& s : kShapes)
    for (bool trans_b : {false, true}) {
      const auto a = random_vector(static_cast<size_t>(s.m) * s.k, 4);
      const auto b = random_vector(static_cast<size_t>(s.k) * s.n, 5);
      std::vector<float> c(static_cast<size_t>(s.m) * s.n, 7.0f);  // overwritten without accumulation
      const auto expected = fma_chain(a, false, b, trans_b, s.m, s.n, s.k, c, false);
      std::vector<float> storage;
      const detail::PackedMatrix pb =
          detail::pack_b(b.data(), trans_b ? s.k : s.n, trans_b, s.k, s.n, storage);
      ASSERT_TRUE(
          detail::gemm_packed_variant("generic", s.m, a.data(), s.k, false, pb, c.data(), s.n, false));
      for (size_t i = 0; i < c.size(); ++i) ASSERT_NEAR(c[i], expected[i], 1e-5 * (1 + s.k)) << i;
    }
  EXPECT_FALSE(detail::gemm_packed_variant("sse9", 1, nullptr, 1, false, {}, nullptr, 1, false));
}

// Packing is data movement: B packed from B^T (the vectorised 8 x 8 transposes and their
// scalar edges) is the same floats, bit for bit, as B packed row by row, padding
// included; every k % 8, n % 8 and n % 32 case, and a row stride wider than k.
TEST(PackedGemm, TransposedPackingGivesTheSameBitsAsPlainPacking) {
  for (int k : {1, 7, 8, 9, 16, 300, 301})
    for (int n : {1, 5, 8, 13, 32, 33, 40, 71, 1200}) {
      const int ld = k + 3;  // B^T stored [n x ld]
      const auto bt = random_vector(static_cast<size_t>(n) * ld, 11);
      std::vector<float> b(static_cast<size_t>(k) * n);
      for (int kk = 0; kk < k; ++kk)
        for (int j = 0; j < n; ++j) b[static_cast<size_t>(kk) * n + j] = bt[static_cast<size_t>(j) * ld + kk];
      std::vector<float> from_t(detail::packed_size(k, n), -1.0f), from_b(detail::packed_size(k, n), -2.0f);
      detail::pack_b(bt.data(), ld, true, k, n, from_t);
      detail::pack_b(b.data(), n, false, k, n, from_b);
      ASSERT_EQ(0, std::memcmp(from_t.data(), from_b.data(), from_t.size() * sizeof(float))) << "k " << k << " n " << n;
    }
}

// gemm() against double precision for every transposition and the alpha/beta cases, on
// one and two threads (large enough to be split).
TEST(Gemm, AgreesWithDoublePrecisionForEveryLayoutAndThreadCount) {
  const int m = 70, n = 150, k = 130;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (auto [alpha, beta] : {std::pair{1.0f, 0.0f}, std::pair{1.0f, 1.0f}, std::pair{0.5f, -0.25f}}) {
          const auto a = random_vector(static_cast<size_t>(m) * k, 6);
          const auto b = random_vector(static_cast<size_t>(k) * n, 7);
          auto c = random_vector(static_cast<size_t>(m) * n, 8);
          const auto c0 = c;
          gemm(ta, tb, m, n, k, alpha, a.data(), ta ? m : k, b.data(), tb ? k : n, beta, c.data(), n);
          for (int r = 0; r < m; ++r)
            for (int j = 0; j < n; ++j) {
              double s = 0;
              for (int kk = 0; kk < k; ++kk)
                s += double{a_elem(a, ta, m, k, r, kk)} * b_elem(b, tb, k, n, kk, j);
              const double want = alpha * s + beta * double{c0[static_cast<size_t>(r) * n + j]};
              ASSERT_NEAR(c[static_cast<size_t>(r) * n + j], want, 1e-4)
                  << "threads " << threads << " ta " << ta << " tb " << tb << " alpha " << alpha;
            }
        }
  }
  set_num_threads(0);
}

// The property the frozen-subnet cache and thread-count-independent forward passes rest
// on: a row of A x B^T is the same bits computed alone, among other rows, or split
// over threads.
TEST(Gemm, RowsDoNotDependOnTheOtherRowsOrTheThreadCount) {
  if (std::string(detail::packed_gemm_isa()) == "generic") GTEST_SKIP() << "no packed kernels on this CPU";
  const int m = 57, n = 1200, k = 300;  // an LSTM input projection; split over 2 threads
  const auto a = random_vector(static_cast<size_t>(m) * k, 9);
  const auto b = random_vector(static_cast<size_t>(n) * k, 10);
  std::vector<float> together(static_cast<size_t>(m) * n), alone(n);
  set_num_threads(2);
  gemm(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, together.data(), n);
  set_num_threads(1);
  for (int r = 0; r < m; ++r) {
    gemm(false, true, 1, n, k, 1.0f, a.data() + static_cast<size_t>(r) * k, k, b.data(), k, 0.0f,
         alone.data(), n);
    ASSERT_EQ(0, std::memcmp(alone.data(), together.data() + static_cast<size_t>(r) * n, n * sizeof(float)))
        << r;
  }
  set_num_threads(0);
}

// Accumulating a product twice doubles it exactly: C + sum, the sum formed first.
TEST(Gemm, AccumulatingTwiceDoublesExactly) {
  const int m = 40, n = 90, k = 500;
  const auto a = random_vector(static_cast<size_t>(k) * m, 11);
  const auto b = random_vector(static_cast<size_t>(k) * n, 12);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<float> once(static_cast<size_t>(m) * n, 0.0f), twice(once);
    gemm(true, false, m, n, k, 1.0f, a.data(), m, b.data(), n, 1.0f, once.data(), n);
    gemm(true, false, m, n, k, 1.0f, a.data(), m, b.data(), n, 1.0f, twice.data(), n);
    gemm(true, false, m, n, k, 1.0f, a.data(), m, b.data(), n, 1.0f, twice.data(), n);
    for (size_t i = 0; i < once.size(); ++i) ASSERT_EQ(twice[i], 2.0f * once[i]) << i;
  }
  set_num_threads(0);
}

TEST(Gemm, EmptyInnerDimensionScalesC) {
  std::vector<float> c = {1.0f, 2.0f, std::nanf(""), 4.0f};
  gemm(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.0f, c.data(), 2);
  for (float x : c) EXPECT_EQ(x, 0.0f);  // beta = 0 overwrites, NaN included
  c = {1.0f, 2.0f, 3.0f, 4.0f};
  gemm(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f}));
}

}  // namespace
}  // namespace mman
