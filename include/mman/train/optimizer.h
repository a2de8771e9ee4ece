// Adam over the parameter arena (PyTorch's update, optional L2 weight decay) and gradient clipping.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "mman/params.h"

namespace mman {

// torch.optim.Adam's hyperparameters and defaults (amsgrad and maximize are not offered).
// Doubles like PyTorch's Python floats; each is rounded to float where PyTorch's float
// kernels round it.
struct AdamConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // PyTorch's L2 form: g += weight_decay * p before the moments
};

// Everything Adam carries between steps, for checkpoints (exact resume).
struct AdamState {
  int64_t step = 0;        // completed steps t
  std::vector<float> m;    // first moments, same layout as ParamStore::values()
  std::vector<float> v;    // second moments
};

// Adam with PyTorch's exact update (torch 1.13 `_single_tensor_adam`), in float32 with
// the bias corrections computed in double and rounded to float once per step:
//   t += 1;  g = grad + wd * p;  m = beta1 m + (1-beta1) g;  v = beta2 v + (1-beta2) g^2
//   p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// The moments live in two arenas of the parameter arena's layout, and a step is one
// (OpenMP-parallel, element-wise, so thread-count independent) loop over the spans of
// trainable tensors: a frozen tensor (ParamInfo::trainable == false) keeps its value and
// its moments. Like PyTorch's one step counter per optimiser whose params all step
// together, t counts steps of this optimiser.
class Adam {
 public:
  Adam() = default;
  Adam(const ParamStore& params, const AdamConfig& config);

  const AdamConfig& config() const { return config_; }
  void set_lr(double lr) { config_.lr = lr; }
  int64_t steps() const { return state_.step; }

  // One update of every trainable parameter from params.grads() (gradients untouched).
  // The store must have the layout this optimiser was built for.
  void step(ParamStore& params);

  const AdamState& state() const { return state_; }
  // Restores a saved state; the arenas must have this optimiser's size.
  void set_state(AdamState state);

 private:
  AdamConfig config_;
  AdamState state_;
};

// [begin, end) ranges of the arena covering every trainable tensor, adjacent ones merged
// (padding between tensors is zero in values and grads, so covering it is harmless).
std::vector<std::pair<size_t, size_t>> trainable_spans(const ParamStore& params);

// torch.nn.utils.clip_grad_norm_ over the trainable parameters: the global L2 norm of
// all their gradients (accumulated in double, in a fixed order, so the result does not
// depend on the thread count); when max_norm / (norm + 1e-6) < 1 every trainable
// gradient is multiplied by that factor. Returns the norm before clipping.
double clip_grad_norm(ParamStore& params, double max_norm);
// That norm alone (NaN or Inf when any element is), computed as clip_grad_norm computes it.
double grad_norm(const ParamStore& params);

// torch.nn.utils.clip_grad_value_: clamps every trainable gradient element to
// [-clip_value, clip_value] (the authors' `clip: {value: 1e-3}`).
void clip_grad_value(ParamStore& params, float clip_value);

}  // namespace mman
