// Random numbers: a small sequential generator (shuffles, init) and a counter-based one
// (dropout) that CPU and GPU evaluate identically.
#pragma once
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#if defined(__CUDACC__)
#define MMAN_HD __host__ __device__
#else
#define MMAN_HD
#endif

namespace mman {

// splitmix64's output function: a bijective 64-bit mixer with good avalanche.
MMAN_HD inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A key for one independent stream of counter-based numbers (e.g. one dropout call of
// one layer in one training step).
MMAN_HD inline uint64_t rng_key(uint64_t seed, uint64_t stream) { return mix64(seed ^ mix64(stream)); }

// Uniform in [0, 1) as a pure function of (key, index): every thread and both backends
// draw the same value for the same element, whatever the schedule.
MMAN_HD inline float counter_uniform(uint64_t key, uint64_t index) {
  return static_cast<float>(mix64(key + 0x632BE59BD9B4E019ull * index) >> 40) * (1.0f / 16777216.0f);
}

// Sequential generator with a one-word state (easy to checkpoint for exact resume).
// Fully specified here, so results do not depend on the standard library's
// distributions.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : state_(seed) {}
  uint64_t next_u64() {
    state_ += 0x9E3779B97F4A7C15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Standard normal (Box-Muller; one value per call, the pair's second is dropped for a
  // simple state).
  double normal() {
    double u1 = uniform();
    const double u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  // Uniform integer in [0, n), n > 0 (rejection sampling, no modulo bias).
  uint64_t below(uint64_t n) {
    const uint64_t limit = ~0ull - (~0ull % n);
    uint64_t x;
    do x = next_u64();
    while (x >= limit);
    return x % n;
  }
  template <class T>
  void shuffle(std::vector<T>& v) {  // Fisher-Yates
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(below(i))]);
  }
  uint64_t state() const { return state_; }
  void set_state(uint64_t s) { state_ = s; }

 private:
  uint64_t state_;
};

}  // namespace mman
