// tools/convert_iemocap.py: a Python-2-style IEMOCAP pickle converted and read back field by field; malformed pickles.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "mman/data/dataset.h"
#include "mman/hdf5_io.h"
#include "support/test_support.h"

namespace mman {
namespace {

using test::TempDir;

struct FakeConv {
  std::string id, speakers, split;  // speakers: one 'F'/'M' per utterance
  std::vector<int> labels;
};

// Deliberately not in sorted order and with sets/lists mixed by the maker script: the
// converter sorts each split's ids, train first.
const std::vector<FakeConv> kConvs = {
    {"Ses02M_script01_1", "MFMMF", "train", {0, 1, 2, 3, 4}},
    {"Ses01F_impro01", "FMF", "train", {5, 4, 0}},
    {"Ses05F_impro02", "FMFM", "test", {2, 2, 1, 3}},
    {"Ses01M_impro03", "MF", "train", {3, 5}},
    {"Ses05M_script02_2", "MFF", "test", {0, 5, 4}},
};
const std::map<std::string, int> kDims = {{"audio", 100}, {"visual", 512}, {"text", 100}};

std::string python() { return test::python_binary(); }
std::string converter() { return std::string(MMAN_TEST_TOOLS_DIR) + "/convert_iemocap.py"; }
std::string maker() { return std::string(MMAN_TEST_SOURCE_DIR) + "/data/make_fake_iemocap_pickle.py"; }

// Writes the spec and runs the maker script; returns the pickle's path.
std::string make_pickle(const TempDir& dir, const std::string& mutate) {
  std::string json = "{\"convs\": [";
  for (size_t k = 0; k < kConvs.size(); ++k) {
    const FakeConv& c = kConvs[k];
    json += (k ? ", " : "") + std::string("{\"id\": \"") + c.id + "\", \"speakers\": \"" + c.speakers +
            "\", \"split\": \"" + c.split + "\", \"labels\": [";
    for (size_t i = 0; i < c.labels.size(); ++i) json += (i ? ", " : "") + std::to_string(c.labels[i]);
    json += "]}";
  }
  json += "], \"dims\": {\"audio\": 100, \"visual\": 512, \"text\": 100}, \"mutate\": \"" + mutate + "\"}";
  const std::string spec = dir.file("spec_" + mutate + ".json");
  std::ofstream(spec) << json;
  const std::string pkl = dir.file("fake_" + mutate + ".pkl");
  const test::CommandResult r = test::run_command(python() + " " + maker() + " " + spec + " " + pkl);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return pkl;
}

test::CommandResult convert(const std::string& args) { return test::run_command(python() + " " + converter() + " " + args); }

// The maker's formula: modality m (audio 0, visual 1, text 2), spec conversation k,
// utterance u, dimension j.
float expected_feature(int m, int k, int u, int j) {
  return static_cast<float>(1000.0 * (m + 1) + 64.0 * k + u + j / 1024.0);
}

TEST(ConvertIemocap, ConvertsEveryField) {
  TempDir dir;
  const std::string pkl = make_pickle(dir, "none");
  const std::string out = dir.file("iemocap.h5");
  const test::CommandResult r = convert(pkl + " " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("5 conversations (train 3, test 2), 17 utterances"), std::string::npos) << r.output;

  const Dataset ds = read_dataset(out);  // validates the whole file
  EXPECT_EQ(ds.label_names, (std::vector<std::string>{"hap", "sad", "neu", "ang", "exc", "fru"}));
  EXPECT_EQ(ds.modalities, (std::vector<std::string>{"audio", "visual", "text"}));
  // Train ids sorted, then test ids sorted.
  const std::vector<std::string> order = {"Ses01F_impro01", "Ses01M_impro03", "Ses02M_script01_1", "Ses05F_impro02",
                                          "Ses05M_script02_2"};
  EXPECT_EQ(ds.conv_ids, order);
  EXPECT_EQ(ds.splits.size(), 2u);
  EXPECT_EQ(ds.splits.at("train"), (std::vector<std::string>{order[0], order[1], order[2]}));
  EXPECT_EQ(ds.splits.at("test"), (std::vector<std::string>{order[3], order[4]}));
  EXPECT_EQ(ds.conv_sessions, (std::vector<std::string>{"Ses01", "Ses01", "Ses02", "Ses05", "Ses05"}));
  EXPECT_EQ(ds.conv_offsets, (std::vector<int64_t>{0, 3, 5, 10, 14, 17}));
  for (int m = 0; m < 3; ++m) EXPECT_EQ(ds.dim(m), kDims.at(ds.modalities[static_cast<size_t>(m)]));

  for (int c = 0; c < ds.num_conversations(); ++c) {
    const std::string& id = ds.conv_ids[static_cast<size_t>(c)];
    int k = 0;
    while (kConvs[static_cast<size_t>(k)].id != id) ++k;
    const FakeConv& spec = kConvs[static_cast<size_t>(k)];
    ASSERT_EQ(ds.conv_length(c), static_cast<int>(spec.labels.size())) << id;
    std::map<char, int> counter;
    for (int u = 0; u < ds.conv_length(c); ++u) {
      const size_t row = static_cast<size_t>(ds.conv_offsets[static_cast<size_t>(c)] + u);
      const char g = spec.speakers[static_cast<size_t>(u)];
      EXPECT_EQ(ds.labels[row], spec.labels[static_cast<size_t>(u)]) << id << " " << u;
      EXPECT_EQ(ds.speakers[row], id.substr(0, 5) + "_" + g) << id << " " << u;
      EXPECT_EQ(ds.utterance_ids[row], fmt::format("{}_{}{:03d}", id, g, counter[g]++));
      for (int m = 0; m < 3; ++m) {
        const Tensor& x = ds.features[static_cast<size_t>(m)];
        for (int j = 0; j < x.cols(); ++j)
          ASSERT_EQ(x.at(static_cast<int64_t>(row), j), expected_feature(m, k, u, j)) << ds.modalities[static_cast<size_t>(m)] << " " << id << " " << u << " " << j;
      }
    }
  }

  // The documented storage types, through the raw HDF5 API.
  const h5::File f = h5::File::open(out);
  EXPECT_EQ(f.read_string_attr("/", "schema"), "mman-dataset/1");
  EXPECT_EQ(f.info("/labels").describe(), "int32 [17]");
  EXPECT_EQ(f.info("/conversations/offsets").describe(), "int64 [6]");
  EXPECT_EQ(f.info("/features/visual").describe(), "float32 [17 x 512]");
  EXPECT_TRUE(f.info("/speakers").type.variable);
  EXPECT_TRUE(f.info("/utterance_ids").type.variable);
  EXPECT_TRUE(f.info("/splits/train").type.variable);
  // Nothing else left in the folder (the temporary was renamed).
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) files += e.path().extension() == ".tmp";
  EXPECT_EQ(files, 0);
}

// Whitespace-separated fields of the first output line starting with `first`.
std::vector<std::string> line_tokens(const std::string& output, const std::string& first) {
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::vector<std::string> tokens;
    for (std::string w; words >> w;) tokens.push_back(w);
    if (!tokens.empty() && tokens[0] == first) return tokens;
  }
  return {};
}

TEST(ConvertIemocap, CheckPrintsTable1StyleCountsWithoutWriting) {
  TempDir dir;
  const std::string pkl = make_pickle(dir, "none");
  const test::CommandResult r = convert(pkl + " --check");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Counted by hand from kConvs: split, dialogues, hap, sad, neu, ang, exc, fru, total.
  EXPECT_EQ(line_tokens(r.output, "train"), (std::vector<std::string>{"train", "3", "2", "1", "1", "2", "2", "2", "10"}))
      << r.output;
  EXPECT_EQ(line_tokens(r.output, "test"), (std::vector<std::string>{"test", "2", "1", "1", "2", "1", "1", "1", "7"}))
      << r.output;
  EXPECT_EQ(r.output.find("wrote"), std::string::npos) << r.output;
}

struct BadCase {
  std::string mutate;   // maker mutation, or "" for a file the test writes itself
  std::string content;  // that file's content
  std::string expect;   // part of the one-line message
};

class ConvertIemocapBad : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConvertIemocapBad, FailsWithOneLineAndNoOutput) {
  const BadCase& bad = GetParam();
  TempDir dir;
  std::string pkl;
  if (bad.mutate.empty()) {
    pkl = dir.file("given.pkl");
    if (bad.content != "<missing>") std::ofstream(pkl, std::ios::binary) << bad.content;
  } else {
    pkl = make_pickle(dir, bad.mutate);
  }
  const std::string out = dir.file("out.h5");
  const test::CommandResult r = convert(pkl + " " + out);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.rfind("convert_iemocap.py: error: ", 0), 0u) << r.output;
  EXPECT_NE(r.output.find(bad.expect), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;  // no traceback
  EXPECT_FALSE(std::filesystem::exists(out));
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) EXPECT_NE(e.path().extension(), ".tmp") << e.path();
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, ConvertIemocapBad,
    ::testing::Values(BadCase{"", "<missing>", "no such file"},
                      BadCase{"", "this is not a pickle\n", "not a readable pickle"},
                      BadCase{"", std::string("\x80\x02}q\x00(U\x03", 8), "not a readable pickle"},  // truncated
                      BadCase{"tuple8", "", "expected a tuple of 9 items"},
                      BadCase{"missing_audio", "", "videoAudio: missing conversation Ses02M_script01_1"},
                      BadCase{"short_labels", "", "videoLabels[Ses02M_script01_1]: 4 utterances, but videoIDs has 5"},
                      BadCase{"nan", "", "non-finite value (nan)"},
                      BadCase{"bad_label", "", "label 6 is not one of 0..5"},
                      BadCase{"bad_speaker", "", "expected 'M' or 'F'"},
                      BadCase{"ragged_text", "", "videoText[Ses02M_script01_1]"},
                      BadCase{"in_both_splits", "", "in both trainVid and testVid"}),
    [](const ::testing::TestParamInfo<BadCase>& info) {
      return info.param.mutate.empty() ? "file" + std::to_string(info.index) : info.param.mutate;
    });

TEST(ConvertIemocap, UnwritableDestinationFailsCleanly) {
  TempDir dir;
  const std::string pkl = make_pickle(dir, "none");
  const test::CommandResult r = convert(pkl + " " + dir.file("no/such/folder/out.h5"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("does not exist"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace mman
