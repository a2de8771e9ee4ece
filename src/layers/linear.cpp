// Linear layer: GEMM forward and backward over packed rows.
#include "mman/layers/linear.h"

#include <cmath>

#include "mman/blas.h"
#include "mman/error.h"

namespace mman {

Linear::Linear(ParamStore& params, const std::string& prefix, int in, int out) : in_(in), out_(out) {
  MMAN_CHECK(in > 0 && out > 0, "linear layer '{}': sizes must be positive (in {}, out {})", prefix, in, out);
  weight_ = params.add(prefix + "weight", {out, in});
  bias_ = params.add(prefix + "bias", {out});
}

void Linear::init(ParamStore& params, Rng& rng) const {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_));
  float* w = params.value(weight_);
  for (int64_t i = 0; i < static_cast<int64_t>(out_) * in_; ++i) w[i] = static_cast<float>(rng.uniform(-bound, bound));
  float* b = params.value(bias_);
  for (int i = 0; i < out_; ++i) b[i] = static_cast<float>(rng.uniform(-bound, bound));
}

void Linear::forward(const ParamStore& params, const float* x, int64_t ldx, int64_t rows, float* y,
                     int64_t ldy) const {
  if (rows <= 0) return;
  const float* b = params.value(bias_);
  // Seed y with the bias so the GEMM adds x W^T on top (beta = 1): one pass over y.
  for (int64_t r = 0; r < rows; ++r) {
    float* yr = y + r * ldy;
    for (int j = 0; j < out_; ++j) yr[j] = b[j];
  }
  gemm(false, true, static_cast<int>(rows), out_, in_, 1.0f, x, static_cast<int>(ldx), params.value(weight_), in_,
       1.0f, y, static_cast<int>(ldy));
}

void Linear::forward(const ParamStore& params, const Tensor& x, Tensor& y) const {
  MMAN_CHECK(x.cols() == in_, "linear layer: input has {} columns, expected {}", x.cols(), in_);
  y.resize(x.rows(), out_);
  forward(params, x.data(), in_, x.rows(), y.data(), out_);
}

void Linear::backward(ParamStore& params, const float* x, int64_t ldx, int64_t rows, const float* dy,
                      int64_t lddy, float* dx, int64_t lddx, bool accumulate_dx) const {
  if (rows <= 0) return;
  const int n = static_cast<int>(rows);
  // Frozen parameters (stage 2 of a composite) get no gradient and cost no GEMM.
  if (params.info(weight_).trainable)  // dW [out x in] += dy^T [out x rows] * x [rows x in]
    gemm(true, false, out_, in_, n, 1.0f, dy, static_cast<int>(lddy), x, static_cast<int>(ldx), 1.0f,
         params.grad(weight_), in_);
  if (params.info(bias_).trainable) {
    // db += sum over rows of dy, in row order (deterministic for any thread count).
    float* db = params.grad(bias_);
    for (int64_t r = 0; r < rows; ++r) {
      const float* dyr = dy + r * lddy;
      for (int j = 0; j < out_; ++j) db[j] += dyr[j];
    }
  }
  if (dx != nullptr)  // dx [rows x in] = dy [rows x out] * W [out x in]
    gemm(false, false, n, in_, out_, 1.0f, dy, static_cast<int>(lddy), params.value(weight_), in_, accumulate_dx ? 1.0f : 0.0f, dx,
         static_cast<int>(lddx));
}

void Linear::backward(ParamStore& params, const Tensor& x, const Tensor& dy, Tensor* dx) const {
  MMAN_CHECK(x.cols() == in_ && dy.cols() == out_ && dy.rows() == x.rows(),
             "linear layer backward: shapes x [{} x {}], dy [{} x {}] do not match [rows x {}] -> [rows x {}]",
             x.rows(), x.cols(), dy.rows(), dy.cols(), in_, out_);
  if (dx != nullptr) dx->resize(x.rows(), in_);
  backward(params, x.data(), in_, x.rows(), dy.data(), out_, dx != nullptr ? dx->data() : nullptr, in_);
}

}  // namespace mman
