// Fused Adam over the trainable spans of the parameter arena: mman::Adam's update (PyTorch's)
// with the same float operations in the same order, so results are bit-identical to the CPU.
#pragma once
#include <cmath>
#include <cstdint>

#include "cuda/kernels/common.cuh"
#include "mman/error.h"
#include "mman/simt/simt.h"
#include "mman/train/optimizer.h"

namespace mman::kernels {

// The per-step scalars, formed on the host exactly as mman::Adam::step forms them (doubles
// rounded to float once).
struct AdamScalars {
  float neg_step_size = 0.0f;  // -(lr / (1 - beta1^t))
  float bc2_sqrt = 1.0f;       // sqrt(1 - beta2^t)
  float beta1 = 0.0f, one_minus_beta1 = 0.0f;
  float beta2 = 0.0f, one_minus_beta2 = 0.0f;
  float eps = 0.0f;
  float weight_decay = 0.0f;
  bool decay = false;
};

// Scalars of step t (1 for the first step: mman::Adam increments its counter, then forms them).
inline AdamScalars adam_scalars(const AdamConfig& config, int64_t t) {
  MMAN_CHECK(t >= 1, "adam_step: step number {} must be at least 1", t);
  const double td = static_cast<double>(t);
  const double bias_correction1 = 1.0 - std::pow(config.beta1, td);
  const double bias_correction2 = 1.0 - std::pow(config.beta2, td);
  AdamScalars a;
  a.neg_step_size = static_cast<float>(-(config.lr / bias_correction1));
  a.bc2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  a.beta1 = static_cast<float>(config.beta1);
  a.one_minus_beta1 = static_cast<float>(1.0 - config.beta1);
  a.beta2 = static_cast<float>(config.beta2);
  a.one_minus_beta2 = static_cast<float>(1.0 - config.beta2);
  a.eps = static_cast<float>(config.eps);
  a.weight_decay = static_cast<float>(config.weight_decay);
  a.decay = config.weight_decay != 0.0;
  return a;
}

// One Adam update of every element of the trainable spans:
//   g = grad (+ wd p);  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g g
//   p = p + neg_step_size m / (sqrt(v) / bc2_sqrt + eps)
// each operation rounded as the CPU rounds it (common.cuh: no FMA contraction).
MMAN_KERNEL void adam_step_kernel(float* p, const float* grad, float* m, float* v, const long long* bounds,
                                  AdamScalars a) {
  const SpanWalk w = span_walk(bounds);
  for (long long i = w.first; i < w.end; i += w.stride) {
    const float pi = p[i];
    float g = grad[i];
    if (a.decay) g = add_rn(g, mul_rn(a.weight_decay, pi));
    const float mi = add_rn(mul_rn(m[i], a.beta1), mul_rn(a.one_minus_beta1, g));
    const float vi = add_rn(mul_rn(v[i], a.beta2), mul_rn(mul_rn(a.one_minus_beta2, g), g));
    const float denom = add_rn(div_rn(sqrt_rn(vi), a.bc2_sqrt), a.eps);
    m[i] = mi;
    v[i] = vi;
    p[i] = add_rn(pi, div_rn(mul_rn(a.neg_step_size, mi), denom));
  }
}

constexpr long long kAdamMaxBlocksPerSpan = 1024;

// Adam step t over the arenas (values p, gradients, moments m and v, all of the parameter
// arena's layout) restricted to `spans`; gradients are left as they are.
inline void adam_step_launch(float* p, const float* grad, float* m, float* v, const ArenaSpans& spans,
                             const AdamConfig& config, int64_t t, simt::Stream stream) {
  const AdamScalars a = adam_scalars(config, t);
  if (spans.count == 0 || spans.longest == 0) return;
  MMAN_LAUNCH(span_config(spans, kAdamMaxBlocksPerSpan, stream), adam_step_kernel, p, grad, m, v, spans.bounds, a);
}

}  // namespace mman::kernels
