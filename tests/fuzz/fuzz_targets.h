// The fuzzing entry points (config parser, dataset loader, checkpoint loader), shared by the libFuzzer targets and the corpus replay test.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "mman/data/batch.h"
#include "mman/data/dataset.h"
#include "mman/data/protocol.h"
#include "mman/error.h"
#include "mman/exp/config.h"
#include "mman/models/model.h"
#include "mman/train/checkpoint.h"

// The contract every entry point checks: any input ends normally or with mman::Error.
// Anything else (a crash, a sanitizer report, another exception type, a failed
// invariant below) is a bug; libFuzzer reports an escaping exception as a crash (abort).
namespace mman::fuzz {

// Fails loudly (abort, which libFuzzer and gtest death both see) when an invariant of
// accepted input does not hold. Not an exception: the callers catch mman::Error.
inline void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz invariant violated: %s\n", what);
    std::abort();
  }
}

// A per-process scratch file for loaders that take a path. /dev/shm when it exists
// (no disk writes per input).
inline const std::string& scratch_file(const char* kind) {
  static const std::string path = [kind] {
    const std::filesystem::path dir = std::filesystem::is_directory("/dev/shm") ? std::filesystem::path("/dev/shm")
                                                                                 : std::filesystem::temp_directory_path();
    return (dir / ("mman_fuzz_" + std::string(kind) + "_" + std::to_string(::getpid()) + ".h5")).string();
  }();
  static const bool cleanup_registered = [] {
    std::atexit([] { std::remove(path.c_str()); });
    return true;
  }();
  (void)cleanup_registered;
  return path;
}

inline void write_scratch(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  require(f != nullptr, "cannot create the scratch file");
  if (size > 0) require(std::fwrite(data, 1, size, f) == size, "cannot write the scratch file");
  std::fclose(f);
}

// ---- config: arbitrary text through parse_experiment ----
// Leading lines of the form "--set key.path=value" become overrides, so the override
// path is fuzzed too. A config that parses must resolve to YAML that parses back to
// the very same resolved YAML (what a run stores as config.yaml and --resume compares).
inline void config_input(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> overrides;
  while (text.compare(0, 6, "--set ") == 0) {
    const size_t nl = text.find('\n');
    overrides.push_back(text.substr(6, nl == std::string::npos ? std::string::npos : nl - 6));
    text = nl == std::string::npos ? std::string() : text.substr(nl + 1);
  }
  ExperimentConfig cfg;
  try {
    cfg = parse_experiment(text, "fuzz.yaml", overrides);
  } catch (const Error&) {
    return;
  }
  require(!cfg.models.empty() && !cfg.stages.empty() && !cfg.seeds.empty(), "accepted config lacks models/stages/seeds");
  ExperimentConfig again;
  try {
    again = parse_experiment(cfg.resolved_yaml, "resolved.yaml");
  } catch (const Error& e) {
    std::fprintf(stderr, "resolved YAML:\n%s\nerror: %s\n", cfg.resolved_yaml.c_str(), e.what());
    require(false, "the resolved YAML of an accepted config does not parse");
  }
  if (again.resolved_yaml != cfg.resolved_yaml)
    std::fprintf(stderr, "first:\n%s\nsecond:\n%s\n", cfg.resolved_yaml.c_str(), again.resolved_yaml.c_str());
  require(again.resolved_yaml == cfg.resolved_yaml, "resolved YAML is not a fixed point");
}

// ---- dataset: arbitrary bytes as an mman-dataset/1 file ----
// A file read_dataset accepts must also go through everything training does with it:
// protocols, split resolution, the train-only normaliser and packed batches.
inline void dataset_input(const uint8_t* data, size_t size) {
  const std::string& path = scratch_file("dataset");
  write_scratch(path, data, size);
  Dataset ds;
  try {
    ds = read_dataset(path);
  } catch (const Error&) {
    return;
  }
  for (const std::string& name : protocol_names()) {
    LabelProtocol protocol;
    SplitIndices splits;
    try {
      protocol = make_protocol(name, ds.label_names);
      splits = resolve_splits(ds, 0.25, 7);
    } catch (const Error&) {
      continue;  // e.g. iemocap4 on a file without the IEMOCAP labels
    }
    require(!splits.train.empty() || ds.splits.at("train").empty(), "train split lost conversations");
    Dataset copy = ds;
    Normalizer::fit(copy, splits.train).apply(copy);
    Batch batch;
    for (const std::vector<int>& part : plan_batches(splits.train, 3, nullptr)) make_batch(copy, protocol, part, batch);
    for (const std::vector<int>& part : plan_batches(splits.test, 3, nullptr)) make_batch(copy, protocol, part, batch);
  }
}

// ---- checkpoint: arbitrary bytes as an mman-checkpoint/1 file ----
// Tiny models of every type, the shapes the seed corpus was written with
// (tests/fuzz/make_seeds.cpp), so mutated seeds reach the tensor and state checks.
inline DataShape tiny_shape() { return DataShape{{"audio", "visual", "text"}, {3, 2, 2}, 4, 1}; }

inline ModelConfig tiny_model(const std::string& type) {
  ModelConfig c;
  c.type = type;
  c.name = type;
  c.hidden = 4;
  c.fc = 3;
  c.d_model = 2;
  if (type == "clstm_lf") c.subnets = {tiny_model("clstm_speech"), tiny_model("clstm_visual"), tiny_model("clstm_text")};
  if (type == "mman")
    c.subnets = {tiny_model("clstm_mma"), tiny_model("clstm_speech"), tiny_model("clstm_visual"), tiny_model("clstm_text")};
  return c;
}

inline void checkpoint_input(const uint8_t* data, size_t size) {
  const std::string& path = scratch_file("checkpoint");
  write_scratch(path, data, size);
  try {
    const CheckpointMeta meta = read_checkpoint_meta(path);
    std::unique_ptr<Model> model = make_model(tiny_model(meta.model_type), tiny_shape());
    const std::vector<float> before = model->params().values();
    TrainState state;
    const bool with_state = checkpoint_has_train_state(path);
    try {
      load_checkpoint(path, model->params(), meta.model_type, with_state ? &state : nullptr);
    } catch (const Error&) {
      // A rejected file must leave the model exactly as it was.
      require(model->params().values() == before, "a failed load changed the parameters");
      throw;
    }
    if (with_state) {
      require(state.adam.m.size() == model->params().values().size(), "loaded Adam moments of the wrong size");
      require(static_cast<int64_t>(state.history.size()) == state.epoch, "history rows != completed epochs");
      require(state.best_epoch <= state.epoch, "best epoch after the last one");
    }
  } catch (const Error&) {
  }
}

}  // namespace mman::fuzz
