// Launchers of the fused multi-modal attention kernels (cuda/mma.cu): Q/K/V projections, 3 x 3
// attention and skip in one pass per row block, its backward, and the Q/K/V weight gradients.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernels/mma.cuh"  // MmaShape, MmaWeights, MmaWeightGrads, mma_fused_supported()

namespace mman::cuda {

// xhat [rows x 3d] -> alpha [rows x 9], out [rows x 3 width]; q, k, v [rows x 3d] kept for the
// backward unless null. Requires kernels::mma_fused_supported(3, d).
void mma_fused_forward_device(const float* d_xhat, const kernels::MmaWeights& w, const kernels::MmaShape& s,
                              float* d_q, float* d_k, float* d_v, float* d_alpha, float* d_out, cudaStream_t stream);
// dq, dk, dv, dxhat [rows x 3d] overwritten from the forward's q, k, v, alpha and dout.
void mma_fused_backward_device(const float* d_q, const float* d_k, const float* d_v, const float* d_alpha,
                               const float* d_dout, const kernels::MmaWeights& w, const kernels::MmaShape& s,
                               float* d_dq, float* d_dk, float* d_dv, float* d_dxhat, cudaStream_t stream);
// Q/K/V weight and bias gradients += from xhat, dq, dk, dv [rows x M d]; deterministic.
void mma_weight_grad_device(const float* d_xhat, const float* d_dq, const float* d_dk, const float* d_dv,
                            const kernels::MmaWeightGrads& g, int64_t rows, int modalities, int d,
                            cudaStream_t stream);

}  // namespace mman::cuda
