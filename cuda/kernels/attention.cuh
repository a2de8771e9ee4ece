// MMA attention on precomputed projections (the unfused path, on-GPU reference of the fused
// kernels): per row the M x M scaled-dot or cosine scores, softmax over keys, z_m = sum_n
// alpha_mn v_n and the residual or concat skip, forward and backward. Also MmaShape and the
// score helpers both paths share. As mman::Mma, scores, norms, the softmax over scores and the
// cosine backward's coefficients are formed in double (see mma_score).
#pragma once
#include <cmath>
#include <cstdint>

#include "cuda/kernels/common.cuh"
#include "mman/error.h"
#include "mman/layers/dropout.h"
#include "mman/layers/mma.h"
#include "mman/simt/simt.h"

namespace mman::kernels {

// What an MMA attention computes, as mman::Mma does (include/mman/layers/mma.h). Row-major
// layouts, modality m at columns [m d, (m+1) d) of every row:
//   xhat, q, k, v, and their gradients: [rows x M d]
//   alpha: [rows x M M], query m and key n at column M m + n
//   out, dout: [rows x M width], width = d (residual) or 2 d (concat: [xhat_m, z_m])
struct MmaShape {
  int rows = 0;
  int modalities = 0;  // M, at most kMmaMaxModalities
  int d = 0;           // d_model = d_k = d_v
  bool cosine = false;
  bool concat = false;
  float scale = 1.0f;  // 1 / sqrt(d), the scaled dot product's factor
  float cos_eps = kMmaCosineEps;
  // Inverted dropout on z_m (residual skip in Mode::Train with p > 0): element r d + j of z_m is
  // dropped iff counter_uniform(z_stream[m], r d + j) < z_p, else scaled by z_keep.
  bool z_dropout = false;
  float z_p = 0.0f;
  float z_keep = 1.0f;
  uint64_t z_stream[kMmaMaxModalities] = {};

  MMAN_HOST_DEVICE int width() const { return concat ? 2 * d : d; }
};

// The shape of an Mma's attention over `rows` rows: `slot_base` is the one the layer was built
// with, so the z dropout masks are the CPU's (slot slot_base + kMmaMaxModalities + m).
inline MmaShape mma_shape(int64_t rows, int modalities, int d, MmaScore score, MmaSkip skip, float dropout, Mode mode,
                          const DropoutKey& key, uint64_t slot_base) {
  MMAN_CHECK(rows >= 0 && rows <= (int64_t{1} << 30), "MMA kernels: row count {} is outside [0, 2^30]", rows);
  MMAN_CHECK(modalities >= 1 && modalities <= kMmaMaxModalities, "MMA kernels: {} modalities, expected 1 to {}",
             modalities, kMmaMaxModalities);
  MMAN_CHECK(d >= 1, "MMA kernels: d_model must be positive, got {}", d);
  MMAN_CHECK(static_cast<int64_t>(modalities) * d * 2 <= (int64_t{1} << 30), "MMA kernels: d_model {} is too large",
             d);
  MMAN_CHECK(dropout >= 0.0f && dropout < 1.0f, "MMA kernels: dropout {} is outside [0, 1)", dropout);
  MmaShape s;
  s.rows = static_cast<int>(rows);
  s.modalities = modalities;
  s.d = d;
  s.cosine = score == MmaScore::Cosine;
  s.concat = skip == MmaSkip::Concat;
  s.scale = 1.0f / std::sqrt(static_cast<float>(d));  // as mman::Mma forms it
  s.z_dropout = !s.concat && mode == Mode::Train && dropout > 0.0f;
  s.z_p = dropout;
  s.z_keep = 1.0f / (1.0f - dropout);  // as mman::Dropout forms it
  for (int m = 0; m < modalities; ++m)
    s.z_stream[m] = dropout_stream(key, slot_base + static_cast<uint64_t>(kMmaMaxModalities + m));
  return s;
}

// Gradient reaching z_m[r, j] from dout (row pointer `g`): the second half of out_m (concat) or
// out_m itself through the z dropout (residual).
MMAN_DEVICE float mma_dz(const MmaShape& s, const float* g, int m, int j, long long r) {
  if (s.concat) return g[m * 2 * s.d + s.d + j];
  const float x = g[m * s.d + j];
  if (!s.z_dropout) return x;
  return counter_uniform(s.z_stream[m], static_cast<uint64_t>(r * s.d + j)) < s.z_p ? 0.0f : x * s.z_keep;
}

// z_m[r, j] -> its value in out_m (the residual skip's dropout), as mman::Dropout computes it.
MMAN_DEVICE float mma_z_dropped(const MmaShape& s, float z, int m, int j, long long r) {
  if (!s.z_dropout) return z;
  return counter_uniform(s.z_stream[m], static_cast<uint64_t>(r * s.d + j)) < s.z_p ? 0.0f : z * s.z_keep;
}

// a[0..count) <- softmax(e[0..count)) as mman::Mma computes it, in double: maximum subtracted
// (std::max's rule: a NaN score never becomes the maximum), exp, each divided by the sum, then
// rounded to float. Loops over a compile-time bound with a guard keep the arrays in registers.
template <int kMax>
MMAN_DEVICE void mma_softmax(double (&e)[kMax], int count, float (&a)[kMax]) {
  double mx = -INFINITY;
MMAN_UNROLL
  for (int n = 0; n < kMax; ++n)
    if (n < count) mx = mx < e[n] ? e[n] : mx;
  double sum = 0.0;
MMAN_UNROLL
  for (int n = 0; n < kMax; ++n)
    if (n < count) {
      e[n] = exp(e[n] - mx);
      sum += e[n];
    }
MMAN_UNROLL
  for (int n = 0; n < kMax; ++n)
    if (n < count) a[n] = static_cast<float>(e[n] / sum);
}

MMAN_DEVICE double mma_max_d(double a, double b) { return a < b ? b : a; }  // std::max's rule

// Score of query norm qn and key norm kn with dot product `dot`, in double as mman::Mma forms
// it: q.k and |q|^2 of float vectors cannot overflow there (elements of 1e19 give 1e38 per
// term, Inf in float and then NaN scores), so the attention stays finite for any finite input.
// Cost: a handful of double operations per score (9 per row for three modalities) and double
// products in the dot products' d terms, against the d^2-sized projections; FP64 at half the
// FP32 rate on the A100/H100 targets, 1/64 on consumer GPUs (registers: docs/simt.md). The
// scaled product's factor is the CPU forward's 1 / sqrt(double(d)).
MMAN_DEVICE double mma_score(const MmaShape& s, double dot, double qn, double kn) {
  const double eps = s.cos_eps;
  return s.cosine ? dot / (mma_max_d(qn, eps) * mma_max_d(kn, eps)) : dot * (1.0 / sqrt(static_cast<double>(s.d)));
}

// Sum of a double over the 32 lanes of a warp (butterfly: every lane gets the same value).
MMAN_DEVICE double warp_sum_d(double v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// The cosine score's gradient coefficients of one (query m, key n) pair, as mman::Mma's backward
// forms them in double from the upstream gradient w = de_mn, the exact-product dot q.k and the
// norms |q|, |k|: d score / d q = cq k - bq q, d score / d k = cq q - bk k, with
// cq = w / (Nq Nk), bq = [|q| > eps] w c / |q|^2 (c the score), N = max(|.|, eps).
struct MmaCosineGrad {
  double cq, bq, bk;
};
MMAN_DEVICE MmaCosineGrad mma_cosine_grad(const MmaShape& s, double w, double dot, double qn, double kn) {
  const double eps = s.cos_eps;
  const double inv = 1.0 / (mma_max_d(qn, eps) * mma_max_d(kn, eps));
  const double c = dot * inv;
  MmaCosineGrad g;
  g.cq = w * inv;
  g.bq = qn > eps ? w * c / (qn * qn) : 0.0;
  g.bk = kn > eps ? w * c / (kn * kn) : 0.0;
  return g;
}

// ---- unfused path: one warp per row, any M <= kMmaMaxModalities and any d ----

constexpr int kAttentionWarps = 8;  // rows per block
constexpr int kAttentionThreads = kAttentionWarps * kWarpSize;

// Sum over the lanes' share of j in [0, d) of f(j), reduced over the warp.
template <class F>
MMAN_DEVICE float warp_dot(int d, F f) {
  float acc = 0.0f;
  for (int j = static_cast<int>(threadIdx.x) % kWarpSize; j < d; j += kWarpSize) acc += f(j);
  return warp_sum(acc);
}

// sum_j a[j] b[j] over j in [0, d) in double (products of floats are exact there), reduced over
// the warp: the scores' and norms' dot products.
MMAN_DEVICE double warp_dot_d(int d, const float* a, const float* b) {
  double acc = 0.0;
  for (int j = static_cast<int>(threadIdx.x) % kWarpSize; j < d; j += kWarpSize)
    acc += static_cast<double>(a[j]) * static_cast<double>(b[j]);
  return warp_sum_d(acc);
}

// alpha and out from xhat, q, k, v (all [rows x M d]); one warp per row.
MMAN_KERNEL void attention_forward_kernel(const float* xhat, const float* q, const float* k, const float* v,
                                          MmaShape s, float* alpha, float* out) {
  constexpr int kMax = kMmaMaxModalities;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const long long r = static_cast<long long>(blockIdx.x) * kAttentionWarps + threadIdx.x / kWarpSize;
  if (r >= s.rows) return;  // the whole warp leaves: no shuffle is left waiting
  const int mc = s.modalities, d = s.d, md = mc * d, width = s.width();
  const float* xr = xhat + r * md;
  const float* qr = q + r * md;
  const float* kr = k + r * md;
  const float* vr = v + r * md;
  double kn[kMax] = {};
  if (s.cosine) {
MMAN_UNROLL
    for (int n = 0; n < kMax; ++n)
      if (n < mc) kn[n] = sqrt(warp_dot_d(d, kr + n * d, kr + n * d));
  }
  for (int m = 0; m < mc; ++m) {
    const float* qm = qr + m * d;
    const double qn = s.cosine ? sqrt(warp_dot_d(d, qm, qm)) : 0.0;
    double e[kMax] = {};
MMAN_UNROLL
    for (int n = 0; n < kMax; ++n)
      if (n < mc) e[n] = mma_score(s, warp_dot_d(d, qm, kr + n * d), qn, kn[n]);
    float a[kMax] = {};
    mma_softmax(e, mc, a);
    if (lane == 0) {
MMAN_UNROLL
      for (int n = 0; n < kMax; ++n)
        if (n < mc) alpha[r * mc * mc + m * mc + n] = a[n];
    }
    float* o = out + r * mc * width + m * width;
    for (int j = lane; j < d; j += kWarpSize) {
      float z = 0.0f;
MMAN_UNROLL
      for (int n = 0; n < kMax; ++n)
        if (n < mc) z += a[n] * vr[n * d + j];
      const float x = xr[m * d + j];
      if (s.concat) {
        o[j] = x;
        o[d + j] = z;
      } else {
        o[j] = x + mma_z_dropped(s, z, m, j, r);
      }
    }
  }
}

// Backward of attention_forward_kernel: dq, dk, dv (overwritten) and the skip's share of
// dxhat (overwritten; the caller adds dq W_q + dk W_k + dv W_v). One warp per row.
// Scores -> q, k as in mman::Mma: scaled (float), de/dq_m = scale sum_n de_mn k_n; cosine
// (double, mma_cosine_grad) with N = max(|q|, eps): dc/dq = k / (Nq Nk) - [|q| > eps] c q / |q|^2,
// symmetrically for k, each term rounded to float before it is accumulated, as the CPU does.
MMAN_KERNEL void attention_backward_kernel(const float* q, const float* k, const float* v, const float* alpha,
                                           const float* dout, MmaShape s, float* dq, float* dk, float* dv,
                                           float* dxhat) {
  constexpr int kMax = kMmaMaxModalities;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const long long r = static_cast<long long>(blockIdx.x) * kAttentionWarps + threadIdx.x / kWarpSize;
  if (r >= s.rows) return;
  const int mc = s.modalities, d = s.d, md = mc * d, width = s.width();
  const float* qr = q + r * md;
  const float* kr = k + r * md;
  const float* vr = v + r * md;
  const float* ar = alpha + r * mc * mc;
  const float* g = dout + r * mc * width;
  float* dqr = dq + r * md;
  float* dkr = dk + r * md;
  float* dvr = dv + r * md;
  double kn[kMax] = {};
  if (s.cosine) {
MMAN_UNROLL
    for (int n = 0; n < kMax; ++n)
      if (n < mc) kn[n] = sqrt(warp_dot_d(d, kr + n * d, kr + n * d));
  }
  for (int m = 0; m < mc; ++m) {
    const float* qm = qr + m * d;
    // z_m = sum_n alpha_mn v_n: dalpha_mn = dz_m . v_n; softmax: de_mn = alpha_mn (dalpha_mn - s).
    float a[kMax] = {}, de[kMax] = {};
    float dot_sum = 0.0f;
MMAN_UNROLL
    for (int n = 0; n < kMax; ++n)
      if (n < mc) {
        a[n] = ar[m * mc + n];
        de[n] = warp_dot(d, [&](int j) { return mma_dz(s, g, m, j, r) * vr[n * d + j]; });
        dot_sum += a[n] * de[n];
      }
MMAN_UNROLL
    for (int n = 0; n < kMax; ++n)
      if (n < mc) de[n] = a[n] * (de[n] - dot_sum);
    // d score_mn / d q_m = cq[n] k_n - bq[n] q_m, d score_mn / d k_n = cq[n] q_m - bk[n] k_n.
    if (s.cosine) {
      MmaCosineGrad cg[kMax] = {};
      const double qn = sqrt(warp_dot_d(d, qm, qm));
MMAN_UNROLL
      for (int n = 0; n < kMax; ++n)
        if (n < mc) cg[n] = mma_cosine_grad(s, de[n], warp_dot_d(d, qm, kr + n * d), qn, kn[n]);
      for (int j = lane; j < d; j += kWarpSize) {
        const double qj = qm[j];
        float acc = 0.0f;
MMAN_UNROLL
        for (int n = 0; n < kMax; ++n)
          if (n < mc) {
            const double kj = kr[n * d + j];
            acc += static_cast<float>(cg[n].cq * kj - cg[n].bq * qj);
            const float t = static_cast<float>(cg[n].cq * qj - cg[n].bk * kj);
            dkr[n * d + j] = m == 0 ? t : dkr[n * d + j] + t;
          }
        dqr[m * d + j] = acc;
      }
    } else {
      float w[kMax] = {};
MMAN_UNROLL
      for (int n = 0; n < kMax; ++n)
        if (n < mc) w[n] = de[n] * s.scale;
      for (int j = lane; j < d; j += kWarpSize) {
        const float qj = qm[j];
        float acc = 0.0f;
MMAN_UNROLL
        for (int n = 0; n < kMax; ++n)
          if (n < mc) {
            acc += w[n] * kr[n * d + j];
            const float t = w[n] * qj;
            dkr[n * d + j] = m == 0 ? t : dkr[n * d + j] + t;
          }
        dqr[m * d + j] = acc;
      }
    }
  }
  // dv_n = sum_m alpha_mn dz_m; the skip's gradient is out_m's (its first half for concat).
  for (int n = 0; n < mc; ++n)
    for (int j = lane; j < d; j += kWarpSize) {
      float acc = 0.0f;
      for (int m = 0; m < mc; ++m) acc += ar[m * mc + n] * mma_dz(s, g, m, j, r);
      dvr[n * d + j] = acc;
    }
  for (int m = 0; m < mc; ++m)
    for (int j = lane; j < d; j += kWarpSize) dxhat[r * md + m * d + j] = g[m * width + j];
}

// Forward over `rows` rows (s.rows); pointers are device pointers under nvcc, host pointers in
// the emulation. alpha [rows x M M] and out [rows x M width] are overwritten.
inline void attention_forward_launch(const float* xhat, const float* q, const float* k, const float* v,
                                     const MmaShape& s, float* alpha, float* out, simt::Stream stream) {
  if (s.rows == 0) return;  // a grid of 0 blocks is an invalid launch
  const simt::LaunchConfig config{dim3(static_cast<unsigned>(ceil_div(s.rows, kAttentionWarps))),
                                  dim3(kAttentionThreads), 0, stream};
  MMAN_LAUNCH(config, attention_forward_kernel, xhat, q, k, v, s, alpha, out);
}

// Backward: dq, dk, dv and dxhat (the skip's share) [rows x M d] are overwritten.
inline void attention_backward_launch(const float* q, const float* k, const float* v, const float* alpha,
                                      const float* dout, const MmaShape& s, float* dq, float* dk, float* dv,
                                      float* dxhat, simt::Stream stream) {
  if (s.rows == 0) return;
  const simt::LaunchConfig config{dim3(static_cast<unsigned>(ceil_div(s.rows, kAttentionWarps))),
                                  dim3(kAttentionThreads), 0, stream};
  MMAN_LAUNCH(config, attention_backward_kernel, q, k, v, alpha, dout, s, dq, dk, dv, dxhat);
}

}  // namespace mman::kernels
