// Fused elementwise LSTM cell kernels: vectorisable sigmoid/tanh and one-step forward/backward loops.
#include "src/layers/lstm_cell.h"

#include "src/core/parallel.h"

#include <cstdint>
#include <cstring>

// GCC will not if-convert (and so not vectorise) a loop containing a float comparison
// while -ftrapping-math (its default) says comparisons may raise FP exceptions. mman never
// unmasks FP exceptions, so this translation unit drops that assumption; the arithmetic
// itself is unchanged (no reassociation, no fast-math). Clang's default is already this.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

namespace mman::detail {
namespace {

// Elementwise loops smaller than this run on one thread: below it the OpenMP fork/join
// costs more than the work (a step of a 10-conversation batch at h = 300 is 3,000).
constexpr long kParallelMinElements = 1L << 15;

// exp(x) for x clamped to [-80, 80] (so that e^x and 1 + e^x stay normal floats: no
// overflow, no denormal slow paths), as branch-free arithmetic the compiler vectorises.
// Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, then Cephes' degree-6 expf
// polynomial: about 1 ulp. NaN propagates.
__attribute__((always_inline)) inline float exp_clamped(float x) {
  x = x < -80.0f ? -80.0f : x;
  x = x > 80.0f ? 80.0f : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  // 2^n, n in [-116, 116]. A NaN x leaves n NaN, whose int conversion is undefined
  // (UBSan: the product overflows); take 0 then, e is NaN anyway (as the GPU kernel does).
  const int32_t ni = n == n ? static_cast<int32_t>(n) : 0;
  const int32_t bits = (ni + 127) * (1 << 23);
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return e * scale;
}

// 1 / (1 + e^-x): never overflows (the exponent is clamped) and loses no relative
// precision for negative x (no cancellation), so no sign branch is needed.
__attribute__((always_inline)) inline float sigmoid(float x) { return 1.0f / (1.0f + exp_clamped(-x)); }

// tanh: Cephes' odd polynomial for |x| < 0.625 (where 1 - 2 / (e^2x + 1) would cancel),
// the exponential form above; both computed and selected so the loop stays branch-free.
__attribute__((always_inline)) inline float tanh_fast(float x) {
  const float a = x < 0.0f ? -x : x;  // no library calls: they would not inline here
  const float s = a * a;
  const float poly =
      ((((-5.70498872745e-3f * s + 2.06390887954e-2f) * s - 5.37397155531e-2f) * s + 1.33314422036e-1f) * s -
       3.33332819422e-1f) *
          s * a +
      a;
  const float big = 1.0f - 2.0f / (exp_clamped(2.0f * a) + 1.0f);
  const float t = a < 0.625f ? poly : big;
  return x < 0.0f ? -t : t;
}

// Always inlined: the row functions must be compiled inside each target_clones clone
// below (a call would run the baseline SSE2 code whatever the CPU).
template <bool kPrev>
__attribute__((always_inline)) inline void cell_forward_row(int h, const float* __restrict bias, float* __restrict gates,
                             const float* __restrict c_prev, float* __restrict c, float* __restrict tanh_c,
                             float* __restrict h_out) {
  float* __restrict gi = gates;
  float* __restrict gf = gates + h;
  float* __restrict gg = gates + 2 * h;
  float* __restrict go = gates + 3 * h;
  for (int j = 0; j < h; ++j) {
    const float i = sigmoid(gi[j] + bias[j]);
    const float f = sigmoid(gf[j] + bias[h + j]);
    const float g = tanh_fast(gg[j] + bias[2 * h + j]);
    const float o = sigmoid(go[j] + bias[3 * h + j]);
    const float cc = kPrev ? f * c_prev[j] + i * g : i * g;
    const float tc = tanh_fast(cc);
    gi[j] = i;
    gf[j] = f;
    gg[j] = g;
    go[j] = o;
    c[j] = cc;
    tanh_c[j] = tc;
    h_out[j] = o * tc;
  }
}

template <bool kPrev>
__attribute__((always_inline)) inline void cell_backward_row(int h, const float* __restrict gates, const float* __restrict c_prev,
                              const float* __restrict tanh_c, const float* __restrict dy,
                              const float* __restrict dh_rec, float* __restrict dc,
                              float* __restrict dgates) {
  for (int j = 0; j < h; ++j) {
    const float i = gates[j], f = gates[h + j], g = gates[2 * h + j], o = gates[3 * h + j];
    const float tc = tanh_c[j];
    const float dh = dy[j] + dh_rec[j];
    const float dcc = dc[j] + dh * o * (1.0f - tc * tc);
    dgates[j] = dcc * g * i * (1.0f - i);
    dgates[h + j] = kPrev ? dcc * c_prev[j] * f * (1.0f - f) : 0.0f;
    dgates[2 * h + j] = dcc * i * (1.0f - g * g);
    dgates[3 * h + j] = dh * tc * o * (1.0f - o);
    dc[j] = dcc * f;
  }
}

// The row loops, compiled three times (AVX-512, AVX2, baseline x86-64) and picked at
// load time by the CPU: the cell is a quarter of an epoch's time when only baseline SSE2
// vectorises it. The library is compiled with -ffp-contract=off, so no clone fuses a
// multiply-add that another does not: all three give the same bits.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MMAN_CELL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MMAN_CELL_CLONES
#endif

MMAN_CELL_CLONES void forward_rows(int r0, int r1, int n_prev, int h, const float* bias, float* gates,
                                   const float* c_prev, float* c, float* tanh_c, float* h_out, int ldh) {
  const long h4 = 4L * h;
  for (int r = r0; r < r1; ++r) {
    if (r < n_prev)
      cell_forward_row<true>(h, bias, gates + r * h4, c_prev + static_cast<long>(r) * h, c + static_cast<long>(r) * h,
                             tanh_c + static_cast<long>(r) * h, h_out + static_cast<long>(r) * ldh);
    else
      cell_forward_row<false>(h, bias, gates + r * h4, nullptr, c + static_cast<long>(r) * h,
                              tanh_c + static_cast<long>(r) * h, h_out + static_cast<long>(r) * ldh);
  }
}

MMAN_CELL_CLONES void backward_rows(int r0, int r1, int n_prev, int h, const float* gates, const float* c_prev,
                                    const float* tanh_c, const float* dy, int ldy, const float* dh_rec, float* dc,
                                    float* dgates) {
  const long h4 = 4L * h;
  for (int r = r0; r < r1; ++r) {
    const long o = static_cast<long>(r) * h;
    if (r < n_prev)
      cell_backward_row<true>(h, gates + r * h4, c_prev + o, tanh_c + o, dy + static_cast<long>(r) * ldy, dh_rec + o,
                              dc + o, dgates + r * h4);
    else
      cell_backward_row<false>(h, gates + r * h4, nullptr, tanh_c + o, dy + static_cast<long>(r) * ldy, dh_rec + o,
                               dc + o, dgates + r * h4);
  }
}

MMAN_CELL_CLONES void activation_rows(const float* x, int n, float* sig, float* th) {
  for (int i = 0; i < n; ++i) {
    sig[i] = sigmoid(x[i]);
    th[i] = tanh_fast(x[i]);
  }
}

}  // namespace

void lstm_cell_forward(int n, int n_prev, int h, const float* bias, float* gates, const float* c_prev,
                       float* c, float* tanh_c, float* h_out, int ldh) {
  if (static_cast<long>(n) * h < kParallelMinElements || in_parallel_chunk()) {
    forward_rows(0, n, n_prev, h, bias, gates, c_prev, c, tanh_c, h_out, ldh);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int r = 0; r < n; ++r) forward_rows(r, r + 1, n_prev, h, bias, gates, c_prev, c, tanh_c, h_out, ldh);
}

void lstm_cell_backward(int n, int n_prev, int h, const float* gates, const float* c_prev,
                        const float* tanh_c, const float* dy, int ldy, const float* dh_rec, float* dc,
                        float* dgates) {
  if (static_cast<long>(n) * h < kParallelMinElements || in_parallel_chunk()) {
    backward_rows(0, n, n_prev, h, gates, c_prev, tanh_c, dy, ldy, dh_rec, dc, dgates);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int r = 0; r < n; ++r) backward_rows(r, r + 1, n_prev, h, gates, c_prev, tanh_c, dy, ldy, dh_rec, dc, dgates);
}

void lstm_activations(const float* x, int n, float* sig, float* th) { activation_rows(x, n, sig, th); }

}  // namespace mman::detail
