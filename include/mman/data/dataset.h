// Dataset: the in-memory form of an `mman-dataset/1` HDF5 file, its reader, writer and checks.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mman/tensor.h"

namespace mman {

inline constexpr const char* kDatasetSchema = "mman-dataset/1";

// A set of conversations stored flat (CSR): utterances of conversation c are the rows
// [conv_offsets[c], conv_offsets[c+1]) of every per-utterance array. See SPEC section 1.
struct Dataset {
  std::string source;                       // file it was read from (for messages); may be empty
  std::string synthetic;                    // root attribute synthetic: non-empty marks generated data
                                            // (what generated it, e.g. "iemocap preset, seed 0")
  std::vector<std::string> label_names;     // root attribute label_names, e.g. hap,sad,...
  std::vector<std::string> modalities;      // root attribute modalities, e.g. audio,visual,text
  std::vector<Tensor> features;             // per modality, [N x d_m], /features/<modality>
  std::vector<int32_t> labels;              // [N] index into label_names, or -1 (unlabelled)
  std::vector<std::string> speakers;        // [N]
  std::vector<std::string> utterance_ids;   // [N]
  std::vector<std::string> conv_ids;        // [C]
  std::vector<std::string> conv_sessions;   // [C]
  std::vector<int64_t> conv_offsets;        // [C + 1], 0 ... N
  std::map<std::string, std::vector<std::string>> splits;  // name -> conversation ids

  int64_t num_utterances() const { return static_cast<int64_t>(labels.size()); }
  int num_conversations() const { return static_cast<int>(conv_ids.size()); }
  int conv_length(int c) const {
    return static_cast<int>(conv_offsets[static_cast<size_t>(c) + 1] - conv_offsets[static_cast<size_t>(c)]);
  }
  int modality_index(const std::string& name) const;  // -1 when absent
  int64_t dim(int m) const { return features[static_cast<size_t>(m)].cols(); }
};

// Checks every invariant of SPEC section 1 (shapes, offsets, ids, splits, labels,
// finiteness). Throws mman::Error "<source>: <hdf5 path>: <problem>" on the first
// violation. read_dataset() and write_dataset() both call it.
void validate_dataset(const Dataset& ds);

// Reads and validates a file; any problem (not HDF5, truncated, wrong schema, missing
// dataset, wrong rank/dtype, ...) throws mman::Error naming the file, the HDF5 path
// and the problem. Never crashes on hostile input.
Dataset read_dataset(const std::string& path);

// Validates, then writes to a temporary name in the same folder and renames it into
// place, so an interrupted write never leaves a partial file at `path`.
void write_dataset(const Dataset& ds, const std::string& path);

}  // namespace mman
