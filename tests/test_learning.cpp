// The models learn: on the synthetic IEMOCAP every model beats the majority class
// by at least 15 points of WA, and the multimodal models beat audio-only clstm_speech.
//
// This is the paper's pipeline (experiments/mman.yaml: stage 1, stage 2, test
// evaluation) with the epoch budget of the experiment file, run through the production
// runner, so it also proves that the shipped experiment learns. It takes a few minutes.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "mman/exp/pipeline.h"
#include "support/test_support.h"

namespace mman {
namespace {

TEST(Learning, EveryModelBeatsTheMajorityClassAndFusionBeatsSpeech) {
  test::TempDir dir;
  RunOptions o;
  o.config_file = std::string(MMAN_SOURCE_DIR) + "/experiments/mman.yaml";
  o.out_dir = dir.file("run");
  o.overrides = {"output.plots=false", "output.checkpoints=false", "report=[clstm_speech, clstm_visual, clstm_text, clstm_ef, clstm_lf, clstm_mma, mman]"};
  o.threads = 1;
  ASSERT_EQ(run_experiment(o), 0);
  const nlohmann::json r = nlohmann::json::parse(test::read_file(o.out_dir + "/results.json"));

  // Majority class of the test split under iemocap4, from the test confusion matrix's
  // row totals (support), not a hard-coded number.
  const auto& support = r["models"]["clstm_speech"]["per_seed"]["0"]["test"]["classes"]["support"];
  int64_t total = 0, largest = 0;
  for (const auto& s : support) {
    total += s.get<int64_t>();
    largest = std::max(largest, s.get<int64_t>());
  }
  ASSERT_EQ(total, 1623);
  const double majority = static_cast<double>(largest) / static_cast<double>(total);

  auto wa = [&](const char* m) { return r["models"][m]["per_seed"]["0"]["test"]["accuracy"].get<double>(); };
  for (const char* m : {"clstm_speech", "clstm_visual", "clstm_text", "clstm_ef", "clstm_lf", "clstm_mma", "mman"})
    EXPECT_GE(wa(m), majority + 0.15) << m << " WA " << wa(m) << " vs majority " << majority;
  for (const char* m : {"clstm_ef", "clstm_lf", "clstm_mma", "mman"})
    EXPECT_GT(wa(m), wa("clstm_speech")) << m;
}

}  // namespace
}  // namespace mman
