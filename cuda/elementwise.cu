// Device launchers of the elementwise activations: the nvcc build of cuda/kernels/elementwise.cuh,
// which tests/test_kernels_elementwise.cpp runs on the CPU.
#include "cuda/elementwise.cuh"

namespace mman::cuda {

void relu_forward_device(const float* d_x, float* d_y, long long n, cudaStream_t stream) {
  kernels::relu_forward_launch(d_x, d_y, n, stream);
}

void relu_backward_device(const float* d_act, const float* d_dy, float* d_dx, long long n, cudaStream_t stream) {
  kernels::relu_backward_launch(d_act, d_dy, d_dx, n, stream);
}

void relu_dropout_forward_device(const Dropout& layer, const float* d_x, float* d_y, const kernels::DropoutView& v,
                                 Mode mode, const DropoutKey& key, cudaStream_t stream) {
  kernels::relu_dropout_forward_launch(layer, d_x, d_y, v, mode, key, stream);
}

void relu_dropout_backward_device(const Dropout& layer, const float* d_y, const float* d_dy, float* d_dx,
                                  const kernels::DropoutView& v, Mode mode, cudaStream_t stream) {
  kernels::relu_dropout_backward_launch(layer, d_y, d_dy, d_dx, v, mode, stream);
}

}  // namespace mman::cuda
