// Counter-based inverted dropout: forward and backward recompute the same mask.
#include "mman/layers/dropout.h"

#include <algorithm>

#include "mman/error.h"

namespace mman {

Dropout::Dropout(float p, uint64_t slot) : p_(p), slot_(slot) {
  MMAN_CHECK(p >= 0.0f && p < 1.0f, "dropout probability {} is outside [0, 1)", p);
  MMAN_CHECK(slot < kDropoutStreamsPerStep, "dropout slot {} is not below {}", slot, kDropoutStreamsPerStep);
}

namespace {
// Elements [begin, end) of apply_mask, compiled for AVX-512 (whose 64-bit multiplies
// vectorise the counter hash), AVX2 and baseline x86-64, picked by the CPU at load time;
// integer hashing and one multiply per element, so every clone gives the same bits.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void mask_range(const float* x, float* y, int64_t begin, int64_t end, float p, float keep, uint64_t stream) {
  for (int64_t e = begin; e < end; ++e)
    y[e] = counter_uniform(stream, static_cast<uint64_t>(e)) < p ? 0.0f : x[e] * keep;
}

// y[e] = x[e] * scale(e); shared by forward and backward (the mask is the same function).
void apply_mask(const float* x, float* y, int64_t n, float p, uint64_t stream) {
  const float keep = 1.0f / (1.0f - p);
  constexpr int64_t kChunk = 16384;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t b = 0; b < n; b += kChunk) mask_range(x, y, b, std::min(n, b + kChunk), p, keep, stream);
}
}  // namespace

void Dropout::forward(const float* x, float* y, int64_t n, Mode mode, const DropoutKey& key,
                      DropoutContext& ctx) const {
  ctx.mode = mode;
  ctx.key = key;
  if (!active(mode)) {
    if (y != x) std::copy_n(x, n, y);
    return;
  }
  apply_mask(x, y, n, p_, dropout_stream(key, slot_));
}

void Dropout::backward(const float* dy, float* dx, int64_t n, const DropoutContext& ctx) const {
  if (!active(ctx.mode)) {
    if (dx != dy) std::copy_n(dy, n, dx);
    return;
  }
  apply_mask(dy, dx, n, p_, dropout_stream(ctx.key, slot_));
}

}  // namespace mman
