// `mman_exp run`: the staged experiment pipeline, from a YAML file to a run directory.
#pragma once
#include <string>
#include <vector>

#include "mman/data/batch.h"
#include "mman/data/dataset.h"
#include "mman/data/protocol.h"
#include "mman/train/checkpoint.h"
#include "mman/exp/config.h"

namespace mman {

struct RunOptions {
  std::string config_file;              // may be empty when resume_dir holds config.yaml
  std::vector<std::string> overrides;   // --set key.path=value
  std::string out_dir;                  // --out: the run directory (else output.dir)
  std::string backend;                  // --backend (else the config's)
  int threads = -1;                     // --threads (else the config's)
  bool resume = false;                  // --resume [DIR]
  std::string resume_dir;
};

// Runs every stage for every seed and writes the run directory: config.yaml (resolved),
// run.log, metrics.csv, results.json, report.md, checkpoints/seed<S>/<model>.h5 (best
// epoch) and <model>.state.h5 (exact-resume state), figures/*.png. Returns 0 when done,
// 128 + signal when SIGINT/SIGTERM stopped it (state saved, resumable). Bad input throws
// mman::Error before anything is written.
int run_experiment(const RunOptions& options);

// The data of an experiment: read (or synthesised), protocol applied, splits resolved,
// normalised with training-split statistics when the config asks for it.
struct ExperimentData {
  Dataset dataset;
  LabelProtocol protocol;
  SplitIndices splits;
  std::string description;  // file path, or "synthetic iemocap (seed S)"
  bool synthetic = false;
  InputNormalization normalization;  // the statistics applied (empty without normalize), stored in checkpoints
};
ExperimentData load_experiment_data(const DataSettings& data);

// The backend a run uses: "cpu" or "cuda". `cuda` throws when the build has no CUDA backend or
// no device is usable (with the runtime's reason); `auto` takes the GPU when one is usable and
// the CPU otherwise, and `note` says which and why.
std::string resolve_backend(const std::string& requested, std::string* note);

}  // namespace mman
