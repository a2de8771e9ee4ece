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

using test::random_logits;
using test::random_targets;

TEST(KernelsCrossEntropy, SingleHeadMatchesTheCpuForRaggedRowCounts) {
  for (int64_t rows : {1, 255, 256, 257, 600})
    for (int cols : {4, 6}) {
      const Tensor logits = random_logits(rows, cols, 3.0, 10 + static_cast<uint64_t>(rows));
      check(logits, random_targets(rows, cols, 0.2, 20 + static_cast<uint64_t>(rows)), 1,
            std::to_string(rows) + " rows, " + std::to_string(cols) + " classes");
    }
}

TEST(KernelsCrossEntropy, Binary4HeadsMatchTheCpu) {
  for (int64_t rows : {1, 37, 300}) {
    const Tensor logits = random_logits(rows, 8, 2.0, 30 + static_cast<uint64_t>(rows));
    check(logits, random_targets(rows, 4, 0.3, 40 + static_cast<uint64_t>(rows)), 4, std::to_string(rows) + " rows");
  }
}

// Ties go to the lower column; logits of any finite size stay finite; nothing labelled gives
// loss 0 and a zero gradient.
TEST(KernelsCrossEntropy, TiesExtremeLogitsAndNoLabelledRows) {
  Tensor ties(3, 4), ties8(5, 8);
  for (int64_t i = 0; i < ties.size(); ++i) ties.data()[i] = 1.5f;
  for (int64_t i = 0; i < ties8.size(); ++i) ties8.data()[i] = -0.5f;
  check(ties, {0, 1, 3}, 1, "ties");
  check(ties8, {2, 2, 0, 1, 3}, 4, "binary4 ties");
  const Tensor huge = random_logits(40, 5, 3e4, 5);
  check(huge, random_targets(40, 5, 0.1, 6), 1, "huge logits");
  const Tensor logits = random_logits(20, 4, 1.0, 7);
  check(logits, std::vector<int32_t>(20, -1), 1, "all masked");
  ScopedEmulation scope(simt::test_schedules().front());
  const KernelRun run = run_kernel(logits, std::vector<int32_t>(20, -1), 1);
  EXPECT_EQ(run.result.loss, 0.0);
  for (float g : run.dlogits) EXPECT_EQ(g, 0.0f);
}

// Logits so large that a double's ulp at the maximum exceeds log(sum) (|z| > ~1e16): the loss
// is log(sum) - (z_t - max), the probabilities exp(z - max) / sum, so ties at +-1e20 or +-1e30
// still give log(k) and 1/k. (mx + log(sum) would round to mx: loss 0, probabilities 1.)
TEST(KernelsCrossEntropy, HugeLogitsKeepLogSumExp) {
  const std::vector<std::vector<float>> rows = {
      {1e20f, 1e20f, -1e20f, 5.0f},  {-1e30f, -1e30f, -1e30f, -1e30f}, {1e30f, -1e30f, 1e30f, 1e30f},
      {-1e20f, 1e20f, 1e20f, 1e20f}, {1e30f, 1e20f, -1e20f, 1e30f},    {-1e20f, -1e20f, -1e30f, -1e30f},
      {3e20f, 3e20f, 3e20f, 0.0f},   {2.0f, -1e30f, -1e30f, 2.0f}};
  const std::vector<int32_t> targets = {0, 2, 3, 1, 3, 1, 2, 0};
  Tensor logits(static_cast<int64_t>(rows.size()), 4);
  for (size_t r = 0; r < rows.size(); ++r) std::memcpy(logits.row(static_cast<int64_t>(r)), rows[r].data(), 16);
  check(logits, targets, 1, "ties at huge magnitudes");
  // Every row a tie of k maxima with the target among them: loss log(k), derived by hand.
  const double expected = (std::log(2.0) + std::log(4.0) + std::log(3.0) + std::log(3.0) + std::log(2.0) +
                           std::log(2.0) + std::log(3.0) + std::log(2.0)) / 8.0;
  ScopedEmulation scope(simt::test_schedules().back());
  const KernelRun run = run_kernel(logits, targets, 1);
  EXPECT_NEAR(run.result.loss, expected, 16 * DBL_EPSILON);
  // The tied target of row 1 (four ways): (1/4 - 1) / 8, within a float ulp.
  EXPECT_NEAR(run.dlogits[4 + 2], -0.75f / 8.0f, FLT_EPSILON);
  // Random logits of 1e20 and 1e30 with both signs, and binary heads tied at +-1e30.
  Tensor mixed = random_logits(300, 5, 1.0, 11);
  Rng rng(12);
  for (int64_t i = 0; i < mixed.size(); ++i) {
    const double u = rng.uniform();
    mixed.data()[i] = u < 0.3 ? 1e30f : u < 0.5 ? -1e30f : u < 0.7 ? 1e20f : u < 0.8 ? -1e20f : mixed.data()[i];
  }
  check(mixed, random_targets(300, 5, 0.1, 13), 1, "mixed 1e20 / 1e30 logits");
  Tensor heads(4, 8);
  const float pattern[8] = {1e30f, 1e30f, -1e30f, -1e30f, 1e20f, -1e20f, 1e30f, 1e30f};
  for (int64_t r = 0; r < heads.rows(); ++r) std::memcpy(heads.row(r), pattern, sizeof pattern);
  check(heads, {0, 1, 2, 3}, 4, "binary4 heads tied at 1e30");
}

// A NaN logit poisons its row's loss (so the trainer's NaN check fires) and gradient on both
// sides; other rows keep their gradient.
TEST(KernelsCrossEntropy, NanLogitsGiveNanLikeTheCpu) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor logits = random_logits(40, 4, 2.0, 14);
  logits.row(3)[0] = nan;   // NaN as the first column: the argmax's start
  logits.row(17)[2] = nan;  // NaN elsewhere
  logits.row(30)[1] = -nan;
  std::vector<int32_t> targets = random_targets(40, 4, 0.0, 15);
  check(logits, targets, 1, "NaN logits");
  Tensor binary = random_logits(9, 8, 2.0, 16);
  binary.row(4)[5] = nan;
  check(binary, random_targets(9, 4, 0.0, 17), 4, "binary4 NaN logit");
  // A masked row's NaN counts for nothing.
  targets[3] = targets[17] = targets[30] = -1;
  check(logits, targets, 1, "NaN logits on masked rows");
}

// An invalid target is reported with the CPU's message (the first bad row), not computed.
TEST(KernelsCrossEntropy, InvalidTargetsAreReportedLikeTheCpu) {
  const Tensor logits = random_logits(300, 4, 1.0, 8);
  std::vector<int32_t> targets = random_targets(300, 4, 0.1, 9);
  targets[270] = 4;
  targets[281] = -2;
  std::string cpu_message;
  try {
    masked_cross_entropy(logits, targets.data(), 1, nullptr);
  } catch (const Error& e) {
    cpu_message = e.what();
  }
  ASSERT_FALSE(cpu_message.empty());
  const KernelRun run = run_kernel(logits, targets, 1);
  EXPECT_EQ(run.result.bad_row, 270);
  try {
    kernels::check_cross_entropy_result(run.result, 4, 1);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), cpu_message);
  }
  for (float g : run.dlogits) EXPECT_EQ(g, 0.0f);
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
