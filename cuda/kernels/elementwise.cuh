// Elementwise activations on the GPU: ReLU forward and backward, and the MMA standardisation's
// ReLU followed by dropout, fused (mman/layers/activation.h, dropout.h; same results bit for bit,
// NaN kept as NaN).
#pragma once
#include <cmath>
#include <cstdint>

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/dropout.cuh"
#include "mman/error.h"
#include "mman/layers/dropout.h"
#include "mman/layers/mode.h"
#include "mman/simt/simt.h"

namespace mman::kernels {

MMAN_HOST_DEVICE bool relu_is_nan(float x) {
#if defined(__CUDA_ARCH__)
  return isnan(x);
#else
  return std::isnan(x);
#endif
}

// relu_forward's value: x when x > 0 or NaN (the NaN itself, sign and payload: a ReLU that
// mapped NaN to 0 would hide a poisoned input or a diverged weight from the loss check), else
// +0 (also for -0). A select, so nothing is rounded.
MMAN_HOST_DEVICE float relu_value(float x) { return x > 0.0f || relu_is_nan(x) ? x : 0.0f; }

// y = relu(x), as relu_forward (y may alias x).
MMAN_KERNEL void relu_forward_kernel(const float* x, float* y, long long n) {
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = relu_value(x[i]);
}

// dx = act > 0 ? dy : 0, as relu_backward (act: the ReLU's input or output; a NaN act gives 0,
// as on the CPU; dx may alias dy).
MMAN_KERNEL void relu_backward_kernel(const float* act, const float* dy, float* dx, long long n) {
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dx[i] = act[i] > 0.0f ? dy[i] : 0.0f;
}

// y = dropout(relu(x)) on a view (dropout.cuh): mman::Mma's standardisation after its Linear
// (y may alias x).
MMAN_KERNEL void relu_dropout_forward_kernel(const float* x, float* y, DropoutView v, bool active, uint64_t stream,
                                             float p, float keep) {
  const long long n = v.rows * v.cols, stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    const long long r = e / v.cols, c = e % v.cols;
    const float xe = x[r * v.ldx + c];
    const float a = relu_value(xe);
    y[r * v.ldy + c] = !active ? a : counter_uniform(stream, static_cast<uint64_t>(e)) < p ? 0.0f : a * keep;
  }
}

// Its backward from the forward's output y (row stride v.ldx, as dy; dx has v.ldy): an element
// with y > 0 passed the ReLU and was kept, so dx = y > 0 ? dy * keep : 0 (keep = 1 when
// inactive) -- the CPU's dropout backward followed by relu_backward(y, ...) without drawing the
// mask again (a NaN y, from a NaN x that was kept, gives 0 there too). dx may alias dy.
MMAN_KERNEL void relu_dropout_backward_kernel(const float* y, const float* dy, float* dx, DropoutView v, bool active,
                                              float keep) {
  const long long n = v.rows * v.cols, stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    const long long r = e / v.cols, c = e % v.cols;
    const float g = dy[r * v.ldx + c];
    dx[r * v.ldy + c] = y[r * v.ldx + c] > 0.0f ? (active ? g * keep : g) : 0.0f;
  }
}

inline void relu_forward_launch(const float* x, float* y, long long n, simt::Stream stream) {
  MMAN_CHECK(n >= 0, "relu_forward: element count {} is negative", n);
  if (n > 0) MMAN_LAUNCH(elementwise_config(n, stream), relu_forward_kernel, x, y, n);
}

inline void relu_backward_launch(const float* act, const float* dy, float* dx, long long n, simt::Stream stream) {
  MMAN_CHECK(n >= 0, "relu_backward: element count {} is negative", n);
  if (n > 0) MMAN_LAUNCH(elementwise_config(n, stream), relu_backward_kernel, act, dy, dx, n);
}

// y = layer(relu(x)) on a view (the CPU: relu_forward, then layer.forward on the contiguous
// matrix).
inline void relu_dropout_forward_launch(const Dropout& layer, const float* x, float* y, const DropoutView& v,
                                        Mode mode, const DropoutKey& key, simt::Stream stream) {
  if (v.rows * v.cols == 0) return;
  const float p = layer.p();
  MMAN_LAUNCH(elementwise_config(v.rows * v.cols, stream), relu_dropout_forward_kernel, x, y, v, layer.active(mode),
              dropout_stream(key, layer.slot()), p, 1.0f / (1.0f - p));
}

// dx from dy through the dropout and the ReLU, given the forward's output y; y and dy have row
// stride v.ldx, dx v.ldy (dx may alias dy).
inline void relu_dropout_backward_launch(const Dropout& layer, const float* y, const float* dy, float* dx,
                                         const DropoutView& v, Mode mode, simt::Stream stream) {
  if (v.rows * v.cols == 0) return;
  MMAN_LAUNCH(elementwise_config(v.rows * v.cols, stream), relu_dropout_backward_kernel, y, dy, dx, v,
              layer.active(mode), 1.0f / (1.0f - layer.p()));
}

}  // namespace mman::kernels
