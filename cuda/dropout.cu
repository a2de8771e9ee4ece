// Device launchers of the dropout kernel: the nvcc build of cuda/kernels/dropout.cuh, which
// tests/test_kernels_dropout.cpp runs on the CPU.
#include "cuda/dropout.cuh"

namespace mman::cuda {

void dropout_forward_device(const Dropout& layer, const float* d_x, float* d_y, const kernels::DropoutView& v,
                            Mode mode, const DropoutKey& key, cudaStream_t stream) {
  kernels::dropout_forward_launch(layer, d_x, d_y, v, mode, key, stream);
}

void dropout_backward_device(const Dropout& layer, const float* d_dy, float* d_dx, const kernels::DropoutView& v,
                             Mode mode, const DropoutKey& key, cudaStream_t stream) {
  kernels::dropout_backward_launch(layer, d_dy, d_dx, v, mode, key, stream);
}

}  // namespace mman::cuda
