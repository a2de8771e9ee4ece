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

#include "cuda/kernels/mma.cuh"
#include "mman/error.h"
#include "mman/layers/mma.h"
#include "mman/simt/simt.h"
#include "support/mma_cases.h"

namespace mman {
namespace {

using kernels::MmaShape;
using kernels::MmaWeightGrads;
using kernels::MmaWeights;
using simt::EmulationOptions;
using simt::ScopedEmulation;

using test::MmaCase;
using test::MmaOutputs;
using test::MmaReference;

std::vector<float> nan_buffer(size_t n) { return std::vector<float>(n, NAN); }

MmaOutputs run_kernels(MmaReference& cpu, bool backward) {
  const MmaShape& s = cpu.shape;
  const size_t rows = static_cast<size_t>(s.rows), md = static_cast<size_t>(3 * s.d);
  MmaOutputs k;
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

// Every schedule gives the same bits (no float atomics, fixed reduction orders); the first is
// compared with the CPU layer.
void run_setup(const MmaCase& setup, const std::vector<EmulationOptions>& schedules,
               const std::function<void(ParamStore&)>& tweak = {}) {
  SCOPED_TRACE(test::describe(setup));
  MmaReference cpu(setup, test::mma_seed(setup), tweak);
  const bool backward = setup.mode == Mode::Train;
  MmaOutputs first;
  for (size_t i = 0; i < schedules.size(); ++i) {
    SCOPED_TRACE(simt::describe(schedules[i]));
    ScopedEmulation scope(schedules[i]);
    MmaOutputs k = run_kernels(cpu, backward);
    ASSERT_NO_FATAL_FAILURE(test::expect_mma_finite(k));
    if (i == 0) {
      test::check_mma_outputs(setup, cpu, k);
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
  const MmaCase setup{MmaScore::Cosine, MmaSkip::Residual, Mode::Train, 3, 20};
  MmaReference cpu(setup, 77, test::zero_text_query);
  ScopedEmulation scope(simt::test_schedules().back());
  const MmaOutputs k = run_kernels(cpu, true);
  ASSERT_NO_FATAL_FAILURE(test::expect_mma_finite(k));
  for (int64_t r = 0; r < setup.rows; ++r)
    for (int n = 0; n < 3; ++n) EXPECT_FLOAT_EQ(k.alpha[static_cast<size_t>(r * 9 + 6 + n)], 1.0f / 3.0f);
  test::check_mma_outputs(setup, cpu, k);
}

// Queries and keys with elements of ~1e19: q.k and |q|^2 overflow float (1e38 per term) but not
// the double in which mman::Mma forms scores and norms (and the cosine backward). The fused
// kernels accumulate those in double too, so everything stays finite and equal to the CPU; with
// float accumulation the scores were Inf - Inf = NaN (scaled) or Inf / Inf (cosine).
TEST(KernelsMma, HugeQueriesAndKeysStayFiniteLikeTheCpu) {
  const std::vector<EmulationOptions> one = {simt::test_schedules().back()};
  for (MmaScore score : kScores) {
    run_setup({score, MmaSkip::Residual, Mode::Train, 19, 37}, one, test::scale_queries_and_keys);
    run_setup({score, MmaSkip::Concat, Mode::Train, 3, 150}, one, test::scale_queries_and_keys);
  }
}

TEST(KernelsMma, ZeroRowsLaunchNothingAndUnsupportedShapesAreErrors) {
  MmaCase setup{MmaScore::ScaledDot, MmaSkip::Residual, Mode::Train, 0, 20};
  MmaReference cpu(setup, 3);
  const MmaOutputs k = run_kernels(cpu, true);
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
  const MmaCase c{MmaScore::ScaledDot, MmaSkip::Residual, Mode::Eval, 19, 37};
  MmaReference cpu(c, 5);
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
