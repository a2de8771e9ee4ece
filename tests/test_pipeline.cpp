// run_experiment on experiments/smoke.yaml: the run directory's contents, resume, refusal to overwrite.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "mman/error.h"
#include "mman/exp/pipeline.h"
#include "support/test_support.h"

namespace mman {
namespace {
namespace fs = std::filesystem;

std::string smoke_config() { return std::string(MMAN_SOURCE_DIR) + "/experiments/smoke.yaml"; }

TEST(Pipeline, SmokeRunWritesEveryOutput) {
  test::TempDir dir;
  RunOptions o;
  o.config_file = smoke_config();
  o.out_dir = dir.file("run");
  o.overrides = {"output.plots=false"};
  ASSERT_EQ(run_experiment(o), 0);
  for (const char* f : {"config.yaml", "run.log", "metrics.csv", "results.json", "report.md",
                        "checkpoints/seed0/clstm_speech.h5", "checkpoints/seed0/mman.h5"})
    EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / f)) << f;
  const nlohmann::json r = nlohmann::json::parse(test::read_file(o.out_dir + "/results.json"));
  EXPECT_TRUE(r["complete"].get<bool>());
  EXPECT_TRUE(r["data"]["synthetic"].get<bool>());
  EXPECT_EQ(r["data"]["splits"]["test"]["conversations"].get<int>(), 31);
  for (const char* m : {"clstm_speech", "clstm_visual", "clstm_text", "clstm_mma", "mman"}) {
    ASSERT_TRUE(r["models"].contains(m)) << m;
    const auto& seed0 = r["models"][m]["per_seed"]["0"];
    const double wa = seed0["test"]["accuracy"].get<double>();
    EXPECT_GT(wa, 0.0) << m;
    EXPECT_LE(wa, 1.0) << m;
    EXPECT_EQ(seed0["epochs_run"].get<int>(), 2) << m;
  }
  // mman's trainable parameters in stage 2 are the fusion head only: Linear(16 -> 4).
  EXPECT_EQ(r["models"]["mman"]["parameters"]["trainable"].get<int64_t>(), 16 * 4 + 4);
  const std::string report = test::read_file(o.out_dir + "/report.md");
  EXPECT_NE(report.find("synthetic IEMOCAP-shaped data, not the real corpus"), std::string::npos);
  EXPECT_NE(report.find("## Table 2 layout"), std::string::npos);
  EXPECT_NE(report.find("### mman"), std::string::npos);
  // metrics.csv: header + 2 epochs for each of the 5 models.
  std::istringstream csv(test::read_file(o.out_dir + "/metrics.csv"));
  std::string line;
  int lines = 0;
  while (std::getline(csv, line)) ++lines;
  EXPECT_EQ(lines, 1 + 5 * 2);

  // The same directory again without --resume is refused, and nothing is changed.
  const std::string before = test::read_file(o.out_dir + "/results.json");
  EXPECT_THROW(run_experiment(o), Error);
  EXPECT_EQ(test::read_file(o.out_dir + "/results.json"), before);

  // --resume of a finished run recomputes nothing and reproduces the results.
  o.resume = true;
  ASSERT_EQ(run_experiment(o), 0);
  const nlohmann::json again = nlohmann::json::parse(test::read_file(o.out_dir + "/results.json"));
  for (const char* m : {"clstm_speech", "mman"})
    EXPECT_EQ(again["models"][m]["per_seed"]["0"]["test"], r["models"][m]["per_seed"]["0"]["test"]) << m;

  // Resuming with a different configuration is refused with the first difference.
  o.overrides.push_back("train.lr=0.002");
  try {
    run_experiment(o);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("differs from the one this run started with"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mman
