// Checkpoints (`mman-checkpoint/1`): parameters by PyTorch state_dict name, run attributes, trainer state.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mman/params.h"
#include "mman/train/optimizer.h"

namespace mman {

inline constexpr const char* kCheckpointSchema = "mman-checkpoint/1";

// Root attributes (docs/checkpoints.md). A loader needs `schema`, and `model_type` when
// it rebuilds or checks the model; the rest describes the run.
struct CheckpointMeta {
  std::string model_type;       // clstm_speech, ..., mman (required)
  std::string model_name;       // instance name in the experiment (default: model_type)
  std::string config;           // resolved config (YAML or JSON text)
  std::string protocol;         // label protocol, e.g. iemocap4 (empty when unknown)
  int64_t epoch = 0;            // epoch whose parameters are stored (1-based; 0 = untrained)
  uint64_t seed = 0;
  std::string metrics = "{}";   // JSON text (e.g. validation/test metrics of that epoch)
  std::string mman_version;     // written by write_checkpoint (this build's version)
};

// One row of a training history (`metrics.csv`).
struct EpochRecord {
  int epoch = 0;  // 1-based
  double train_loss = 0, train_accuracy = 0;
  double valid_loss = 0, valid_accuracy = 0, valid_ua = 0;
  double seconds = 0;  // wall time of the epoch, validation included
};

// Everything a trainer needs to continue a run exactly (the `/train_state` group). A
// state saved between two batches of an epoch carries that epoch's partial sums.
struct TrainState {
  AdamState adam;                 // step count and both moment arenas
  uint64_t shuffle_state = 0;     // the conversation-order Rng's state before the current epoch's shuffle
  int epoch = 0;                  // completed epochs
  int64_t batch = 0;              // batches of the next epoch already done (0 at an epoch boundary)
  int64_t global_step = 0;        // optimiser steps so far (dropout keys)
  int best_epoch = 0;             // 0 = none yet
  double best_metric = 0;         // validation accuracy of best_epoch
  int bad_epochs = 0;             // epochs since the best one (early stopping counter)
  std::vector<float> best_values; // parameter arena at best_epoch (empty when none)
  std::vector<EpochRecord> history;
  // Partial sums of the epoch in progress (meaningful when batch > 0).
  double partial_loss_sum = 0;    // sum over batches of loss * scored predictions
  int64_t partial_scored = 0;
  int64_t partial_correct = 0;
  double partial_seconds = 0;
  bool finished = false;          // training ended (parameters are the restored best)
  bool stopped_early = false;
};

// The input standardisation a model was trained with (a run's `data.normalize: true`): per
// modality, by name, the mean and deviation fitted on the training split. Stored under
// /normalization/<modality>/mean and /std (float32 [d]), so that `eval` and `predict` apply the
// training statistics to whatever file they read. Optional: files without it still load.
struct InputNormalization {
  std::vector<std::string> modalities;
  std::vector<std::vector<float>> mean, stddev;  // [modality][d]; stddev > 0
  bool empty() const { return modalities.empty(); }
};

// Writes params (every tensor, frozen ones included, as float32 [PyTorch shape] at
// /<name>), the root attributes and, when given, /train_state and /normalization. The file
// is written under a temporary name and renamed into place, so `path` is never left
// half-written.
void write_checkpoint(const std::string& path, const ParamStore& params, const CheckpointMeta& meta,
                      const TrainState* state = nullptr, const InputNormalization* normalization = nullptr);
// Reads /normalization into *out and returns true; false (out unchanged) when the file has
// none. Errors (another shape, mean and std of different lengths, a non-finite value, a
// deviation <= 0) name the file and dataset.
bool read_checkpoint_normalization(const std::string& path, InputNormalization* out);

// Reads and checks the root attributes (schema and model_type present, schema right).
CheckpointMeta read_checkpoint_meta(const std::string& path);
bool checkpoint_has_train_state(const std::string& path);

// Loads every tensor of `params` from the file. Checks, each failing with one
// mman::Error "<file>: <dataset path>: <problem>": the schema; the model type when
// expected_type is not empty; every expected tensor present, a float type (float32;
// other float widths are converted) and its exact shape; no tensor in the file that
// `params` does not have (all such are listed). Parameters are found at the root
// (/lstm.weight_ih_l0) or, for files written that way, under /params. When `state` is
// not null the file must have /train_state, which is read and checked against the
// store's layout. On error neither `params` nor `state` is changed.
CheckpointMeta load_checkpoint(const std::string& path, ParamStore& params, const std::string& expected_type = "",
                               TrainState* state = nullptr);

}  // namespace mman
