// Device launchers of the grouped softmax: the nvcc build of cuda/kernels/softmax.cuh, which
// tests/test_kernels_group_softmax.cpp runs on the CPU.
#include "cuda/softmax.cuh"

namespace mman::cuda {

void group_softmax_forward_device(const float* d_x, float* d_y, const kernels::GroupSoftmaxShape& s,
                                  cudaStream_t stream) {
  kernels::group_softmax_forward_launch(d_x, d_y, s, stream);
}

void group_softmax_backward_device(const float* d_y, const float* d_dy, float* d_dx,
                                   const kernels::GroupSoftmaxShape& s, cudaStream_t stream) {
  kernels::group_softmax_backward_launch(d_y, d_dy, d_dx, s, stream);
}

}  // namespace mman::cuda
