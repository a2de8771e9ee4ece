// The trainer: evaluation, one training phase with early stopping and exact resume, staged training of composites.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mman/data/batch.h"
#include "mman/data/dataset.h"
#include "mman/data/protocol.h"
#include "mman/models/model.h"
#include "mman/tensor.h"
#include "mman/train/checkpoint.h"
#include "mman/train/metrics.h"
#include "mman/train/optimizer.h"

namespace mman {

// Hyperparameters of a training run (SPEC section 2 defaults, from the authors' code).
struct TrainConfig {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;   // PyTorch's L2 Adam
  int batch_size = 10;         // conversations per batch
  int max_epochs = 100;
  int patience = 10;           // stop after this many epochs without a better validation accuracy; 0 = off
  double clip_norm = 5.0;      // global L2 norm of the trainable gradients; 0 = off
  double clip_value = 0.0;     // element clamp (the authors' 1e-3); 0 = off. Both set: clamp, then norm
  uint64_t seed = 0;           // conversation order, dropout, and init_model()
  int threads = 0;             // > 0: set_num_threads(threads) before training; 0: leave as set

  AdamConfig adam() const { return AdamConfig{lr, beta1, beta2, eps, weight_decay}; }
};

// What a model needs from the data: the modalities and widths of the file and the
// output width of the protocol.
DataShape data_shape_of(const Dataset& ds, const LabelProtocol& protocol);

// PyTorch-default initialisation from Rng(rng_key(seed, kInitStream)), the one init every
// training entry point uses, so a model trained alone and the same model trained as a
// stage-1 sub-network start from the same weights.
inline constexpr uint64_t kInitStream = 0x696e6974;  // "init"
void init_model(Model& model, uint64_t seed);

// ---- evaluation ----

// A model's outputs on some conversations, in their order, utterances in time order.
struct Evaluation {
  Metrics metrics;
  double loss = 0;                    // masked cross-entropy, mean over the scored predictions
  std::vector<int64_t> utterances;    // [rows] dataset utterance index
  std::vector<int32_t> targets;       // [rows] protocol class, -1 = context only
  std::vector<int32_t> predictions;   // [rows * heads] (predict_classes)
  Tensor probabilities;               // [rows x num_outputs]: softmax per head
  Tensor attention;                   // [rows x 9] for MMA models (model.attention()), else empty
};

// Runs the model in Mode::Eval (no dropout, no gradient work) over `convs` in batches of
// `batch_size` conversations (file order) and scores it. Nothing in the model or its
// parameters changes.
Evaluation evaluate(Model& model, const Dataset& ds, const LabelProtocol& protocol, const std::vector<int>& convs,
                    int batch_size = 10);

// ---- training ----

struct TrainResult {
  std::string model_name;
  std::vector<EpochRecord> history;  // one row per completed epoch
  int best_epoch = 0;                // 1-based; 0 when no epoch completed
  double best_valid_accuracy = 0;
  bool stopped_early = false;        // patience ran out before max_epochs
  bool interrupted = false;          // a stop was requested: training is not finished
  int64_t steps = 0;                 // optimiser steps
  double seconds = 0;                // training time, over all resumed parts
  int64_t trainable_parameters = 0, total_parameters = 0;
};

struct TrainHooks {
  // After every completed epoch (model selection done, the model still holding that
  // epoch's parameters), e.g. for progress and metrics.csv.
  std::function<void(const std::string& model_name, const EpochRecord& record, int max_epochs)> on_epoch;
  // Polled before every batch (and, for clstm_lf and mman in stage 2, between the groups of
  // the frozen sub-networks' precomputation in the first epoch, on the calling thread);
  // returning true stops training before the next batch: the state is saved
  // (when state_path gives a file) and the result comes back with interrupted = true and
  // the parameters as they are at that point.
  std::function<bool()> should_stop;
  // The resumable state file (a checkpoint with /train_state) of the phase training the
  // model with this name; an empty function or path means none. Written atomically after
  // every epoch, on a stop, and when the phase finishes.
  std::function<std::string(const std::string& model_name)> state_path;
  // Continue each phase from its state file when the file exists: an unfinished phase
  // resumes where it stopped (bit-identical to an uninterrupted run with the same
  // threads), a finished one returns its stored result and parameters without training.
  bool resume = false;
  std::string config_text;  // stored as the checkpoint's `config` attribute
};

// Trains every trainable parameter of `model` (already initialised, e.g. init_model())
// on splits.train with masked cross-entropy (mean over the batch's labelled utterances),
// Adam, clipping as configured; conversations shuffled each epoch by an Rng seeded from
// config.seed; dropout keyed by (config.seed, global step). After each epoch it
// evaluates splits.valid; the best epoch is the one with the highest validation accuracy
// (ties: the earlier), early stopping after `patience` epochs without improvement, and
// the best epoch's parameters are restored at the end. An empty validation split
// selects the last epoch and disables early stopping. The test split is never used.
TrainResult train_model(Model& model, const Dataset& ds, const LabelProtocol& protocol, const SplitIndices& splits,
                        const TrainConfig& config, const TrainHooks& hooks = {});

// Sub-networks already trained in this run (one cache per seed), keyed by subnet name.
struct TrainedSubnet {
  std::shared_ptr<Model> model;
  TrainResult result;
};
using SubnetCache = std::map<std::string, TrainedSubnet>;

struct StagedResult {
  std::vector<std::pair<std::string, TrainResult>> subnets;  // stage 1, in subnet order (cached ones too)
  TrainResult result;  // the model itself (stage 2 for composites)
  bool interrupted = false;
};

// Composites (model.subnet_configs() not empty; clstm_lf, mman): stage 1 trains each
// sub-network as a standalone model (make_model, init_model(config.seed), train_model
// under its name) unless `cache` already holds one of that name, and adds what it trains
// to `cache` (when not null); its parameters are copied into the composite under
// "subnets.<name>." and frozen (they stay non-trainable afterwards); stage 2 trains the
// remaining parameters with train_model. Other models: train_model only. The composite
// must be initialised already (its fusion part). A stop in stage 1 returns at once with
// interrupted = true.
StagedResult train_staged(Model& model, const Dataset& ds, const LabelProtocol& protocol, const SplitIndices& splits,
                          const TrainConfig& config, SubnetCache* cache = nullptr, const TrainHooks& hooks = {});

}  // namespace mman
