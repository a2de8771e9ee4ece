// Mode: training (dropout active) or evaluation (dropout off, nothing kept for backward).
#pragma once
#include <cstdint>

namespace mman {

enum class Mode { Train, Eval };

// Where a layer's dropout draws its randomness: counter_uniform(rng_key(seed, stream), i)
// for element i, with stream = step * kDropoutStreamsPerStep + the layer's own slot.
// A pure function of (seed, step, slot, element) keeps CPU, GPU and any thread count in
// agreement and makes resume exact.
struct DropoutKey {
  uint64_t seed = 0;
  uint64_t step = 0;  // global optimiser step (or any counter unique per forward pass)
};
inline constexpr uint64_t kDropoutStreamsPerStep = 1024;

}  // namespace mman
