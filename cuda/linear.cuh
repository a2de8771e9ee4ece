// Launchers of the Linear layer on cuBLAS (cuda/linear.cu): mman::Linear's forward and backward on device pointers.
#pragma once
#include <cstdint>

#include "mman/cuda/context.h"

namespace mman::cuda {

// mman::Linear::forward: y[r, 0:out] = x[r, 0:in] W^T + b for r < rows, with W [out x in] and
// b [out] (PyTorch nn.Linear layout, e.g. DeviceParams::value(id)); x and y have row strides
// ldx >= in and ldy >= out. As on the CPU, y is first set to the bias (a K = 1 GEMM with the
// context's ones vector, exact) and the GEMM adds x W^T on top.
void linear_forward_device(const CudaContext& ctx, const float* d_w, const float* d_b, int in, int out,
                           const float* d_x, int64_t ldx, int64_t rows, float* d_y, int64_t ldy);

// mman::Linear::backward from dy [rows x out] (stride lddy) and the forward's x:
// dW += dy^T x when d_dw is not null, db += the column sums of dy (dy^T ones) when d_db is not
// null (null: a frozen parameter, no work), and, when d_dx is not null, dx = dy W (stride lddx),
// or dx += dy W with accumulate_dx.
void linear_backward_device(const CudaContext& ctx, const float* d_w, float* d_dw, float* d_db, int in, int out,
                            const float* d_x, int64_t ldx, int64_t rows, const float* d_dy, int64_t lddy, float* d_dx,
                            int64_t lddx, bool accumulate_dx = false);

}  // namespace mman::cuda
