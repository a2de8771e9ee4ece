// ReLU and grouped softmax, forward and backward.
#include "mman/layers/activation.h"

#include <algorithm>
#include <cmath>

#include "mman/error.h"

namespace mman {

void relu_forward(const float* x, float* y, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  // NaN stays NaN (as in PyTorch): a ReLU that mapped it to 0 would hide a poisoned input
  // or a diverged weight from the loss check, and training would go on with NaN gradients.
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f || std::isnan(x[i]) ? x[i] : 0.0f;
}

void relu_backward(const float* act, const float* dy, float* dx, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  // dy[i] is read unconditionally, so the select vectorises (a conditional load would not).
  for (int64_t i = 0; i < n; ++i) {
    const float g = dy[i];
    dx[i] = act[i] > 0.0f ? g : 0.0f;
  }
}

void softmax_forward(const float* x, int64_t ldx, int64_t rows, int cols, int group, float* y, int64_t ldy) {
  MMAN_CHECK(group > 0 && cols % group == 0, "softmax: {} columns do not split into groups of {}", cols, group);
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    for (int g = 0; g < cols; g += group) {
      float mx = xr[g];
      for (int j = 1; j < group; ++j) mx = std::max(mx, xr[g + j]);
      float sum = 0.0f;
      for (int j = 0; j < group; ++j) {
        yr[g + j] = std::exp(xr[g + j] - mx);
        sum += yr[g + j];
      }
      const float inv = 1.0f / sum;  // sum >= 1: the maximum contributes exp(0)
      for (int j = 0; j < group; ++j) yr[g + j] *= inv;
    }
  }
}

void softmax_backward(const float* y, int64_t ldy, const float* dy, int64_t lddy, int64_t rows, int cols, int group,
                      float* dx, int64_t lddx) {
  MMAN_CHECK(group > 0 && cols % group == 0, "softmax: {} columns do not split into groups of {}", cols, group);
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* yr = y + r * ldy;
    const float* dyr = dy + r * lddy;
    float* dxr = dx + r * lddx;
    for (int g = 0; g < cols; g += group) {
      float dot = 0.0f;
      for (int j = 0; j < group; ++j) dot += yr[g + j] * dyr[g + j];
      for (int j = 0; j < group; ++j) dxr[g + j] = yr[g + j] * (dyr[g + j] - dot);
    }
  }
}

}  // namespace mman
