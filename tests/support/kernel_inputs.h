// Inputs shared by the kernel tests on the SIMT layer (tests/test_kernels_*.cpp) and natively on a GPU
// (tests/test_kernels_native.cpp), so that both check the very same cases.
#pragma once
#include <cfloat>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "mman/params.h"
#include "mman/rng.h"
#include "mman/tensor.h"

namespace mman::test {

inline float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// ---- elementwise ----

// Values at ReLU's edges: signed zeros, NaNs with a payload and either sign (the CPU keeps a
// NaN as it is, bits included), infinities, denormals of both signs, the largest floats.
inline std::vector<float> special_values() {
  const float inf = std::numeric_limits<float>::infinity();
  return {0.0f,  -0.0f, from_bits(0x7FC01234u), from_bits(0xFFC00042u), std::numeric_limits<float>::quiet_NaN(),
          inf,   -inf,  1e-40f, -1e-40f, std::numeric_limits<float>::denorm_min(), -FLT_MAX, FLT_MAX, 1e-30f, -1e30f};
}

// Random values in [-3, 3) with the special ones mixed in at a spacing prime to the block size.
inline std::vector<float> relu_inputs(size_t n, uint64_t seed) {
  Rng rng(seed);
  const std::vector<float> special = special_values();
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = i % 5 == 3 ? special[(i / 5 + seed) % special.size()] : static_cast<float>(rng.uniform(-3, 3));
  return v;
}

// ---- masked cross-entropy ----

inline Tensor random_logits(int64_t rows, int cols, double scale, uint64_t seed) {
  Tensor t(rows, cols);
  Rng rng(seed);
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(rng.uniform(-scale, scale));
  return t;
}

// Targets in [0, classes), each masked (-1) with probability `masked`.
inline std::vector<int32_t> random_targets(int64_t rows, int classes, double masked, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(rows));
  for (int32_t& x : t) x = rng.uniform() < masked ? -1 : static_cast<int32_t>(rng.below(static_cast<uint64_t>(classes)));
  return t;
}

// ---- arena kernels (Adam, gradient clipping) ----

// Tensors of awkward sizes (padding between them), one frozen in the middle and one at the end,
// so the arena has several trainable spans; values standard normal.
inline ParamStore adam_store(uint64_t seed) {
  ParamStore ps;
  ps.add("a.weight", {13, 21});
  ps.add("a.bias", {13});
  ps.add("frozen.weight", {5, 7});
  ps.add("b.weight", {40, 31});
  ps.add("b.bias", {1});
  ps.add("tail.frozen", {9});
  ps.set_trainable("frozen.", false);
  ps.set_trainable("tail.", false);
  Rng rng(seed);
  for (const ParamInfo& p : ps.infos())
    for (size_t i = 0; i < p.size; ++i) ps.values()[p.offset + i] = static_cast<float>(rng.normal());
  return ps;
}

// A frozen tensor between trainable ones; `big` makes one span longer than a block's share.
// Gradients scale * N(0, 1), padding zero.
inline ParamStore clip_store(int64_t big, double scale, uint64_t seed) {
  ParamStore ps;
  ps.add("a.weight", {17, 3});
  ps.add("frozen.weight", {4, 4});
  ps.add("b.weight", {big});
  ps.add("c.bias", {5});
  ps.set_trainable("frozen.", false);
  Rng rng(seed);
  for (float& g : ps.grads()) g = 0.0f;
  for (const ParamInfo& p : ps.infos())
    for (size_t i = 0; i < p.size; ++i) ps.grads()[p.offset + i] = static_cast<float>(scale * rng.normal());
  return ps;
}

}  // namespace mman::test
