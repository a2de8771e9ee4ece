// Unfused MMA attention kernels (cuda/kernels/attention.cuh) run on the CPU through the SIMT layer:
// the whole unfused path (projections and weight gradients by our CPU GEMM, as cuBLAS does them
// on the GPU) against the CPU layer mman::Mma, for 1 to 5 modalities, both scores and skips.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "support/modalities.h"
#include "cuda/kernels/attention.cuh"
#include "mman/blas.h"
#include "mman/error.h"
#include "mman/layers/activation.h"
#include "mman/layers/dropout.h"
#include "mman/layers/mma.h"
#include "mman/simt/simt.h"

namespace mman {
namespace {

using kernels::MmaShape;
using simt::EmulationOptions;
using simt::ScopedEmulation;

constexpr uint64_t kSlotBase = 100;
constexpr double kEps = FLT_EPSILON;
// As in test_kernels_mma.cpp: both implementations err by at most about L eps times the
// magnitude on a path with reductions of total length L; softmax and the cosine normalisation
// pass errors on with factors of order one.
constexpr double kSafety = 4.0;

void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double length,
                  const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double scale = 0.0, worst = 0.0;
  size_t at = 0;
  for (float r : ref) scale = std::max(scale, std::fabs(static_cast<double>(r)));
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    if (!(err <= worst)) worst = err, at = i;
  }
  const double tol = kSafety * length * kEps * scale;
  EXPECT_TRUE(worst <= tol) << what << ": max error " << worst << " at " << at << " (kernel " << got[at] << ", cpu "
                            << ref[at] << "), tolerance " << tol;
}

struct Case {
  int modalities;
  MmaScore score;
  MmaSkip skip;
  Mode mode;
  int64_t rows;
  int d;
  float qk_scale = 1.0f;  // Q and K weights and biases multiplied by this (huge queries and keys)
};
std::string describe(const Case& c) {
  return std::to_string(c.modalities) + " modalities, " + (c.score == MmaScore::Cosine ? "cosine" : "scaled_dot") +
         "/" + (c.skip == MmaSkip::Concat ? "concat" : "residual") + "/" + (c.mode == Mode::Train ? "train" : "eval") +
         ", rows " + std::to_string(c.rows) + ", d " + std::to_string(c.d) +
         (c.qk_scale != 1.0f ? ", q and k scaled by " + std::to_string(c.qk_scale) : std::string());
}

void run_case(const Case& c, const std::vector<EmulationOptions>& schedules) {
  SCOPED_TRACE(describe(c));
  const int mc = c.modalities, d = c.d;
  const int64_t rows = c.rows;
  const size_t n = static_cast<size_t>(rows) * mc * d;
  const std::vector<std::string> all_names = {"audio", "visual", "text", "face", "gesture"};
  MmaConfig cfg;
  for (int m = 0; m < mc; ++m) cfg.modalities.push_back(all_names[m]), cfg.dims.push_back(3 + 4 * m);
  cfg.d_model = d;
  cfg.dropout = 0.3f;
  cfg.score = c.score;
  cfg.skip = c.skip;
  ParamStore ps;
  Mma mma(ps, "m.", cfg, kSlotBase);
  Rng rng(31 + static_cast<uint64_t>(rows) + static_cast<uint64_t>(mc) * 1000);
  mma.init(ps, rng);
  if (c.qk_scale != 1.0f)
    for (const ParamInfo& info : ps.infos())
      if (info.name.rfind("m.q.", 0) == 0 || info.name.rfind("m.k.", 0) == 0)
        for (size_t i = 0; i < info.size; ++i) ps.values()[info.offset + i] *= c.qk_scale;
  std::vector<Tensor> x;
  std::vector<const float*> ptrs;
  for (int dim : cfg.dims) {
    Tensor t(rows, dim);
    for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(rng.uniform(-2, 2));
    x.push_back(std::move(t));
  }
  for (const Tensor& t : x) ptrs.push_back(t.data());
  const DropoutKey key{77, 3};
  MmaContext ctx;
  Tensor out;
  mma.forward(ps, rows, ptrs.data(), out, c.mode, key, ctx);
  Tensor dout(rows, mma.output_dim());
  for (int64_t i = 0; i < dout.size(); ++i) dout.data()[i] = static_cast<float>(rng.uniform(-1, 1));
  ps.zero_grads();
  mma.backward(ps, rows, ptrs.data(), dout, nullptr, ctx);

  const auto weight = [&](const char* which, int m) { return ps.value(ps.find("m." + std::string(which) + cfg.modalities[m] + ".weight")); };
  const auto bias = [&](const char* which, int m) { return ps.value(ps.find("m." + std::string(which) + cfg.modalities[m] + ".bias")); };
  const char* kWhich[3] = {"q.", "k.", "v."};
  // The unfused path's projections: q_m = xhat_m W^T + b by our CPU GEMM (cuBLAS on the GPU).
  const std::vector<float> xhat = test::concat_modalities(ctx.xhat, rows, d);
  std::vector<float> proj[3];
  for (int i = 0; i < 3; ++i) {
    proj[i].assign(n, 0.0f);
    for (int m = 0; m < mc; ++m) {
      for (int64_t r = 0; r < rows; ++r) std::memcpy(&proj[i][static_cast<size_t>((r * mc + m) * d)], bias(kWhich[i], m), d * 4);
      gemm(false, true, static_cast<int>(rows), d, d, 1.0f, xhat.data() + m * d, mc * d, weight(kWhich[i], m), d, 1.0f,
           proj[i].data() + m * d, mc * d);
    }
  }
  const MmaShape s = kernels::mma_shape(rows, mc, d, c.score, c.skip, cfg.dropout, c.mode, key, kSlotBase);
  const double fwd = 2.0 * d + mc, bwd = fwd + 2.0 * d + 2 * mc;

  std::vector<float> first_out, first_dq;
  for (size_t si = 0; si < schedules.size(); ++si) {
    SCOPED_TRACE(simt::describe(schedules[si]));
    ScopedEmulation scope(schedules[si]);
    std::vector<float> alpha(static_cast<size_t>(rows) * mc * mc, NAN), o(static_cast<size_t>(out.size()), NAN);
    kernels::attention_forward_launch(xhat.data(), proj[0].data(), proj[1].data(), proj[2].data(), s, alpha.data(),
                                      o.data(), nullptr);
    std::vector<float> dq(n, NAN), dk(n, NAN), dv(n, NAN), dxhat(n, NAN);
    kernels::attention_backward_launch(proj[0].data(), proj[1].data(), proj[2].data(), alpha.data(), dout.data(), s,
                                       dq.data(), dk.data(), dv.data(), dxhat.data(), nullptr);
    if (si > 0) {  // every schedule gives the same bits
      EXPECT_EQ(0, std::memcmp(o.data(), first_out.data(), o.size() * 4));
      EXPECT_EQ(0, std::memcmp(dq.data(), first_dq.data(), dq.size() * 4));
      continue;
    }
    first_out = o;
    first_dq = dq;
    expect_close(o, std::vector<float>(out.data(), out.data() + out.size()), fwd, "out");
    expect_close(alpha, std::vector<float>(ctx.alpha.data(), ctx.alpha.data() + ctx.alpha.size()), fwd, "alpha");
    expect_close(dq, test::concat_modalities(ctx.dq, rows, d), bwd, "dq");
    expect_close(dk, test::concat_modalities(ctx.dk, rows, d), bwd, "dk");
    expect_close(dv, test::concat_modalities(ctx.dv, rows, d), bwd, "dv");
    // The rest of the unfused backward by GEMM: dxhat += dY W, dW += dY^T xhat, db += sums.
    const std::vector<float>* dys[3] = {&dq, &dk, &dv};
    std::vector<float> grads(ps.grads().size(), 0.0f);
    for (int i = 0; i < 3; ++i)
      for (int m = 0; m < mc; ++m) {
        gemm(false, false, static_cast<int>(rows), d, d, 1.0f, dys[i]->data() + m * d, mc * d, weight(kWhich[i], m), d,
             1.0f, dxhat.data() + m * d, mc * d);
        const int wid = ps.find("m." + std::string(kWhich[i]) + cfg.modalities[m] + ".weight");
        const int bid = ps.find("m." + std::string(kWhich[i]) + cfg.modalities[m] + ".bias");
        gemm(true, false, d, d, static_cast<int>(rows), 1.0f, dys[i]->data() + m * d, mc * d, xhat.data() + m * d,
             mc * d, 0.0f, grads.data() + ps.info(wid).offset, d);
        for (int64_t r = 0; r < rows; ++r)
          for (int j = 0; j < d; ++j) grads[ps.info(bid).offset + j] += (*dys[i])[static_cast<size_t>((r * mc + m) * d + j)];
        for (int id : {wid, bid}) {
          const ParamInfo& info = ps.info(id);
          expect_close(std::vector<float>(grads.begin() + info.offset, grads.begin() + info.offset + info.size),
                       std::vector<float>(ps.grad(id), ps.grad(id) + info.size), bwd + rows, info.name);
        }
      }
    // Through the standardisation's dropout and ReLU (the CPU layer's own functions).
    std::vector<Tensor> masked(static_cast<size_t>(mc));
    for (int m = 0; m < mc; ++m) {
      masked[m].resize(rows, d);
      for (int64_t r = 0; r < rows; ++r) std::memcpy(masked[m].row(r), &dxhat[static_cast<size_t>((r * mc + m) * d)], d * 4);
      Dropout(cfg.dropout, kSlotBase + m).backward(masked[m].data(), masked[m].data(), masked[m].size(), {c.mode, key});
      relu_backward(ctx.xhat[m].data(), masked[m].data(), masked[m].data(), masked[m].size());
    }
    expect_close(test::concat_modalities(masked, rows, d), test::concat_modalities(ctx.dxhat, rows, d), bwd + mc * d, "dxhat");
  }
}

TEST(KernelsAttention, UnfusedMatchesCpuLayerForAllScoresSkipsAndModes) {
  for (MmaScore score : {MmaScore::ScaledDot, MmaScore::Cosine})
    for (MmaSkip skip : {MmaSkip::Residual, MmaSkip::Concat})
      for (Mode mode : {Mode::Eval, Mode::Train}) run_case({3, score, skip, mode, 21, 45}, simt::test_schedules());
}

// Any modality count and widths the fused kernels do not take (d > 160); one row; 8 rows per
// block, so 9 and 17 rows leave ragged blocks.
TEST(KernelsAttention, UnfusedHandlesOtherModalityCountsAndWidths) {
  const std::vector<EmulationOptions> one = {simt::test_schedules().back()};
  run_case({1, MmaScore::Cosine, MmaSkip::Residual, Mode::Train, 9, 20}, one);
  run_case({2, MmaScore::ScaledDot, MmaSkip::Concat, Mode::Train, 17, 33}, one);
  run_case({5, MmaScore::Cosine, MmaSkip::Concat, Mode::Train, 9, 31}, one);
  run_case({3, MmaScore::ScaledDot, MmaSkip::Residual, Mode::Train, 1, 150}, one);
  run_case({3, MmaScore::Cosine, MmaSkip::Residual, Mode::Train, 9, 200}, one);
}

// Queries and keys with elements of ~1e19: q.k and |q|^2 overflow float (1e38 per term) but not
// the double in which mman::Mma forms scores and norms (and the cosine backward). The kernels
// accumulate those in double too, so everything stays finite and equal to the CPU; with float
// accumulation the scores were Inf - Inf = NaN.
TEST(KernelsAttention, HugeQueriesAndKeysStayFiniteLikeTheCpu) {
  const std::vector<EmulationOptions> one = {simt::test_schedules().back()};
  for (MmaScore score : {MmaScore::ScaledDot, MmaScore::Cosine}) {
    run_case({3, score, MmaSkip::Residual, Mode::Train, 9, 45, 2e19f}, one);
    run_case({2, score, MmaSkip::Concat, Mode::Train, 9, 150, 2e19f}, one);
  }
}

TEST(KernelsAttention, ZeroRowsLaunchNothing) {
  const MmaShape s = kernels::mma_shape(0, 3, 8, MmaScore::ScaledDot, MmaSkip::Residual, 0.1f, Mode::Train, {}, 0);
  kernels::attention_forward_launch(nullptr, nullptr, nullptr, nullptr, s, nullptr, nullptr, nullptr);
  kernels::attention_backward_launch(nullptr, nullptr, nullptr, nullptr, nullptr, s, nullptr, nullptr, nullptr, nullptr,
                                     nullptr);
  EXPECT_THROW(kernels::mma_shape(-1, 3, 8, MmaScore::ScaledDot, MmaSkip::Residual, 0.1f, Mode::Train, {}, 0), Error);
  EXPECT_THROW(kernels::mma_shape(4, 0, 8, MmaScore::ScaledDot, MmaSkip::Residual, 0.1f, Mode::Train, {}, 0), Error);
  EXPECT_THROW(kernels::mma_shape(4, 3, 0, MmaScore::ScaledDot, MmaSkip::Residual, 0.1f, Mode::Train, {}, 0), Error);
}

}  // namespace
}  // namespace mman
