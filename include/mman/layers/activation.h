// Parameter-free activations over row-major matrices: ReLU and (grouped) softmax.
#pragma once
#include <cstdint>

namespace mman {

// y = max(x, 0) elementwise over n values; y may alias x.
void relu_forward(const float* x, float* y, int64_t n);
// dx = dy where the activation was positive, else 0. `act` is either the ReLU input or
// its output (both have the same sign pattern, so callers keep whichever they store).
// dx may alias dy. At exactly 0 the gradient is 0, like PyTorch.
void relu_backward(const float* act, const float* dy, float* dx, int64_t n);

// Softmax over consecutive groups of `group` columns in each of `rows` rows of width
// `cols` (cols a multiple of group). group == cols is the ordinary row-wise softmax;
// the binary4 protocol uses group 2 (one softmax per one-vs-rest head). Stable: the
// group maximum is subtracted before exp. x and y have row strides ldx, ldy and may alias.
void softmax_forward(const float* x, int64_t ldx, int64_t rows, int cols, int group, float* y, int64_t ldy);
// Given the forward output y and dL/dy, dx = y * (dy - sum_group(y * dy)). dx may alias dy.
void softmax_backward(const float* y, int64_t ldy, const float* dy, int64_t lddy, int64_t rows, int cols, int group,
                      float* dx, int64_t lddx);

}  // namespace mman
