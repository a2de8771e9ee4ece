// Linear: y = x W^T + b over row-major [rows x in] matrices, PyTorch nn.Linear layout.
#pragma once
#include <cstdint>
#include <string>

#include "mman/params.h"
#include "mman/rng.h"
#include "mman/tensor.h"

namespace mman {

// Parameters: <prefix>weight [out x in], <prefix>bias [out] (nn.Linear's state_dict).
// Rows are packed utterances, so one call is one GEMM over the whole batch. Inputs and
// outputs may be column blocks of wider matrices (leading dimensions ldx, ldy), which
// lets models read or write a slice of a concatenation without copying it.
// Backward needs only the forward input, which the caller keeps, so there is no context.
class Linear {
 public:
  Linear() = default;
  Linear(ParamStore& params, const std::string& prefix, int in, int out);

  int in() const { return in_; }
  int out() const { return out_; }
  int weight_id() const { return weight_; }
  int bias_id() const { return bias_; }

  // PyTorch default: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)).
  void init(ParamStore& params, Rng& rng) const;

  // y[r, 0:out] = x[r, 0:in] W^T + b for r < rows; x has row stride ldx, y row stride ldy.
  void forward(const ParamStore& params, const float* x, int64_t ldx, int64_t rows, float* y,
               int64_t ldy) const;
  // Contiguous convenience: y is resized to [x.rows() x out].
  void forward(const ParamStore& params, const Tensor& x, Tensor& y) const;

  // dy [rows x out] (stride lddy). dW += dy^T x, db += column sums of dy (accumulate;
  // skipped for a parameter whose ParamInfo::trainable is false);
  // dx, when not null, is overwritten with dy W (stride lddx), or has dy W added to it
  // with accumulate_dx (for inputs that feed several layers).
  void backward(ParamStore& params, const float* x, int64_t ldx, int64_t rows, const float* dy, int64_t lddy,
                float* dx, int64_t lddx, bool accumulate_dx = false) const;
  void backward(ParamStore& params, const Tensor& x, const Tensor& dy, Tensor* dx) const;

 private:
  int in_ = 0, out_ = 0;
  int weight_ = -1, bias_ = -1;
};

}  // namespace mman
