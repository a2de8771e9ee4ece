// Launchers of the elementwise activation kernels (cuda/elementwise.cu): ReLU, and ReLU followed
// by dropout (the MMA standardisation), forward and backward, on a CUDA stream.
#pragma once
#include <cuda_runtime_api.h>

#include "cuda/kernels/elementwise.cuh"  // DropoutView
#include "mman/layers/dropout.h"

namespace mman::cuda {

// y = max(x, 0) over n elements (y may alias x).
void relu_forward_device(const float* d_x, float* d_y, long long n, cudaStream_t stream);
// dx = act > 0 ? dy : 0 (dx may alias dy).
void relu_backward_device(const float* d_act, const float* d_dy, float* d_dx, long long n, cudaStream_t stream);
// y = layer(relu(x)) on a view (dropout index r cols + c).
void relu_dropout_forward_device(const Dropout& layer, const float* d_x, float* d_y, const kernels::DropoutView& v,
                                 Mode mode, const DropoutKey& key, cudaStream_t stream);
// Its backward from the forward's output y (y, dy with stride v.ldx, dx with v.ldy).
void relu_dropout_backward_device(const Dropout& layer, const float* d_y, const float* d_dy, float* d_dx,
                                  const kernels::DropoutView& v, Mode mode, cudaStream_t stream);

}  // namespace mman::cuda
