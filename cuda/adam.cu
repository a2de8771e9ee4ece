// Device launcher of the fused Adam kernel: the nvcc build of cuda/kernels/adam.cuh, which
// tests/test_kernels_adam.cpp runs on the CPU.
#include "cuda/adam.cuh"

namespace mman::cuda {

void adam_step_device(float* d_p, const float* d_grad, float* d_m, float* d_v, const kernels::ArenaSpans& spans,
                      const AdamConfig& config, int64_t t, cudaStream_t stream) {
  kernels::adam_step_launch(d_p, d_grad, d_m, d_v, spans, config, t, stream);
}

}  // namespace mman::cuda
