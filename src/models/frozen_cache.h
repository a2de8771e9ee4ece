// FrozenOutputCache: a frozen sub-network's class probabilities per conversation, computed once, reused.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "mman/data/batch.h"
#include "mman/params.h"
#include "mman/tensor.h"

namespace mman {

// Stage 2 of clstm_lf and mman trains a small head on the probabilities of frozen
// sub-networks, which run in evaluation mode: a deterministic function of the
// sub-network's parameters and of one conversation's features (conversations never
// influence each other). Recomputing them for every batch of every epoch is most of a
// stage-2 epoch, so they are kept per conversation, keyed by content:
//   - a fingerprint of the sub-network's parameter values, taken at every forward (a
//     change, e.g. weights copied in or loaded, empties the cache);
//   - a hash of the conversation's feature rows (all modalities), so the same
//     conversation in another batch, split or file hits, and different data misses.
// Reusing a stored row is exact, not an approximation: with the packed GEMM kernels a
// row's forward result does not depend on the other rows of its batch or on the thread
// count (src/core/packed_gemm.h), so the stored bits are the bits a recomputation would
// give. Where those kernels are unavailable (no AVX2+FMA) the cache stays off.
class FrozenOutputCache {
 public:
  // Whether caching is exact on this CPU (see above).
  static bool available();

  // Parameter tensors (ids into the store) of the sub-network, fixed at construction.
  void set_params(const ParamStore& params, const std::string& prefix);

  // The content keys of a batch's conversations (a hash of each one's feature rows, all
  // modalities), the same for every sub-network's cache: computed once per forward.
  static void conversation_keys(const Batch& batch, std::vector<uint64_t>& keys);

  // Refreshes the parameter fingerprint, clearing the cache when the values changed.
  void refresh(const ParamStore& params);
  // Whether every conversation of a batch (its conversation_keys() and layout) is cached.
  bool contains(const std::vector<uint64_t>& keys, const PackedLayout& layout) const;

  // Starts a forward on `batch`, whose conversation_keys() are `keys`: refresh(), then
  // contains(). Caches of different sub-networks may begin, load and store on different
  // threads at the same time.
  bool begin(const ParamStore& params, const Batch& batch, const std::vector<uint64_t>& keys);
  // After a miss, the caller computed the batch: stores each conversation's rows of
  // `probs` (columns [col, col + width) of a [rows x ld] matrix) and of `attention`
  // (rows x attention->cols(), may be null).
  void store(const Batch& batch, const float* probs, int64_t ld, int col, int width, const Tensor* attention);
  // The same for a batch given with its keys, outside a begin() (filling ahead of the
  // batches that will need it).
  void store(const std::vector<uint64_t>& keys, const Batch& batch, const float* probs, int64_t ld, int col,
             int width, const Tensor* attention);
  // On a hit: writes the cached rows into probs columns [col, col + width) and, when the
  // sub-network has attention and `attention` is not null, into it (resized to
  // [rows x its width]).
  void load(const Batch& batch, float* probs, int64_t ld, int col, int width, Tensor* attention) const;
  bool has_attention() const { return attention_cols_ > 0; }

  // Rows a cache holds at most before it starts over (kMaxCachedRows).
  static int64_t capacity_rows();
  // Process-wide counts of begin() calls that found every conversation of the batch cached
  // (hits) and of those that did not (misses): diagnostics, read by tests.
  static int64_t hits();
  static int64_t misses();

 private:
  struct Entry {
    int length = 0;
    std::vector<float> probs;      // length x width
    std::vector<float> attention;  // length x attention_cols_
  };
  std::vector<int> param_ids_;
  uint64_t fingerprint_ = 0;
  bool have_fingerprint_ = false;
  int attention_cols_ = 0;
  int64_t cached_rows_ = 0;
  std::unordered_map<uint64_t, Entry> entries_;
  std::vector<uint64_t> keys_;  // of the current batch's conversations
};

}  // namespace mman
