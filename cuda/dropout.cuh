// Launchers of the counter-based dropout kernel (cuda/dropout.cu): the CPU's masks on the GPU.
#pragma once
#include <cuda_runtime_api.h>

#include "cuda/kernels/dropout.cuh"  // DropoutView, dropout_view()
#include "mman/layers/dropout.h"

namespace mman::cuda {

// layer.forward on a [rows x cols] view of device memory (element (r, c) has dropout index
// r cols + c); y may alias x.
void dropout_forward_device(const Dropout& layer, const float* d_x, float* d_y, const kernels::DropoutView& v,
                            Mode mode, const DropoutKey& key, cudaStream_t stream);
// layer.backward with the forward's mode and key; dx may alias dy.
void dropout_backward_device(const Dropout& layer, const float* d_dy, float* d_dx, const kernels::DropoutView& v,
                             Mode mode, const DropoutKey& key, cudaStream_t stream);

}  // namespace mman::cuda
