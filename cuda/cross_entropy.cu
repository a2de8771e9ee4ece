// Device launcher of the masked cross-entropy: the nvcc build of cuda/kernels/cross_entropy.cuh,
// which tests/test_kernels_cross_entropy.cpp runs on the CPU.
#include "cuda/cross_entropy.cuh"

namespace mman::cuda {

void cross_entropy_device(const float* d_logits, const int32_t* d_targets, long long rows, int cols, int heads,
                          float* d_dlogits, kernels::CrossEntropyPartial* d_partial,
                          kernels::CrossEntropyResult* d_result, cudaStream_t stream) {
  kernels::cross_entropy_launch(d_logits, d_targets, rows, cols, heads, d_dlogits, d_partial, d_result, stream);
}

}  // namespace mman::cuda
