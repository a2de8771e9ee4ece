// Row-wise softmax of a row-major [rows x cols] matrix, one block per row, written once for nvcc
// and the host SIMT emulation (mman/simt/simt.h).
#pragma once
#include <cmath>

#include "cuda/kernels/reduce.cuh"
#include "mman/error.h"
#include "mman/simt/simt.h"

namespace mman::kernels {

// y[r, :] = softmax(x[r, :]) for r = blockIdx.x. Each thread handles columns threadIdx.x,
// threadIdx.x + kBlock, ...: it reads only the x elements it writes, so y may alias x.
template <int kBlock>
MMAN_KERNEL void softmax_rows_kernel(const float* x, float* y, int cols) {
  MMAN_SHARED(float, scratch, kBlock / kWarpSize);
  const long long row = static_cast<long long>(blockIdx.x) * cols;
  const float* xr = x + row;
  float* yr = y + row;
  float m = -INFINITY;
  for (int c = static_cast<int>(threadIdx.x); c < cols; c += kBlock) m = fmaxf(m, xr[c]);
  m = block_reduce<kBlock>(m, MaxOp{}, -INFINITY, scratch);
  float s = 0.0f;
  for (int c = static_cast<int>(threadIdx.x); c < cols; c += kBlock) s += expf(xr[c] - m);
  s = block_sum<kBlock>(s, scratch);
  const float inv = 1.0f / s;
  for (int c = static_cast<int>(threadIdx.x); c < cols; c += kBlock) yr[c] = expf(xr[c] - m) * inv;
}

// Softmax of every row of x [rows x cols] into y (which may be x). Narrow rows get one warp
// per block, so most threads are not idle.
inline void softmax_rows_launch(const float* x, float* y, int rows, int cols, simt::Stream stream) {
  MMAN_CHECK(rows >= 0 && cols >= 1, "softmax_rows_launch: bad shape [{} x {}]", rows, cols);
  if (rows == 0) return;  // a grid of 0 blocks is an invalid launch
  if (cols <= 64) {
    MMAN_LAUNCH((simt::LaunchConfig{dim3(static_cast<unsigned>(rows)), dim3(32), 0, stream}),
                softmax_rows_kernel<32>, x, y, cols);
  } else {
    MMAN_LAUNCH((simt::LaunchConfig{dim3(static_cast<unsigned>(rows)), dim3(256), 0, stream}),
                softmax_rows_kernel<256>, x, y, cols);
  }
}

}  // namespace mman::kernels
