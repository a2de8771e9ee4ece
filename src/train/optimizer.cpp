// Adam over the trainable spans of the parameter arena, and gradient clipping by norm or value.
#include "mman/train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "mman/error.h"

namespace mman {

std::vector<std::pair<size_t, size_t>> trainable_spans(const ParamStore& params) {
  std::vector<std::pair<size_t, size_t>> spans;
  for (const ParamInfo& p : params.infos()) {
    if (!p.trainable) continue;
    // Tensors are registered in increasing offset order; merge a tensor into the previous
    // span when only padding lies between them.
    const size_t begin = p.offset, end = p.offset + p.size;
    if (!spans.empty() && begin - spans.back().second < ParamStore::kParamAlign)
      spans.back().second = end;
    else
      spans.emplace_back(begin, end);
  }
  return spans;
}

Adam::Adam(const ParamStore& params, const AdamConfig& config) : config_(config) {
  MMAN_CHECK(config.lr >= 0, "Adam: lr must be >= 0, got {}", config.lr);
  MMAN_CHECK(config.beta1 >= 0 && config.beta1 < 1, "Adam: beta1 must be in [0, 1), got {}", config.beta1);
  MMAN_CHECK(config.beta2 >= 0 && config.beta2 < 1, "Adam: beta2 must be in [0, 1), got {}", config.beta2);
  MMAN_CHECK(config.eps >= 0, "Adam: eps must be >= 0, got {}", config.eps);
  MMAN_CHECK(config.weight_decay >= 0, "Adam: weight_decay must be >= 0, got {}", config.weight_decay);
  state_.m.assign(params.values().size(), 0.0f);
  state_.v.assign(params.values().size(), 0.0f);
}

void Adam::set_state(AdamState state) {
  MMAN_CHECK(state.m.size() == state_.m.size() && state.v.size() == state_.v.size(),
             "Adam: saved moments have {} / {} values but the parameter arena has {}", state.m.size(),
             state.v.size(), state_.m.size());
  MMAN_CHECK(state.step >= 0, "Adam: negative step count {}", state.step);
  state_ = std::move(state);
}

void Adam::step(ParamStore& params) {
  MMAN_CHECK(params.values().size() == state_.m.size(),
             "Adam: the parameter arena has {} values but the optimiser was built for {}", params.values().size(),
             state_.m.size());
  state_.step += 1;
  const double t = static_cast<double>(state_.step);
  // Scalars as PyTorch forms them: Python doubles, rounded to float by the float kernels.
  const double bias_correction1 = 1.0 - std::pow(config_.beta1, t);
  const double bias_correction2 = 1.0 - std::pow(config_.beta2, t);
  const float neg_step_size = static_cast<float>(-(config_.lr / bias_correction1));
  const float bc2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const float beta1 = static_cast<float>(config_.beta1), one_minus_beta1 = static_cast<float>(1.0 - config_.beta1);
  const float beta2 = static_cast<float>(config_.beta2), one_minus_beta2 = static_cast<float>(1.0 - config_.beta2);
  const float eps = static_cast<float>(config_.eps);
  const float wd = static_cast<float>(config_.weight_decay);
  const bool decay = config_.weight_decay != 0.0;

  float* p = params.values().data();
  const float* grad = params.grads().data();
  float* m = state_.m.data();
  float* v = state_.v.data();
  for (const auto& [begin, end] : trainable_spans(params)) {
    const int64_t b = static_cast<int64_t>(begin), e = static_cast<int64_t>(end);
    // Element-wise, so the result is the same for any thread count.
#pragma omp parallel for schedule(static) if (e - b > 32768)
    for (int64_t i = b; i < e; ++i) {
      float g = grad[i];
      if (decay) g = g + wd * p[i];
      m[i] = m[i] * beta1 + one_minus_beta1 * g;
      v[i] = v[i] * beta2 + one_minus_beta2 * g * g;
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      p[i] = p[i] + neg_step_size * m[i] / denom;
    }
  }
}

namespace {

// Sum of squares of g[0, n) in double, in 8 lanes (element i of the chunk into lane i % 8)
// combined in a fixed order: a fixed association that the compiler vectorises (one running
// double sum cannot be, since reordering it would change the result).
double sum_squares(const float* g, size_t n) {
  constexpr size_t kLanes = 8;
  double lane[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (size_t k = 0; k < kLanes; ++k) lane[k] += static_cast<double>(g[i + k]) * static_cast<double>(g[i + k]);
  for (size_t k = 0; i < n; ++i, ++k) lane[k] += static_cast<double>(g[i]) * static_cast<double>(g[i]);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

}  // namespace

double grad_norm(const ParamStore& params) {
  const float* g = params.grads().data();
  // Fixed chunks, each summed by sum_squares, then the chunk sums added in order: the same
  // norm for any number of threads.
  constexpr size_t kChunk = 16384;
  std::vector<std::pair<size_t, size_t>> chunks;
  for (const auto& [begin, end] : trainable_spans(params))
    for (size_t c = begin; c < end; c += kChunk) chunks.emplace_back(c, std::min(end, c + kChunk));
  std::vector<double> partial(chunks.size(), 0.0);
  const int64_t n_chunks = static_cast<int64_t>(chunks.size());
#pragma omp parallel for schedule(static) if (n_chunks > 4)
  for (int64_t c = 0; c < n_chunks; ++c) {
    const auto& [begin, end] = chunks[static_cast<size_t>(c)];
    partial[static_cast<size_t>(c)] = sum_squares(g + begin, end - begin);
  }
  double sum = 0;
  for (double s : partial) sum += s;
  return std::sqrt(sum);
}

double clip_grad_norm(ParamStore& params, double max_norm) {
  MMAN_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be > 0, got {}", max_norm);
  const double norm = grad_norm(params);
  float* g = params.grads().data();
  const auto spans = trainable_spans(params);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    const float scale = static_cast<float>(coef);
    for (const auto& [begin, end] : spans)
      for (size_t i = begin; i < end; ++i) g[i] *= scale;
  }
  return norm;
}

void clip_grad_value(ParamStore& params, float clip_value) {
  MMAN_CHECK(clip_value > 0, "clip_grad_value: the clip value must be > 0, got {}", clip_value);
  float* g = params.grads().data();
  for (const auto& [begin, end] : trainable_spans(params))
    for (size_t i = begin; i < end; ++i) g[i] = std::min(clip_value, std::max(-clip_value, g[i]));
}

}  // namespace mman
