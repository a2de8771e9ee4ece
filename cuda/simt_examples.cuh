// Launcher declarations for the SIMT layer's example kernels (cuda/simt_examples.cu): float sum
// and row-wise softmax on a CUDA stream, device pointers throughout.
#pragma once
#include <cuda_runtime_api.h>

namespace mman::cuda {

// Number of floats of scratch `d_partial` that sum_device needs for n elements.
int sum_device_scratch(long long n);
// *d_out = sum of d_x[0..n) (two passes of warp-shuffle block reductions, deterministic).
void sum_device(const float* d_x, long long n, float* d_partial, float* d_out, cudaStream_t stream);
// Softmax of every row of d_x [rows x cols] into d_y (which may be d_x).
void softmax_rows_device(const float* d_x, float* d_y, int rows, int cols, cudaStream_t stream);

}  // namespace mman::cuda
