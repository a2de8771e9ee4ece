// mman_exp run / eval / predict / params as a user runs them: outputs, SIGINT + --resume identity, errors.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "mman/cuda_info.h"
#include "mman/data/dataset.h"
#include "mman/exp/run_lock.h"
#include "support/test_support.h"

namespace mman {
namespace {
namespace fs = std::filesystem;

std::string exe() { return test::mman_exp_binary(); }
std::string smoke() { return std::string(MMAN_SOURCE_DIR) + "/experiments/smoke.yaml"; }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : line) {
    if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

// metrics.csv without the wall-time column, which legitimately differs between runs.
std::string metrics_without_seconds(const std::string& path) {
  std::string out;
  for (const std::string& line : lines_of(test::read_file(path))) {
    const auto cells = split_csv(line);
    for (size_t i = 0; i + 1 < cells.size(); ++i) out += cells[i] + ",";
    out += "\n";
  }
  return out;
}

TEST(CliRun, RunThenEvalAndPredictAgreeWithTheReport) {
  test::TempDir dir;
  const std::string data = dir.file("synth.h5");
  ASSERT_EQ(test::run_command(exe() + " synth --preset iemocap --seed 0 --out " + data).exit_code, 0);
  const std::string run = dir.file("run");
  const test::CommandResult r =
      // eval and predict run on the CPU: the run too, so their numbers are the same bits.
      test::run_command(exe() + " run " + smoke() + " --out " + run + " --set output.plots=false --threads 1 --backend cpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Table 2 layout (test):"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Synthetic IEMOCAP-shaped data"), std::string::npos);
  const nlohmann::json results = nlohmann::json::parse(test::read_file(run + "/results.json"));

  // eval of the saved MMAN on the same data reproduces the run's test metrics.
  const std::string ckpt = run + "/checkpoints/seed0/mman.h5";
  const test::CommandResult ev = test::run_command(exe() + " eval " + ckpt + " --data " + data + " --json");
  ASSERT_EQ(ev.exit_code, 0) << ev.output;
  const nlohmann::json em = nlohmann::json::parse(ev.output.substr(ev.output.find('{')));
  EXPECT_DOUBLE_EQ(em["metrics"]["accuracy"].get<double>(),
                   results["models"]["mman"]["per_seed"]["0"]["test"]["accuracy"].get<double>());
  EXPECT_EQ(em["metrics"]["classes"]["confusion"], results["models"]["mman"]["per_seed"]["0"]["test"]["classes"]["confusion"]);

  // predict: one row per utterance, probabilities summing to one, argmax = prediction,
  // and the 3x3 attention of MMAN's attention sub-network, each query's row summing to one.
  const std::string preds = dir.file("preds.csv");
  const test::CommandResult pr = test::run_command(exe() + " predict " + ckpt + " --data " + data + " --out " + preds);
  ASSERT_EQ(pr.exit_code, 0) << pr.output;
  const auto rows = lines_of(test::read_file(preds));
  ASSERT_EQ(rows.size(), 1u + 5810u + 1623u);
  const auto header = split_csv(rows[0]);
  ASSERT_EQ(header.size(), 7u + 4u + 9u);
  EXPECT_EQ(header[0], "conversation");
  EXPECT_EQ(header[6], "prediction");
  EXPECT_EQ(header[7], "p_happy");
  EXPECT_EQ(header[11], "att_audio_audio");
  EXPECT_EQ(header[19], "att_text_text");
  int tested = 0;
  for (size_t i = 1; i < rows.size(); i += 97) {
    const auto cells = split_csv(rows[i]);
    ASSERT_EQ(cells.size(), header.size()) << rows[i];
    double sum = 0, best = -1;
    std::string arg;
    for (int c = 0; c < 4; ++c) {
      const double p = std::stod(cells[7 + static_cast<size_t>(c)]);
      sum += p;
      if (p > best) {
        best = p;
        arg = header[7 + static_cast<size_t>(c)].substr(2);
      }
    }
    EXPECT_NEAR(sum, 1.0, 1e-4);
    EXPECT_EQ(cells[6], arg);
    for (int q = 0; q < 3; ++q) {
      double a = 0;
      for (int k = 0; k < 3; ++k) a += std::stod(cells[11 + static_cast<size_t>(3 * q + k)]);
      EXPECT_NEAR(a, 1.0, 1e-4);
    }
    ++tested;
  }
  EXPECT_GT(tested, 50);

  // Figures: the plotting script the run calls at its end (with output.plots: true)
  // writes a confusion heatmap per model and the learning curves, as real PNG files.
  const test::CommandResult fig = test::run_command(test::python_binary() + " " + MMAN_TEST_TOOLS_DIR + "/plot_run.py " + run);
  if (fig.exit_code == 2) {
    ADD_FAILURE() << "matplotlib is missing for " << test::python_binary() << " (tools/setup.sh installs it): " << fig.output;
  } else {
    ASSERT_EQ(fig.exit_code, 0) << fig.output;
    for (const char* f : {"confusion_mman.png", "confusion_clstm_speech.png", "learning_curves.png"}) {
      const std::string png = test::read_file(run + "/figures/" + f);
      ASSERT_GT(png.size(), 1000u) << f;
      EXPECT_EQ(png.substr(1, 3), "PNG") << f;
    }
  }

  // params lists every model with its exact count.
  const test::CommandResult pa = test::run_command(exe() + " params " + smoke());
  ASSERT_EQ(pa.exit_code, 0) << pa.output;
  EXPECT_NE(pa.output.find("mman"), std::string::npos);
  EXPECT_NE(pa.output.find(std::to_string(results["models"]["mman"]["parameters"]["total"].get<int64_t>())),
            std::string::npos)
      << pa.output;
}

TEST(CliRun, SigintThenResumeEqualsAnUninterruptedRun) {
  test::TempDir dir;
  const std::string opts = " --set output.plots=false --set train.epochs=5 --threads 1";
  const std::string full = dir.file("full");
  ASSERT_EQ(test::run_command(exe() + " run " + smoke() + " --out " + full + opts).exit_code, 0);

  // Interrupt at several points: early (first model), and later (a later model).
  int interrupted = 0;
  for (int wait_rows : {2, 9}) {
    const std::string run = dir.file("interrupted" + std::to_string(wait_rows));
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const std::string cmd = exe() + " run " + smoke() + " --out " + run + opts + " > " + run + ".out 2>&1";
      execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    // Wait until metrics.csv shows enough completed epochs, then press Ctrl-C.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline) {
      if (lines_of(test::read_file(run + "/metrics.csv")).size() > static_cast<size_t>(wait_rows)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill(pid, SIGINT);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status)) << "killed by a signal";
    const std::string out = test::read_file(run + ".out");
    if (WEXITSTATUS(status) == 0) continue;  // it finished before the signal arrived: nothing to resume
    EXPECT_EQ(WEXITSTATUS(status), 130) << out;
    ++interrupted;
    EXPECT_NE(out.find("--resume"), std::string::npos) << out;
    const nlohmann::json partial = nlohmann::json::parse(test::read_file(run + "/results.json"));
    EXPECT_FALSE(partial["complete"].get<bool>());

    const test::CommandResult resumed = test::run_command(exe() + " run " + smoke() + " --out " + run + opts + " --resume");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    const nlohmann::json a = nlohmann::json::parse(test::read_file(full + "/results.json"));
    const nlohmann::json b = nlohmann::json::parse(test::read_file(run + "/results.json"));
    for (const char* m : {"clstm_speech", "clstm_visual", "clstm_text", "clstm_mma", "mman"})
      EXPECT_EQ(b["models"][m]["per_seed"]["0"]["test"], a["models"][m]["per_seed"]["0"]["test"]) << m;
    EXPECT_EQ(metrics_without_seconds(run + "/metrics.csv"), metrics_without_seconds(full + "/metrics.csv"));
  }
  EXPECT_GE(interrupted, 1) << "every run finished before SIGINT arrived: the test proved nothing";
}

TEST(CliRun, BadInvocationsFailClearlyWithoutWritingARun) {
  test::TempDir dir;
  const std::string run = dir.file("run");
  struct Case {
    std::string args, expected;
  };
  const Case cases[] = {
      {"run " + dir.file("missing.yaml") + " --out " + run, "missing.yaml: cannot open the config file"},
      {"run " + smoke() + " --out " + run + " --set train.lr=fast", "--set train.lr=fast: train.lr: expected a number"},
      {"run " + smoke() + " --out " + run + " --set data.file=" + dir.file("none.h5"), "none.h5"},
      {"run " + smoke() + " --out " + run + " --resume", "nothing to resume"},
      {"eval " + dir.file("none.h5") + " --data " + dir.file("none.h5"), "none.h5"},
  };
  std::vector<Case> all(std::begin(cases), std::end(cases));
  if (!query_cuda().usable())  // with a usable GPU this is a valid run (CliRun.RunsOnTheGpu)
    all.push_back({"run " + smoke() + " --out " + run + " --backend cuda", "backend cuda:"});
  for (const Case& c : all) {
    const test::CommandResult r = test::run_command(exe() + " " + c.args);
    EXPECT_EQ(r.signal, 0) << c.args;
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_FALSE(fs::exists(run + "/config.yaml")) << c.args;
  }
}

}  // namespace
}  // namespace mman

namespace mman {
namespace {

// SPEC section 3: "A file in this layout made by any tool (for example from a PyTorch
// state_dict with h5py) loads and predicts."
TEST(CliRun, CheckpointWrittenByPyTorchWithH5pyPredictsTheSame) {
  test::TempDir dir;
  const std::string data = dir.file("synth.h5");
  ASSERT_EQ(test::run_command(exe() + " synth --preset iemocap --seed 1 --out " + data).exit_code, 0);
  for (const bool with_config : {false, true}) {
    const std::string ckpt = dir.file(with_config ? "torch_cfg.h5" : "torch.h5");
    const std::string probs = dir.file("probs.npy");
    const test::CommandResult w = test::run_command(
        test::python_binary() + " " + MMAN_TEST_SOURCE_DIR + "/torch/write_torch_checkpoint.py clstm_speech " + data +
        " " + ckpt + " " + probs + (with_config ? " --config-json" : ""));
    if (w.exit_code == 3) GTEST_SKIP() << "torch (or h5py) is not importable by " << test::python_binary() << ": " << w.output;
    ASSERT_EQ(w.exit_code, 0) << w.output;
    const std::string preds = dir.file("preds.csv");
    const test::CommandResult p = test::run_command(exe() + " predict " + ckpt + " --data " + data + " --out " + preds);
    ASSERT_EQ(p.exit_code, 0) << p.output;
    // Compare our probabilities with PyTorch's (both on the raw features: a foreign
    // checkpoint carries no normalisation).
    const test::CommandResult cmp = test::run_command(
        test::python_binary() + " -c \"import numpy as np, csv, sys; p = np.load('" + probs +
        "'); rows = list(csv.DictReader(open('" + preds +
        "'))); assert len(rows) == p.shape[0], (len(rows), p.shape); "
        "ours = np.array([[float(r['p_' + c]) for c in ('happy', 'sad', 'neutral', 'angry')] for r in rows]); "
        "err = np.abs(ours - p).max(); print('max abs diff', err); sys.exit(0 if err < 1e-4 else 1)\"");
    EXPECT_EQ(cmp.exit_code, 0) << cmp.output;
  }
}

// The smoke experiment end to end on the GPU: every model trains there and the report says so.
TEST(CliRun, RunsOnTheGpu) {
  const CudaState cuda = query_cuda();
  if (!cuda.usable())
    GTEST_SKIP() << "no usable CUDA device: "
                 << (cuda.compiled ? cuda.unusable_reason : std::string("this build has no CUDA backend"));
  test::TempDir dir;
  const std::string run = dir.file("run");
  const test::CommandResult r =
      test::run_command(exe() + " run " + smoke() + " --out " + run + " --set output.plots=false --backend cuda");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json results = nlohmann::json::parse(test::read_file(run + "/results.json"));
  EXPECT_EQ(results["backend"], "cuda");
  for (const auto& [name, model] : results["models"].items()) {
    const double acc = model["per_seed"]["0"]["test"]["accuracy"].get<double>();
    EXPECT_TRUE(acc >= 0.0 && acc <= 1.0) << name;
  }
}

// A run directory moved elsewhere still resumes: its config.yaml names the old place, and is
// rewritten to name the new one.
TEST(CliRun, AMovedRunDirectoryResumes) {
  test::TempDir dir;
  const std::string first = dir.file("first"), moved = dir.file("moved");
  const test::CommandResult r =
      test::run_command(exe() + " run " + smoke() + " --out " + first + " --set output.plots=false --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json before = nlohmann::json::parse(test::read_file(first + "/results.json"));
  fs::rename(first, moved);
  const test::CommandResult again = test::run_command(exe() + " run --resume " + moved);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("the run directory was moved"), std::string::npos) << again.output;
  const nlohmann::json after = nlohmann::json::parse(test::read_file(moved + "/results.json"));
  EXPECT_EQ(after["models"], before["models"]);  // every phase was finished: nothing retrained
  EXPECT_NE(test::read_file(moved + "/config.yaml").find("dir: " + moved), std::string::npos);
  // And once more from there, now without a difference at all.
  EXPECT_EQ(test::run_command(exe() + " run --resume " + moved).exit_code, 0);
}

// Resuming with another thread count is allowed (results do not depend on it: the batch
// invariance tests), said in run.log and recorded in config.yaml; other differences still refuse.
TEST(CliRun, AResumeMayUseAnotherThreadCount) {
  test::TempDir dir;
  const std::string run = dir.file("run");
  ASSERT_EQ(test::run_command(exe() + " run " + smoke() + " --out " + run + " --set output.plots=false --threads 1")
                .exit_code,
            0);
  const test::CommandResult again = test::run_command(exe() + " run --resume " + run + " --threads 2");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("resumed with threads: 2 (started with 1)"), std::string::npos) << again.output;
  EXPECT_NE(test::read_file(run + "/config.yaml").find("threads: 2"), std::string::npos);
  const test::CommandResult other = test::run_command(exe() + " run --resume " + run + " --set train.lr=0.5");
  EXPECT_NE(other.exit_code, 0);
  EXPECT_NE(other.output.find("the configuration differs"), std::string::npos) << other.output;
}

// Whether figures are drawn may change on a resume too (nothing computed depends on it): said
// in run.log and recorded in config.yaml.
TEST(CliRun, AResumeMayTurnPlotsOnOrOff) {
  test::TempDir dir;
  const std::string run = dir.file("run");
  ASSERT_EQ(test::run_command(exe() + " run " + smoke() + " --out " + run + " --set output.plots=true --threads 1")
                .exit_code,
            0);
  // Only output.plots changes (same thread count), so the rewrite of config.yaml is its own.
  const test::CommandResult again =
      test::run_command(exe() + " run --resume " + run + " --set output.plots=false --threads 1");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("resumed with output.plots: false (started with true)"), std::string::npos)
      << again.output;
  EXPECT_NE(test::read_file(run + "/config.yaml").find("plots: false"), std::string::npos);
  EXPECT_NE(test::read_file(run + "/run.log").find("resumed with output.plots: false"), std::string::npos);
  // output.checkpoints still refuses: which checkpoints exist would depend on when it changed.
  const test::CommandResult other = test::run_command(exe() + " run --resume " + run +
                                                      " --set output.plots=false --set output.checkpoints=false");
  EXPECT_NE(other.exit_code, 0);
  EXPECT_NE(other.output.find("the configuration differs"), std::string::npos) << other.output;
  EXPECT_NE(other.output.find("checkpoints: false"), std::string::npos) << other.output;
}

// While a process uses a run directory, a second one refuses to start there and writes nothing.
TEST(CliRun, ASecondProcessOnTheSameRunDirectoryIsRefused) {
  test::TempDir dir;
  const std::string run = dir.file("run");
  fs::create_directories(run);
  const RunLock held(run);  // this test process plays the first run
  const test::CommandResult r = test::run_command(exe() + " run " + smoke() + " --out " + run);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find(run + ": another mman_exp process (pid " + std::to_string(getpid()) + ")"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(run + "/config.yaml"));
}

// eval applies the training statistics stored in the checkpoint, not statistics refitted on
// the file it is given: a copy of the data whose training conversations are shifted scores the
// test split exactly as the original does.
TEST(CliRun, EvalUsesTheTrainingStatisticsStoredInTheCheckpoint) {
  test::TempDir dir;
  const std::string data = dir.file("synth.h5"), shifted = dir.file("shifted.h5"), run = dir.file("run");
  ASSERT_EQ(test::run_command(exe() + " synth --preset iemocap --seed 0 --out " + data).exit_code, 0);
  const test::CommandResult r = test::run_command(exe() + " run " + smoke() + " --out " + run + " --set data.file=" +
                                                  data + " --set output.plots=false --threads 1 --backend cpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Dataset ds = read_dataset(data);
  for (const std::string& id : ds.splits.at("train"))
    for (int c = 0; c < ds.num_conversations(); ++c)
      if (ds.conv_ids[static_cast<size_t>(c)] == id)
        for (Tensor& f : ds.features)
          for (int64_t row = ds.conv_offsets[static_cast<size_t>(c)]; row < ds.conv_offsets[static_cast<size_t>(c) + 1];
               ++row)
            for (int64_t j = 0; j < f.cols(); ++j) f.at(row, j) += 50.0f;
  write_dataset(ds, shifted);
  const std::string ckpt = run + "/checkpoints/seed0/clstm_mma.h5";
  const test::CommandResult a = test::run_command(exe() + " eval " + ckpt + " --data " + data);
  const test::CommandResult b = test::run_command(exe() + " eval " + ckpt + " --data " + shifted);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_NE(a.output.find("normalised with the training statistics stored in the checkpoint"), std::string::npos)
      << a.output;
  // Everything after the first line (which names the file) is the same: loss and metrics.
  EXPECT_EQ(a.output.substr(a.output.find('\n')), b.output.substr(b.output.find('\n')));
}

}  // namespace
}  // namespace mman
