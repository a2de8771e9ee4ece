// Replays the fuzz corpora (seeds and the saved inputs of past crashes) through the fuzz entry points in a normal build.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/fuzz_targets.h"
#include "mman/error.h"

namespace mman {
namespace {
namespace fs = std::filesystem;

// Files of tests/fuzz/corpus/<kind>, sorted. Inputs named regression-* are the inputs
// of crashes the fuzzers found (docs/reliability.md); the others are valid seeds.
std::vector<fs::path> corpus(const std::string& kind, bool regressions) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(fs::path(MMAN_TEST_SOURCE_DIR) / "fuzz/corpus" / kind))
    if (e.is_regular_file() && (e.path().filename().string().rfind("regression-", 0) == 0) == regressions)
      out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<uint8_t> bytes_of(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class FuzzCorpus : public ::testing::Test {
 protected:
  // Saved HDF5 hangs would each wait out the 30 s default of h5::probe.
  void SetUp() override { setenv("MMAN_HDF5_PROBE_TIMEOUT", "2", 1); }
};

TEST_F(FuzzCorpus, ConfigSeedsAreValidAndEveryInputEndsCleanly) {
  const std::vector<fs::path> seeds = corpus("config", false);
  ASSERT_GE(seeds.size(), 5u);
  for (const fs::path& p : seeds) {
    // A seed is a valid config (with its leading --set lines as overrides), so mutations
    // start deep inside the parser.
    std::string text;
    std::vector<std::string> overrides;
    std::ifstream in(p);
    for (std::string line; std::getline(in, line);) {
      if (text.empty() && line.rfind("--set ", 0) == 0)
        overrides.push_back(line.substr(6));
      else
        text += line + "\n";
    }
    EXPECT_NO_THROW(parse_experiment(text, p.string(), overrides)) << p;
  }
  for (const fs::path& p : corpus("config", false)) {
    const std::vector<uint8_t> b = bytes_of(p);
    fuzz::config_input(b.data(), b.size());
  }
  for (const fs::path& p : corpus("config", true)) {
    SCOPED_TRACE(p.string());
    const std::vector<uint8_t> b = bytes_of(p);
    fuzz::config_input(b.data(), b.size());
  }
}

TEST_F(FuzzCorpus, DatasetSeedsAreValidAndRegressionsAreRejected) {
  const std::vector<fs::path> seeds = corpus("dataset", false);
  ASSERT_GE(seeds.size(), 3u);
  for (const fs::path& p : seeds) {
    EXPECT_NO_THROW(read_dataset(p.string())) << p;
    const std::vector<uint8_t> b = bytes_of(p);
    fuzz::dataset_input(b.data(), b.size());
  }
  for (const fs::path& p : corpus("dataset", true)) {
    SCOPED_TRACE(p.string());
    // Damaged files: an error, not a crash or a hang (what dataset_input would check;
    // once, since each saved hang costs the probe's timeout).
    EXPECT_THROW(read_dataset(p.string()), Error);
  }
}

TEST_F(FuzzCorpus, CheckpointSeedsLoadAndRegressionsAreRejected) {
  const std::vector<fs::path> seeds = corpus("checkpoint", false);
  ASSERT_GE(seeds.size(), 7u);
  for (const fs::path& p : seeds) {
    const CheckpointMeta meta = read_checkpoint_meta(p.string());
    std::unique_ptr<Model> model = make_model(fuzz::tiny_model(meta.model_type), fuzz::tiny_shape());
    TrainState state;
    EXPECT_NO_THROW(load_checkpoint(p.string(), model->params(), meta.model_type,
                                    checkpoint_has_train_state(p.string()) ? &state : nullptr))
        << p;
  }
  for (const fs::path& p : corpus("checkpoint", true)) {
    SCOPED_TRACE(p.string());
    const std::vector<uint8_t> b = bytes_of(p);
    fuzz::checkpoint_input(b.data(), b.size());
    std::unique_ptr<Model> model = make_model(fuzz::tiny_model("clstm_speech"), fuzz::tiny_shape());
    EXPECT_THROW(load_checkpoint(p.string(), model->params()), Error);
  }
}

}  // namespace
}  // namespace mman
