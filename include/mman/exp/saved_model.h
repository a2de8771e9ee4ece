// Rebuilding a trained model from a checkpoint for `eval` and `predict`.
#pragma once
#include <memory>
#include <string>

#include "mman/data/batch.h"
#include "mman/data/dataset.h"
#include "mman/data/protocol.h"
#include "mman/models/model.h"
#include "mman/train/checkpoint.h"

namespace mman {

struct SavedModel {
  std::unique_ptr<Model> model;
  CheckpointMeta meta;
  LabelProtocol protocol;
  SplitIndices splits;        // of the data it was loaded against
  std::string normalization;  // how the data were standardised, for messages; empty: they were not
};

// Reads the checkpoint's attributes, rebuilds the model from its `config` attribute
// (the run's resolved experiment YAML; without one, e.g. a file written by h5py from a
// PyTorch state_dict, the model type's defaults), prepares `ds` as training did
// (protocol, splits, and when the config says normalize: the training statistics stored in
// the checkpoint, or for a checkpoint without them, statistics fitted on this file's
// training split) and loads the parameters. `protocol_name` overrides the checkpoint's
// protocol when not empty. Every problem is an mman::Error naming the file.
SavedModel load_saved_model(const std::string& checkpoint, Dataset& ds, const std::string& protocol_name = "");

}  // namespace mman
