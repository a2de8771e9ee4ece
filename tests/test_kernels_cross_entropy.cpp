// Masked cross-entropy kernels (cuda/kernels/cross_entropy.cuh) on the CPU through the SIMT layer
// against mman::masked_cross_entropy: single head and binary4 heads, masked rows, ragged row
// counts, ties, extreme logits (ties at +-1e20 and +-1e30, where log(sum) must survive), NaN
// logits, invalid targets.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cuda/kernels/cross_entropy.cuh"
#include "mman/error.h"
#include "mman/layers/loss.h"
#include "mman/rng.h"
#include "mman/simt/simt.h"
#include "support/kernel_checks.h"
#include "support/kernel_inputs.h"
#include "mman/tensor.h"

namespace mman {
namespace {

using kernels::CrossEntropyPartial;
using kernels::CrossEntropyResult;
using simt::EmulationOptions;
using simt::ScopedEmulation;

struct KernelRun {
  CrossEntropyResult result;
  std::vector<float> dlogits;
};

KernelRun run_kernel(const Tensor& logits, const std::vector<int32_t>& targets, int heads) {
  KernelRun run;
  run.dlogits.assign(static_cast<size_t>(logits.size()), NAN);
  std::vector<CrossEntropyPartial> partial(static_cast<size_t>(kernels::cross_entropy_partial_count(logits.rows())));
  kernels::cross_entropy_launch(logits.data(), targets.data(), logits.rows(), static_cast<int>(logits.cols()), heads,
                                run.dlogits.data(), partial.data(), &run.result, nullptr);
  return run;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Loss: both sides sum the same per-row doubles in different orders: n * DBL_EPSILON relative
// to the sum of magnitudes. Gradient: each element is one double rounded to float; exp and log
// may differ by a few double ulps between libraries, which moves the float by at most one ulp.
// A NaN logit makes its row's loss and gradient NaN on both sides: NaN compares by isnan.
void check(const Tensor& logits, const std::vector<int32_t>& targets, int heads, const std::string& what) {
  SCOPED_TRACE(what);
  Tensor ref_grad;
  const LossResult ref = masked_cross_entropy(logits, targets.data(), heads, &ref_grad);
  bool have_first = false;
  double first_sum = 0.0;
  for (const EmulationOptions& o : simt::test_schedules()) {
    SCOPED_TRACE(simt::describe(o));
    ScopedEmulation scope(o);
    const KernelRun run = run_kernel(logits, targets, heads);
    const CrossEntropyResult& r = run.result;
    EXPECT_EQ(r.bad_row, -1);
    EXPECT_EQ(r.labelled, ref.labelled);
    EXPECT_EQ(r.scored, ref.scored);
    EXPECT_EQ(r.correct, ref.correct);
    if (std::isnan(ref.loss))
      EXPECT_TRUE(std::isnan(r.loss)) << r.loss;
    else
      EXPECT_NEAR(r.loss, ref.loss, static_cast<double>(logits.rows() + 1) * DBL_EPSILON * std::fabs(ref.loss));
    for (size_t i = 0; i < run.dlogits.size(); ++i) {
      const float want = ref_grad.data()[i];
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(run.dlogits[i])) << "element " << i << ": kernel " << run.dlogits[i] << ", cpu NaN";
        continue;
      }
      ASSERT_LE(std::fabs(run.dlogits[i] - want), FLT_EPSILON * std::fabs(want) + FLT_MIN)
          << "element " << i << ": kernel " << run.dlogits[i] << ", cpu " << want;
    }
    if (!have_first) have_first = true, first_sum = r.loss_sum;
    EXPECT_TRUE(same_bits(r.loss_sum, first_sum));  // every schedule: the same bits
  }
}

using test::cross_entropy_huge_mixed_cases;
using test::cross_entropy_huge_tie_case;
using test::cross_entropy_nan_cases;
using test::cross_entropy_shape_cases;
using test::cross_entropy_tie_cases;
using test::CrossEntropyCase;

void check(const CrossEntropyCase& c) { check(c.logits, c.targets, c.heads, c.what); }

TEST(KernelsCrossEntropy, SingleHeadAndBinary4HeadsMatchTheCpuForRaggedRowCounts) {
  for (const CrossEntropyCase& c : cross_entropy_shape_cases()) check(c);
}

// Ties go to the lower column; logits of any finite size stay finite; nothing labelled gives
// loss 0 and a zero gradient.
TEST(KernelsCrossEntropy, TiesExtremeLogitsAndNoLabelledRows) {
  for (const CrossEntropyCase& c : cross_entropy_tie_cases()) check(c);
  ScopedEmulation scope(simt::test_schedules().front());
  test::expect_all_masked_gives_zero(run_kernel);
}

// Logits so large that a double's ulp at the maximum exceeds log(sum) (|z| > ~1e16): the loss
// is log(sum) - (z_t - max), the probabilities exp(z - max) / sum, so ties at +-1e20 or +-1e30
// still give log(k) and 1/k. (mx + log(sum) would round to mx: loss 0, probabilities 1.)
TEST(KernelsCrossEntropy, HugeLogitsKeepLogSumExp) {
  check(cross_entropy_huge_tie_case());
  for (const CrossEntropyCase& c : cross_entropy_huge_mixed_cases()) check(c);
  ScopedEmulation scope(simt::test_schedules().back());
  test::expect_huge_ties_give_log_k(run_kernel);
}

// A NaN logit poisons its row's loss (so the trainer's NaN check fires) and gradient on both
// sides; other rows keep their gradient.
TEST(KernelsCrossEntropy, NanLogitsGiveNanLikeTheCpu) {
  for (const CrossEntropyCase& c : cross_entropy_nan_cases()) check(c);
}

TEST(KernelsCrossEntropy, InvalidTargetsAreReportedLikeTheCpu) {
  test::expect_invalid_targets_reported_like_the_cpu(run_kernel);
}

TEST(KernelsCrossEntropy, BadShapesAreErrors) {
  CrossEntropyPartial partial;
  CrossEntropyResult result;
  EXPECT_THROW(kernels::cross_entropy_launch(nullptr, nullptr, 1, 4, 3, nullptr, &partial, &result, nullptr), Error);
  EXPECT_THROW(kernels::cross_entropy_launch(nullptr, nullptr, 1, 4, 0, nullptr, &partial, &result, nullptr), Error);
  EXPECT_THROW(kernels::cross_entropy_launch(nullptr, nullptr, 1, 0, 1, nullptr, &partial, &result, nullptr), Error);
  EXPECT_THROW(kernels::cross_entropy_launch(nullptr, nullptr, -1, 4, 1, nullptr, &partial, &result, nullptr), Error);
}

TEST(KernelsCrossEntropy, ZeroRowsGiveAnEmptyResult) {
  CrossEntropyPartial partial;
  CrossEntropyResult result;
  result.loss = NAN;
  kernels::cross_entropy_launch(nullptr, nullptr, 0, 4, 1, nullptr, &partial, &result, nullptr);
  EXPECT_EQ(result.loss, 0.0);
  EXPECT_EQ(result.scored, 0);
  EXPECT_EQ(result.bad_row, -1);
}

}  // namespace
}  // namespace mman
