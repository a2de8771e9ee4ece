// Launchers of the unfused MMA attention kernels (cuda/attention.cu): scores, softmax, z and skip
// on precomputed q, k, v (cuBLAS projections), forward and backward; device pointers, one stream.
#pragma once
#include <cuda_runtime_api.h>

#include "cuda/kernels/attention.cuh"  // MmaShape, mma_shape()

namespace mman::cuda {

// alpha [rows x M M] and out [rows x M width] from xhat, q, k, v [rows x M d] (s.rows rows).
void attention_forward_device(const float* d_xhat, const float* d_q, const float* d_k, const float* d_v,
                              const kernels::MmaShape& s, float* d_alpha, float* d_out, cudaStream_t stream);
// dq, dk, dv and the skip's share of dxhat [rows x M d], all overwritten.
void attention_backward_device(const float* d_q, const float* d_k, const float* d_v, const float* d_alpha,
                               const float* d_dout, const kernels::MmaShape& s, float* d_dq, float* d_dk,
                               float* d_dv, float* d_dxhat, cudaStream_t stream);

}  // namespace mman::cuda
