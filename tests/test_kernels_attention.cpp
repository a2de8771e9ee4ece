// Unfused MMA attention kernels (cuda/kernels/attention.cuh) run on the CPU through the SIMT layer:
// the whole unfused path (projections and weight gradients by our CPU GEMM, as cuBLAS does them
// on the GPU) against the CPU layer mman::Mma, for 1 to 5 modalities, both scores and skips.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/kernels/attention.cuh"
#include "mman/error.h"
#include "mman/layers/mma.h"
#include "mman/simt/simt.h"
#include "support/attention_cases.h"

namespace mman {
namespace {

using kernels::MmaShape;
using simt::EmulationOptions;
using simt::ScopedEmulation;
using test::AttentionCase;
using test::AttentionOutputs;
using test::AttentionReference;

void run_case(const AttentionCase& c, const std::vector<EmulationOptions>& schedules) {
  SCOPED_TRACE(test::describe(c));
  AttentionReference ref;
  test::build_attention_reference(c, ref);
  const size_t n = ref.elements();
  std::vector<float> first_out, first_dq;
  for (size_t si = 0; si < schedules.size(); ++si) {
    SCOPED_TRACE(simt::describe(schedules[si]));
    ScopedEmulation scope(schedules[si]);
    AttentionOutputs k;
    k.alpha.assign(static_cast<size_t>(c.rows) * c.modalities * c.modalities, NAN);
    k.out.assign(static_cast<size_t>(ref.out.size()), NAN);
    kernels::attention_forward_launch(ref.xhat.data(), ref.proj[0].data(), ref.proj[1].data(), ref.proj[2].data(),
                                      ref.shape, k.alpha.data(), k.out.data(), nullptr);
    k.dq.assign(n, NAN), k.dk.assign(n, NAN), k.dv.assign(n, NAN), k.dxhat.assign(n, NAN);
    kernels::attention_backward_launch(ref.proj[0].data(), ref.proj[1].data(), ref.proj[2].data(), k.alpha.data(),
                                       ref.dout.data(), ref.shape, k.dq.data(), k.dk.data(), k.dv.data(),
                                       k.dxhat.data(), nullptr);
    if (si > 0) {  // every schedule gives the same bits
      EXPECT_EQ(0, std::memcmp(k.out.data(), first_out.data(), k.out.size() * 4));
      EXPECT_EQ(0, std::memcmp(k.dq.data(), first_dq.data(), k.dq.size() * 4));
      continue;
    }
    first_out = k.out;
    first_dq = k.dq;
    test::check_attention_outputs(ref, std::move(k));
  }
}

TEST(KernelsAttention, UnfusedMatchesCpuLayerForAllScoresSkipsAndModes) {
  for (const AttentionCase& c : test::attention_main_cases()) run_case(c, simt::test_schedules());
}

// Any modality count and widths the fused kernels do not take (d > 160); one row; 8 rows per
// block, so 9 and 17 rows leave ragged blocks.
TEST(KernelsAttention, UnfusedHandlesOtherModalityCountsAndWidths) {
  const std::vector<EmulationOptions> one = {simt::test_schedules().back()};
  for (const AttentionCase& c : test::attention_other_shape_cases()) run_case(c, one);
}

// Queries and keys with elements of ~1e19: q.k and |q|^2 overflow float (1e38 per term) but not
// the double in which mman::Mma forms scores and norms (and the cosine backward). The kernels
// accumulate those in double too, so everything stays finite and equal to the CPU; with float
// accumulation the scores were Inf - Inf = NaN.
TEST(KernelsAttention, HugeQueriesAndKeysStayFiniteLikeTheCpu) {
  const std::vector<EmulationOptions> one = {simt::test_schedules().back()};
  for (const AttentionCase& c : test::attention_huge_cases()) run_case(c, one);
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
