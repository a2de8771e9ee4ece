// ExperimentConfig: the validated, resolved form of an experiment YAML file (SPEC section 4).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mman/models/model.h"

namespace mman {

struct DataSettings {
  std::string file;                 // an mman-dataset/1 file (relative to the working directory) ...
  std::string synthetic;            // ... or a synthetic preset ("iemocap"), generated in memory
  uint64_t synthetic_seed = 0;
  std::string protocol = "iemocap4";
  double valid_fraction = 0.1;      // carved from train by conversation when the file has no valid split
  uint64_t valid_seed = 0;          // the carving is the same for every training seed
  bool normalize = true;            // standardise each modality with train-split statistics
};

// The `train:` block (and per-model `train:` overrides).
struct TrainSettings {
  std::string optimizer = "adam";
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
  int batch_size = 10;              // conversations per batch
  int epochs = 100;                 // maximum
  int patience = 10;                // early stopping on validation accuracy; 0 = off
  double clip_norm = 5.0;           // global L2 norm; 0 = off
  double clip_value = 0.0;          // element clamp (the authors' code: 1e-3); 0 = off
};

struct ModelEntry {
  std::string name;                 // the key under `models:`
  ModelConfig model;                // subnets resolved to their entries' configs
  std::vector<std::string> subnet_names;
  TrainSettings train;              // the global block with this model's overrides applied
  bool composite() const { return !subnet_names.empty(); }
};

struct StageSettings {
  std::string name;
  std::vector<std::string> models;
  std::vector<std::string> after;
};

struct OutputSettings {
  std::string dir;                  // default runs/<name>
  bool checkpoints = true;          // best-epoch checkpoint of every model and seed
  bool plots = true;                // figures via tools/plot_run.py when python3 + matplotlib exist
};

struct ExperimentConfig {
  std::string file;                 // the YAML file it came from
  std::string name;
  DataSettings data;
  std::vector<ModelEntry> models;   // in file order
  TrainSettings train;
  std::vector<int64_t> seeds{0};
  std::vector<StageSettings> stages;  // in execution order (topologically sorted)
  std::vector<std::string> report;  // models in the Table 2 layout, in row order
  OutputSettings output;
  std::string backend = "auto";     // auto | cpu | cuda
  int threads = 0;                  // 0 = all cores
  std::string resolved_yaml;        // every value, defaults included, as YAML text

  const ModelEntry* find_model(const std::string& name) const;
};

// Reads, applies `key.path=value` overrides and validates an experiment file. Every
// problem throws mman::Error "file:line:column: key.path: what was expected".
ExperimentConfig load_experiment(const std::string& file, const std::vector<std::string>& overrides = {});
// The same for YAML text in memory (e.g. the `config` attribute of a checkpoint).
ExperimentConfig parse_experiment(const std::string& yaml_text, const std::string& source_name,
                                  const std::vector<std::string>& overrides = {});

}  // namespace mman
