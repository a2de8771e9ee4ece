// Device launchers of the gradient clipping kernels: the nvcc build of cuda/kernels/grad_clip.cuh,
// which tests/test_kernels_grad_clip.cpp runs on the CPU.
#include "cuda/grad_clip.cuh"

namespace mman::cuda {

void grad_norm_device(const float* d_grad, const kernels::ArenaSpans& spans, double max_norm, double* d_partial,
                      kernels::GradNormResult* d_result, cudaStream_t stream) {
  kernels::grad_norm_launch(d_grad, spans, max_norm, d_partial, d_result, stream);
}

void clip_grad_norm_device(float* d_grad, const kernels::ArenaSpans& spans, double max_norm, double* d_partial,
                           kernels::GradNormResult* d_result, cudaStream_t stream) {
  kernels::clip_grad_norm_launch(d_grad, spans, max_norm, d_partial, d_result, stream);
}

void clip_grad_value_device(float* d_grad, const kernels::ArenaSpans& spans, float clip_value, cudaStream_t stream) {
  kernels::clip_grad_value_launch(d_grad, spans, clip_value, stream);
}

}  // namespace mman::cuda
