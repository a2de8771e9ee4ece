// Fused multi-modal attention kernels (cuda/kernels/mma.cuh) run on the CPU through the SIMT layer
// against the CPU layer mman::Mma: forward (out, alpha, q/k/v), backward (dq/dk/dv, dxhat) and
// the Q/K/V weight gradients, both scores x both skips, Eval and Train, ragged row counts.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "support/modalities.h"
#include "cuda/kernels/mma.cuh"
#include "mman/blas.h"
#include "mman/error.h"
#include "mman/layers/activation.h"
#include "mman/layers/dropout.h"
#include "mman/layers/mma.h"
#include "mman/simt/simt.h"

namespace mman {
namespace {

using kernels::MmaShape;
using kernels::MmaWeightGrads;
using kernels::MmaWeights;
using simt::EmulationOptions;
using simt::ScopedEmulation;

constexpr uint64_t kSlotBase = 40;
constexpr double kEps = FLT_EPSILON;
// Each float result differs from the exact value by at most about L eps times the magnitude
// of the terms on its path (L: the reduction lengths along it); the kernel and the CPU layer
// each make such an error, and the softmax and the cosine normalisation pass it on with
// factors of order one. So |kernel - cpu| <= kSafety * L * eps * max|cpu|. A wrong index, a
// missing term or a stale value gives errors of order max|cpu| instead.
constexpr double kSafety = 4.0;

std::vector<float> nan_buffer(size_t n) { return std::vector<float>(n, NAN); }

// max |got - ref| <= kSafety * length * eps * max |ref|, NaN anywhere fails.
void expect_close(const std::vector<float>& got, const float* ref, size_t n, double length, const std::string& what) {
  ASSERT_EQ(got.size(), n) << what;
  double scale = 0.0;
  for (size_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(static_cast<double>(ref[i])));
  const double tol = kSafety * length * kEps * scale;
  double worst = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < n; ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    if (!(err <= worst)) worst = err, at = i;  // NaN lands here and stays
  }
  EXPECT_TRUE(worst <= tol) << what << ": max error " << worst << " at element " << at << " (kernel " << got[at]
                            << ", cpu " << ref[at] << "), tolerance " << tol << " = " << kSafety << " * " << length
                            << " eps * " << scale;
}

struct Case {
  MmaScore score;
  MmaSkip skip;
  Mode mode;
  int64_t rows;
  int d;
};
std::string describe(const Case& s) {
  return std::string(s.score == MmaScore::Cosine ? "cosine" : "scaled_dot") + "/" +
         (s.skip == MmaSkip::Concat ? "concat" : "residual") + "/" + (s.mode == Mode::Train ? "train" : "eval") +
         ", rows " + std::to_string(s.rows) + ", d " + std::to_string(s.d);
}

// The CPU layer's forward and backward on random inputs, and what the kernels need.
struct CpuRun {
  MmaConfig cfg;
  ParamStore ps;
  Mma mma;
  MmaContext ctx;
  Tensor out, dout;
  std::vector<float> xhat;        // ctx.xhat concatenated, [rows x 3d]
  std::vector<float> grad_start;  // the gradient arena before backward (random: += is tested)
  MmaShape shape;
  DropoutKey key{1234, 17};

  // `tweak` may change the initialised parameters before the forward pass.
  CpuRun(const Case& s, uint64_t seed, const std::function<void(ParamStore&)>& tweak = {}) {
    cfg.modalities = {"audio", "visual", "text"};
    cfg.dims = {7, 12, 5};
    cfg.d_model = s.d;
    cfg.dropout = 0.25f;  // larger than the paper's 0.1, so masks drop plenty of elements
    cfg.score = s.score;
    cfg.skip = s.skip;
    mma = Mma(ps, "mma.", cfg, kSlotBase);
    Rng rng(seed);
    mma.init(ps, rng);
    if (tweak) tweak(ps);
    std::vector<Tensor> x;
    std::vector<const float*> ptrs;
    for (int dim : cfg.dims) {
      Tensor t(s.rows, dim);
      for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(rng.uniform(-2, 2));
      x.push_back(std::move(t));
    }
    for (const Tensor& t : x) ptrs.push_back(t.data());
    mma.forward(ps, s.rows, ptrs.data(), out, s.mode, key, ctx);
    xhat = test::concat_modalities(ctx.xhat, s.rows, s.d);
    dout.resize(s.rows, mma.output_dim());
    for (int64_t i = 0; i < dout.size(); ++i) dout.data()[i] = static_cast<float>(rng.uniform(-1, 1));
    for (float& g : ps.grads()) g = static_cast<float>(rng.uniform(-0.5, 0.5));
    grad_start = ps.grads();
    if (s.mode == Mode::Train) mma.backward(ps, s.rows, ptrs.data(), dout, nullptr, ctx);
    shape = kernels::mma_shape(s.rows, 3, s.d, s.score, s.skip, cfg.dropout, s.mode, key, kSlotBase);
  }
};

struct KernelRun {
  std::vector<float> q, k, v, alpha, out;     // forward
  std::vector<float> dq, dk, dv, dxhat;       // backward
  std::vector<float> grads;                   // the gradient arena after mma_weight_grad
  bool operator==(const KernelRun& o) const {
    const auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    };
    return same(q, o.q) && same(k, o.k) && same(v, o.v) && same(alpha, o.alpha) && same(out, o.out) &&
           same(dq, o.dq) && same(dk, o.dk) && same(dv, o.dv) && same(dxhat, o.dxhat) && same(grads, o.grads);
  }
};

KernelRun run_kernels(CpuRun& cpu, bool backward) {
  const MmaShape& s = cpu.shape;
  const size_t rows = static_cast<size_t>(s.rows), md = static_cast<size_t>(3 * s.d);
  KernelRun k;
  k.grads = cpu.grad_start;
  MmaWeights w;
  MmaWeightGrads g;
  kernels::mma_param_pointers(cpu.ps, "mma.", cpu.cfg.modalities, cpu.ps.values().data(), k.grads.data(), &w, &g);
  k.alpha = nan_buffer(rows * 9);
  k.out = nan_buffer(rows * static_cast<size_t>(cpu.mma.output_dim()));
  if (backward) k.q = nan_buffer(rows * md), k.k = nan_buffer(rows * md), k.v = nan_buffer(rows * md);
  kernels::mma_fused_forward_launch(cpu.xhat.data(), w, s, backward ? k.q.data() : nullptr,
                                    backward ? k.k.data() : nullptr, backward ? k.v.data() : nullptr, k.alpha.data(),
                                    k.out.data(), nullptr);
  if (!backward) return k;
  k.dq = nan_buffer(rows * md), k.dk = nan_buffer(rows * md), k.dv = nan_buffer(rows * md);
  k.dxhat = nan_buffer(rows * md);
  kernels::mma_fused_backward_launch(k.q.data(), k.k.data(), k.v.data(), k.alpha.data(), cpu.dout.data(), w, s,
                                     k.dq.data(), k.dk.data(), k.dv.data(), k.dxhat.data(), nullptr);
  kernels::mma_weight_grad_launch(cpu.xhat.data(), k.dq.data(), k.dk.data(), k.dv.data(), g, s.rows, 3, s.d, nullptr);
  return k;
}

// Compares one kernel run with the CPU layer.
void check_against_cpu(const Case& setup, CpuRun& cpu, const KernelRun& k) {
  const int d = setup.d;
  const int64_t rows = setup.rows;
  const size_t n = static_cast<size_t>(rows) * 3 * d;
  // Forward: projections (length d), scores (d), softmax and z (3).
  const double fwd = 2.0 * d + 3;
  expect_close(k.out, cpu.out.data(), cpu.out.size(), fwd, "out");
  expect_close(k.alpha, cpu.ctx.alpha.data(), cpu.ctx.alpha.size(), fwd, "alpha");
  if (setup.mode == Mode::Eval) return;
  expect_close(k.q, test::concat_modalities(cpu.ctx.q, rows, d).data(), n, d, "q");
  expect_close(k.k, test::concat_modalities(cpu.ctx.k, rows, d).data(), n, d, "k");
  expect_close(k.v, test::concat_modalities(cpu.ctx.v, rows, d).data(), n, d, "v");
  // Backward: dalpha (d) and the score gradients (d) on top of the forward's path.
  const double bwd = fwd + 2.0 * d + 6;
  expect_close(k.dq, test::concat_modalities(cpu.ctx.dq, rows, d).data(), n, bwd, "dq");
  expect_close(k.dk, test::concat_modalities(cpu.ctx.dk, rows, d).data(), n, bwd, "dk");
  expect_close(k.dv, test::concat_modalities(cpu.ctx.dv, rows, d).data(), n, bwd, "dv");

  // dxhat against the CPU's dq, dk, dv times the weights (our CPU GEMM) plus the skip share...
  const int width = cpu.mma.output_dim() / 3;
  std::vector<Tensor> ref(3);
  for (int m = 0; m < 3; ++m) {
    ref[m].resize(rows, d);
    for (int64_t r = 0; r < rows; ++r) std::memcpy(ref[m].row(r), cpu.dout.row(r) + m * width, d * sizeof(float));
    const char* which[3] = {"q.", "k.", "v."};
    const std::vector<Tensor>* dys[3] = {&cpu.ctx.dq, &cpu.ctx.dk, &cpu.ctx.dv};
    for (int i = 0; i < 3; ++i) {
      const float* W = cpu.ps.value(cpu.ps.find("mma." + std::string(which[i]) + cpu.cfg.modalities[m] + ".weight"));
      gemm(false, false, static_cast<int>(rows), d, d, 1.0f, (*dys[i])[m].data(), d, W, d, 1.0f, ref[m].data(), d);
    }
  }
  expect_close(k.dxhat, test::concat_modalities(ref, rows, d).data(), n, bwd + 3.0 * d, "dxhat");
  // ... and, through the standardisation's dropout and ReLU (the CPU layer's own functions),
  // against the gradient the CPU layer left in ctx.dxhat.
  std::vector<Tensor> masked(3);
  for (int m = 0; m < 3; ++m) {
    masked[m].resize(rows, d);
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(masked[m].row(r), &k.dxhat[static_cast<size_t>((r * 3 + m) * d)], d * sizeof(float));
    const Dropout drop(cpu.cfg.dropout, kSlotBase + m);
    drop.backward(masked[m].data(), masked[m].data(), masked[m].size(), DropoutContext{setup.mode, cpu.key});
    relu_backward(cpu.ctx.xhat[m].data(), masked[m].data(), masked[m].data(), masked[m].size());
  }
  const std::vector<float> masked_got = test::concat_modalities(masked, rows, d);
  expect_close(masked_got, test::concat_modalities(cpu.ctx.dxhat, rows, d).data(), n, bwd + 3.0 * d, "masked dxhat");

  // Weight gradients: a sum over the rows of the backward's values.
  for (const char* which : {"q.", "k.", "v."})
    for (const std::string& mod : cpu.cfg.modalities)
      for (const char* part : {"weight", "bias"}) {
        const std::string name = "mma." + std::string(which) + mod + "." + part;
        const ParamInfo& info = cpu.ps.info(cpu.ps.find(name));
        const std::vector<float> got(k.grads.begin() + static_cast<ptrdiff_t>(info.offset),
                                     k.grads.begin() + static_cast<ptrdiff_t>(info.offset + info.size));
        expect_close(got, cpu.ps.grads().data() + info.offset, info.size, bwd + static_cast<double>(rows), name);
      }
  // Nothing outside the Q/K/V gradients was touched.
  for (const ParamInfo& info : cpu.ps.infos()) {
    if (info.name.rfind("mma.std.", 0) != 0) continue;
    for (size_t i = info.offset; i < info.offset + info.size; ++i)
      ASSERT_EQ(k.grads[i], cpu.grad_start[i]) << info.name;
  }
}

// Every schedule gives the same bits (no float atomics, fixed reduction orders); the first is
// compared with the CPU layer.
void run_setup(const Case& setup, const std::vector<EmulationOptions>& schedules,
               const std::function<void(ParamStore&)>& tweak = {}) {
  SCOPED_TRACE(describe(setup));
  CpuRun cpu(setup, 1000 + static_cast<uint64_t>(setup.rows) * 7 + static_cast<uint64_t>(setup.d), tweak);
  const bool backward = setup.mode == Mode::Train;
  KernelRun first;
  for (size_t i = 0; i < schedules.size(); ++i) {
    SCOPED_TRACE(simt::describe(schedules[i]));
    ScopedEmulation scope(schedules[i]);
    KernelRun k = run_kernels(cpu, backward);
    for (const auto* v : {&k.out, &k.alpha, &k.dq, &k.dk, &k.dv, &k.dxhat})
      for (size_t e = 0; e < v->size(); ++e) ASSERT_TRUE(std::isfinite((*v)[e])) << "element " << e;
    if (i == 0) {
      check_against_cpu(setup, cpu, k);
      first = std::move(k);
    } else {
      EXPECT_TRUE(k == first) << "results differ between schedules";
    }
  }
}

const MmaScore kScores[] = {MmaScore::ScaledDot, MmaScore::Cosine};
const MmaSkip kSkips[] = {MmaSkip::Residual, MmaSkip::Concat};

// Small d (two columns per lane), 19 rows: one full block of 16 and a ragged one; every
// score, skip and mode under every test schedule.
TEST(KernelsMma, FusedMatchesCpuLayerForAllScoresSkipsAndModes) {
  for (MmaScore score : kScores)
    for (MmaSkip skip : kSkips)
      for (Mode mode : {Mode::Eval, Mode::Train}) run_setup({score, skip, mode, 19, 37}, simt::test_schedules());
}

// d_model = 150 (the paper's, five columns per lane, not a multiple of 32): one row, and a
// ragged 35 = 2 x 16 + 3.
TEST(KernelsMma, FusedMatchesCpuLayerAtPaperWidth) {
  const std::vector<EmulationOptions> two = {simt::test_schedules().front(), simt::test_schedules().back()};
  for (MmaScore score : kScores)
    for (MmaSkip skip : kSkips) run_setup({score, skip, Mode::Train, 1, 150}, two);
  run_setup({MmaScore::ScaledDot, MmaSkip::Residual, Mode::Train, 35, 150}, {two.back()});
  run_setup({MmaScore::Cosine, MmaSkip::Concat, Mode::Eval, 35, 150}, {two.front()});
}

// Widths at the edges of the two column splits: 1, 32, 64 (two per lane), 65, 160 (five).
// Cosine from d = 2: at d = 1 the cosine score is +-1 with a gradient that is exactly zero, so
// both sides return rounding residue of two equal terms, which no relative tolerance compares.
TEST(KernelsMma, FusedMatchesCpuLayerAtEdgeWidths) {
  const EmulationOptions shuffled = simt::test_schedules().back();
  run_setup({MmaScore::ScaledDot, MmaSkip::Residual, Mode::Train, 17, 1}, {shuffled});
  for (int d : {2, 32, 64, 65, 160}) run_setup({MmaScore::Cosine, MmaSkip::Residual, Mode::Train, 17, d}, {shuffled});
}

// An all-zero query (cosine: max(|q|, eps) keeps the score finite and picks the gradient's
// branch); the CPU layer sees the same parameters.
TEST(KernelsMma, CosineWithAZeroQueryStaysFinite) {
  const Case setup{MmaScore::Cosine, MmaSkip::Residual, Mode::Train, 3, 20};
  CpuRun cpu(setup, 77, [](ParamStore& ps) {
    for (const char* part : {"weight", "bias"}) {
      const int id = ps.find(std::string("mma.q.text.") + part);
      std::fill_n(ps.value(id), ps.info(id).size, 0.0f);
    }
  });
  ScopedEmulation scope(simt::test_schedules().back());
  const KernelRun k = run_kernels(cpu, true);
  for (const auto* v : {&k.out, &k.alpha, &k.dq, &k.dk, &k.dv, &k.dxhat})
    for (float f : *v) ASSERT_TRUE(std::isfinite(f));
  for (int64_t r = 0; r < setup.rows; ++r)
    for (int n = 0; n < 3; ++n) EXPECT_FLOAT_EQ(k.alpha[static_cast<size_t>(r * 9 + 6 + n)], 1.0f / 3.0f);
  check_against_cpu(setup, cpu, k);
}

// Queries and keys with elements of ~1e19: q.k and |q|^2 overflow float (1e38 per term) but not
// the double in which mman::Mma forms scores and norms (and the cosine backward). The fused
// kernels accumulate those in double too, so everything stays finite and equal to the CPU; with
// float accumulation the scores were Inf - Inf = NaN (scaled) or Inf / Inf (cosine).
TEST(KernelsMma, HugeQueriesAndKeysStayFiniteLikeTheCpu) {
  const auto scale_qk = [](ParamStore& ps) {
    for (const ParamInfo& info : ps.infos())
      if (info.name.rfind("mma.q.", 0) == 0 || info.name.rfind("mma.k.", 0) == 0)
        for (size_t i = 0; i < info.size; ++i) ps.values()[info.offset + i] *= 2e19f;
  };
  const std::vector<EmulationOptions> one = {simt::test_schedules().back()};
  for (MmaScore score : kScores) {
    run_setup({score, MmaSkip::Residual, Mode::Train, 19, 37}, one, scale_qk);
    run_setup({score, MmaSkip::Concat, Mode::Train, 3, 150}, one, scale_qk);
  }
}

TEST(KernelsMma, ZeroRowsLaunchNothingAndUnsupportedShapesAreErrors) {
  Case setup{MmaScore::ScaledDot, MmaSkip::Residual, Mode::Train, 0, 20};
  CpuRun cpu(setup, 3);
  const KernelRun k = run_kernels(cpu, true);
  EXPECT_TRUE(k.out.empty());
  EXPECT_EQ(k.grads, cpu.grad_start);

  EXPECT_TRUE(kernels::mma_fused_supported(3, 150));
  EXPECT_FALSE(kernels::mma_fused_supported(3, 161));
  EXPECT_FALSE(kernels::mma_fused_supported(2, 150));
  MmaShape wide = kernels::mma_shape(4, 3, 161, MmaScore::ScaledDot, MmaSkip::Residual, 0.1f, Mode::Eval, {}, 0);
  MmaWeights w;
  std::vector<float> buf(4 * 3 * 161 * 2);
  try {
    kernels::mma_fused_forward_launch(buf.data(), w, wide, nullptr, nullptr, nullptr, buf.data(), buf.data(), nullptr);
    ADD_FAILURE() << "d_model 161 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("d_model <= 160"), std::string::npos) << e.what();
  }
  EXPECT_THROW(kernels::mma_shape(4, 9, 10, MmaScore::ScaledDot, MmaSkip::Residual, 0.1f, Mode::Eval, {}, 0), Error);
  EXPECT_THROW(kernels::mma_shape(4, 3, 10, MmaScore::ScaledDot, MmaSkip::Residual, 1.0f, Mode::Eval, {}, 0), Error);
  ParamStore empty;
  EXPECT_THROW(kernels::mma_param_pointers(empty, "mma.", {"audio"}, nullptr, nullptr, &w, nullptr), Error);
}

// The fused forward with the barrier between storing a W tile and reading it removed (a bug on
// purpose): the emulation reports it in every schedule, and without the detector the results
// are wrong (poison or a stale tile) in at least one.
TEST(KernelsMma, MissingTileBarrierIsCaught) {
  const Case c{MmaScore::ScaledDot, MmaSkip::Residual, Mode::Eval, 19, 37};
  CpuRun cpu(c, 5);
  MmaWeights w;
  kernels::mma_param_pointers(cpu.ps, "mma.", cpu.cfg.modalities, cpu.ps.values().data(), nullptr, &w, nullptr);
  const simt::LaunchConfig config{simt::device::dim3(2), simt::device::dim3(kernels::kMmaThreads),
                                  kernels::mma_fused_shared_bytes(c.d), nullptr};
  std::vector<float> alpha(19 * 9), out(cpu.out.size());
  const auto launch = [&] {
    MMAN_LAUNCH(config, kernels::mma_fused_forward_kernel<2, false>, cpu.xhat.data(), w, cpu.shape, nullptr, nullptr,
                nullptr, alpha.data(), out.data());
  };
  for (const EmulationOptions& o : simt::test_schedules()) {
    SCOPED_TRACE(simt::describe(o));
    ScopedEmulation scope(o);
    try {
      launch();
      ADD_FAILURE() << "the missing barrier went unnoticed";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("mma_fused_forward_kernel<2, false>"), std::string::npos) << msg;
      EXPECT_TRUE(msg.find("shared-memory race") != std::string::npos ||
                  msg.find("no thread of this block has written") != std::string::npos)
          << msg;
    }
  }
  int wrong = 0;
  for (EmulationOptions o : simt::test_schedules()) {
    o.check_shared = false;
    ScopedEmulation scope(o);
    launch();
    double worst = 0.0;
    for (size_t i = 0; i < out.size(); ++i) {
      const double err = std::fabs(static_cast<double>(out[i]) - cpu.out.data()[i]);
      if (!(err <= worst)) worst = err;
    }
    wrong += !(worst < 1e-3);
  }
  EXPECT_GE(wrong, 1);
}

// Shared memory stays within the 48 KiB a block gets without opting in, for every width the
// fused kernels accept.
TEST(KernelsMma, SharedMemoryFitsTheDefaultLimit) {
  for (int d = 1; d <= kernels::kMmaFusedMaxD; ++d) ASSERT_LE(kernels::mma_fused_shared_bytes(d), 48u * 1024u) << d;
}

}  // namespace
}  // namespace mman
