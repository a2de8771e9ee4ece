// Crash safety of mman_exp run: SIGKILL at several moments, then --resume, gives the uninterrupted result; stale temporaries are cleaned.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "mman/atomic_file.h"
#include "mman/train/checkpoint.h"
#include "support/test_support.h"

namespace mman {
namespace {
namespace fs = std::filesystem;

std::string exe() { return test::mman_exp_binary(); }
std::string smoke() { return std::string(MMAN_SOURCE_DIR) + "/experiments/smoke.yaml"; }
// Four epochs of the five smoke models: 20 rows of metrics.csv, a few seconds.
const std::string kOptions = " --set output.plots=false --set train.epochs=4 --threads 1";

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t rows_of(const std::string& path) {
  const std::string text = slurp(path);
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

// metrics.csv without the wall-time column, which legitimately differs between runs.
std::string metrics_without_seconds(const std::string& path) {
  std::istringstream in(slurp(path));
  std::string out;
  for (std::string line; std::getline(in, line);) out += line.substr(0, line.rfind(',')) + "\n";
  return out;
}

// What a SIGKILL may leave: complete files everywhere (every write is temp + rename),
// plus at most the temporaries the killed process was writing.
void expect_complete_or_temporary(const std::string& run) {
  for (const auto& e : fs::recursive_directory_iterator(run)) {
    if (!e.is_regular_file()) continue;
    const std::string path = e.path().string(), ext = e.path().extension().string();
    SCOPED_TRACE(path);
    if (path.find(".tmp-") != std::string::npos) continue;  // an unfinished write, never read
    const std::string text = slurp(path);
    if (ext == ".json") {
      EXPECT_TRUE(nlohmann::json::accept(text));
    } else if (ext == ".csv" || ext == ".md") {
      EXPECT_TRUE(!text.empty() && text.back() == '\n');
    } else if (ext == ".yaml") {
      EXPECT_NO_THROW((void)YAML::Load(text));
    } else if (ext == ".h5") {
      EXPECT_NO_THROW(read_checkpoint_meta(path));
    }
  }
}

void expect_no_temporaries(const std::string& run) {
  for (const auto& e : fs::recursive_directory_iterator(run))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

// Starts `mman_exp run` in the background, its output to `log`.
pid_t start_run(const std::string& args, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string cmd = "exec " + exe() + " run " + args + " > '" + log + "' 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// Waits until metrics.csv has more than `rows` lines (or the process ended), sleeps
// `extra`, then kills with SIGKILL. Returns true when the kill interrupted the run.
bool kill_after(pid_t pid, const std::string& run, size_t rows, std::chrono::milliseconds extra) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline && rows_of(run + "/metrics.csv") <= rows) {
    if (waitpid(pid, &status, WNOHANG) == pid) return false;  // finished first
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  std::this_thread::sleep_for(extra);
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

void expect_same_results(const std::string& run, const std::string& reference) {
  const nlohmann::json a = nlohmann::json::parse(slurp(reference + "/results.json"));
  const nlohmann::json b = nlohmann::json::parse(slurp(run + "/results.json"));
  EXPECT_TRUE(b["complete"].get<bool>());
  for (const char* m : {"clstm_speech", "clstm_visual", "clstm_text", "clstm_mma", "mman"}) {
    EXPECT_EQ(b["models"][m]["per_seed"]["0"]["test"], a["models"][m]["per_seed"]["0"]["test"]) << m;
    EXPECT_EQ(b["models"][m]["per_seed"]["0"]["best_epoch"], a["models"][m]["per_seed"]["0"]["best_epoch"]) << m;
  }
  EXPECT_EQ(metrics_without_seconds(run + "/metrics.csv"), metrics_without_seconds(reference + "/metrics.csv"));
}

TEST(CliCrashSafety, SigkillAtSeveralMomentsThenResumeEqualsAnUninterruptedRun) {
  test::TempDir dir;
  const std::string full = dir.file("full");
  const test::CommandResult ref = test::run_command(exe() + " run " + smoke() + " --out " + full + kOptions);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  ASSERT_EQ(rows_of(full + "/metrics.csv"), 21u);

  // Moments: as soon as the run directory exists; inside the first model; a few
  // milliseconds after an epoch ended (around the state write); in stage 2 (mman).
  struct Moment {
    size_t rows;
    int extra_ms;
  };
  const Moment moments[] = {{0, 0}, {2, 0}, {6, 1}, {11, 3}, {18, 0}};
  int interrupted = 0;
  for (const Moment& m : moments) {
    SCOPED_TRACE("killed after " + std::to_string(m.rows) + " rows + " + std::to_string(m.extra_ms) + " ms");
    const std::string run = dir.file("killed" + std::to_string(m.rows));
    if (m.rows == 0) {
      // Right after start: wait for config.yaml rather than a metrics row.
      const pid_t pid = start_run(smoke() + " --out " + run + kOptions, run + ".out");
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (!fs::exists(run + "/config.yaml") && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      kill(pid, SIGKILL);
      int status = 0;
      waitpid(pid, &status, 0);
      if (!WIFSIGNALED(status)) continue;
    } else {
      const pid_t pid = start_run(smoke() + " --out " + run + kOptions, run + ".out");
      if (!kill_after(pid, run, m.rows, std::chrono::milliseconds(m.extra_ms))) continue;
    }
    ++interrupted;
    expect_complete_or_temporary(run);
    const test::CommandResult resumed = test::run_command(exe() + " run --resume " + run);
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    expect_same_results(run, full);
    expect_no_temporaries(run);
  }
  EXPECT_GE(interrupted, 4) << "most runs finished before SIGKILL arrived: the test proved little";

  // Killed twice: the resumed run is killed again, then resumed to the end.
  const std::string twice = dir.file("twice");
  ASSERT_TRUE(kill_after(start_run(smoke() + " --out " + twice + kOptions, twice + ".out"), twice, 4,
                         std::chrono::milliseconds(0)));
  if (kill_after(start_run("--resume " + twice, twice + ".out2"), twice, 9, std::chrono::milliseconds(2))) {
    const test::CommandResult resumed = test::run_command(exe() + " run --resume " + twice);
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  }
  expect_same_results(twice, full);
}

TEST(CliCrashSafety, ResumeRemovesTemporariesOfDeadWritersOnly) {
  test::TempDir dir;
  // A pid that cannot be running: a child that has exited and been reaped.
  const pid_t dead = fork();
  if (dead == 0) _exit(0);
  waitpid(dead, nullptr, 0);
  const std::string d = std::to_string(dead), live = std::to_string(getppid());
  fs::create_directories(dir.file("run/checkpoints/seed0"));
  for (const std::string& name : std::vector<std::string>{"run/metrics.csv.tmp-" + d, "run/checkpoints/seed0/.mman.state.h5.tmp-" + d + "-3",
                                  "run/results.json.tmp-" + live, "run/notes.tmp-x", "run/metrics.csv"})
    std::ofstream(dir.file(name)) << "x";
  const std::vector<std::string> removed = remove_stale_temporaries(dir.file("run"));
  EXPECT_EQ(removed.size(), 2u);
  EXPECT_FALSE(fs::exists(dir.file("run/metrics.csv.tmp-" + d)));
  EXPECT_FALSE(fs::exists(dir.file("run/checkpoints/seed0/.mman.state.h5.tmp-" + d + "-3")));
  EXPECT_TRUE(fs::exists(dir.file("run/results.json.tmp-" + live)));  // its writer may still be writing
  EXPECT_TRUE(fs::exists(dir.file("run/notes.tmp-x")));              // not a name we make
  EXPECT_TRUE(fs::exists(dir.file("run/metrics.csv")));
}

}  // namespace
}  // namespace mman
