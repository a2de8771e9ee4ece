// Launchers of the grouped softmax kernels (cuda/softmax.cu): the late-fusion probabilities and their backward.
#pragma once
#include <cuda_runtime_api.h>

#include "cuda/kernels/softmax.cuh"  // GroupSoftmaxShape, group_softmax_shape()

namespace mman::cuda {

// mman::softmax_forward on device memory: y (stride s.ldy) = softmax of x (stride s.ldx) per group.
void group_softmax_forward_device(const float* d_x, float* d_y, const kernels::GroupSoftmaxShape& s,
                                  cudaStream_t stream);
// mman::softmax_backward: dx (stride s.ldy) from the forward's y and dy (stride s.ldx).
void group_softmax_backward_device(const float* d_y, const float* d_dy, float* d_dx,
                                   const kernels::GroupSoftmaxShape& s, cudaStream_t stream);

}  // namespace mman::cuda
