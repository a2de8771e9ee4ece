// Multi-modal attention: forward against an independent double-precision reference, gradients
// by finite differences for both scores x both skips (Eval and Train), attention export, edge cases.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "mman/error.h"
#include "mman/layers/dropout.h"
#include "mman/layers/mma.h"
#include "support/gradcheck.h"

namespace mman {
namespace {

struct Case {
  MmaScore score;
  MmaSkip skip;
};
const Case kCases[] = {{MmaScore::ScaledDot, MmaSkip::Residual},
                       {MmaScore::ScaledDot, MmaSkip::Concat},
                       {MmaScore::Cosine, MmaSkip::Residual},
                       {MmaScore::Cosine, MmaSkip::Concat}};
std::string case_name(const Case& c, Mode mode) {
  return std::string(c.score == MmaScore::Cosine ? "cosine" : "scaled_dot") + "/" +
         (c.skip == MmaSkip::Concat ? "concat" : "residual") + "/" + (mode == Mode::Train ? "train" : "eval");
}

constexpr uint64_t kSlotBase = 32;

MmaConfig small_config(const Case& c, int d_model = 4) {
  MmaConfig cfg;
  cfg.modalities = {"audio", "visual", "text"};
  cfg.dims = {3, 5, 2};
  cfg.d_model = d_model;
  cfg.dropout = 0.25f;
  cfg.score = c.score;
  cfg.skip = c.skip;
  return cfg;
}

struct Inputs {
  std::vector<Tensor> x;
  std::vector<const float*> ptrs;
  void refresh() {
    ptrs.clear();
    for (const Tensor& t : x) ptrs.push_back(t.data());
  }
};

Inputs random_inputs(Rng& rng, int64_t rows, const std::vector<int>& dims) {
  Inputs in;
  for (int d : dims) {
    Tensor t(rows, d);
    for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(rng.uniform(-1.5, 1.5));
    in.x.push_back(std::move(t));
  }
  in.refresh();
  return in;
}

// The layer's equations written out directly in double, with the documented dropout
// masks: out [rows x M*width], alpha [rows x M*M].
void reference_forward(const ParamStore& ps, const std::string& prefix, const MmaConfig& cfg, const Inputs& in,
                       Mode mode, const DropoutKey& key, std::vector<double>& out, std::vector<double>& alpha) {
  const int mc = static_cast<int>(cfg.dims.size()), d = cfg.d_model;
  const int64_t rows = in.x[0].rows();
  const bool concat = cfg.skip == MmaSkip::Concat;
  const int width = concat ? 2 * d : d;
  auto linear = [&](const std::string& name, const std::vector<double>& x, int in_dim) {
    const float* w = ps.value(ps.find(name + ".weight"));
    const float* b = ps.value(ps.find(name + ".bias"));
    std::vector<double> y(static_cast<size_t>(d));
    for (int j = 0; j < d; ++j) {
      y[j] = b[j];
      for (int i = 0; i < in_dim; ++i) y[j] += static_cast<double>(w[j * in_dim + i]) * x[i];
    }
    return y;
  };
  auto scale = [&](uint64_t slot, uint64_t element) {
    return mode == Mode::Train ? static_cast<double>(dropout_scale(dropout_stream(key, slot), element, cfg.dropout))
                               : 1.0;
  };
  out.assign(static_cast<size_t>(rows * mc * width), 0.0);
  alpha.assign(static_cast<size_t>(rows * mc * mc), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<std::vector<double>> xh(mc), q(mc), k(mc), v(mc);
    for (int m = 0; m < mc; ++m) {
      std::vector<double> x(in.x[m].row(r), in.x[m].row(r) + cfg.dims[m]);
      xh[m] = linear(prefix + "std." + cfg.modalities[m], x, cfg.dims[m]);
      for (int c = 0; c < d; ++c) xh[m][c] = std::max(xh[m][c], 0.0) * scale(kSlotBase + m, r * d + c);
    }
    for (int m = 0; m < mc; ++m) {
      q[m] = linear(prefix + "q." + cfg.modalities[m], xh[m], d);
      k[m] = linear(prefix + "k." + cfg.modalities[m], xh[m], d);
      v[m] = linear(prefix + "v." + cfg.modalities[m], xh[m], d);
    }
    for (int m = 0; m < mc; ++m) {
      std::vector<double> e(mc);
      double mx = -1e300;
      for (int n = 0; n < mc; ++n) {
        double dot = 0.0, qq = 0.0, kk = 0.0;
        for (int c = 0; c < d; ++c) {
          dot += q[m][c] * k[n][c];
          qq += q[m][c] * q[m][c];
          kk += k[n][c] * k[n][c];
        }
        e[n] = cfg.score == MmaScore::Cosine
                   ? dot / (std::max(std::sqrt(qq), 1e-8) * std::max(std::sqrt(kk), 1e-8))
                   : dot / std::sqrt(static_cast<double>(d));
        mx = std::max(mx, e[n]);
      }
      double sum = 0.0;
      for (int n = 0; n < mc; ++n) sum += std::exp(e[n] - mx);
      std::vector<double> z(static_cast<size_t>(d), 0.0);
      for (int n = 0; n < mc; ++n) {
        const double a = std::exp(e[n] - mx) / sum;
        alpha[static_cast<size_t>(r * mc * mc + m * mc + n)] = a;
        for (int c = 0; c < d; ++c) z[c] += a * v[n][c];
      }
      double* o = out.data() + r * mc * width + m * width;
      for (int c = 0; c < d; ++c) {
        if (concat) {
          o[c] = xh[m][c];
          o[d + c] = z[c];
        } else {
          o[c] = xh[m][c] + z[c] * scale(kSlotBase + kMmaMaxModalities + m, r * d + c);
        }
      }
    }
  }
}

TEST(Mma, ParameterNamesShapesAndOutputWidth) {
  ParamStore ps;
  MmaConfig cfg = small_config({MmaScore::ScaledDot, MmaSkip::Residual}, 6);
  Mma mma(ps, "mma.", cfg, 0);
  std::vector<std::string> names;
  for (const ParamInfo& p : ps.infos()) names.push_back(p.name);
  const std::vector<std::string> expected = {
      "mma.std.audio.weight", "mma.std.audio.bias", "mma.std.visual.weight", "mma.std.visual.bias",
      "mma.std.text.weight",  "mma.std.text.bias",  "mma.q.audio.weight",    "mma.q.audio.bias",
      "mma.q.visual.weight",  "mma.q.visual.bias",  "mma.q.text.weight",     "mma.q.text.bias",
      "mma.k.audio.weight",   "mma.k.audio.bias",   "mma.k.visual.weight",   "mma.k.visual.bias",
      "mma.k.text.weight",    "mma.k.text.bias",    "mma.v.audio.weight",    "mma.v.audio.bias",
      "mma.v.visual.weight",  "mma.v.visual.bias",  "mma.v.text.weight",     "mma.v.text.bias"};
  EXPECT_EQ(names, expected);
  EXPECT_EQ(ps.info(ps.find("mma.std.visual.weight")).shape, (std::vector<int64_t>{6, 5}));
  EXPECT_EQ(ps.info(ps.find("mma.k.text.weight")).shape, (std::vector<int64_t>{6, 6}));
  // Standardisation (d_m + 1) * d per modality, nine d x d projections with bias.
  EXPECT_EQ(ps.num_parameters(), (3 + 1 + 5 + 1 + 2 + 1) * 6 + 9 * (6 * 6 + 6));
  EXPECT_EQ(mma.output_dim(), 18);
  cfg.skip = MmaSkip::Concat;
  ParamStore ps2;
  EXPECT_EQ(Mma(ps2, "", cfg, 0).output_dim(), 36);

  ParamStore bad;
  cfg.dims = {3, 5};
  EXPECT_THROW(Mma(bad, "", cfg, 0), Error);  // names and widths disagree
}

TEST(Mma, ForwardMatchesReferenceAndAttentionRowsSumToOne) {
  for (const Case& c : kCases)
    for (Mode mode : {Mode::Eval, Mode::Train}) {
      SCOPED_TRACE(case_name(c, mode));
      ParamStore ps;
      const MmaConfig cfg = small_config(c);
      Mma mma(ps, "mma.", cfg, kSlotBase);
      Rng rng(11);
      mma.init(ps, rng);
      const Inputs in = random_inputs(rng, 9, cfg.dims);
      const DropoutKey key{99, 5};
      Tensor out;
      MmaContext ctx;
      mma.forward(ps, 9, in.ptrs.data(), out, mode, key, ctx);
      std::vector<double> ref_out, ref_alpha;
      reference_forward(ps, "mma.", cfg, in, mode, key, ref_out, ref_alpha);
      ASSERT_EQ(out.size(), static_cast<int64_t>(ref_out.size()));
      for (size_t i = 0; i < ref_out.size(); ++i) EXPECT_NEAR(out.data()[i], ref_out[i], 1e-5) << i;
      ASSERT_EQ(ctx.alpha.rows(), 9);
      ASSERT_EQ(ctx.alpha.cols(), 9);
      for (int64_t r = 0; r < 9; ++r)
        for (int m = 0; m < 3; ++m) {
          double s = 0.0;
          for (int n = 0; n < 3; ++n) {
            EXPECT_NEAR(ctx.alpha.at(r, 3 * m + n), ref_alpha[static_cast<size_t>(r * 9 + 3 * m + n)], 1e-6);
            s += ctx.alpha.at(r, 3 * m + n);
          }
          EXPECT_NEAR(s, 1.0, 1e-6);
        }
    }
}

// Every parameter tensor and every input checked by central differences of a fixed
// random projection of the output.
void check_gradients(const Case& c, Mode mode) {
  SCOPED_TRACE(case_name(c, mode));
  ParamStore ps;
  const MmaConfig cfg = small_config(c);
  Mma mma(ps, "mma.", cfg, kSlotBase);
  Rng rng(21);
  mma.init(ps, rng);
  const int64_t rows = 7;
  Inputs in = random_inputs(rng, rows, cfg.dims);
  const DropoutKey key{3, 8};
  Tensor out;
  MmaContext ctx;
  mma.forward(ps, rows, in.ptrs.data(), out, mode, key, ctx);
  Tensor r(out.rows(), out.cols());
  for (int64_t i = 0; i < r.size(); ++i) r.data()[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  auto loss = [&]() {
    Tensor o;
    MmaContext cx;
    mma.forward(ps, rows, in.ptrs.data(), o, mode, key, cx);
    double s = 0.0;
    for (int64_t i = 0; i < o.size(); ++i) s += static_cast<double>(o.data()[i]) * r.data()[i];
    return s;
  };
  ps.zero_grads();
  std::vector<Tensor> dx(3);
  std::vector<float*> dxp;
  for (int m = 0; m < 3; ++m) {
    dx[m].resize(rows, cfg.dims[m]);
    dxp.push_back(dx[m].data());
  }
  mma.backward(ps, rows, in.ptrs.data(), r, dxp.data(), ctx);

  for (int id = 0; id < ps.count(); ++id) {
    const ParamInfo& info = ps.info(id);
    std::vector<float> w(ps.value(id), ps.value(id) + info.size);
    const std::vector<float> g(ps.grad(id), ps.grad(id) + info.size);
    auto loss_w = [&]() {
      std::copy(w.begin(), w.end(), ps.value(id));
      return loss();
    };
    test::expect_gradient_matches(w, g, loss_w, info.name.c_str(), 1e-3f, 2e-2, 1e-3);
    std::copy(w.begin(), w.end(), ps.value(id));
  }
  for (int m = 0; m < 3; ++m) {
    std::vector<float> xs(in.x[m].data(), in.x[m].data() + in.x[m].size());
    const std::vector<float> g(dx[m].data(), dx[m].data() + dx[m].size());
    auto loss_x = [&]() {
      std::copy(xs.begin(), xs.end(), in.x[m].data());
      return loss();
    };
    test::expect_gradient_matches(xs, g, loss_x, cfg.modalities[m].c_str(), 1e-3f, 2e-2, 1e-3);
    std::copy(xs.begin(), xs.end(), in.x[m].data());
  }
}

TEST(Mma, GradientsScaledDotResidual) {
  check_gradients(kCases[0], Mode::Eval);
  check_gradients(kCases[0], Mode::Train);
}
TEST(Mma, GradientsScaledDotConcat) {
  check_gradients(kCases[1], Mode::Eval);
  check_gradients(kCases[1], Mode::Train);
}
TEST(Mma, GradientsCosineResidual) {
  check_gradients(kCases[2], Mode::Eval);
  check_gradients(kCases[2], Mode::Train);
}
TEST(Mma, GradientsCosineConcat) {
  check_gradients(kCases[3], Mode::Eval);
  check_gradients(kCases[3], Mode::Train);
}

TEST(Mma, BackwardAccumulatesParamsAndSkipsNullInputGrads) {
  ParamStore ps;
  const MmaConfig cfg = small_config({MmaScore::Cosine, MmaSkip::Residual});
  Mma mma(ps, "", cfg, 0);
  Rng rng(5);
  mma.init(ps, rng);
  const Inputs in = random_inputs(rng, 6, cfg.dims);
  Tensor out;
  MmaContext ctx;
  mma.forward(ps, 6, in.ptrs.data(), out, Mode::Train, DropoutKey{1, 2}, ctx);
  Tensor dout(out.rows(), out.cols());
  for (int64_t i = 0; i < dout.size(); ++i) dout.data()[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  ps.zero_grads();
  mma.backward(ps, 6, in.ptrs.data(), dout, nullptr, ctx);
  const std::vector<float> once = ps.grads();
  Tensor dtext(6, 2);
  float* dx[3] = {nullptr, nullptr, dtext.data()};  // only one input gradient wanted
  mma.backward(ps, 6, in.ptrs.data(), dout, dx, ctx);
  double norm = 0.0;
  for (size_t i = 0; i < once.size(); ++i) {
    EXPECT_NEAR(ps.grads()[i], 2.0f * once[i], 1e-5f + 1e-5f * std::fabs(once[i]));
    norm += std::fabs(once[i]);
  }
  EXPECT_GT(norm, 0.0);
  double dnorm = 0.0;
  for (int64_t i = 0; i < dtext.size(); ++i) dnorm += std::fabs(dtext.data()[i]);
  EXPECT_GT(dnorm, 0.0);
}

TEST(Mma, CosineWithAllZeroVectorsIsFinite) {
  // Zero inputs and zero biases make every x̂, q and k exactly zero: the scores are 0,
  // attention is uniform, and outputs and gradients stay finite.
  for (MmaSkip skip : {MmaSkip::Residual, MmaSkip::Concat}) {
    ParamStore ps;
    const MmaConfig cfg = small_config({MmaScore::Cosine, skip});
    Mma mma(ps, "", cfg, 0);
    Rng rng(6);
    mma.init(ps, rng);
    for (const ParamInfo& p : ps.infos())
      if (p.name.size() > 4 && p.name.compare(p.name.size() - 4, 4, "bias") == 0)
        std::fill_n(ps.value(ps.find(p.name)), p.size, 0.0f);
    Inputs in;
    for (int d : cfg.dims) in.x.emplace_back(4, d);  // zero-filled
    in.refresh();
    Tensor out;
    MmaContext ctx;
    mma.forward(ps, 4, in.ptrs.data(), out, Mode::Eval, DropoutKey{}, ctx);
    for (int64_t i = 0; i < out.size(); ++i) EXPECT_EQ(out.data()[i], 0.0f);
    for (int64_t i = 0; i < ctx.alpha.size(); ++i) EXPECT_NEAR(ctx.alpha.data()[i], 1.0 / 3.0, 1e-7);
    Tensor dout(out.rows(), out.cols());
    for (int64_t i = 0; i < dout.size(); ++i) dout.data()[i] = 1.0f;
    std::vector<Tensor> dx(3);
    std::vector<float*> dxp;
    for (int m = 0; m < 3; ++m) {
      dx[m].resize(4, cfg.dims[m]);
      dxp.push_back(dx[m].data());
    }
    ps.zero_grads();
    mma.backward(ps, 4, in.ptrs.data(), dout, dxp.data(), ctx);
    for (float g : ps.grads()) EXPECT_TRUE(std::isfinite(g));
    for (const Tensor& t : dx)
      for (int64_t i = 0; i < t.size(); ++i) EXPECT_TRUE(std::isfinite(t.data()[i]));
  }
}

TEST(Mma, ZeroRows) {
  ParamStore ps;
  const MmaConfig cfg = small_config({MmaScore::ScaledDot, MmaSkip::Residual});
  Mma mma(ps, "", cfg, 0);
  Inputs in;
  for (int d : cfg.dims) in.x.emplace_back(0, d);
  in.refresh();
  Tensor out;
  MmaContext ctx;
  mma.forward(ps, 0, in.ptrs.data(), out, Mode::Train, DropoutKey{}, ctx);
  EXPECT_EQ(out.rows(), 0);
  EXPECT_EQ(out.cols(), 12);
  ps.zero_grads();
  mma.backward(ps, 0, in.ptrs.data(), out, nullptr, ctx);
  for (float g : ps.grads()) EXPECT_EQ(g, 0.0f);
}

}  // namespace
}  // namespace mman
