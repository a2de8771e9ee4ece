// Fused Adam kernel (cuda/kernels/adam.cuh) on the CPU through the SIMT layer: several steps over
// an arena with frozen tensors equal mman::Adam bit for bit (values and both moments).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "cuda/kernels/adam.cuh"
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

// Several trainable spans with padding and frozen tensors (test::adam_store).
const auto make_store = test::adam_store;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Runs `steps` steps on the CPU and through the kernel with the same gradients; every step's
// values and moments must agree bit for bit.
void expect_bit_identical(const AdamConfig& config, int steps, double grad_scale, const EmulationOptions& o) {
  ParamStore cpu = make_store(3);
  Adam adam(cpu, config);
  std::vector<float> p = cpu.values(), m(p.size(), 0.0f), v(p.size(), 0.0f);
  const std::vector<float> start = p;
  long long longest = 0;
  const std::vector<long long> bounds = kernels::arena_span_bounds(cpu, &longest);
  ASSERT_EQ(bounds.size(), 4u);  // two trainable spans around the frozen tensor
  const kernels::ArenaSpans spans{bounds.data(), 2, longest};
  Rng rng(4);
  ScopedEmulation scope(o);
  for (int t = 1; t <= steps; ++t) {
    SCOPED_TRACE("step " + std::to_string(t));
    for (const ParamInfo& info : cpu.infos())
      for (size_t i = 0; i < info.size; ++i) cpu.grads()[info.offset + i] = static_cast<float>(grad_scale * rng.normal());
    const std::vector<float> grads = cpu.grads();
    adam.step(cpu);
    kernels::adam_step_launch(p.data(), grads.data(), m.data(), v.data(), spans, config, t, nullptr);
    ASSERT_TRUE(same_bits(p, cpu.values()));
    ASSERT_TRUE(same_bits(m, adam.state().m));
    ASSERT_TRUE(same_bits(v, adam.state().v));
  }
  // Frozen tensors kept their values.
  for (const ParamInfo& info : cpu.infos()) {
    if (info.trainable) continue;
    for (size_t i = info.offset; i < info.offset + info.size; ++i) ASSERT_EQ(p[i], start[i]) << info.name;
  }
}

TEST(KernelsAdam, StepsAreBitIdenticalToTheCpuOptimiser) {
  for (const EmulationOptions& o : simt::test_schedules()) {
    SCOPED_TRACE(simt::describe(o));
    expect_bit_identical(AdamConfig{}, 4, 1.0, o);
  }
}

TEST(KernelsAdam, WeightDecayOtherBetasAndTinyGradientsAreBitIdentical) {
  const EmulationOptions o = simt::test_schedules().back();
  AdamConfig decay;
  decay.weight_decay = 0.01;
  decay.lr = 3e-3;
  expect_bit_identical(decay, 3, 1.0, o);
  AdamConfig betas;
  betas.beta1 = 0.5;
  betas.beta2 = 0.9;
  betas.eps = 1e-6;
  expect_bit_identical(betas, 3, 1e-5, o);  // sqrt(v) near eps: the eps placement matters
  expect_bit_identical(AdamConfig{}, 2, 1e3, o);
}

// A step counter beyond the first few (bias corrections near 1) and a resumed state.
TEST(KernelsAdam, LaterStepsFromARestoredStateAreBitIdentical) {
  ParamStore cpu = make_store(5);
  Adam adam(cpu, AdamConfig{});
  const AdamState state = test::restored_adam_state(cpu, 6);
  adam.set_state(state);
  std::vector<float> p = cpu.values(), m = state.m, v = state.v;
  long long longest = 0;
  const std::vector<long long> bounds = kernels::arena_span_bounds(cpu, &longest);
  adam.step(cpu);
  kernels::adam_step_launch(p.data(), cpu.grads().data(), m.data(), v.data(),
                            {bounds.data(), static_cast<int>(bounds.size() / 2), longest}, AdamConfig{}, 1000, nullptr);
  EXPECT_TRUE(same_bits(p, cpu.values()));
  EXPECT_TRUE(same_bits(m, adam.state().m));
  EXPECT_TRUE(same_bits(v, adam.state().v));
}

TEST(KernelsAdam, StepNumberMustBePositiveAndNoSpansIsANoOp) {
  EXPECT_THROW(kernels::adam_scalars(AdamConfig{}, 0), Error);
  kernels::adam_step_launch(nullptr, nullptr, nullptr, nullptr, {}, AdamConfig{}, 1, nullptr);
}

}  // namespace
}  // namespace mman
