// Splits, normalisation and mini-batches of whole conversations.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mman/data/dataset.h"
#include "mman/data/protocol.h"
#include "mman/packed.h"
#include "mman/rng.h"
#include "mman/tensor.h"

namespace mman {

// Conversation indices (into Dataset) of the three splits used by training.
struct SplitIndices {
  std::vector<int> train, valid, test;
  bool valid_from_file = false;  // false: valid was carved from train
};

// train and test come from the file's splits; valid too when the file has one,
// otherwise round(valid_fraction * |train|) conversations are drawn from train with a
// generator seeded by `seed` (0 < valid_fraction < 1; valid_fraction == 0 gives an
// empty valid split). Indices within a split keep file order.
SplitIndices resolve_splits(const Dataset& ds, double valid_fraction, uint64_t seed);

// Per-modality mean and standard deviation fitted on some conversations only (the
// training split: the test split never informs preprocessing).
struct Normalizer {
  std::vector<std::vector<float>> mean, stddev;  // [modality][d]
  static Normalizer fit(const Dataset& ds, const std::vector<int>& convs);
  void apply(Dataset& ds) const;  // in place, every utterance; zero deviation -> 1
};

// One mini-batch: whole conversations packed time-major (see PackedLayout), sorted by
// decreasing length. Every layer reads these buffers directly.
struct Batch {
  std::vector<int> conv_index;         // [B] dataset conversation of each batch slot
  PackedLayout layout;
  std::vector<Tensor> features;        // per modality [rows x d_m]
  std::vector<int32_t> targets;        // [rows] protocol class, -1 = context only
  std::vector<int64_t> utterance;      // [rows] dataset utterance index of each row
  int64_t num_labelled = 0;            // rows with targets >= 0

  int64_t rows() const { return layout.rows(); }
};

// Fills `out` with the given conversations (any order; they are sorted by length,
// ties by position in `convs`, inside). Reuses out's buffers.
void make_batch(const Dataset& ds, const LabelProtocol& protocol, const std::vector<int>& convs, Batch& out);

// The conversations of one epoch cut into batches of `batch_size` conversations, in
// file order or shuffled by `rng` (which advances).
std::vector<std::vector<int>> plan_batches(const std::vector<int>& convs, int batch_size, Rng* shuffle_rng);

}  // namespace mman
