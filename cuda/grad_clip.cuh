// Launchers of the gradient clipping kernels (cuda/grad_clip.cu): deterministic global L2 norm,
// clip by norm without a host round trip, clamp by value; device pointers, one stream.
#pragma once
#include <cuda_runtime_api.h>

#include "cuda/kernels/grad_clip.cuh"  // ArenaSpans, GradNormResult, grad_norm_partial_count()

namespace mman::cuda {

// *d_result = the L2 norm of d_grad over spans (d_partial: grad_norm_partial_count(spans)
// doubles); max_norm > 0 also decides the clip factor.
void grad_norm_device(const float* d_grad, const kernels::ArenaSpans& spans, double max_norm, double* d_partial,
                      kernels::GradNormResult* d_result, cudaStream_t stream);
// mman::clip_grad_norm: the norm into *d_result, gradients scaled when it exceeds max_norm.
void clip_grad_norm_device(float* d_grad, const kernels::ArenaSpans& spans, double max_norm, double* d_partial,
                           kernels::GradNormResult* d_result, cudaStream_t stream);
// mman::clip_grad_value: gradients clamped to [-clip_value, clip_value].
void clip_grad_value_device(float* d_grad, const kernels::ArenaSpans& spans, float clip_value, cudaStream_t stream);

}  // namespace mman::cuda
