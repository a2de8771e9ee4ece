// Device launchers of the fused multi-modal attention: the nvcc build of cuda/kernels/mma.cuh,
// which tests/test_kernels_mma.cpp runs on the CPU.
#include "cuda/mma.cuh"

namespace mman::cuda {

void mma_fused_forward_device(const float* d_xhat, const kernels::MmaWeights& w, const kernels::MmaShape& s,
                              float* d_q, float* d_k, float* d_v, float* d_alpha, float* d_out, cudaStream_t stream) {
  kernels::mma_fused_forward_launch(d_xhat, w, s, d_q, d_k, d_v, d_alpha, d_out, stream);
}

void mma_fused_backward_device(const float* d_q, const float* d_k, const float* d_v, const float* d_alpha,
                               const float* d_dout, const kernels::MmaWeights& w, const kernels::MmaShape& s,
                               float* d_dq, float* d_dk, float* d_dv, float* d_dxhat, cudaStream_t stream) {
  kernels::mma_fused_backward_launch(d_q, d_k, d_v, d_alpha, d_dout, w, s, d_dq, d_dk, d_dv, d_dxhat, stream);
}

void mma_weight_grad_device(const float* d_xhat, const float* d_dq, const float* d_dk, const float* d_dv,
                            const kernels::MmaWeightGrads& g, int64_t rows, int modalities, int d,
                            cudaStream_t stream) {
  kernels::mma_weight_grad_launch(d_xhat, d_dq, d_dk, d_dv, g, rows, modalities, d, stream);
}

}  // namespace mman::cuda
