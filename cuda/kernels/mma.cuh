// Fused multi-modal attention (cLSTM-MMA): one kernel per row block computes the Q/K/V
// projections of the standardised inputs, the 3 x 3 attention and the skip output; its backward
// computes the attention gradients and dxhat; a third kernel reduces the Q/K/V weight and bias
// gradients over rows in a fixed order (no atomics). Design notes: bench/NOTES.md.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/kernels/attention.cuh"
#include "cuda/kernels/common.cuh"
#include "mman/error.h"
#include "mman/params.h"
#include "mman/simt/simt.h"

namespace mman::kernels {

// Work split of the fused kernels. A block of 8 warps owns 16 consecutive rows, each warp two of
// them; lane l owns columns l, l + 32, ... (kC of them, d <= 32 kC), so every dot product over d
// is a warp reduction and q_m, k_n, v_n of a row stay in registers. The projections stream
// W through shared memory in tiles of kMmaTileK input features; every W element read from shared
// memory serves both rows of the warp.
constexpr int kMmaFusedModalities = 3;
constexpr int kMmaWarps = 8;
constexpr int kMmaThreads = kMmaWarps * kWarpSize;
constexpr int kMmaRowsPerWarp = 2;
constexpr int kMmaRowsPerBlock = kMmaWarps * kMmaRowsPerWarp;
constexpr int kMmaTileK = 16;
constexpr int kMmaFusedMaxD = 5 * kWarpSize;  // 160: the default d_model is 150

// Q (which = 0), K (1) and V (2) projections of every modality: nn.Linear weights [d x d]
// (out x in, row-major) and biases [d], device pointers into the parameter arena.
struct MmaWeights {
  const float* w[3][kMmaMaxModalities] = {};
  const float* b[3][kMmaMaxModalities] = {};
};
// Their gradients (accumulated); a null weight pointer skips that projection (frozen).
struct MmaWeightGrads {
  float* w[3][kMmaMaxModalities] = {};
  float* b[3][kMmaMaxModalities] = {};
};

// Pointers of an Mma's Q/K/V parameters inside an arena laid out as `layout` (a ParamStore):
// `values` is its value arena (host or device copy), `grads` its gradient arena. Parameter
// names are mman::Mma's: <prefix>{q,k,v}.<modality>.{weight,bias}.
inline void mma_param_pointers(const ParamStore& layout, const std::string& prefix,
                               const std::vector<std::string>& modalities, const float* values, float* grads,
                               MmaWeights* w, MmaWeightGrads* g) {
  MMAN_CHECK(!modalities.empty() && modalities.size() <= static_cast<size_t>(kMmaMaxModalities),
             "MMA kernels: {} modalities, expected 1 to {}", modalities.size(), kMmaMaxModalities);
  const char* which_name[3] = {"q.", "k.", "v."};
  for (int which = 0; which < 3; ++which)
    for (size_t m = 0; m < modalities.size(); ++m) {
      for (const char* part : {"weight", "bias"}) {
        const std::string name = prefix + which_name[which] + modalities[m] + "." + part;
        const int id = layout.find(name);
        MMAN_CHECK(id >= 0, "MMA kernels: the parameter store has no tensor '{}'", name);
        const size_t offset = layout.info(id).offset;
        const bool weight = part[0] == 'w';
        if (w != nullptr) (weight ? w->w : w->b)[which][m] = values + offset;
        if (g != nullptr) (weight ? g->w : g->b)[which][m] = grads + offset;
      }
    }
}

// Copies rows [row0, row0 + kMmaRowsPerBlock) of src (row stride ld, ld columns) into dst
// (the same layout), zeros for rows past `rows`, so every shared element the block reads is
// written.
MMAN_DEVICE void mma_stage_rows(const float* src, int ld, long long row0, int rows, MMAN_SHARED_PTR(float) dst) {
  for (int e = static_cast<int>(threadIdx.x); e < kMmaRowsPerBlock * ld; e += kMmaThreads) {
    const long long r = row0 + e / ld;
    dst[e] = r < rows ? src[r * ld + e % ld] : 0.0f;
  }
}

// acc[i][u] += sum_{k < d} a[(warp kRW + i) a_stride + k] * B(k, lane + 32 u) for this thread's
// rows i and columns u, where B(k, j) = W[j d + k] (kLinear: nn.Linear's x W^T) or W[k d + j]
// (x W, the backward), and zero for j >= d. `a` is in shared memory; W streams through `bs`
// (kMmaTileK x (32 kC + 1) floats, the +1 keeps the transposed stores off one bank). Starts
// with a barrier, so the caller's writes of `a` (and earlier uses of bs) are complete.
// kTileBarrier = false drops the barrier between storing a tile and reading it: a bug on
// purpose, for the test that shows the emulation catches it.
template <int kC, bool kLinear, bool kTileBarrier = true>
MMAN_DEVICE void mma_project(const float* W, int d, MMAN_SHARED_PTR(float) a, int a_stride, MMAN_SHARED_PTR(float) bs,
                             float (&acc)[kMmaRowsPerWarp][kC]) {
  constexpr int kCols = kC * kWarpSize, kStride = kCols + 1;
  const int t = static_cast<int>(threadIdx.x), lane = t % kWarpSize, warp = t / kWarpSize;
  for (int k0 = 0; k0 < d; k0 += kMmaTileK) {
    const int kt = d - k0 < kMmaTileK ? d - k0 : kMmaTileK;
    __syncthreads();  // everyone is done with the previous tile
    for (int e = t; e < kt * kCols; e += kMmaThreads) {
      // Consecutive threads read consecutive global addresses: along k for W^T, along j for W.
      const int kk = kLinear ? e % kt : e / kCols;
      const int j = kLinear ? e / kt : e % kCols;
      float b = 0.0f;
      if (j < d) b = kLinear ? W[static_cast<long long>(j) * d + k0 + kk] : W[static_cast<long long>(k0 + kk) * d + j];
      bs[kk * kStride + j] = b;
    }
    if (kTileBarrier) __syncthreads();
    for (int kk = 0; kk < kt; ++kk) {
      float x[kMmaRowsPerWarp];
MMAN_UNROLL
      for (int i = 0; i < kMmaRowsPerWarp; ++i) x[i] = a[(warp * kMmaRowsPerWarp + i) * a_stride + k0 + kk];
MMAN_UNROLL
      for (int u = 0; u < kC; ++u) {
        const float b = bs[kk * kStride + lane + u * kWarpSize];
MMAN_UNROLL
        for (int i = 0; i < kMmaRowsPerWarp; ++i) acc[i][u] += x[i] * b;
      }
    }
  }
}

// y = a W^T + b for this thread's rows and columns (zero in columns >= d).
template <int kC, bool kTileBarrier = true>
MMAN_DEVICE void mma_linear(const float* W, const float* bias, int d, MMAN_SHARED_PTR(float) a, int a_stride,
                            MMAN_SHARED_PTR(float) bs, float (&y)[kMmaRowsPerWarp][kC]) {
MMAN_UNROLL
  for (int i = 0; i < kMmaRowsPerWarp; ++i)
MMAN_UNROLL
    for (int u = 0; u < kC; ++u) y[i][u] = 0.0f;
  mma_project<kC, true, kTileBarrier>(W, d, a, a_stride, bs, y);
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
MMAN_UNROLL
  for (int u = 0; u < kC; ++u) {
    const int j = lane + u * kWarpSize;
    const float b = j < d ? bias[j] : 0.0f;
MMAN_UNROLL
    for (int i = 0; i < kMmaRowsPerWarp; ++i) y[i][u] = j < d ? y[i][u] + b : 0.0f;
  }
}

// Global row of this thread's i-th row in the block starting at row0.
MMAN_DEVICE long long mma_row(long long row0, int i) {
  return row0 + static_cast<int>(threadIdx.x) / kWarpSize * kMmaRowsPerWarp + i;
}

// x[i][u] = src[row, col0 + j] for this thread's rows and columns j = lane + 32 u (row stride
// ld); zero outside the valid rows and columns.
template <int kC>
MMAN_DEVICE void mma_load(const float* src, int ld, int col0, long long row0, int rows, int d,
                          float (&x)[kMmaRowsPerWarp][kC]) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
MMAN_UNROLL
  for (int i = 0; i < kMmaRowsPerWarp; ++i) {
    const long long r = mma_row(row0, i);
MMAN_UNROLL
    for (int u = 0; u < kC; ++u) {
      const int j = lane + u * kWarpSize;
      x[i][u] = r < rows && j < d ? src[r * ld + col0 + j] : 0.0f;
    }
  }
}

// The inverse of mma_load: stores the valid rows and columns (dst may be null: nothing stored).
template <int kC>
MMAN_DEVICE void mma_store(float* dst, int ld, int col0, long long row0, int rows, int d,
                           const float (&x)[kMmaRowsPerWarp][kC]) {
  if (dst == nullptr) return;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
MMAN_UNROLL
  for (int i = 0; i < kMmaRowsPerWarp; ++i) {
    const long long r = mma_row(row0, i);
    if (r >= rows) continue;
MMAN_UNROLL
    for (int u = 0; u < kC; ++u) {
      const int j = lane + u * kWarpSize;
      if (j < d) dst[r * ld + col0 + j] = x[i][u];
    }
  }
}

// Per row i: the warp-wide sum of a[i][u] * b[i][u].
template <int kC>
MMAN_DEVICE void mma_row_dots(const float (&a)[kMmaRowsPerWarp][kC], const float (&b)[kMmaRowsPerWarp][kC],
                              float (&out)[kMmaRowsPerWarp]) {
MMAN_UNROLL
  for (int i = 0; i < kMmaRowsPerWarp; ++i) {
    float acc = 0.0f;
MMAN_UNROLL
    for (int u = 0; u < kC; ++u) acc += a[i][u] * b[i][u];
    out[i] = warp_sum(acc);
  }
}

// The same in double (exact products, double sums): the scores' and norms' dot products, which
// overflow float for elements of ~1e19 (attention.cuh, mma_score).
template <int kC>
MMAN_DEVICE void mma_row_dots_d(const float (&a)[kMmaRowsPerWarp][kC], const float (&b)[kMmaRowsPerWarp][kC],
                                double (&out)[kMmaRowsPerWarp]) {
MMAN_UNROLL
  for (int i = 0; i < kMmaRowsPerWarp; ++i) {
    double acc = 0.0;
MMAN_UNROLL
    for (int u = 0; u < kC; ++u) acc += static_cast<double>(a[i][u]) * static_cast<double>(b[i][u]);
    out[i] = warp_sum_d(acc);
  }
}

// Forward of rows [16 blockIdx.x, +16): xhat [rows x 3d] -> alpha, out, and (when not null)
// q, k, v [rows x 3d] for the backward. Dynamic shared memory: the block's xhat rows, then the
// W tile (mma_fused_shared_bytes). kTileBarrier: see mma_project.
template <int kC, bool kTileBarrier = true>
MMAN_KERNEL void mma_fused_forward_kernel(const float* xhat, MmaWeights w, MmaShape s, float* q, float* k, float* v,
                                          float* alpha, float* out) {
  constexpr int kM = kMmaFusedModalities, kRW = kMmaRowsPerWarp;
  MMAN_SHARED_DYNAMIC(float, smem);
  const int d = s.d, md = kM * d, width = s.width();
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize, warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const long long row0 = static_cast<long long>(blockIdx.x) * kMmaRowsPerBlock;
  MMAN_SHARED_PTR(float) xs = smem;                            // [16 x 3d]
  MMAN_SHARED_PTR(float) bs = smem + kMmaRowsPerBlock * md;  // W tile
  mma_stage_rows(xhat, md, row0, s.rows, xs);                // mma_project's first barrier publishes it

  // Keys and values of all modalities stay in registers while the queries go by.
  float kr[kM][kRW][kC], vr[kM][kRW][kC];
MMAN_UNROLL
  for (int n = 0; n < kM; ++n) {
    mma_linear<kC, kTileBarrier>(w.w[1][n], w.b[1][n], d, xs + n * d, md, bs, kr[n]);
    mma_linear<kC, kTileBarrier>(w.w[2][n], w.b[2][n], d, xs + n * d, md, bs, vr[n]);
    mma_store<kC>(k, md, n * d, row0, s.rows, d, kr[n]);
    mma_store<kC>(v, md, n * d, row0, s.rows, d, vr[n]);
  }
  // Norms and scores in double, as mman::Mma (mma_score).
  double kn[kM][kRW] = {};
  if (s.cosine) {
MMAN_UNROLL
    for (int n = 0; n < kM; ++n) {
      mma_row_dots_d<kC>(kr[n], kr[n], kn[n]);
MMAN_UNROLL
      for (int i = 0; i < kRW; ++i) kn[n][i] = sqrt(kn[n][i]);
    }
  }
MMAN_UNROLL
  for (int m = 0; m < kM; ++m) {
    float qr[kRW][kC];
    mma_linear<kC, kTileBarrier>(w.w[0][m], w.b[0][m], d, xs + m * d, md, bs, qr);
    mma_store<kC>(q, md, m * d, row0, s.rows, d, qr);
    double qn[kRW] = {};
    if (s.cosine) {
      mma_row_dots_d<kC>(qr, qr, qn);
MMAN_UNROLL
      for (int i = 0; i < kRW; ++i) qn[i] = sqrt(qn[i]);
    }
    double e[kRW][kM];
MMAN_UNROLL
    for (int n = 0; n < kM; ++n) {
      double dots[kRW];
      mma_row_dots_d<kC>(qr, kr[n], dots);
MMAN_UNROLL
      for (int i = 0; i < kRW; ++i) e[i][n] = mma_score(s, dots[i], qn[i], kn[n][i]);
    }
    float a[kRW][kM];
MMAN_UNROLL
    for (int i = 0; i < kRW; ++i) {
      mma_softmax<kM>(e[i], kM, a[i]);
      const long long r = mma_row(row0, i);
      if (r >= s.rows) continue;
      if (lane == 0) {
MMAN_UNROLL
        for (int n = 0; n < kM; ++n) alpha[r * kM * kM + m * kM + n] = a[i][n];
      }
      float* o = out + r * kM * width + m * width;
MMAN_UNROLL
      for (int u = 0; u < kC; ++u) {
        const int j = lane + u * kWarpSize;
        if (j >= d) continue;
        float z = 0.0f;
MMAN_UNROLL
        for (int n = 0; n < kM; ++n) z += a[i][n] * vr[n][i][u];
        const float x = xs[(warp * kRW + i) * md + m * d + j];
        if (s.concat) {
          o[j] = x;
          o[d + j] = z;
        } else {
          o[j] = x + mma_z_dropped(s, z, m, j, r);
        }
      }
    }
  }
}

// One of the two score gradients of mma_fused_backward_kernel for this thread's rows, from de
// (the scores' gradient, [row][query m][key n]) and, for the cosine score, the norms qn, kn:
//   dq_m = sum_n float(cq k_n - bq q_m)  (kKeys false: "self" is q_m, "other" k_n),
//   dk_n = sum_m float(cq q_m - bk k_n)  (kKeys true: "self" is k_n, "other" q_m);
// scaled dot: dq_m = sum_n w_mn k_n, dk_n = sum_m w_mn q_m with w = de scale. The same loop with
// the roles of q and k swapped, so written once. In mman::Mma's order.
template <int kC, bool kKeys>
MMAN_DEVICE void mma_score_grad(const MmaShape& s, const float* q, const float* k,
                                const float (&de)[kMmaRowsPerWarp][kMmaFusedModalities][kMmaFusedModalities],
                                const double (&qn)[kMmaFusedModalities][kMmaRowsPerWarp],
                                const double (&kn)[kMmaFusedModalities][kMmaRowsPerWarp], long long row0, float* out) {
  constexpr int kM = kMmaFusedModalities, kRW = kMmaRowsPerWarp;
  const int d = s.d, md = kM * d;
  const float* self_src = kKeys ? k : q;
  const float* other_src = kKeys ? q : k;
MMAN_UNROLL
  for (int a = 0; a < kM; ++a) {  // the output's modality: the query m of dq, the key n of dk
    float self[kRW][kC], acc[kRW][kC] = {};
    mma_load<kC>(self_src, md, a * d, row0, s.rows, d, self);
MMAN_UNROLL
    for (int b = 0; b < kM; ++b) {
      const int m = kKeys ? b : a, n = kKeys ? a : b;
      float other[kRW][kC];
      mma_load<kC>(other_src, md, b * d, row0, s.rows, d, other);
      if (s.cosine) {
        double dots[kRW];
        mma_row_dots_d<kC>(kKeys ? other : self, kKeys ? self : other, dots);  // q_m . k_n
MMAN_UNROLL
        for (int i = 0; i < kRW; ++i) {
          const MmaCosineGrad g = mma_cosine_grad(s, de[i][m][n], dots[i], qn[m][i], kn[n][i]);
          const double b_self = kKeys ? g.bk : g.bq;
MMAN_UNROLL
          for (int u = 0; u < kC; ++u)
            acc[i][u] += static_cast<float>(g.cq * static_cast<double>(other[i][u]) -
                                            b_self * static_cast<double>(self[i][u]));
        }
      } else {
MMAN_UNROLL
        for (int i = 0; i < kRW; ++i) {
          const float wde = de[i][m][n] * s.scale;
MMAN_UNROLL
          for (int u = 0; u < kC; ++u) acc[i][u] += wde * other[i][u];
        }
      }
    }
    mma_store<kC>(out, md, a * d, row0, s.rows, d, acc);
  }
}

// Backward of mma_fused_forward_kernel for rows [16 blockIdx.x, +16): from q, k, v, alpha
// (what the forward stored) and dout, writes dq, dk, dv [rows x 3d] (for mma_weight_grad) and
// dxhat = skip + dq_m W_q^m + dk_m W_k^m + dv_m W_v^m (all overwritten). Shared memory: the
// block's [dq_m | dk_m | dv_m] rows of one modality at a time, then the W tile.
template <int kC>
MMAN_KERNEL void mma_fused_backward_kernel(const float* q, const float* k, const float* v, const float* alpha,
                                           const float* dout, MmaWeights w, MmaShape s, float* dq, float* dk,
                                           float* dv, float* dxhat) {
  constexpr int kM = kMmaFusedModalities, kRW = kMmaRowsPerWarp;
  MMAN_SHARED_DYNAMIC(float, smem);
  const int d = s.d, md = kM * d, width = s.width();
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const long long row0 = static_cast<long long>(blockIdx.x) * kMmaRowsPerBlock;
  MMAN_SHARED_PTR(float) ys = smem;                                 // [16 x 3d]
  MMAN_SHARED_PTR(float) bs = smem + kMmaRowsPerBlock * 3 * d;  // W tile

  // alpha and dz_m (dout's attention share, through the residual's dropout) of this thread's rows.
  float a[kRW][kM][kM];
  float dz[kM][kRW][kC];
MMAN_UNROLL
  for (int i = 0; i < kRW; ++i) {
    const long long r = mma_row(row0, i);
MMAN_UNROLL
    for (int m = 0; m < kM; ++m) {
MMAN_UNROLL
      for (int n = 0; n < kM; ++n) a[i][m][n] = r < s.rows ? alpha[r * kM * kM + m * kM + n] : 0.0f;
MMAN_UNROLL
      for (int u = 0; u < kC; ++u) {
        const int j = lane + u * kWarpSize;
        dz[m][i][u] = r < s.rows && j < d ? mma_dz(s, dout + r * kM * width, m, j, r) : 0.0f;
      }
    }
  }
  // z_m = sum_n alpha_mn v_n: dalpha_mn = dz_m . v_n and dv_n = sum_m alpha_mn dz_m.
  float de[kRW][kM][kM];
MMAN_UNROLL
  for (int n = 0; n < kM; ++n) {
    float vn[kRW][kC], dvn[kRW][kC];
    mma_load<kC>(v, md, n * d, row0, s.rows, d, vn);
MMAN_UNROLL
    for (int m = 0; m < kM; ++m) {
      float dots[kRW];
      mma_row_dots<kC>(dz[m], vn, dots);
MMAN_UNROLL
      for (int i = 0; i < kRW; ++i) de[i][m][n] = dots[i];
    }
MMAN_UNROLL
    for (int i = 0; i < kRW; ++i)
MMAN_UNROLL
      for (int u = 0; u < kC; ++u) {
        float acc = 0.0f;
MMAN_UNROLL
        for (int m = 0; m < kM; ++m) acc += a[i][m][n] * dz[m][i][u];
        dvn[i][u] = acc;
      }
    mma_store<kC>(dv, md, n * d, row0, s.rows, d, dvn);
  }
  // Softmax: de_mn = alpha_mn (dalpha_mn - sum_n' alpha_mn' dalpha_mn').
MMAN_UNROLL
  for (int i = 0; i < kRW; ++i)
MMAN_UNROLL
    for (int m = 0; m < kM; ++m) {
      float sum = 0.0f;
MMAN_UNROLL
      for (int n = 0; n < kM; ++n) sum += a[i][m][n] * de[i][m][n];
MMAN_UNROLL
      for (int n = 0; n < kM; ++n) de[i][m][n] = a[i][m][n] * (de[i][m][n] - sum);
    }
  // Scores -> q, k as mman::Mma. Scaled (float): dq_m = sum_n w_mn k_n, dk_n = sum_m w_mn q_m,
  // w = de scale. Cosine (double, attention.cuh's mma_cosine_grad; the CPU's operations): norms
  // and q.k in double, dq_m = sum_n float(cq k_n - bq q_m), dk_n = sum_m float(cq q_m - bk k_n).
  // The coefficients are formed where they are used (q_m.k_n twice, once per loop) rather than
  // kept for all nine pairs: 54 doubles would crowd the registers. In mman::Mma's order.
  double qn[kM][kRW] = {}, kn[kM][kRW] = {};
  if (s.cosine) {
MMAN_UNROLL
    for (int m = 0; m < kM; ++m) {
      float x[kRW][kC];
      mma_load<kC>(q, md, m * d, row0, s.rows, d, x);
      mma_row_dots_d<kC>(x, x, qn[m]);
      mma_load<kC>(k, md, m * d, row0, s.rows, d, x);
      mma_row_dots_d<kC>(x, x, kn[m]);
MMAN_UNROLL
      for (int i = 0; i < kRW; ++i) qn[m][i] = sqrt(qn[m][i]), kn[m][i] = sqrt(kn[m][i]);
    }
  }
  mma_score_grad<kC, false>(s, q, k, de, qn, kn, row0, dq);
  mma_score_grad<kC, true>(s, q, k, de, qn, kn, row0, dk);
  // dxhat_m = skip + [dq_m | dk_m | dv_m] [W_q^m; W_k^m; W_v^m]. The block's dq, dk, dv rows
  // are read back from global memory: a __syncthreads() makes a block's global writes visible
  // to the whole block, and it saves holding all nine of them in registers.
MMAN_UNROLL
  for (int m = 0; m < kM; ++m) {
    __syncthreads();  // all of dq/dk/dv written (m = 0); the previous modality's reads of ys done
    for (int e = static_cast<int>(threadIdx.x); e < kMmaRowsPerBlock * 3 * d; e += kMmaThreads) {
      const long long r = row0 + e / (3 * d);
      const int which = e % (3 * d) / d, j = e % d;
      const float* src = which == 0 ? dq : which == 1 ? dk : dv;
      ys[e] = r < s.rows ? src[r * md + m * d + j] : 0.0f;
    }
    float acc[kRW][kC] = {};
MMAN_UNROLL
    for (int which = 0; which < 3; ++which) mma_project<kC, false>(w.w[which][m], d, ys + which * d, 3 * d, bs, acc);
MMAN_UNROLL
    for (int i = 0; i < kRW; ++i) {
      const long long r = mma_row(row0, i);
      if (r >= s.rows) continue;
MMAN_UNROLL
      for (int u = 0; u < kC; ++u) {
        const int j = lane + u * kWarpSize;
        if (j < d) dxhat[r * md + m * d + j] = dout[r * kM * width + m * width + j] + acc[i][u];
      }
    }
  }
}

// ---- weight gradients: dW += dY^T X, db += column sums of dY, over all rows ----

constexpr int kGradTile = 32;  // a block owns a 32 x 32 tile of one dW
constexpr int kGradThreads = 256;

struct MmaGradProblem {
  const float* dy = nullptr;  // [rows x d], row stride ld
  const float* x = nullptr;   // [rows x d], row stride ld
  float* dw = nullptr;        // [d x d], += dy^T x (null: skipped)
  float* db = nullptr;        // [d], += column sums of dy (null: skipped)
};
struct MmaGradBatch {
  MmaGradProblem p[3 * kMmaMaxModalities];
  int count = 0;
  int rows = 0;
  int d = 0;
  int ld = 0;
};

// Block (tile, problem) = (blockIdx.x, blockIdx.y). Thread t owns column i = t % 32 of the tile
// and rows j = t / 32 + 8 s (s < 4) of dW; it sums over all rows of the batch in increasing
// order, 32 rows at a time, so every element's sum has a fixed association order: the result
// is reproducible without atomics or a second pass.
MMAN_KERNEL void mma_weight_grad_kernel(MmaGradBatch b) {
  constexpr int kStride = kGradTile + 1, kSlices = kGradTile * kGradTile / kGradThreads;
  MMAN_SHARED(float, ys, kGradTile * kStride);
  MMAN_SHARED(float, xs, kGradTile * kStride);
  const MmaGradProblem p = b.p[blockIdx.y];
  if (p.dw == nullptr && p.db == nullptr) return;  // the whole block: frozen projection
  const int d = b.d, tiles = static_cast<int>(ceil_div(d, kGradTile));
  const int j0 = static_cast<int>(blockIdx.x) / tiles * kGradTile, i0 = static_cast<int>(blockIdx.x) % tiles * kGradTile;
  const int t = static_cast<int>(threadIdx.x), ti = t % kGradTile, tj = t / kGradTile;
  const bool bias_thread = i0 == 0 && ti == 0 && p.db != nullptr;
  float acc[kSlices] = {}, bias[kSlices] = {};
  for (int r0 = 0; r0 < b.rows; r0 += kGradTile) {
    const int rt = b.rows - r0 < kGradTile ? b.rows - r0 : kGradTile;
    __syncthreads();  // the previous chunk is consumed
    for (int e = t; e < rt * kGradTile; e += kGradThreads) {
      const int rr = e / kGradTile, c = e % kGradTile;
      const long long row = static_cast<long long>(r0 + rr) * b.ld;
      ys[rr * kStride + c] = j0 + c < d ? p.dy[row + j0 + c] : 0.0f;
      xs[rr * kStride + c] = i0 + c < d ? p.x[row + i0 + c] : 0.0f;
    }
    __syncthreads();
    for (int rr = 0; rr < rt; ++rr) {
      const float x = xs[rr * kStride + ti];
MMAN_UNROLL
      for (int s = 0; s < kSlices; ++s) {
        const float y = ys[rr * kStride + tj + s * (kGradThreads / kGradTile)];
        acc[s] += y * x;
        if (bias_thread) bias[s] += y;
      }
    }
  }
MMAN_UNROLL
  for (int s = 0; s < kSlices; ++s) {
    const int j = j0 + tj + s * (kGradThreads / kGradTile), i = i0 + ti;
    if (j >= d) continue;
    if (p.dw != nullptr && i < d) p.dw[static_cast<long long>(j) * d + i] += acc[s];
    if (bias_thread) p.db[j] += bias[s];
  }
}

// ---- launchers (host or device pointers, see docs/simt.md) ----

// Whether the fused kernels handle this shape; otherwise use the unfused path (attention.cuh).
inline bool mma_fused_supported(int modalities, int d) {
  return modalities == kMmaFusedModalities && d >= 1 && d <= kMmaFusedMaxD;
}

inline int mma_fused_columns_per_lane(int d) { return d <= 2 * kWarpSize ? 2 : 5; }

// Dynamic shared memory of the fused kernels: 16 rows of 3d floats and one W tile.
inline size_t mma_fused_shared_bytes(int d) {
  const int cols = mma_fused_columns_per_lane(d) * kWarpSize;
  return sizeof(float) * (static_cast<size_t>(kMmaRowsPerBlock) * 3 * d + static_cast<size_t>(kMmaTileK) * (cols + 1));
}

inline void mma_fused_check(const MmaShape& s, const char* what) {
  MMAN_CHECK(mma_fused_supported(s.modalities, s.d),
             "{}: the fused MMA kernels take {} modalities and d_model <= {}, got {} and {} (use the unfused "
             "attention kernels)",
             what, kMmaFusedModalities, kMmaFusedMaxD, s.modalities, s.d);
}

// Forward over s.rows rows: xhat [rows x 3d] -> alpha [rows x 9], out [rows x 3 width]; q, k, v
// [rows x 3d] are stored for the backward unless null (evaluation).
inline void mma_fused_forward_launch(const float* xhat, const MmaWeights& w, const MmaShape& s, float* q, float* k,
                                     float* v, float* alpha, float* out, simt::Stream stream) {
  mma_fused_check(s, "mma_fused_forward");
  if (s.rows == 0) return;  // a grid of 0 blocks is an invalid launch
  const simt::LaunchConfig config{dim3(static_cast<unsigned>(ceil_div(s.rows, kMmaRowsPerBlock))), dim3(kMmaThreads),
                                  mma_fused_shared_bytes(s.d), stream};
  if (mma_fused_columns_per_lane(s.d) == 2)
    MMAN_LAUNCH(config, mma_fused_forward_kernel<2>, xhat, w, s, q, k, v, alpha, out);
  else
    MMAN_LAUNCH(config, mma_fused_forward_kernel<5>, xhat, w, s, q, k, v, alpha, out);
}

// Backward: dq, dk, dv and dxhat [rows x 3d] overwritten (dxhat is the gradient w.r.t. xhat,
// before the standardisation's dropout and ReLU).
inline void mma_fused_backward_launch(const float* q, const float* k, const float* v, const float* alpha,
                                      const float* dout, const MmaWeights& w, const MmaShape& s, float* dq, float* dk,
                                      float* dv, float* dxhat, simt::Stream stream) {
  mma_fused_check(s, "mma_fused_backward");
  if (s.rows == 0) return;
  const simt::LaunchConfig config{dim3(static_cast<unsigned>(ceil_div(s.rows, kMmaRowsPerBlock))), dim3(kMmaThreads),
                                  mma_fused_shared_bytes(s.d), stream};
  if (mma_fused_columns_per_lane(s.d) == 2)
    MMAN_LAUNCH(config, mma_fused_backward_kernel<2>, q, k, v, alpha, dout, w, s, dq, dk, dv, dxhat);
  else
    MMAN_LAUNCH(config, mma_fused_backward_kernel<5>, q, k, v, alpha, dout, w, s, dq, dk, dv, dxhat);
}

// Q/K/V weight and bias gradients (accumulated) from xhat and dq, dk, dv (all [rows x M d]).
inline void mma_weight_grad_launch(const float* xhat, const float* dq, const float* dk, const float* dv,
                                   const MmaWeightGrads& g, int64_t rows, int modalities, int d, simt::Stream stream) {
  MMAN_CHECK(rows >= 0 && rows <= (int64_t{1} << 30), "mma_weight_grad: row count {} is outside [0, 2^30]", rows);
  MMAN_CHECK(modalities >= 1 && modalities <= kMmaMaxModalities && d >= 1,
             "mma_weight_grad: bad shape ({} modalities, d_model {})", modalities, d);
  MmaGradBatch b;
  b.rows = static_cast<int>(rows);
  b.d = d;
  b.ld = modalities * d;
  const float* dys[3] = {dq, dk, dv};
  for (int which = 0; which < 3; ++which)
    for (int m = 0; m < modalities; ++m) {
      MmaGradProblem& p = b.p[b.count++];
      p.dy = dys[which] + static_cast<ptrdiff_t>(m) * d;
      p.x = xhat + static_cast<ptrdiff_t>(m) * d;
      p.dw = g.w[which][m];
      p.db = g.b[which][m];
    }
  if (rows == 0) return;  // nothing to add
  const long long tiles = ceil_div(d, kGradTile);
  const simt::LaunchConfig config{dim3(static_cast<unsigned>(tiles * tiles), static_cast<unsigned>(b.count)),
                                  dim3(kGradThreads), 0, stream};
  MMAN_LAUNCH(config, mma_weight_grad_kernel, b);
}

}  // namespace mman::kernels
