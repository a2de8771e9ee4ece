// Checks shared by the kernel tests on the SIMT layer (tests/test_kernels_*.cpp) and natively on a GPU
// (tests/test_kernels_native.cpp): each takes the test's runner, so both check the very same things.
#pragma once
#include <gtest/gtest.h>

#include <cfloat>
#include <string>

#include "cuda/kernels/cross_entropy.cuh"
#include "mman/error.h"
#include "mman/layers/loss.h"
#include "support/kernel_inputs.h"

namespace mman::test {

// run(logits, targets, heads) -> {kernels::CrossEntropyResult result; std::vector<float> dlogits;}.

// Ties of k maxima at huge magnitudes: the loss is the mean of log(k) and the tied target of row
// 1 (four ways) has gradient (1/4 - 1) / 8.
template <typename Run>
void expect_huge_ties_give_log_k(Run&& run) {
  const CrossEntropyCase ties = cross_entropy_huge_tie_case();
  const auto r = run(ties.logits, ties.targets, 1);
  EXPECT_NEAR(r.result.loss, cross_entropy_huge_tie_loss(), 16 * DBL_EPSILON);
  EXPECT_NEAR(r.dlogits[4 + 2], -0.75f / 8.0f, FLT_EPSILON);
}

// An invalid target is reported with the CPU's message (the first bad row), not computed: the
// gradient stays zero.
template <typename Run>
void expect_invalid_targets_reported_like_the_cpu(Run&& run) {
  const CrossEntropyCase c = cross_entropy_invalid_target_case();
  std::string cpu_message;
  try {
    masked_cross_entropy(c.logits, c.targets.data(), 1, nullptr);
  } catch (const Error& e) {
    cpu_message = e.what();
  }
  ASSERT_FALSE(cpu_message.empty());
  const auto r = run(c.logits, c.targets, 1);
  EXPECT_EQ(r.result.bad_row, 270);
  try {
    kernels::check_cross_entropy_result(r.result, 4, 1);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), cpu_message);
  }
  for (float g : r.dlogits) EXPECT_EQ(g, 0.0f);
}

// Nothing labelled: loss 0 and a zero gradient.
template <typename Run>
void expect_all_masked_gives_zero(Run&& run) {
  const CrossEntropyCase c = cross_entropy_all_masked_case();
  const auto r = run(c.logits, c.targets, 1);
  EXPECT_EQ(r.result.loss, 0.0);
  for (float g : r.dlogits) EXPECT_EQ(g, 0.0f);
}

}  // namespace mman::test
