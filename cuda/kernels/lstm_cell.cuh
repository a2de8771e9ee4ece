// The LSTM cell's elementwise step on the GPU (for an LSTM without cuDNN, and to cross-check
// cuDNN): gate activations, c and h, and its backward, with the CPU cell's own exp-based sigmoid
// and tanh (src/layers/lstm_cell.cpp) in the same float operations, so results are bit-identical.
#pragma once
#include <cstdint>
#include <cstring>

#include "cuda/kernels/common.cuh"
#include "mman/error.h"
#include "mman/simt/simt.h"

namespace mman::kernels {

MMAN_HOST_DEVICE float bits_as_float(int32_t bits) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

// exp(x) for x clamped to [-80, 80]: Cody-Waite reduction and Cephes' degree-6 polynomial, the
// CPU cell's exp_clamped operation by operation. NaN propagates.
MMAN_HOST_DEVICE float lstm_exp_clamped(float x) {
  x = x < -80.0f ? -80.0f : x;
  x = x > 80.0f ? 80.0f : x;
  const float n = sub_rn(add_rn(mul_rn(x, 1.44269504088896341f), 12582912.0f), 12582912.0f);  // round(x / ln 2)
  float r = sub_rn(x, mul_rn(n, 0.693359375f));
  r = add_rn(r, mul_rn(n, 2.12194440e-4f));
  float p = 1.9875691500e-4f;
  p = add_rn(mul_rn(p, r), 1.3981999507e-3f);
  p = add_rn(mul_rn(p, r), 8.3334519073e-3f);
  p = add_rn(mul_rn(p, r), 4.1665795894e-2f);
  p = add_rn(mul_rn(p, r), 1.6666665459e-1f);
  p = add_rn(mul_rn(p, r), 5.0000001201e-1f);
  const float e = add_rn(add_rn(mul_rn(mul_rn(p, r), r), r), 1.0f);
  // e * 2^n, n in [-116, 116]. A NaN x leaves n NaN, whose int conversion is undefined in C++
  // (the CPU cell's wraps around to the bits of 1.0f); take 0, which gives the same 1.0f, and e
  // is NaN anyway.
  const int32_t ni = n == n ? static_cast<int32_t>(n) : 0;
  return mul_rn(e, bits_as_float((ni + 127) * (1 << 23)));
}

// 1 / (1 + e^-x), as the CPU cell.
MMAN_HOST_DEVICE float lstm_sigmoid(float x) { return div_rn(1.0f, add_rn(1.0f, lstm_exp_clamped(-x))); }

// tanh: Cephes' odd polynomial below |x| = 0.625, 1 - 2 / (e^2|x| + 1) above, as the CPU cell.
MMAN_HOST_DEVICE float lstm_tanh(float x) {
  const float a = x < 0.0f ? -x : x;
  const float s = mul_rn(a, a);
  float poly = add_rn(mul_rn(-5.70498872745e-3f, s), 2.06390887954e-2f);
  poly = sub_rn(mul_rn(poly, s), 5.37397155531e-2f);
  poly = add_rn(mul_rn(poly, s), 1.33314422036e-1f);
  poly = sub_rn(mul_rn(poly, s), 3.33332819422e-1f);
  poly = add_rn(mul_rn(mul_rn(poly, s), a), a);
  const float big = sub_rn(1.0f, div_rn(2.0f, add_rn(lstm_exp_clamped(mul_rn(2.0f, a)), 1.0f)));
  const float t = a < 0.625f ? poly : big;
  return x < 0.0f ? -t : t;
}

constexpr int kLstmThreads = 256;
constexpr long long kLstmMaxBlocks = 4096;

// One element (r, j) per thread (grid-stride): the arguments of lstm_cell_forward_launch.
MMAN_KERNEL void lstm_cell_forward_kernel(int n, int n_prev, int h, const float* bias, float* gates,
                                          const float* c_prev, float* c, float* tanh_c, float* h_out, int ldh) {
  const long long total = static_cast<long long>(n) * h, stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const long long r = e / h;
    const int j = static_cast<int>(e % h);
    float* g = gates + r * 4 * h;
    const float i = lstm_sigmoid(add_rn(g[j], bias[j]));
    const float f = lstm_sigmoid(add_rn(g[h + j], bias[h + j]));
    const float gg = lstm_tanh(add_rn(g[2 * h + j], bias[2 * h + j]));
    const float o = lstm_sigmoid(add_rn(g[3 * h + j], bias[3 * h + j]));
    const float cc = r < n_prev ? add_rn(mul_rn(f, c_prev[r * h + j]), mul_rn(i, gg)) : mul_rn(i, gg);
    const float tc = lstm_tanh(cc);
    g[j] = i;
    g[h + j] = f;
    g[2 * h + j] = gg;
    g[3 * h + j] = o;
    c[r * h + j] = cc;
    tanh_c[r * h + j] = tc;
    h_out[r * ldh + j] = mul_rn(o, tc);
  }
}

// One element per thread: the arguments of lstm_cell_backward_launch.
MMAN_KERNEL void lstm_cell_backward_kernel(int n, int n_prev, int h, const float* gates, const float* c_prev,
                                           const float* tanh_c, const float* dy, int ldy, const float* dh_rec,
                                           float* dc, float* dgates) {
  const long long total = static_cast<long long>(n) * h, stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const long long r = e / h;
    const int j = static_cast<int>(e % h);
    const float* g = gates + r * 4 * h;
    float* dg = dgates + r * 4 * h;
    const float i = g[j], f = g[h + j], gg = g[2 * h + j], o = g[3 * h + j];
    const float tc = tanh_c[r * h + j];
    const float dh = add_rn(dy[r * ldy + j], dh_rec[r * h + j]);
    const float dcc = add_rn(dc[r * h + j], mul_rn(mul_rn(dh, o), sub_rn(1.0f, mul_rn(tc, tc))));
    dg[j] = mul_rn(mul_rn(mul_rn(dcc, gg), i), sub_rn(1.0f, i));
    dg[h + j] = r < n_prev ? mul_rn(mul_rn(mul_rn(dcc, c_prev[r * h + j]), f), sub_rn(1.0f, f)) : 0.0f;
    dg[2 * h + j] = mul_rn(mul_rn(dcc, i), sub_rn(1.0f, mul_rn(gg, gg)));
    dg[3 * h + j] = mul_rn(mul_rn(mul_rn(dh, tc), o), sub_rn(1.0f, o));
    dc[r * h + j] = mul_rn(dcc, f);
  }
}

inline simt::LaunchConfig lstm_cell_config(int n, int h, simt::Stream stream) {
  const long long blocks = ceil_div(static_cast<long long>(n) * h, kLstmThreads);
  return {dim3(static_cast<unsigned>(blocks < kLstmMaxBlocks ? blocks : kLstmMaxBlocks)), dim3(kLstmThreads), 0,
          stream};
}

inline void lstm_cell_check(int n, int n_prev, int h, int ld, const char* what) {
  MMAN_CHECK(n >= 0 && h >= 1 && n_prev >= 0 && n_prev <= n && ld >= h,
             "{}: bad shape (n {}, n_prev {}, h {}, row stride {})", what, n, n_prev, h, ld);
}

// One time step forward, as mman::detail::lstm_cell_forward (src/layers/lstm_cell.h) for n rows
// (the conversations active at this step): gates [n x 4h] pre-activations without bias (i | f |
// g | o), overwritten with the activated gates; bias [4h] = b_ih + b_hh; c_prev [n_prev x h]
// (rows n_prev.. start a conversation); c, tanh_c [n x h]; h_out n rows of stride ldh.
inline void lstm_cell_forward_launch(int n, int n_prev, int h, const float* bias, float* gates, const float* c_prev,
                                     float* c, float* tanh_c, float* h_out, int ldh, simt::Stream stream) {
  lstm_cell_check(n, n_prev, h, ldh, "lstm_cell_forward");
  if (n == 0) return;
  MMAN_LAUNCH(lstm_cell_config(n, h, stream), lstm_cell_forward_kernel, n, n_prev, h, bias, gates, c_prev, c, tanh_c,
              h_out, ldh);
}

// One time step backward, as mman::detail::lstm_cell_backward: dy n rows of stride ldy, dh_rec
// [n x h]; dc [n x h] in: the gradient through c from the next step, out: f dc for the previous
// one; dgates [n x 4h] the gradient of the gate pre-activations.
inline void lstm_cell_backward_launch(int n, int n_prev, int h, const float* gates, const float* c_prev,
                                      const float* tanh_c, const float* dy, int ldy, const float* dh_rec, float* dc,
                                      float* dgates, simt::Stream stream) {
  lstm_cell_check(n, n_prev, h, ldy, "lstm_cell_backward");
  if (n == 0) return;
  MMAN_LAUNCH(lstm_cell_config(n, h, stream), lstm_cell_backward_kernel, n, n_prev, h, gates, c_prev, tanh_c, dy, ldy,
              dh_rec, dc, dgates);
}

}  // namespace mman::kernels
