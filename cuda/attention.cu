// Device launchers of the unfused MMA attention: the nvcc build of cuda/kernels/attention.cuh,
// which tests/test_kernels_attention.cpp runs on the CPU.
#include "cuda/attention.cuh"

namespace mman::cuda {

void attention_forward_device(const float* d_xhat, const float* d_q, const float* d_k, const float* d_v,
                              const kernels::MmaShape& s, float* d_alpha, float* d_out, cudaStream_t stream) {
  kernels::attention_forward_launch(d_xhat, d_q, d_k, d_v, s, d_alpha, d_out, stream);
}

void attention_backward_device(const float* d_q, const float* d_k, const float* d_v, const float* d_alpha,
                               const float* d_dout, const kernels::MmaShape& s, float* d_dq, float* d_dk,
                               float* d_dv, float* d_dxhat, cudaStream_t stream) {
  kernels::attention_backward_launch(d_q, d_k, d_v, d_alpha, d_dout, s, d_dq, d_dk, d_dv, d_dxhat, stream);
}

}  // namespace mman::cuda
