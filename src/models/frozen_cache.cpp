// FrozenOutputCache: content-keyed per-conversation outputs of frozen sub-networks (stage 2).
#include "src/models/frozen_cache.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "mman/error.h"
#include "mman/rng.h"
#include "src/core/packed_gemm.h"

namespace mman {
namespace {

// Above this many cached rows per sub-network (IEMOCAP has 7,433 utterances) the cache
// starts over rather than grow without bound on a stream of new data.
constexpr int64_t kMaxCachedRows = int64_t{1} << 21;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MMAN_HASH_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MMAN_HASH_CLONES
#endif

// A hash of n 32-bit words continuing `state`: 16 independent lanes, each updated as
// lane = (lane ^ word) * odd, a bijection of the lane for a fixed word, so changing any
// single word always changes the final lanes; the lanes are then mixed into 64 bits.
// Vectorised (the parameters of a fusion model are millions of words per forward).
MMAN_HASH_CLONES uint64_t hash_words(const uint32_t* w, size_t n, uint64_t state) {
  constexpr uint32_t kOdd = 0x9E3779B1u;
  uint32_t lanes[16];
  for (uint32_t j = 0; j < 16; ++j) lanes[j] = static_cast<uint32_t>(state >> (j % 2 * 32)) + j * 0x85EBCA77u;
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) lanes[j] = (lanes[j] ^ w[i + j]) * kOdd;
  for (int j = 0; i < n; ++i, ++j) lanes[j] = (lanes[j] ^ w[i]) * kOdd;
  uint64_t h = mix64(state ^ n);
  for (int j = 0; j < 16; j += 2) h = mix64(h ^ (static_cast<uint64_t>(lanes[j]) << 32 | lanes[j + 1]));
  return h;
}

uint64_t hash_floats(const float* x, size_t n, uint64_t state) {
  static_assert(sizeof(float) == sizeof(uint32_t), "float is 32 bits");
  return hash_words(reinterpret_cast<const uint32_t*>(x), n, state);
}

// FrozenOutputCache::hits() / misses().
std::atomic<int64_t> g_hits{0}, g_misses{0};

}  // namespace

int64_t FrozenOutputCache::capacity_rows() { return kMaxCachedRows; }
int64_t FrozenOutputCache::hits() { return g_hits.load(std::memory_order_relaxed); }
int64_t FrozenOutputCache::misses() { return g_misses.load(std::memory_order_relaxed); }

bool FrozenOutputCache::available() { return std::strcmp(detail::packed_gemm_isa(), "generic") != 0; }

void FrozenOutputCache::set_params(const ParamStore& params, const std::string& prefix) {
  param_ids_.clear();
  for (int id = 0; id < params.count(); ++id)
    if (params.info(id).name.compare(0, prefix.size(), prefix) == 0) param_ids_.push_back(id);
  entries_.clear();
  cached_rows_ = 0;
  have_fingerprint_ = false;
}

void FrozenOutputCache::conversation_keys(const Batch& batch, std::vector<uint64_t>& keys) {
  const PackedLayout& layout = batch.layout;
  keys.resize(static_cast<size_t>(layout.convs()));
  for (int b = 0; b < layout.convs(); ++b) {
    const int len = layout.lengths[static_cast<size_t>(b)];
    uint64_t key = mix64(static_cast<uint64_t>(len) ^ (batch.features.size() << 32));
    for (const Tensor& f : batch.features) {
      key = mix64(key ^ static_cast<uint64_t>(f.cols()));
      for (int t = 0; t < len; ++t)
        key = hash_floats(f.row(layout.row(b, t)), static_cast<size_t>(f.cols()), key);
    }
    keys[static_cast<size_t>(b)] = key;
  }
}

void FrozenOutputCache::refresh(const ParamStore& params) {
  uint64_t fp = mix64(param_ids_.size());
  for (int id : param_ids_) fp = hash_floats(params.value(id), params.info(id).size, fp);
  if (!have_fingerprint_ || fp != fingerprint_) {
    entries_.clear();
    cached_rows_ = 0;
    fingerprint_ = fp;
    have_fingerprint_ = true;
  }
}

bool FrozenOutputCache::contains(const std::vector<uint64_t>& keys, const PackedLayout& layout) const {
  MMAN_CHECK(static_cast<int64_t>(keys.size()) == layout.convs(),
             "frozen output cache: {} conversation keys for a batch of {} conversations", keys.size(), layout.convs());
  for (int b = 0; b < layout.convs(); ++b) {
    const auto it = entries_.find(keys[static_cast<size_t>(b)]);
    if (it == entries_.end() || it->second.length != layout.lengths[static_cast<size_t>(b)]) return false;
  }
  return true;
}

bool FrozenOutputCache::begin(const ParamStore& params, const Batch& batch, const std::vector<uint64_t>& keys) {
  refresh(params);
  const bool all = contains(keys, batch.layout);
  keys_ = keys;  // reuses its capacity
  (all ? g_hits : g_misses).fetch_add(1, std::memory_order_relaxed);
  return all;
}

void FrozenOutputCache::store(const Batch& batch, const float* probs, int64_t ld, int col, int width,
                              const Tensor* attention) {
  store(keys_, batch, probs, ld, col, width, attention);
}

void FrozenOutputCache::store(const std::vector<uint64_t>& keys, const Batch& batch, const float* probs, int64_t ld,
                              int col, int width, const Tensor* attention) {
  const PackedLayout& layout = batch.layout;
  MMAN_CHECK(static_cast<int64_t>(keys.size()) == layout.convs(),
             "frozen output cache: {} conversation keys for a batch of {} conversations", keys.size(), layout.convs());
  if (cached_rows_ + layout.rows() > kMaxCachedRows) {
    entries_.clear();
    cached_rows_ = 0;
  }
  attention_cols_ = attention != nullptr ? static_cast<int>(attention->cols()) : 0;
  for (int b = 0; b < layout.convs(); ++b) {
    Entry& e = entries_[keys[static_cast<size_t>(b)]];
    if (e.length == 0) cached_rows_ += layout.lengths[static_cast<size_t>(b)];
    e.length = layout.lengths[static_cast<size_t>(b)];
    e.probs.resize(static_cast<size_t>(e.length) * width);
    e.attention.resize(static_cast<size_t>(e.length) * attention_cols_);
    for (int t = 0; t < e.length; ++t) {
      const int64_t r = layout.row(b, t);
      std::copy_n(probs + r * ld + col, width, e.probs.data() + static_cast<size_t>(t) * width);
      if (attention_cols_ > 0)
        std::copy_n(attention->row(r), attention_cols_,
                    e.attention.data() + static_cast<size_t>(t) * attention_cols_);
    }
  }
}

void FrozenOutputCache::load(const Batch& batch, float* probs, int64_t ld, int col, int width,
                             Tensor* attention) const {
  const PackedLayout& layout = batch.layout;
  if (attention != nullptr && attention_cols_ > 0) attention->resize(layout.rows(), attention_cols_);
  for (int b = 0; b < layout.convs(); ++b) {
    const Entry& e = entries_.at(keys_[static_cast<size_t>(b)]);
    for (int t = 0; t < e.length; ++t) {
      const int64_t r = layout.row(b, t);
      std::copy_n(e.probs.data() + static_cast<size_t>(t) * width, width, probs + r * ld + col);
      if (attention != nullptr && attention_cols_ > 0)
        std::copy_n(e.attention.data() + static_cast<size_t>(t) * attention_cols_, attention_cols_,
                    attention->row(r));
    }
  }
}

}  // namespace mman
