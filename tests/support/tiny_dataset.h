// Small, valid in-memory datasets (mman-dataset/1 layout) for tests of any unit.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mman/data/dataset.h"
#include "mman/rng.h"
#include "mman/tensor.h"

namespace mman::test {

// What tiny_dataset() builds. Conversations are stored train first, then valid (when
// any), then test; their lengths are ragged on purpose so packing is exercised.
struct TinySpec {
  std::vector<int> train_lengths = {5, 3, 7, 2, 4};
  std::vector<int> valid_lengths = {};  // non-empty: the file carries a `valid` split
  std::vector<int> test_lengths = {6, 1, 3};
  std::vector<std::string> modalities = {"audio", "visual", "text"};
  std::vector<int64_t> dims = {4, 6, 3};  // one per modality
  std::vector<std::string> label_names = {"hap", "sad", "neu", "ang", "exc", "fru"};
  int unlabelled_every = 7;  // every k-th utterance (k > 0) gets label -1; 0: none
  uint64_t seed = 1;
};

// A dataset that passes validate_dataset(). Conversation c is "conv<c>" in session
// "Ses0<1 + c % 5>"; utterance t of it is "conv<c>_u<t>", spoken alternately by "M" and
// "F". Labels cycle through the label names with a seeded offset per conversation, so
// every class occurs; features are seeded uniform values in [-1, 1) plus the raw label,
// so rows are distinct and easy to tell apart.
inline Dataset tiny_dataset(const TinySpec& spec = TinySpec()) {
  Dataset ds;
  ds.label_names = spec.label_names;
  ds.modalities = spec.modalities;
  std::vector<int> lengths;
  std::vector<std::string> split_of;
  auto add = [&](const std::vector<int>& lens, const char* split) {
    for (int len : lens) {
      lengths.push_back(len);
      split_of.push_back(split);
    }
  };
  add(spec.train_lengths, "train");
  add(spec.valid_lengths, "valid");
  add(spec.test_lengths, "test");

  Rng rng(spec.seed);
  const int num_labels = static_cast<int>(spec.label_names.size());
  ds.conv_offsets.push_back(0);
  for (size_t c = 0; c < lengths.size(); ++c) {
    const std::string id = "conv" + std::to_string(c);
    ds.conv_ids.push_back(id);
    ds.conv_sessions.push_back("Ses0" + std::to_string(1 + c % 5));
    ds.splits[split_of[c]].push_back(id);
    const int offset = num_labels > 0 ? static_cast<int>(rng.below(static_cast<uint64_t>(num_labels))) : 0;
    for (int t = 0; t < lengths[c]; ++t) {
      const int64_t row = static_cast<int64_t>(ds.labels.size());
      const bool unlabelled = num_labels == 0 || (spec.unlabelled_every > 0 && (row + 1) % spec.unlabelled_every == 0);
      ds.labels.push_back(unlabelled ? -1 : (offset + t) % num_labels);
      ds.speakers.push_back(t % 2 == 0 ? "M" : "F");
      ds.utterance_ids.push_back(id + "_u" + std::to_string(t));
    }
    ds.conv_offsets.push_back(static_cast<int64_t>(ds.labels.size()));
  }
  const int64_t n = static_cast<int64_t>(ds.labels.size());
  for (size_t m = 0; m < spec.modalities.size(); ++m) {
    Tensor t(n, spec.dims[m]);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < t.cols(); ++j)
        t.at(r, j) = static_cast<float>(rng.uniform(-1.0, 1.0)) + static_cast<float>(ds.labels[static_cast<size_t>(r)]);
    ds.features.push_back(std::move(t));
  }
  return ds;
}

}  // namespace mman::test
