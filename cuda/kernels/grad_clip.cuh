// Gradient clipping on the GPU: the global L2 norm of the trainable gradients by a deterministic
// two-pass reduction (in double, as mman::clip_grad_norm), the clip factor applied without a host
// round trip, and the element clamp of clip_grad_value.
#pragma once
#include <cmath>
#include <cstdint>

#include "cuda/kernels/common.cuh"
#include "mman/error.h"
#include "mman/simt/simt.h"

namespace mman::kernels {

// What grad_norm_launch leaves in device memory.
struct GradNormResult {
  double sum_squares = 0.0;  // sum of g^2 over the trainable spans, in double
  double norm = 0.0;         // its square root: clip_grad_norm's return value
  float scale = 1.0f;        // float(max_norm / (norm + 1e-6)) when that is < 1
  int clip = 0;              // 1 when the gradients must be multiplied by scale
};

constexpr int kNormThreads = kSpanThreads;
constexpr long long kNormMaxBlocksPerSpan = 128;

// Number of partial sums (doubles of scratch) grad_norm_launch needs for `spans`.
inline long long grad_norm_partial_count(const ArenaSpans& spans) {
  const long long bx = std::max(1LL, std::min(kNormMaxBlocksPerSpan, ceil_div(spans.longest, kNormThreads)));
  return bx * std::max(1, spans.count);
}

// partial[blockIdx.y gridDim.x + blockIdx.x] = sum of g^2 (double) over this block's share.
MMAN_KERNEL void grad_sumsq_kernel(const float* g, const long long* bounds, double* partial) {
  MMAN_SHARED(double, scratch, kNormThreads);
  const SpanWalk w = span_walk(bounds);
  double s = 0.0;
  for (long long i = w.first; i < w.end; i += w.stride) s += static_cast<double>(g[i]) * static_cast<double>(g[i]);
  s = block_tree_sum<kNormThreads>(s, scratch);
  if (threadIdx.x == 0) partial[static_cast<long long>(blockIdx.y) * gridDim.x + blockIdx.x] = s;
}

// One block: the partials summed in a fixed order, the norm and the clip decision. max_norm <= 0
// computes the norm only.
MMAN_KERNEL void grad_norm_finish_kernel(const double* partial, long long count, double max_norm,
                                         GradNormResult* result) {
  MMAN_SHARED(double, scratch, kNormThreads);
  double s = 0.0;
  for (long long i = threadIdx.x; i < count; i += kNormThreads) s += partial[i];
  s = block_tree_sum<kNormThreads>(s, scratch);
  if (threadIdx.x != 0) return;
  GradNormResult r;
  r.sum_squares = s;
  r.norm = sqrt(s);
  const double coef = max_norm > 0.0 ? max_norm / (r.norm + 1e-6) : 1.0;  // clip_grad_norm's factor
  r.clip = coef < 1.0 ? 1 : 0;
  r.scale = r.clip ? static_cast<float>(coef) : 1.0f;
  *result = r;
}

// g *= result->scale over the spans when result->clip (read on the device: no synchronisation).
MMAN_KERNEL void grad_scale_kernel(float* g, const long long* bounds, const GradNormResult* result) {
  if (result->clip == 0) return;
  const float scale = result->scale;
  const SpanWalk w = span_walk(bounds);
  for (long long i = w.first; i < w.end; i += w.stride) g[i] = g[i] * scale;
}

// g = min(c, max(-c, g)) with std::min/std::max's comparisons (a NaN gradient becomes -c there).
MMAN_KERNEL void grad_clamp_kernel(float* g, const long long* bounds, float c) {
  const SpanWalk w = span_walk(bounds);
  for (long long i = w.first; i < w.end; i += w.stride) {
    const float x = g[i];
    const float lo = -c < x ? x : -c;  // std::max(-c, x)
    g[i] = lo < c ? lo : c;             // std::min(c, lo)
  }
}

// *result = the global L2 norm of grad over `spans` and, for max_norm > 0, clip_grad_norm's
// clip decision. partial: grad_norm_partial_count(spans) doubles of scratch.
inline void grad_norm_launch(const float* grad, const ArenaSpans& spans, double max_norm, double* partial,
                             GradNormResult* result, simt::Stream stream) {
  const simt::LaunchConfig first = span_config(spans, kNormMaxBlocksPerSpan, stream);
  long long count = 0;
  if (spans.count > 0 && spans.longest > 0) {
    MMAN_LAUNCH(first, grad_sumsq_kernel, grad, spans.bounds, partial);
    count = static_cast<long long>(first.grid.x) * first.grid.y;
  }
  MMAN_LAUNCH((simt::LaunchConfig{dim3(1), dim3(kNormThreads), 0, stream}), grad_norm_finish_kernel, partial, count,
              max_norm, result);
}

// mman::clip_grad_norm on the GPU: the norm into *result, then every trainable gradient scaled
// when the norm exceeds max_norm (> 0). Three launches, no host synchronisation.
inline void clip_grad_norm_launch(float* grad, const ArenaSpans& spans, double max_norm, double* partial,
                                  GradNormResult* result, simt::Stream stream) {
  MMAN_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be > 0, got {}", max_norm);
  grad_norm_launch(grad, spans, max_norm, partial, result, stream);
  if (spans.count == 0 || spans.longest == 0) return;
  MMAN_LAUNCH(span_config(spans, kNormMaxBlocksPerSpan, stream), grad_scale_kernel, grad, spans.bounds,
              static_cast<const GradNormResult*>(result));
}

// mman::clip_grad_value: every trainable gradient clamped to [-clip_value, clip_value].
inline void clip_grad_value_launch(float* grad, const ArenaSpans& spans, float clip_value, simt::Stream stream) {
  MMAN_CHECK(clip_value > 0, "clip_grad_value: the clip value must be > 0, got {}", clip_value);
  if (spans.count == 0 || spans.longest == 0) return;
  MMAN_LAUNCH(span_config(spans, kNormMaxBlocksPerSpan, stream), grad_clamp_kernel, grad, spans.bounds, clip_value);
}

}  // namespace mman::kernels
