// RunResults: everything a run measured, and its renderings (results.json, report.md, metrics.csv, console table).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mman/data/protocol.h"
#include "mman/train/metrics.h"
#include "mman/train/trainer.h"

namespace mman {

struct ModelSeedResult {
  int64_t seed = 0;
  TrainResult train;        // stage-2 phase for fusion models
  Metrics test;
  Metrics valid;            // at the best epoch
  std::string checkpoint;   // relative to the run directory; empty when not written
};

struct ModelResults {
  std::string name, type;
  std::vector<std::string> subnets;
  int64_t total_parameters = 0, trainable_parameters = 0;
  std::vector<ModelSeedResult> seeds;
};

struct EpochRow {
  int64_t seed = 0;
  std::string stage, model;
  EpochRecord record;
};

struct SplitSummary {
  int conversations = 0;
  int64_t utterances = 0, labelled = 0;
};

struct RunResults {
  std::string experiment, config_file, run_dir;
  std::string data_source;       // file path or "synthetic iemocap (seed 0)"
  bool synthetic = false;
  LabelProtocol protocol;
  SplitSummary train, valid, test;
  bool valid_from_file = false;
  std::string backend;
  int threads = 0;
  std::vector<int64_t> seeds;
  std::vector<std::string> report_models;  // Table 2 rows
  std::vector<ModelResults> models;        // in completion order
  std::vector<EpochRow> epochs;
  std::string versions_blas, versions_cuda;
  std::string started_at;                  // ISO-8601 UTC
  double seconds = 0;                      // wall time of this invocation (and resumed ones)
  bool complete = false;

  ModelResults& model(const std::string& name, const std::string& type);
  const ModelResults* find(const std::string& name) const;
  // Replaces the epoch rows of (seed, model) by `history`.
  void set_history(int64_t seed, const std::string& stage, const std::string& model, const std::vector<EpochRecord>& history);
};

std::string results_json(const RunResults& r);
std::string report_markdown(const RunResults& r);
std::string metrics_csv(const RunResults& r);
// The Table 2 (or, for binary4, Table 3) layout as aligned plain text for the console.
std::string summary_table(const RunResults& r);

// mean and sample standard deviation (0 for one value).
struct MeanStd {
  double mean = 0, std = 0;
};
MeanStd mean_std(const std::vector<double>& values);

}  // namespace mman
