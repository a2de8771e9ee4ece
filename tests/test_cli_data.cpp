// mman_exp synth / inspect / info as a user runs them: output, exit codes, no partial files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "mman/data/dataset.h"
#include "support/test_support.h"

namespace mman {
namespace {

using test::CommandResult;
using test::TempDir;

CommandResult mman_exp(const std::string& args) { return test::run_command(test::mman_exp_binary() + " " + args); }

// Whitespace-separated fields of every output line whose first field is `first`.
std::vector<std::vector<std::string>> lines_starting(const std::string& output, const std::string& first) {
  std::vector<std::vector<std::string>> found;
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::vector<std::string> tokens;
    for (std::string w; words >> w;) tokens.push_back(w);
    if (!tokens.empty() && tokens[0] == first) found.push_back(tokens);
  }
  return found;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool has(const std::string& output, const std::string& part) { return output.find(part) != std::string::npos; }

// No file of the folder other than `keep` (no temporaries left behind).
std::vector<std::string> stray_files(const std::string& folder, const std::vector<std::string>& keep) {
  std::vector<std::string> stray;
  for (const auto& e : std::filesystem::directory_iterator(folder)) {
    const std::string name = e.path().filename().string();
    if (std::find(keep.begin(), keep.end(), name) == keep.end()) stray.push_back(name);
  }
  return stray;
}

class CliData : public ::testing::Test {
 protected:
  // One synthetic file for the whole suite (writing it takes about a second).
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    synth_ = mman_exp("synth --preset iemocap --seed 0 --out " + dir_->file("synth.h5"));
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string file() { return dir_->file("synth.h5"); }
  static TempDir* dir_;
  static CommandResult synth_;
};
TempDir* CliData::dir_ = nullptr;
CommandResult CliData::synth_;

TEST_F(CliData, SynthWritesAValidFileAndOneSummaryLine) {
  ASSERT_EQ(synth_.exit_code, 0) << synth_.output;
  EXPECT_EQ(std::count(synth_.output.begin(), synth_.output.end(), '\n'), 1) << synth_.output;
  EXPECT_TRUE(has(synth_.output, "SYNTHETIC")) << synth_.output;
  EXPECT_TRUE(has(synth_.output, "151 conversations (train 120, test 31)")) << synth_.output;
  EXPECT_TRUE(has(synth_.output, "7433 utterances")) << synth_.output;
  const Dataset ds = read_dataset(file());
  EXPECT_EQ(ds.num_conversations(), 151);
  EXPECT_EQ(stray_files(dir_->path(), {"synth.h5"}), std::vector<std::string>{});
}

TEST_F(CliData, InspectShowsTable1CountsShapeAndLengths) {
  ASSERT_EQ(synth_.exit_code, 0) << synth_.output;
  const CommandResult r = mman_exp("inspect " + file());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "schema: mman-dataset/1")) << r.output;
  EXPECT_TRUE(has(r.output, "SYNTHETIC (iemocap preset, seed 0)")) << r.output;
  EXPECT_TRUE(has(r.output, "conversations: 151 (train 120, test 31)")) << r.output;
  EXPECT_TRUE(has(r.output, "utterances: 7433 (train 5810, test 1623)")) << r.output;
  EXPECT_TRUE(has(r.output, "modalities: audio 100, visual 512, text 100")) << r.output;
  EXPECT_TRUE(has(r.output, "label names: hap, sad, neu, ang, exc, fru")) << r.output;
  EXPECT_TRUE(has(r.output, "sessions: 5 (train 4, test 1)")) << r.output;
  EXPECT_TRUE(has(r.output, "speakers: 10 (train 8, test 2)")) << r.output;

  // Tables: raw labels, then iemocap4 (shown by default for IEMOCAP label names), then lengths.
  const auto train = lines_starting(r.output, "train");
  const auto test = lines_starting(r.output, "test");
  ASSERT_EQ(train.size(), 3u) << r.output;
  ASSERT_EQ(test.size(), 3u) << r.output;
  const std::vector<std::string> raw_train = {"train", "504", "839", "1324", "933", "742", "1468", "5810"};
  const std::vector<std::string> raw_test = {"test", "144", "245", "384", "170", "299", "381", "1623"};
  EXPECT_EQ(std::vector<std::string>(train[0].begin(), train[0].begin() + 8), raw_train) << r.output;
  EXPECT_EQ(std::vector<std::string>(test[0].begin(), test[0].begin() + 8), raw_test) << r.output;
  // iemocap4: happy = hap + exc, sad = sad + fru, neutral, angry.
  const std::vector<std::string> four_train = {"train", "1246", "2307", "1324", "933", "5810"};
  const std::vector<std::string> four_test = {"test", "443", "626", "384", "170", "1623"};
  EXPECT_EQ(std::vector<std::string>(train[1].begin(), train[1].begin() + 6), four_train) << r.output;
  EXPECT_EQ(std::vector<std::string>(test[1].begin(), test[1].begin() + 6), four_test) << r.output;
  EXPECT_TRUE(has(r.output, "sad 38.6%")) << r.output;  // the test split's majority class, 626 / 1623
  // Lengths: split, conversations, min, mean, median, max.
  ASSERT_EQ(train[2].size(), 6u) << r.output;
  EXPECT_EQ(train[2][1], "120");
  EXPECT_EQ(test[2][1], "31");
  EXPECT_EQ(train[2][3], "48.4");  // 5810 / 120
  EXPECT_EQ(test[2][3], "52.4");   // 1623 / 31
  EXPECT_GE(std::stoi(train[2][2]), 8);
  EXPECT_LE(std::stoi(train[2][5]), 110);
}

TEST_F(CliData, InspectWithAProtocolAddsItsClasses) {
  ASSERT_EQ(synth_.exit_code, 0) << synth_.output;
  const CommandResult r = mman_exp("inspect " + file() + " --protocol binary4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "protocol binary4")) << r.output;
  // binary4 scores hap/sad/neu/ang only; exc + fru (742 + 1468 train) are context.
  const auto train = lines_starting(r.output, "train");
  ASSERT_EQ(train.size(), 4u) << r.output;
  EXPECT_EQ(train[2], (std::vector<std::string>{"train", "504", "839", "1324", "933", "2210", "5810"})) << r.output;

  const CommandResult bad = mman_exp("inspect " + file() + " --protocol iemocap5");
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_TRUE(has(bad.output, "mman_exp: error: ")) << bad.output;
  EXPECT_TRUE(has(bad.output, "iemocap5")) << bad.output;
}

// A run on a file `synth` wrote says it is synthetic, as a run on in-memory synthetic data does.
TEST_F(CliData, ARunOnASynthFileIsReportedAsSynthetic) {
  ASSERT_EQ(synth_.exit_code, 0) << synth_.output;
  EXPECT_EQ(read_dataset(file()).synthetic, "iemocap preset, seed 0");
  TempDir out;  // not in dir_: another test lists that folder
  const std::string run = out.file("run");
  const CommandResult r = mman_exp("run " + std::string(MMAN_SOURCE_DIR) + "/experiments/smoke.yaml --out " + run +
                                   " --set data.file=" + file() + " --set output.plots=false --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "[synthetic]")) << r.output;
  EXPECT_TRUE(has(read_file(run + "/results.json"), "\"synthetic\": true"));
}

TEST_F(CliData, SameSeedSameBytesOtherSeedOtherData) {
  ASSERT_EQ(synth_.exit_code, 0) << synth_.output;
  TempDir dir;
  ASSERT_EQ(mman_exp("synth --seed 0 --out " + dir.file("again.h5")).exit_code, 0);
  ASSERT_EQ(mman_exp("synth --seed 1 --out " + dir.file("other.h5")).exit_code, 0);
  EXPECT_EQ(read_file(file()), read_file(dir.file("again.h5")));
  EXPECT_NE(read_file(file()), read_file(dir.file("other.h5")));
}

TEST(CliDataErrors, InspectOfABadFileFailsWithAMessage) {
  TempDir dir;
  const std::string text = dir.file("notes.h5");
  std::ofstream(text) << "not an HDF5 file\n";
  for (const std::string& path : {text, dir.file("missing.h5")}) {
    const CommandResult r = mman_exp("inspect " + path);
    EXPECT_EQ(r.signal, 0) << r.output;
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(r.output.rfind("mman_exp: error: ", 0), 0u) << r.output;
    EXPECT_TRUE(has(r.output, path)) << r.output;
  }
  // A real HDF5 file that is not a dataset: the schema check names the problem.
  TempDir d2;
  ASSERT_EQ(mman_exp("synth --seed 2 --out " + d2.file("ok.h5")).exit_code, 0);
  const std::string bytes = read_file(d2.file("ok.h5"));
  std::ofstream(d2.file("cut.h5"), std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  const CommandResult cut = mman_exp("inspect " + d2.file("cut.h5"));
  EXPECT_EQ(cut.signal, 0) << cut.output;
  EXPECT_EQ(cut.exit_code, 1) << cut.output;
  EXPECT_TRUE(has(cut.output, "mman_exp: error: ")) << cut.output;
  EXPECT_TRUE(has(cut.output, "cut.h5")) << cut.output;
}

TEST(CliDataErrors, SynthToAnUnwritablePlaceLeavesNoFile) {
  TempDir dir;
  // A path through a regular file cannot be created, even by root.
  const std::string blocker = dir.file("blocker");
  std::ofstream(blocker) << "x";
  const CommandResult r = mman_exp("synth --seed 0 --out " + blocker + "/sub/out.h5");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.rfind("mman_exp: error: ", 0), 0u) << r.output;
  EXPECT_TRUE(has(r.output, blocker)) << r.output;
  EXPECT_EQ(stray_files(dir.path(), {"blocker"}), std::vector<std::string>{});

  // A read-only folder (permissions do not bind root, so only checked for other users).
  if (geteuid() != 0) {
    const std::string ro = dir.file("readonly");
    std::filesystem::create_directory(ro);
    std::filesystem::permissions(ro, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
    const CommandResult r2 = mman_exp("synth --seed 0 --out " + ro + "/out.h5");
    EXPECT_EQ(r2.exit_code, 1) << r2.output;
    EXPECT_TRUE(has(r2.output, "not writable")) << r2.output;
    EXPECT_EQ(stray_files(ro, {}), std::vector<std::string>{});
  }

  // --out naming an existing folder.
  const CommandResult r3 = mman_exp("synth --seed 0 --out " + dir.path());
  EXPECT_EQ(r3.exit_code, 1) << r3.output;
  EXPECT_TRUE(has(r3.output, "is a folder")) << r3.output;
}

TEST(CliDataInfo, PrintsVersionBuildBlasThreadsAndCuda) {
  const CommandResult r = mman_exp("info");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("mman ", 0), 0u) << r.output;
  EXPECT_TRUE(has(r.output, MMAN_VERSION)) << r.output;
  for (const char* line : {"\nbuild: ", "\nthreads: ", "\nblas: ", "\ncuda: "}) EXPECT_TRUE(has(r.output, line)) << line << r.output;
}

// cuBLAS is loaded on first use, not linked (cuda/cublas_lazy.cu): linking it alone costs every
// process ~210 MB of resident memory at start. The program must not depend on it, in any build.
TEST(CliDataInfo, TheProgramDoesNotLinkCublas) {
  const CommandResult r = test::run_command("readelf -d " + test::mman_exp_binary());
  if (r.exit_code == 127) GTEST_SKIP() << "readelf is not installed";
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "(NEEDED)")) << r.output;
  EXPECT_FALSE(has(r.output, "libcublas")) << r.output;
}

}  // namespace
}  // namespace mman
