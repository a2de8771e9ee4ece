// Experiment configs: defaults, resolution, overrides, and the exact error line for malformed files.
#include <gtest/gtest.h>

#include <fstream>

#include "mman/error.h"
#include "mman/exp/config.h"
#include "support/test_support.h"

namespace mman {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  std::string write(const std::string& text) {
    const std::string path = dir_.file("exp.yaml");
    std::ofstream(path) << text;
    return path;
  }
  // The error message load_experiment gives for `text`, with the file path replaced by "F".
  std::string error_for(const std::string& text, const std::vector<std::string>& overrides = {}) {
    const std::string path = write(text);
    try {
      load_experiment(path, overrides);
    } catch (const Error& e) {
      std::string msg = e.what();
      if (msg.compare(0, path.size(), path) == 0) msg = "F" + msg.substr(path.size());
      return msg;
    }
    return "(no error)";
  }
  test::TempDir dir_;
};

TEST_F(ConfigTest, MinimalFileGetsThePaperDefaults) {
  const ExperimentConfig c = load_experiment(write("models:\n  clstm_speech: {}\n"));
  EXPECT_EQ(c.name, "exp");
  EXPECT_EQ(c.data.synthetic, "iemocap");
  EXPECT_EQ(c.data.protocol, "iemocap4");
  EXPECT_TRUE(c.data.normalize);
  ASSERT_EQ(c.models.size(), 1u);
  const ModelConfig& m = c.models[0].model;
  EXPECT_EQ(m.type, "clstm_speech");
  EXPECT_EQ(m.hidden, 300);
  EXPECT_EQ(m.lstm_layers, 2);
  EXPECT_FLOAT_EQ(m.dropout, 0.5f);
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-3);
  EXPECT_EQ(c.train.batch_size, 10);
  EXPECT_EQ(c.train.epochs, 100);
  EXPECT_DOUBLE_EQ(c.train.clip_norm, 5.0);
  EXPECT_EQ(c.seeds, (std::vector<int64_t>{0}));
  ASSERT_EQ(c.stages.size(), 1u);
  EXPECT_EQ(c.stages[0].models, (std::vector<std::string>{"clstm_speech"}));
  EXPECT_EQ(c.output.dir, "runs/exp");
  EXPECT_EQ(c.backend, "auto");
}

TEST_F(ConfigTest, FusionModelsGetDefaultSubnetsAndTwoStages) {
  const ExperimentConfig c = load_experiment(write("models:\n  mman: {}\n"));
  const ModelEntry* mman = c.find_model("mman");
  ASSERT_NE(mman, nullptr);
  EXPECT_EQ(mman->subnet_names, (std::vector<std::string>{"clstm_mma", "clstm_speech", "clstm_visual", "clstm_text"}));
  ASSERT_EQ(mman->model.subnets.size(), 4u);
  EXPECT_EQ(mman->model.subnets[0].type, "clstm_mma");
  EXPECT_EQ(mman->model.subnets[0].lstm_layers, 1);
  ASSERT_NE(c.find_model("clstm_visual"), nullptr);  // defined implicitly
  ASSERT_EQ(c.stages.size(), 2u);
  EXPECT_EQ(c.stages[1].models, (std::vector<std::string>{"mman"}));
}

TEST_F(ConfigTest, PerModelTrainOverridesAndSetOverrides) {
  const ExperimentConfig c = load_experiment(
      write("train:\n  lr: 0.002\n  seeds: [1, 2, 3]\nmodels:\n  clstm_text:\n    hidden: 64\n    train: {lr: 0.01}\n"
            "  clstm_mma: {score: cosine, skip: concat}\n"),
      {"train.epochs=7", "models.clstm_text.bidirectional=true", "train.clip={value: 0.001}"});
  EXPECT_EQ(c.seeds, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(c.train.epochs, 7);
  const ModelEntry* text = c.find_model("clstm_text");
  EXPECT_EQ(text->model.hidden, 64);
  EXPECT_TRUE(text->model.bidirectional);
  EXPECT_DOUBLE_EQ(text->train.lr, 0.01);
  EXPECT_EQ(text->train.epochs, 7);  // inherited from the global block
  EXPECT_DOUBLE_EQ(text->train.clip_value, 0.001);
  EXPECT_DOUBLE_EQ(text->train.clip_norm, 0.0);
  EXPECT_DOUBLE_EQ(c.find_model("clstm_mma")->train.lr, 0.002);
  EXPECT_EQ(c.find_model("clstm_mma")->model.score, MmaScore::Cosine);
  EXPECT_EQ(c.find_model("clstm_mma")->model.skip, MmaSkip::Concat);
}

TEST_F(ConfigTest, DataFileFromTheCommandLineReplacesSyntheticData) {
  const std::string path = write("data:\n  synthetic: {preset: iemocap, seed: 3}\nmodels:\n  clstm_speech: {}\n");
  const ExperimentConfig c = load_experiment(path, {"data.file=corpus.h5"});
  EXPECT_EQ(c.data.file, "corpus.h5");
  EXPECT_TRUE(c.data.synthetic.empty());
  const ExperimentConfig back = load_experiment(write("data:\n  file: corpus.h5\nmodels:\n  clstm_speech: {}\n"),
                                                {"data.synthetic=iemocap"});
  EXPECT_TRUE(back.data.file.empty());
  EXPECT_EQ(back.data.synthetic, "iemocap");
}

TEST_F(ConfigTest, ResolvedYamlLoadsBackToTheSameConfig) {
  const ExperimentConfig a = load_experiment(write("models:\n  mman: {}\n  clstm_ef: {hidden: 32}\ntrain: {seeds: [4, 5]}\n"));
  const ExperimentConfig b = load_experiment(write(a.resolved_yaml));
  EXPECT_EQ(a.resolved_yaml, b.resolved_yaml);
  EXPECT_EQ(b.find_model("clstm_ef")->model.hidden, 32);
  EXPECT_EQ(b.seeds, (std::vector<int64_t>{4, 5}));
}

TEST_F(ConfigTest, ExplicitStagesAreOrderedByAfter) {
  const ExperimentConfig c = load_experiment(
      write("models:\n  clstm_lf: {}\nstages:\n  - {name: fuse, models: [clstm_lf], after: [uni]}\n"
            "  - {name: uni, models: [clstm_speech, clstm_visual, clstm_text]}\n"));
  ASSERT_EQ(c.stages.size(), 2u);
  EXPECT_EQ(c.stages[0].name, "uni");
  EXPECT_EQ(c.stages[1].name, "fuse");
}

// Each malformed config gives exactly this line (file path shown as F).
struct BadCase {
  const char* what;
  const char* yaml;
  const char* expected;
};

TEST_F(ConfigTest, MalformedConfigsGiveExactErrors) {
  const BadCase cases[] = {
      {"misspelt top-level key", "models:\n  clstm_speech: {}\ntrian:\n  lr: 0.1\n",
       "F:3:1: trian: unknown key 'trian' (did you mean 'train'?)"},
      {"wrong type", "models:\n  clstm_speech: {}\ntrain:\n  lr: fast\n",
       "F:4:7: train.lr: expected a number, found 'fast'"},
      {"out of range", "models:\n  clstm_speech: {}\ntrain:\n  epochs: 0\n",
       "F:4:11: train.epochs: expected an integer in [1, 100000], found 0"},
      {"negative learning rate", "models:\n  clstm_speech: {}\ntrain:\n  lr: -0.1\n",
       "F:4:7: train.lr: expected a number in (0, 10], found -0.1"},
      {"unknown model type", "models:\n  a:\n    type: clstm_spech\n",
       "F:3:11: models.a.type: expected one of clstm_speech, clstm_visual, clstm_text, clstm_ef, clstm_lf, clstm_mma, "
       "mman, found 'clstm_spech' (did you mean 'clstm_speech'?)"},
      {"misspelt model key", "models:\n  clstm_speech:\n    hiden: 10\n",
       "F:3:5: models.clstm_speech.hiden: unknown key 'hiden' (did you mean 'hidden'?)"},
      {"undefined subnet", "models:\n  clstm_mma: {}\n  mman:\n    subnets: [clstm_mma, clstm_speach]\n",
       "F:4:14: models.mman.subnets: references model 'clstm_speach', which is not defined under `models:` (did you "
       "mean 'clstm_speech'?)"},
      {"attention key on a uni-modal model", "models:\n  clstm_speech:\n    score: cosine\n",
       "F:3:12: models.clstm_speech.score: applies to clstm_mma only, not to type clstm_speech"},
      {"unknown protocol", "data:\n  protocol: iemocap5\nmodels:\n  clstm_speech: {}\n",
       "F:2:13: data.protocol: expected one of iemocap4, iemocap6, binary4, raw, found 'iemocap5' (did you mean "
       "'iemocap4'?)"},
      {"unknown backend", "backend: gpu\nmodels:\n  clstm_speech: {}\n",
       "F:1:10: backend: expected one of auto, cpu, cuda, found 'gpu' (did you mean 'cpu'?)"},
      {"file and synthetic", "data:\n  file: x.h5\n  synthetic: iemocap\nmodels:\n  clstm_speech: {}\n",
       "F:3:14: data.synthetic: give either data.file or data.synthetic, not both"},
      {"stage cycle",
       "models:\n  clstm_speech: {}\n  clstm_text: {}\nstages:\n  - {name: a, models: [clstm_speech], after: [b]}\n"
       "  - {name: b, models: [clstm_text], after: [a]}\n",
       "F:5:46: stages.a.after: stages form a cycle: a -> b -> a"},
      {"stage names an undefined model", "models:\n  clstm_speech: {}\nstages:\n  - {name: a, models: [clstm_spech]}\n",
       "F:4:23: stages[0].models: references model 'clstm_spech', which is not defined under `models:` (did you mean "
       "'clstm_speech'?)"},
      {"stage after an undefined stage", "models:\n  clstm_speech: {}\nstages:\n  - {name: a, models: [clstm_speech], after: [zz]}\n",
       "F:4:46: stages.a.after: references stage 'zz', which is not defined"},
      {"model in two stages",
       "models:\n  clstm_speech: {}\nstages:\n  - {name: a, models: [clstm_speech]}\n  - {name: b, models: [clstm_speech]}\n",
       "F:5:23: stages[1].models: model 'clstm_speech' is in more than one stage"},
      {"fusion model before its subnet",
       "models:\n  clstm_lf: {}\n  clstm_speech: {}\n  clstm_visual: {}\n  clstm_text: {}\nstages:\n"
       "  - {name: a, models: [clstm_lf, clstm_speech, clstm_visual, clstm_text]}\n",
       "F:7:23: stages.a.models: fusion model 'clstm_lf' needs its sub-network 'clstm_speech' trained in an earlier "
       "stage (add `after: [a]`)"},
      {"self-referencing fusion model", "models:\n  mman:\n    subnets: [mman]\n",
       "F:3:14: models.mman.subnets: model 'mman' cannot be its own sub-network"},
      {"fusion model as a subnet", "models:\n  clstm_lf: {}\n  mman:\n    subnets: [clstm_lf]\n",
       "F:4:14: models.mman.subnets: sub-network 'clstm_lf' is itself a fusion model (clstm_lf); sub-networks must be "
       "clstm_speech/visual/text, clstm_ef or clstm_mma"},
      {"custom name without type", "models:\n  speech_small:\n    hidden: 8\n",
       "F:3:5: models.speech_small.type: is required (one of clstm_speech, clstm_visual, clstm_text, clstm_ef, "
       "clstm_lf, clstm_mma, mman)"},
      {"clip norm and value", "models:\n  clstm_speech: {}\ntrain:\n  clip: {norm: 5, value: 0.001}\n",
       "F:4:26: train.clip.value: give either clip.norm or clip.value, not both"},
      {"duplicate seeds", "models:\n  clstm_speech: {}\ntrain:\n  seeds: [1, 1]\n",
       "F:4:10: train.seeds: seeds must be distinct"},
      {"valid fraction out of range", "data:\n  valid_fraction: 1.5\nmodels:\n  clstm_speech: {}\n",
       "F:2:19: data.valid_fraction: expected a number in [0, 0.9], found 1.5"},
      {"no models", "train:\n  lr: 0.001\n", "F:1:1: models: at least one model must be defined under `models:`"},
      {"models is a list", "models: [clstm_speech]\n",
       "F:1:9: models: expected a mapping of keys to values, found a list"},
      {"broken YAML", "models:\n  clstm_speech: {hidden: [1, 2}\n", ""},
  };
  for (const BadCase& c : cases) {
    const std::string got = error_for(c.yaml);
    if (std::string(c.expected).empty()) {
      EXPECT_NE(got.find("F:2:"), std::string::npos) << c.what << ": " << got;
      EXPECT_NE(got.find("invalid YAML"), std::string::npos) << c.what << ": " << got;
    } else {
      EXPECT_EQ(got, c.expected) << c.what;
    }
  }
}

TEST_F(ConfigTest, BadOverrideIsNamedInTheError) {
  EXPECT_EQ(error_for("models:\n  clstm_speech: {}\n", {"train.batch_size=ten"}),
            "--set train.batch_size=ten: train.batch_size: expected an integer, found 'ten'");
  EXPECT_EQ(error_for("models:\n  clstm_speech: {}\n", {"models.clstm_speech.hidden=0"}),
            "--set models.clstm_speech.hidden=0: models.clstm_speech.hidden: expected an integer in [1, 8192], found 0");
}

}  // namespace
}  // namespace mman
