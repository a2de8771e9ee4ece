// Row-wise softmax of a row-major [rows x cols] matrix, one block per row, written once for nvcc
// and the host SIMT emulation (mman/simt/simt.h).
#pragma once
#include <cmath>

#include "cuda/kernels/dropout.cuh"  // elementwise_config
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

// ---- grouped softmax (mman::softmax_forward / softmax_backward) ----
//
// The late-fusion networks turn each sub-network's logits into class probabilities: softmax
// over the row's `cols` columns in groups of `group` (all of them, or binary4's 2-way heads),
// written into a column block of a wider matrix. One thread per (row, group), with the CPU
// function's exact sequence of operations (first maximum by std::max's comparison, exp of the
// difference, sum in column order, one reciprocal), so under the SIMT layer the results are the
// CPU's bit for bit; on a GPU expf may differ from the host's by an ulp.

struct GroupSoftmaxShape {
  long long rows = 0;
  int cols = 0, group = 0;
  long long ldx = 0, ldy = 0;  // row strides of the input and the output
};

inline GroupSoftmaxShape group_softmax_shape(long long rows, int cols, int group, long long ldx, long long ldy,
                                             const char* what) {
  MMAN_CHECK(rows >= 0 && cols >= 1 && group >= 1 && cols % group == 0 && ldx >= cols && ldy >= cols,
             "{}: bad shape: {} rows of {} columns in groups of {}, row strides {} and {}", what, rows, cols, group,
             ldx, ldy);
  return {rows, cols, group, ldx, ldy};
}

MMAN_KERNEL void group_softmax_forward_kernel(const float* x, float* y, GroupSoftmaxShape s) {
  const long long per_row = s.cols / s.group, n = s.rows * per_row;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    const long long r = e / per_row;
    const int g = static_cast<int>(e % per_row) * s.group;
    const float* xr = x + r * s.ldx + g;
    float* yr = y + r * s.ldy + g;
    float mx = xr[0];
    for (int j = 1; j < s.group; ++j) mx = mx < xr[j] ? xr[j] : mx;  // std::max(mx, x[j])
    float sum = 0.0f;
    for (int j = 0; j < s.group; ++j) {
      yr[j] = expf(xr[j] - mx);
      sum += yr[j];
    }
    const float inv = 1.0f / sum;
    for (int j = 0; j < s.group; ++j) yr[j] *= inv;
  }
}

// dx = y * (dy - sum_j y_j dy_j) per group; y, dy with stride ldx, dx with stride ldy.
MMAN_KERNEL void group_softmax_backward_kernel(const float* y, const float* dy, float* dx, GroupSoftmaxShape s) {
  const long long per_row = s.cols / s.group, n = s.rows * per_row;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    const long long r = e / per_row;
    const int g = static_cast<int>(e % per_row) * s.group;
    const float* yr = y + r * s.ldx + g;
    const float* dyr = dy + r * s.ldx + g;
    float* dxr = dx + r * s.ldy + g;
    float dot = 0.0f;
    for (int j = 0; j < s.group; ++j) dot += yr[j] * dyr[j];
    for (int j = 0; j < s.group; ++j) dxr[j] = yr[j] * (dyr[j] - dot);
  }
}

// mman::softmax_forward(x, ldx, rows, cols, group, y, ldy) on device memory (y must not
// overlap x unless it is x with the same stride).
inline void group_softmax_forward_launch(const float* x, float* y, const GroupSoftmaxShape& s, simt::Stream stream) {
  const long long n = s.rows * (s.cols / s.group);
  if (n == 0) return;
  MMAN_LAUNCH(elementwise_config(n, stream), group_softmax_forward_kernel, x, y, s);
}

// mman::softmax_backward(y, ldx, dy, ldx, rows, cols, group, dx, ldy): y and dy share the
// stride s.ldx, dx has s.ldy (dx may be dy when the strides agree).
inline void group_softmax_backward_launch(const float* y, const float* dy, float* dx, const GroupSoftmaxShape& s,
                                          simt::Stream stream) {
  const long long n = s.rows * (s.cols / s.group);
  if (n == 0) return;
  MMAN_LAUNCH(elementwise_config(n, stream), group_softmax_backward_kernel, y, dy, dx, s);
}

}  // namespace mman::kernels
