// Dropout driven by the counter-based RNG: the mask is a pure function of (seed, step, slot, element).
#pragma once
#include <cstdint>

#include "mman/layers/mode.h"
#include "mman/rng.h"

namespace mman {

// Key of the stream a dropout at `slot` uses in the forward pass keyed by `key`.
inline uint64_t dropout_stream(const DropoutKey& key, uint64_t slot) {
  return rng_key(key.seed, key.step * kDropoutStreamsPerStep + slot);
}
// Scale of element e: 0 when dropped (counter_uniform < p), else 1/(1-p).
inline float dropout_scale(uint64_t stream, uint64_t element, float p) {
  return counter_uniform(stream, element) < p ? 0.0f : 1.0f / (1.0f - p);
}

// What backward needs: the mask is recomputed from the key rather than stored, so a
// dropout costs no memory and forward and backward agree by construction.
struct DropoutContext {
  Mode mode = Mode::Eval;
  DropoutKey key;
};

// Inverted dropout with probability p (0 <= p < 1) at a fixed slot. Element e of the
// [rows x cols] input (e = r * cols + c) is dropped iff
// counter_uniform(rng_key(key.seed, key.step * kDropoutStreamsPerStep + slot), e) < p;
// kept elements are scaled by 1/(1-p). Mode::Eval (or p == 0) is the identity. Each
// dropout of a model has its own slot (< kDropoutStreamsPerStep), so no two share a mask.
class Dropout {
 public:
  Dropout() = default;
  Dropout(float p, uint64_t slot);

  float p() const { return p_; }
  uint64_t slot() const { return slot_; }
  bool active(Mode mode) const { return mode == Mode::Train && p_ > 0.0f; }

  // y = dropout(x) over n contiguous elements, numbered from 0; y may alias x.
  void forward(const float* x, float* y, int64_t n, Mode mode, const DropoutKey& key, DropoutContext& ctx) const;
  // dx = dy * mask (the same mask as forward); dx may alias dy.
  void backward(const float* dy, float* dx, int64_t n, const DropoutContext& ctx) const;

 private:
  float p_ = 0.0f;
  uint64_t slot_ = 0;
};

}  // namespace mman
