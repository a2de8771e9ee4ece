// Adam against a double-precision reference, frozen tensors, clipping by norm and value, state restore.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "mman/error.h"
#include "mman/params.h"
#include "mman/rng.h"
#include "mman/threads.h"
#include "mman/train/optimizer.h"

namespace mman {
namespace {

// Three tensors of awkward sizes, so padding lies between them.
ParamStore make_store(uint64_t seed) {
  ParamStore ps;
  ps.add("a.weight", {3, 5});
  ps.add("b.bias", {7});
  ps.add("c.weight", {2, 9});
  Rng rng(seed);
  for (const ParamInfo& p : ps.infos())
    for (size_t i = 0; i < p.size; ++i) ps.values()[p.offset + i] = static_cast<float>(rng.normal());
  return ps;
}

void fill_grads(ParamStore& ps, Rng& rng, double scale) {
  for (const ParamInfo& p : ps.infos())
    for (size_t i = 0; i < p.size; ++i) ps.grads()[p.offset + i] = static_cast<float>(scale * rng.normal());
}

// Adam as written in Kingma & Ba / torch.optim.Adam's docs, entirely in double.
struct ReferenceAdam {
  AdamConfig c;
  std::vector<double> p, m, v;
  int t = 0;
  void step(const std::vector<double>& g_in) {
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = g_in[i] + c.weight_decay * p[i];
      m[i] = c.beta1 * m[i] + (1 - c.beta1) * g;
      v[i] = c.beta2 * v[i] + (1 - c.beta2) * g * g;
      const double m_hat = m[i] / (1 - std::pow(c.beta1, t));
      const double v_hat = v[i] / (1 - std::pow(c.beta2, t));
      // PyTorch's eps placement: eps is added to sqrt(v) / sqrt(bc2), i.e. to sqrt(v_hat).
      p[i] -= c.lr * m_hat / (std::sqrt(v_hat) + c.eps);
    }
  }
};

void expect_matches_reference(const AdamConfig& config, int steps, double grad_scale) {
  ParamStore ps = make_store(1);
  ReferenceAdam ref;
  ref.c = config;
  for (float x : ps.values()) ref.p.push_back(x);
  ref.m.assign(ref.p.size(), 0.0);
  ref.v.assign(ref.p.size(), 0.0);
  Adam adam(ps, config);
  Rng rng(2);
  for (int s = 0; s < steps; ++s) {
    fill_grads(ps, rng, grad_scale);
    std::vector<double> g(ps.grads().begin(), ps.grads().end());
    adam.step(ps);
    ref.step(g);
  }
  EXPECT_EQ(adam.steps(), steps);
  for (const ParamInfo& p : ps.infos())
    for (size_t i = p.offset; i < p.offset + p.size; ++i) {
      // Each step moves p by at most ~lr; float rounding of p (|p| ~ 1) dominates.
      EXPECT_NEAR(ps.values()[i], ref.p[i], 2e-7 * (1 + std::fabs(ref.p[i])) * steps) << p.name << " " << i;
      // The moments are sums of terms of the gradients' size that may cancel: bound the
      // float error by a few ulp of the gradient scale per step.
      EXPECT_NEAR(adam.state().m[i], ref.m[i], 1e-6 * grad_scale * steps) << p.name;
      EXPECT_NEAR(adam.state().v[i], ref.v[i], 1e-6 * grad_scale * grad_scale * steps) << p.name;
    }
}

}  // namespace

TEST(Adam, MatchesDoubleReference) { expect_matches_reference(AdamConfig{}, 6, 0.3); }

TEST(Adam, MatchesDoubleReferenceWithWeightDecayAndOtherBetas) {
  AdamConfig c;
  c.lr = 3e-3;
  c.beta1 = 0.8;
  c.beta2 = 0.99;
  c.eps = 1e-6;
  c.weight_decay = 0.05;
  expect_matches_reference(c, 5, 1e-2);
}

// At t = 1 the bias-corrected update is -lr * g / (|g| + eps) whatever the betas.
TEST(Adam, FirstStepMovesEachParameterByLr) {
  ParamStore ps = make_store(3);
  const std::vector<float> before = ps.values();
  Rng rng(4);
  fill_grads(ps, rng, 1.0);
  AdamConfig c;
  c.lr = 0.01;
  Adam adam(ps, c);
  adam.step(ps);
  for (const ParamInfo& p : ps.infos())
    for (size_t i = p.offset; i < p.offset + p.size; ++i) {
      const double g = ps.grads()[i];
      EXPECT_NEAR(ps.values()[i] - before[i], -0.01 * g / (std::fabs(g) + 1e-8), 1e-6);
    }
}

TEST(Adam, FrozenTensorsKeepValuesAndMoments) {
  ParamStore ps = make_store(5);
  ps.set_trainable("b.", false);
  const std::vector<float> before = ps.values();
  Adam adam(ps, AdamConfig{});
  Rng rng(6);
  for (int s = 0; s < 3; ++s) {
    fill_grads(ps, rng, 1.0);
    adam.step(ps);
  }
  const ParamInfo& frozen = ps.info(ps.find("b.bias"));
  for (size_t i = frozen.offset; i < frozen.offset + frozen.size; ++i) {
    EXPECT_EQ(ps.values()[i], before[i]);
    EXPECT_EQ(adam.state().m[i], 0.0f);
    EXPECT_EQ(adam.state().v[i], 0.0f);
  }
  const ParamInfo& live = ps.info(ps.find("c.weight"));
  EXPECT_NE(ps.values()[live.offset], before[live.offset]);
  // Padding is never touched.
  for (size_t i = 0; i < ps.values().size(); ++i) {
    bool inside = false;
    for (const ParamInfo& p : ps.infos()) inside |= i >= p.offset && i < p.offset + p.size;
    if (!inside) {
      EXPECT_EQ(ps.values()[i], 0.0f) << i;
    }
  }
}

TEST(Adam, TrainableSpansMergeAcrossPaddingAndSkipFrozen) {
  ParamStore ps = make_store(0);
  auto spans = trainable_spans(ps);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].first, 0u);
  EXPECT_EQ(spans[0].second, ps.info(2).offset + ps.info(2).size);
  ps.set_trainable("b.", false);
  spans = trainable_spans(ps);
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(spans[0], std::make_pair(size_t{0}, ps.info(0).size));
  EXPECT_EQ(spans[1].first, ps.info(2).offset);
}

TEST(Adam, RestoredStateContinuesBitIdentically) {
  AdamConfig c;
  c.weight_decay = 0.01;
  ParamStore full = make_store(7);
  Adam adam_full(full, c);
  Rng rng_full(8);
  for (int s = 0; s < 5; ++s) {
    fill_grads(full, rng_full, 0.5);
    adam_full.step(full);
  }

  ParamStore first = make_store(7);
  Adam adam_first(first, c);
  Rng rng(8);
  for (int s = 0; s < 2; ++s) {
    fill_grads(first, rng, 0.5);
    adam_first.step(first);
  }
  ParamStore resumed = make_store(0);
  resumed.values() = first.values();
  Adam adam_resumed(resumed, c);
  adam_resumed.set_state(adam_first.state());
  EXPECT_EQ(adam_resumed.steps(), 2);
  for (int s = 0; s < 3; ++s) {
    fill_grads(resumed, rng, 0.5);
    adam_resumed.step(resumed);
  }
  EXPECT_EQ(resumed.values(), full.values());
  EXPECT_EQ(adam_resumed.state().m, adam_full.state().m);
  EXPECT_EQ(adam_resumed.state().v, adam_full.state().v);
}

TEST(Adam, RejectsMismatchedStateAndArena) {
  ParamStore ps = make_store(0);
  Adam adam(ps, AdamConfig{});
  AdamState bad;
  bad.m.resize(3);
  bad.v.resize(3);
  EXPECT_THROW(adam.set_state(bad), Error);
  ParamStore other;
  other.add("x", {1000});
  EXPECT_THROW(adam.step(other), Error);
  AdamConfig c;
  c.beta1 = 1.0;
  EXPECT_THROW(Adam(ps, c), Error);
}

// A large arena so the OpenMP loops really split; any thread count gives the same bits.
TEST(Adam, IndependentOfThreadCount) {
  auto run = [](int threads) {
    set_num_threads(threads);
    ParamStore ps;
    ps.add("w", {300, 401});
    ps.add("frozen", {17});
    ps.add("v", {100003});
    ps.set_trainable("frozen", false);
    Rng rng(9);
    for (float& x : ps.values()) x = static_cast<float>(rng.normal());
    Adam adam(ps, AdamConfig{});
    double norm = 0;
    for (int s = 0; s < 3; ++s) {
      fill_grads(ps, rng, 1.0);
      norm += clip_grad_norm(ps, 5.0);
      adam.step(ps);
    }
    return std::make_pair(ps.values(), norm);
  };
  const auto one = run(1);
  const auto two = run(2);
  const auto four = run(4);
  set_num_threads(0);
  EXPECT_EQ(one.first, two.first);
  EXPECT_EQ(one.first, four.first);
  EXPECT_EQ(one.second, two.second);
  EXPECT_EQ(one.second, four.second);
}

TEST(ClipGradNorm, ScalesToMaxNormOverTrainableOnly) {
  ParamStore ps;
  ps.add("x", {2});
  ps.add("frozen", {1});
  ps.add("y", {1});
  ps.grads()[ps.info(0).offset] = 3.0f;
  ps.grads()[ps.info(0).offset + 1] = 0.0f;
  ps.grads()[ps.info(1).offset] = 100.0f;
  ps.grads()[ps.info(2).offset] = 4.0f;
  ps.set_trainable("frozen", false);
  const double norm = clip_grad_norm(ps, 1.0);
  EXPECT_DOUBLE_EQ(norm, 5.0);  // sqrt(3^2 + 4^2); the frozen 100 is ignored
  const double scale = 1.0 / (5.0 + 1e-6);
  EXPECT_FLOAT_EQ(ps.grads()[ps.info(0).offset], static_cast<float>(3.0 * scale));
  EXPECT_FLOAT_EQ(ps.grads()[ps.info(2).offset], static_cast<float>(4.0 * scale));
  EXPECT_EQ(ps.grads()[ps.info(1).offset], 100.0f);
}

TEST(ClipGradNorm, LeavesSmallGradientsAlone) {
  ParamStore ps;
  ps.add("x", {2});
  ps.grads()[0] = 0.3f;
  ps.grads()[1] = -0.4f;
  EXPECT_NEAR(clip_grad_norm(ps, 5.0), 0.5, 1e-7);
  EXPECT_EQ(ps.grads()[0], 0.3f);
  EXPECT_EQ(ps.grads()[1], -0.4f);
  EXPECT_THROW(clip_grad_norm(ps, 0.0), Error);
}

// The lane-wise sum: spans of every length modulo the 8 lanes, many chunks, against a long
// double reference; the value grad_norm returns is the one clip_grad_norm uses; a NaN shows.
TEST(GradNorm, MatchesAnExtendedPrecisionSumAndClipGradNorm) {
  ParamStore ps;
  for (int len : {1, 7, 8, 9, 15, 16, 17, 40000}) ps.add("t" + std::to_string(len), {len});
  ps.add("frozen", {5});
  ps.set_trainable("frozen", false);
  Rng rng(9);
  for (const ParamInfo& p : ps.infos())  // tensors only: the padding between them stays zero
    for (size_t i = 0; i < p.size; ++i) ps.grads()[p.offset + i] = static_cast<float>(rng.uniform(-2.0, 2.0));
  long double ref = 0;
  for (const ParamInfo& p : ps.infos())
    if (p.trainable)
      for (size_t i = 0; i < p.size; ++i) ref += static_cast<long double>(ps.grad(ps.find(p.name))[i]) * ps.grad(ps.find(p.name))[i];
  const double norm = grad_norm(ps);
  EXPECT_NEAR(norm, std::sqrt(static_cast<double>(ref)), 1e-12 * norm);
  set_num_threads(1);
  const double one = grad_norm(ps);
  set_num_threads(2);
  EXPECT_EQ(grad_norm(ps), one);  // the same bits for any thread count
  EXPECT_EQ(clip_grad_norm(ps, 1e9), norm);
  ps.grads()[ps.info(3).offset + 4] = NAN;
  EXPECT_TRUE(std::isnan(grad_norm(ps)));
}

// A training step clears only what it will read: the trainable gradients.
TEST(GradNorm, ZeroTrainableGradsLeavesFrozenTensorsAlone) {
  ParamStore ps;
  ps.add("a", {3});
  ps.add("frozen", {2});
  for (float& g : ps.grads()) g = 1.5f;
  ps.set_trainable("frozen", false);
  ps.zero_trainable_grads();
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(ps.grad(0)[i], 0.0f);
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(ps.grad(1)[i], 1.5f);
  ps.zero_grads();
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(ps.grad(1)[i], 0.0f);
}

TEST(ClipGradValue, ClampsEveryTrainableElement) {
  ParamStore ps;
  ps.add("x", {4});
  ps.add("frozen", {1});
  const float g[] = {-0.5f, 2e-4f, 3e-3f, -1e-3f};
  std::copy(g, g + 4, ps.grads().data());
  ps.grads()[ps.info(1).offset] = 7.0f;
  ps.set_trainable("frozen", false);
  clip_grad_value(ps, 1e-3f);
  EXPECT_EQ(ps.grads()[0], -1e-3f);
  EXPECT_EQ(ps.grads()[1], 2e-4f);
  EXPECT_EQ(ps.grads()[2], 1e-3f);
  EXPECT_EQ(ps.grads()[3], -1e-3f);
  EXPECT_EQ(ps.grads()[ps.info(1).offset], 7.0f);
  EXPECT_THROW(clip_grad_value(ps, -1.0f), Error);
}

}  // namespace mman
