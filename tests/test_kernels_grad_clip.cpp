// Gradient clipping kernels (cuda/kernels/grad_clip.cuh) on the CPU through the SIMT layer: the
// global norm and the clipped gradients against mman::clip_grad_norm / clip_grad_value.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/kernels/grad_clip.cuh"
#include "mman/error.h"
#include "mman/params.h"
#include "mman/rng.h"
#include "mman/simt/simt.h"
#include "support/kernel_inputs.h"
#include "mman/train/optimizer.h"

namespace mman {
namespace {

using simt::EmulationOptions;
using simt::ScopedEmulation;

// Frozen tensors between trainable ones; `big` makes one span longer than a block's share.
const auto make_store = test::clip_store;

struct Spans {
  std::vector<long long> bounds;
  kernels::ArenaSpans view;
  explicit Spans(const ParamStore& ps) {
    long long longest = 0;
    bounds = kernels::arena_span_bounds(ps, &longest);
    view = {bounds.data(), static_cast<int>(bounds.size() / 2), longest};
  }
};

// Norms: CPU and kernel both sum n squares in double (different association orders), so they
// agree to n * DBL_EPSILON relative. The clip factor is rounded to float from that double: the
// clipped gradients are bit-identical unless the two norms straddle a float rounding boundary of
// the factor, which these fixed inputs do not.
void check_norm_clip(int64_t big, double grad_scale, double max_norm) {
  SCOPED_TRACE("span " + std::to_string(big) + ", grad scale " + std::to_string(grad_scale) + ", max_norm " +
               std::to_string(max_norm));
  ParamStore ps = make_store(big, grad_scale, 7 + static_cast<uint64_t>(big));
  const std::vector<float> start = ps.grads();
  const Spans spans(ps);
  const double cpu_norm = clip_grad_norm(ps, max_norm);
  const double n = static_cast<double>(ps.num_parameters(true));
  std::vector<double> first;
  for (const EmulationOptions& o : simt::test_schedules()) {
    SCOPED_TRACE(simt::describe(o));
    ScopedEmulation scope(o);
    std::vector<float> g = start;
    std::vector<double> partial(static_cast<size_t>(kernels::grad_norm_partial_count(spans.view)), NAN);
    kernels::GradNormResult result;
    result.norm = NAN;
    kernels::clip_grad_norm_launch(g.data(), spans.view, max_norm, partial.data(), &result, nullptr);
    EXPECT_NEAR(result.norm, cpu_norm, n * DBL_EPSILON * cpu_norm);
    EXPECT_EQ(result.clip, max_norm / (cpu_norm + 1e-6) < 1.0 ? 1 : 0);
    EXPECT_EQ(0, std::memcmp(g.data(), ps.grads().data(), g.size() * sizeof(float)));
    if (first.empty()) first = {result.norm, result.sum_squares};
    EXPECT_EQ(result.norm, first[0]);  // every schedule: the same bits
    EXPECT_EQ(result.sum_squares, first[1]);
  }
}

TEST(KernelsGradClip, NormAndClipMatchTheCpu) {
  check_norm_clip(1000, 1.0, 5.0);       // clipped
  check_norm_clip(1000, 1.0, 1e4);       // not clipped
  check_norm_clip(300, 1e-3, 1e-2);      // tiny gradients
  check_norm_clip(70000, 1.0, 5.0);      // more than 128 blocks' first pass: grid-stride
}

TEST(KernelsGradClip, NormOnlyLeavesGradientsAlone) {
  ParamStore ps = make_store(500, 2.0, 1);
  const Spans spans(ps);
  std::vector<float> g = ps.grads();
  std::vector<double> partial(static_cast<size_t>(kernels::grad_norm_partial_count(spans.view)));
  kernels::GradNormResult result;
  kernels::grad_norm_launch(g.data(), spans.view, 0.0, partial.data(), &result, nullptr);
  EXPECT_EQ(result.clip, 0);
  EXPECT_EQ(g, ps.grads());
  EXPECT_NEAR(result.norm, clip_grad_norm(ps, 1e30), 600 * DBL_EPSILON * result.norm);
}

// No trainable parameter: norm 0, nothing clipped (the CPU returns 0 too).
TEST(KernelsGradClip, NoSpansGiveNormZero) {
  kernels::GradNormResult result;
  result.norm = NAN;
  double partial = NAN;
  kernels::grad_norm_launch(nullptr, {}, 5.0, &partial, &result, nullptr);
  EXPECT_EQ(result.norm, 0.0);
  EXPECT_EQ(result.clip, 0);
  EXPECT_THROW(kernels::clip_grad_norm_launch(nullptr, {}, 0.0, &partial, &result, nullptr), Error);
}

TEST(KernelsGradClip, ClampByValueMatchesTheCpuIncludingNan) {
  ParamStore ps = make_store(777, 1e-3, 9);
  ps.grads()[3] = NAN;
  ps.grads()[4] = INFINITY;
  ps.grads()[5] = -INFINITY;
  const std::vector<float> start = ps.grads();
  const Spans spans(ps);
  clip_grad_value(ps, 1e-3f);
  for (const EmulationOptions& o : simt::test_schedules()) {
    SCOPED_TRACE(simt::describe(o));
    ScopedEmulation scope(o);
    std::vector<float> g = start;
    kernels::clip_grad_value_launch(g.data(), spans.view, 1e-3f, nullptr);
    EXPECT_EQ(0, std::memcmp(g.data(), ps.grads().data(), g.size() * sizeof(float)));
  }
  EXPECT_THROW(kernels::clip_grad_value_launch(nullptr, spans.view, 0.0f, nullptr), Error);
}

}  // namespace
}  // namespace mman
