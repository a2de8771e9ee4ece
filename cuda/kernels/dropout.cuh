// Inverted dropout with the counter-based RNG (mman/layers/dropout.h): the mask of element e is a
// pure function of (seed, step, slot, e), so the kernel drops exactly the CPU's elements.
#pragma once
#include <cstdint>

#include "cuda/kernels/common.cuh"
#include "mman/error.h"
#include "mman/layers/dropout.h"
#include "mman/layers/mode.h"
#include "mman/simt/simt.h"

namespace mman::kernels {

constexpr int kElementwiseThreads = 256;
constexpr long long kElementwiseMaxBlocks = 4096;  // grid-stride loops beyond that

// Grid for n elements, one per thread up to kElementwiseMaxBlocks blocks (n > 0).
inline simt::LaunchConfig elementwise_config(long long n, simt::Stream stream) {
  const long long blocks = ceil_div(n, kElementwiseThreads);
  return {dim3(static_cast<unsigned>(blocks < kElementwiseMaxBlocks ? blocks : kElementwiseMaxBlocks)),
          dim3(kElementwiseThreads), 0, stream};
}

// Element (r, c) of a [rows x cols] view with row strides ldx, ldy; its dropout index is
// r cols + c, the index it has in the contiguous matrix the CPU layer applies dropout to.
struct DropoutView {
  long long rows = 0, cols = 0;
  long long ldx = 0, ldy = 0;
};

inline DropoutView dropout_view(long long rows, long long cols, long long ldx, long long ldy, const char* what) {
  MMAN_CHECK(rows >= 0 && cols >= 0 && ldx >= cols && ldy >= cols,
             "{}: bad view [{} x {}] with row strides {} and {}", what, rows, cols, ldx, ldy);
  return {rows, cols, ldx, ldy};
}

// y = x * dropout_scale(stream, index, p) (keep = 1 / (1 - p), as the CPU forms it); active ==
// false copies. Each thread reads only the element it writes: y may alias x.
MMAN_KERNEL void dropout_kernel(const float* x, float* y, DropoutView v, bool active, uint64_t stream, float p,
                                float keep) {
  const long long n = v.rows * v.cols, stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    const long long r = e / v.cols, c = e % v.cols;
    const float xe = x[r * v.ldx + c];
    y[r * v.ldy + c] = !active ? xe : counter_uniform(stream, static_cast<uint64_t>(e)) < p ? 0.0f : xe * keep;
  }
}

// mman::Dropout::forward on a [rows x cols] view (y may alias x). Contiguous n elements:
// rows = 1, cols = ldx = ldy = n.
inline void dropout_forward_launch(const Dropout& layer, const float* x, float* y, const DropoutView& v, Mode mode,
                                   const DropoutKey& key, simt::Stream stream) {
  if (v.rows * v.cols == 0 || (!layer.active(mode) && x == y && v.ldx == v.ldy)) return;
  const float p = layer.p();
  MMAN_LAUNCH(elementwise_config(v.rows * v.cols, stream), dropout_kernel, x, y, v, layer.active(mode),
              dropout_stream(key, layer.slot()), p, 1.0f / (1.0f - p));
}
inline void dropout_forward_launch(const Dropout& layer, const float* x, float* y, long long n, Mode mode,
                                   const DropoutKey& key, simt::Stream stream) {
  dropout_forward_launch(layer, x, y, dropout_view(1, n, n, n, "dropout_forward"), mode, key, stream);
}

// mman::Dropout::backward: dx = dy times the forward's mask (dx may alias dy). `mode` and `key`
// are the forward's (what DropoutContext holds).
inline void dropout_backward_launch(const Dropout& layer, const float* dy, float* dx, const DropoutView& v, Mode mode,
                                    const DropoutKey& key, simt::Stream stream) {
  dropout_forward_launch(layer, dy, dx, v, mode, key, stream);  // the same mask, the same scale
}
inline void dropout_backward_launch(const Dropout& layer, const float* dy, float* dx, long long n, Mode mode,
                                    const DropoutKey& key, simt::Stream stream) {
  dropout_backward_launch(layer, dy, dx, dropout_view(1, n, n, n, "dropout_backward"), mode, key, stream);
}

}  // namespace mman::kernels
