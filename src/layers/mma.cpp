// Multi-modal attention: standardisation, Q/K/V projections, 3x3 attention per row, skip.
#include "mman/layers/mma.h"

#include <algorithm>
#include <cmath>

#include "mman/error.h"
#include "mman/layers/activation.h"

namespace mman {

Mma::Mma(ParamStore& params, const std::string& prefix, const MmaConfig& config, uint64_t slot_base)
    : config_(config) {
  const int m_count = modalities();
  MMAN_CHECK(m_count >= 1 && m_count <= kMmaMaxModalities, "MMA '{}': {} modalities, expected 1 to {}", prefix,
             m_count, kMmaMaxModalities);
  MMAN_CHECK(config.modalities.size() == config.dims.size(), "MMA '{}': {} modality names for {} widths", prefix,
             config.modalities.size(), config.dims.size());
  MMAN_CHECK(config.d_model > 0, "MMA '{}': d_model must be positive, got {}", prefix, config.d_model);
  for (int m = 0; m < m_count; ++m)
    std_.emplace_back(params, prefix + "std." + config.modalities[m] + ".", config.dims[m], config.d_model);
  for (int m = 0; m < m_count; ++m)
    q_.emplace_back(params, prefix + "q." + config.modalities[m] + ".", config.d_model, config.d_model);
  for (int m = 0; m < m_count; ++m)
    k_.emplace_back(params, prefix + "k." + config.modalities[m] + ".", config.d_model, config.d_model);
  for (int m = 0; m < m_count; ++m)
    v_.emplace_back(params, prefix + "v." + config.modalities[m] + ".", config.d_model, config.d_model);
  for (int m = 0; m < m_count; ++m) {
    drop_x_.emplace_back(config.dropout, slot_base + static_cast<uint64_t>(m));
    drop_z_.emplace_back(config.dropout, slot_base + kMmaMaxModalities + static_cast<uint64_t>(m));
  }
}

int Mma::output_dim() const {
  return modalities() * config_.d_model * (config_.skip == MmaSkip::Concat ? 2 : 1);
}

void Mma::init(ParamStore& params, Rng& rng) const {
  for (const auto* group : {&std_, &q_, &k_, &v_})
    for (const Linear& l : *group) l.init(params, rng);
}

namespace {
// Loops over fewer elements than this run on one thread (a parallel region costs more).
constexpr int64_t kParallelWork = 32768;

float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
// Scores and norms in double: q.k and |q|^2 of float vectors cannot overflow there
// (|q| of 1e20 gives |q|^2 = 1e40, Inf in float and then NaN scores), so the attention
// stays finite for any finite input (docs/reliability.md).
double dot_d(const float* a, const float* b, int n) {
  double s = 0.0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}
void resize_all(std::vector<Tensor>& ts, int count, int64_t rows, int64_t cols) {
  ts.resize(static_cast<size_t>(count));
  for (Tensor& t : ts) t.resize(rows, cols);
}
}  // namespace

void Mma::forward(const ParamStore& params, int64_t rows, const float* const* x, Tensor& out, Mode mode,
                  const DropoutKey& key, MmaContext& ctx) const {
  const int mc = modalities();
  const int d = config_.d_model;
  const bool cosine = config_.score == MmaScore::Cosine;
  const bool concat = config_.skip == MmaSkip::Concat;
  const int width = concat ? 2 * d : d;  // columns of out_m
  ctx.mode = mode;
  ctx.key = key;
  for (auto* ts : {&ctx.xhat, &ctx.q, &ctx.k, &ctx.v, &ctx.z}) resize_all(*ts, mc, rows, d);
  ctx.alpha.resize(rows, static_cast<int64_t>(mc) * mc);
  ctx.qnorm.resize(rows, mc);
  ctx.knorm.resize(rows, mc);
  out.resize(rows, static_cast<int64_t>(mc) * width);
  if (rows == 0) return;

  DropoutContext unused;
  for (int m = 0; m < mc; ++m) {
    Tensor& xh = ctx.xhat[m];
    std_[m].forward(params, x[m], config_.dims[m], rows, xh.data(), d);
    relu_forward(xh.data(), xh.data(), xh.size());
    drop_x_[m].forward(xh.data(), xh.data(), xh.size(), mode, key, unused);
  }
  for (int m = 0; m < mc; ++m) {
    q_[m].forward(params, ctx.xhat[m].data(), d, rows, ctx.q[m].data(), d);
    k_[m].forward(params, ctx.xhat[m].data(), d, rows, ctx.k[m].data(), d);
    v_[m].forward(params, ctx.xhat[m].data(), d, rows, ctx.v[m].data(), d);
  }

  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  // Per-row work is ~3 M^2 d flops: threads only pay off for batches of real size.
  const bool parallel = rows * mc * mc * d > kParallelWork;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    float* alpha = ctx.alpha.row(r);
    double qn[kMmaMaxModalities], kn[kMmaMaxModalities];
    if (cosine)
      for (int m = 0; m < mc; ++m) {
        qn[m] = std::sqrt(dot_d(ctx.q[m].row(r), ctx.q[m].row(r), d));
        kn[m] = std::sqrt(dot_d(ctx.k[m].row(r), ctx.k[m].row(r), d));
        ctx.qnorm.row(r)[m] = static_cast<float>(qn[m]);
        ctx.knorm.row(r)[m] = static_cast<float>(kn[m]);
      }
    for (int m = 0; m < mc; ++m) {
      float* a = alpha + m * mc;
      double e[kMmaMaxModalities];
      double mx = -INFINITY;
      for (int n = 0; n < mc; ++n) {
        e[n] = dot_d(ctx.q[m].row(r), ctx.k[n].row(r), d);
        e[n] = cosine ? e[n] / (std::max<double>(qn[m], kMmaCosineEps) * std::max<double>(kn[n], kMmaCosineEps))
                      : e[n] * scale;
        mx = std::max(mx, e[n]);
      }
      double sum = 0.0;
      for (int n = 0; n < mc; ++n) sum += (e[n] = std::exp(e[n] - mx));
      for (int n = 0; n < mc; ++n) a[n] = static_cast<float>(e[n] / sum);
      float* z = ctx.z[m].row(r);
      std::fill(z, z + d, 0.0f);
      for (int n = 0; n < mc; ++n) {
        const float* v = ctx.v[n].row(r);
        for (int c = 0; c < d; ++c) z[c] += a[n] * v[c];
      }
    }
  }

  // Skip connection into the output blocks; the z dropout runs in place on ctx.z
  // (backward needs only dz, not z).
  for (int m = 0; m < mc; ++m) {
    if (!concat) drop_z_[m].forward(ctx.z[m].data(), ctx.z[m].data(), ctx.z[m].size(), mode, key, unused);
    const Tensor& xh = ctx.xhat[m];
    const Tensor& z = ctx.z[m];
#pragma omp parallel for schedule(static) if (rows * d > kParallelWork)
    for (int64_t r = 0; r < rows; ++r) {
      float* o = out.row(r) + static_cast<int64_t>(m) * width;
      const float* xr = xh.row(r);
      const float* zr = z.row(r);
      if (concat) {
        std::copy_n(xr, d, o);
        std::copy_n(zr, d, o + d);
      } else {
        for (int c = 0; c < d; ++c) o[c] = xr[c] + zr[c];
      }
    }
  }
}

void Mma::backward(ParamStore& params, int64_t rows, const float* const* x, const Tensor& dout, float* const* dx,
                   MmaContext& ctx) const {
  const int mc = modalities();
  const int d = config_.d_model;
  const bool cosine = config_.score == MmaScore::Cosine;
  const bool concat = config_.skip == MmaSkip::Concat;
  const int width = concat ? 2 * d : d;
  MMAN_CHECK(dout.rows() == rows && dout.cols() == static_cast<int64_t>(mc) * width,
             "MMA backward: dout is [{} x {}], expected [{} x {}]", dout.rows(), dout.cols(), rows, mc * width);
  MMAN_CHECK(ctx.alpha.rows() == rows, "MMA backward: context holds {} rows, not {}", ctx.alpha.rows(), rows);
  for (auto* ts : {&ctx.dxhat, &ctx.dq, &ctx.dk, &ctx.dv}) resize_all(*ts, mc, rows, d);
  if (rows == 0) return;

  // Split dout into dxhat (skip path) and dz (attention path, through its dropout).
  std::vector<Tensor>& dz = ctx.z;  // z itself is no longer needed
  for (int m = 0; m < mc; ++m) {
#pragma omp parallel for schedule(static) if (rows * d > kParallelWork)
    for (int64_t r = 0; r < rows; ++r) {
      const float* g = dout.row(r) + static_cast<int64_t>(m) * width;
      std::copy_n(g, d, ctx.dxhat[m].row(r));
      std::copy_n(concat ? g + d : g, d, dz[m].row(r));
    }
    if (!concat) {
      DropoutContext dctx{ctx.mode, ctx.key};
      drop_z_[m].backward(dz[m].data(), dz[m].data(), dz[m].size(), dctx);
    }
  }

  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool parallel = rows * mc * mc * d > kParallelWork;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const float* alpha = ctx.alpha.row(r);
    float de[kMmaMaxModalities * kMmaMaxModalities];
    for (int m = 0; m < mc; ++m) std::fill_n(ctx.dq[m].row(r), d, 0.0f);
    for (int n = 0; n < mc; ++n) {
      std::fill_n(ctx.dk[n].row(r), d, 0.0f);
      std::fill_n(ctx.dv[n].row(r), d, 0.0f);
    }
    // z_m = sum_n alpha_mn v_n: dalpha_mn = dz_m . v_n, dv_n += alpha_mn dz_m; then the
    // softmax Jacobian: de_mn = alpha_mn (dalpha_mn - sum_n' alpha_mn' dalpha_mn').
    for (int m = 0; m < mc; ++m) {
      const float* a = alpha + m * mc;
      const float* g = dz[m].row(r);
      float da[kMmaMaxModalities];
      float s = 0.0f;
      for (int n = 0; n < mc; ++n) {
        da[n] = dot(g, ctx.v[n].row(r), d);
        s += a[n] * da[n];
        float* dv = ctx.dv[n].row(r);
        for (int c = 0; c < d; ++c) dv[c] += a[n] * g[c];
      }
      for (int n = 0; n < mc; ++n) de[m * mc + n] = a[n] * (da[n] - s);
    }
    // Scores -> q and k.
    if (!cosine) {
      for (int m = 0; m < mc; ++m)
        for (int n = 0; n < mc; ++n) {
          const float w = de[m * mc + n] * scale;
          const float* q = ctx.q[m].row(r);
          const float* k = ctx.k[n].row(r);
          float* dq = ctx.dq[m].row(r);
          float* dk = ctx.dk[n].row(r);
          for (int c = 0; c < d; ++c) {
            dq[c] += w * k[c];
            dk[c] += w * q[c];
          }
        }
    } else {
      // c = q.k / (Nq Nk) with Nq = max(|q|, eps): dc/dq = k/(Nq Nk) - [|q| > eps] c q/|q|^2,
      // and symmetrically for k. In double, like the forward (|q| |k| overflows float for
      // large vectors); the norms are recomputed rather than read back as floats.
      double qn[kMmaMaxModalities], kn[kMmaMaxModalities];
      for (int m = 0; m < mc; ++m) {
        qn[m] = std::sqrt(dot_d(ctx.q[m].row(r), ctx.q[m].row(r), d));
        kn[m] = std::sqrt(dot_d(ctx.k[m].row(r), ctx.k[m].row(r), d));
      }
      for (int m = 0; m < mc; ++m)
        for (int n = 0; n < mc; ++n) {
          const float* q = ctx.q[m].row(r);
          const float* k = ctx.k[n].row(r);
          const double nq = std::max<double>(qn[m], kMmaCosineEps), nk = std::max<double>(kn[n], kMmaCosineEps);
          const double inv = 1.0 / (nq * nk);
          const double cval = dot_d(q, k, d) * inv;
          const double w = de[m * mc + n];
          const double wq = qn[m] > kMmaCosineEps ? w * cval / (qn[m] * qn[m]) : 0.0;
          const double wk = kn[n] > kMmaCosineEps ? w * cval / (kn[n] * kn[n]) : 0.0;
          float* dq = ctx.dq[m].row(r);
          float* dk = ctx.dk[n].row(r);
          for (int c = 0; c < d; ++c) {
            dq[c] += static_cast<float>(w * inv * k[c] - wq * q[c]);
            dk[c] += static_cast<float>(w * inv * q[c] - wk * k[c]);
          }
        }
    }
  }

  // Projections back into dxhat (which already holds the skip gradient), then through
  // the standardisation's dropout and ReLU into its Linear.
  for (int m = 0; m < mc; ++m) {
    const float* xh = ctx.xhat[m].data();
    float* dxh = ctx.dxhat[m].data();
    q_[m].backward(params, xh, d, rows, ctx.dq[m].data(), d, dxh, d, true);
    k_[m].backward(params, xh, d, rows, ctx.dk[m].data(), d, dxh, d, true);
    v_[m].backward(params, xh, d, rows, ctx.dv[m].data(), d, dxh, d, true);
    DropoutContext dctx{ctx.mode, ctx.key};
    drop_x_[m].backward(dxh, dxh, ctx.dxhat[m].size(), dctx);
    // xhat > 0 exactly where ReLU was active and the element was kept; dropped elements
    // already have zero gradient, so xhat serves as the ReLU's sign pattern.
    relu_backward(xh, dxh, dxh, ctx.dxhat[m].size());
    std_[m].backward(params, x[m], config_.dims[m], rows, dxh, d, dx != nullptr ? dx[m] : nullptr,
                     config_.dims[m]);
  }
}

}  // namespace mman
