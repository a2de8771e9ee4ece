// read_dataset / write_dataset / validate_dataset: round trip and every malformed-file case.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "mman/data/dataset.h"
#include "mman/error.h"
#include "mman/hdf5_io.h"
#include "mman/rng.h"
#include "support/test_support.h"
#include "support/tiny_dataset.h"

namespace mman {
namespace {

using test::TempDir;
using test::tiny_dataset;

void expect_same(const Dataset& a, const Dataset& b) {
  EXPECT_EQ(a.label_names, b.label_names);
  EXPECT_EQ(a.modalities, b.modalities);
  ASSERT_EQ(a.features.size(), b.features.size());
  for (size_t m = 0; m < a.features.size(); ++m) {
    ASSERT_EQ(a.features[m].rows(), b.features[m].rows());
    ASSERT_EQ(a.features[m].cols(), b.features[m].cols());
    for (int64_t i = 0; i < a.features[m].size(); ++i) ASSERT_EQ(a.features[m].data()[i], b.features[m].data()[i]);
  }
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.speakers, b.speakers);
  EXPECT_EQ(a.utterance_ids, b.utterance_ids);
  EXPECT_EQ(a.conv_ids, b.conv_ids);
  EXPECT_EQ(a.conv_sessions, b.conv_sessions);
  EXPECT_EQ(a.conv_offsets, b.conv_offsets);
  EXPECT_EQ(a.splits, b.splits);
}

TEST(DatasetIo, RoundTripKeepsEverything) {
  TempDir dir;
  test::TinySpec spec;
  spec.valid_lengths = {2, 5};
  const Dataset ds = tiny_dataset(spec);
  const std::string path = dir.file("tiny.h5");
  write_dataset(ds, path);
  const Dataset back = read_dataset(path);
  EXPECT_EQ(back.source, path);
  expect_same(ds, back);
  EXPECT_EQ(back.num_conversations(), 10);
  EXPECT_EQ(back.conv_length(2), 7);
  EXPECT_EQ(back.modality_index("visual"), 1);
  EXPECT_EQ(back.modality_index("speech"), -1);
  EXPECT_EQ(back.dim(1), 6);
  // Exactly the documented layout, checked through the raw HDF5 API.
  const h5::File f = h5::File::open(path);
  EXPECT_EQ(f.read_string_attr("/", "schema"), "mman-dataset/1");
  EXPECT_EQ(f.info("/labels").describe(), "int32 [" + std::to_string(ds.num_utterances()) + "]");
  EXPECT_EQ(f.info("/conversations/offsets").describe(), "int64 [11]");
  EXPECT_EQ(f.info("/features/visual").describe(), "float32 [" + std::to_string(ds.num_utterances()) + " x 6]");
  EXPECT_EQ(f.children("/splits"), (std::vector<std::string>{"test", "train", "valid"}));
  EXPECT_FALSE(f.has_attr("/", "synthetic"));  // real data carries no mark
  EXPECT_EQ(back.synthetic, "");
}

// Generated data keeps its mark through a file, so a run reading it says it is synthetic.
TEST(DatasetIo, TheSyntheticMarkRoundTrips) {
  TempDir dir;
  Dataset ds = tiny_dataset();
  ds.synthetic = "tiny preset, seed 1";
  const std::string path = dir.file("marked.h5");
  write_dataset(ds, path);
  EXPECT_EQ(h5::File::open(path).read_string_attr("/", "synthetic"), "tiny preset, seed 1");
  EXPECT_EQ(read_dataset(path).synthetic, "tiny preset, seed 1");
}

TEST(DatasetIo, ModalityOrderComesFromTheAttribute) {
  TempDir dir;
  test::TinySpec spec;
  spec.modalities = {"text", "audio"};
  spec.dims = {3, 5};
  const Dataset ds = tiny_dataset(spec);
  write_dataset(ds, dir.file("t.h5"));
  const Dataset back = read_dataset(dir.file("t.h5"));
  EXPECT_EQ(back.modalities, (std::vector<std::string>{"text", "audio"}));
  EXPECT_EQ(back.dim(0), 3);
  expect_same(ds, back);
}

TEST(DatasetIo, WriteRefusesAnInvalidDatasetAndLeavesNoFile) {
  TempDir dir;
  Dataset ds = tiny_dataset();
  ds.labels[3] = 17;
  const std::string path = dir.file("bad.h5");
  try {
    write_dataset(ds, path);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bad.h5"), std::string::npos) << msg;
    EXPECT_NE(msg.find("/labels"), std::string::npos) << msg;
    EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

// ---- malformed files ------------------------------------------------------------------

// Writes a good tiny file, lets `edit` damage it through the HDF5 API, and returns the
// message read_dataset() throws.
class Malformed : public ::testing::Test {
 protected:
  std::string path() const { return dir_.file("corpus.h5"); }
  void write_good(const Dataset& ds) { write_dataset(ds, path()); }
  void edit(const std::function<void(h5::File&)>& fn) {
    h5::File f = h5::File::edit(path());
    fn(f);
    f.commit();
  }
  // Good file, then `fn`.
  void make(const std::function<void(h5::File&)>& fn) {
    write_good(ds_);
    edit(fn);
  }
  std::string read_error() {
    try {
      read_dataset(path());
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }
  // The message names the file, the HDF5 path and the problem, on one line.
  void expect_error(const std::string& hdf5_path, const std::string& problem) {
    const std::string msg = read_error();
    EXPECT_NE(msg.find("corpus.h5"), std::string::npos) << msg;
    EXPECT_NE(msg.find(hdf5_path), std::string::npos) << "path " << hdf5_path << " not in: " << msg;
    EXPECT_NE(msg.find(problem), std::string::npos) << "'" << problem << "' not in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // Replaces a dataset with other contents.
  template <class T>
  static void replace(h5::File& f, const std::string& p, const std::vector<T>& values, const h5::Shape& shape) {
    f.remove(p);
    f.write(p, values.data(), shape);
  }
  static void replace_strings(h5::File& f, const std::string& p, const std::vector<std::string>& values) {
    f.remove(p);
    f.write_strings(p, values);
  }
  int64_t n() const { return ds_.num_utterances(); }

  TempDir dir_;
  Dataset ds_ = tiny_dataset();
};

TEST_F(Malformed, MissingFile) {
  const std::string msg = read_error();
  EXPECT_NE(msg.find("corpus.h5: no such file"), std::string::npos) << msg;
}

TEST_F(Malformed, EmptyFile) {
  std::ofstream(path()).close();
  const std::string msg = read_error();
  EXPECT_NE(msg.find("corpus.h5: empty file"), std::string::npos) << msg;
}

TEST_F(Malformed, NotHdf5) {
  std::ofstream(path()) << "utterance,label\nu1,hap\n";
  const std::string msg = read_error();
  EXPECT_NE(msg.find("corpus.h5: not an HDF5 file"), std::string::npos) << msg;
}

TEST_F(Malformed, TruncatedFile) {
  write_good(ds_);
  std::filesystem::resize_file(path(), std::filesystem::file_size(path()) / 2);
  const std::string msg = read_error();
  EXPECT_NE(msg.find("corpus.h5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST_F(Malformed, WrongSchema) {
  make([](h5::File& f) { f.write_string_attr("/", "schema", "mman-checkpoint/1"); });
  expect_error("/ (attribute schema)", "wrong schema 'mman-checkpoint/1'");
}

TEST_F(Malformed, MissingSchema) {
  make([](h5::File& f) { f.remove_attr("/", "schema"); });
  expect_error("/ (attribute schema)", "missing attribute");
}

TEST_F(Malformed, SchemaNotAString) {
  make([](h5::File& f) {
    f.remove_attr("/", "schema");
    f.write_int_attr("/", "schema", 1);
  });
  expect_error("/ (attribute schema)", "expected a string, found int64");
}

TEST_F(Malformed, MissingLabelNames) {
  make([](h5::File& f) { f.remove_attr("/", "label_names"); });
  expect_error("/ (attribute label_names)", "missing attribute");
}

TEST_F(Malformed, MissingModalitiesAttribute) {
  make([](h5::File& f) { f.remove_attr("/", "modalities"); });
  expect_error("/ (attribute modalities)", "missing attribute");
}

TEST_F(Malformed, DuplicateLabelNames) {
  make([](h5::File& f) { f.write_strings_attr("/", "label_names", {"hap", "sad", "neu", "ang", "exc", "HAP"}); });
  expect_error("/ (attribute label_names)", "duplicate label name 'HAP'");
}

TEST_F(Malformed, MissingDatasets) {
  for (const std::string p : {"/labels", "/speakers", "/utterance_ids", "/conversations/ids", "/conversations/offsets",
                              "/conversations/sessions"}) {
    make([&](h5::File& f) { f.remove(p); });
    expect_error(p, "missing dataset");
  }
}

TEST_F(Malformed, MissingFeaturesOfAListedModality) {
  make([](h5::File& f) { f.remove("/features/visual"); });
  expect_error("/features/visual", "missing dataset");
}

TEST_F(Malformed, FeaturesOfAnUnlistedModality) {
  make([](h5::File& f) { f.write_strings_attr("/", "modalities", {"audio", "text"}); });
  expect_error("/features/visual", "not listed in the modalities attribute");
}

TEST_F(Malformed, MissingFeaturesGroup) {
  make([](h5::File& f) { f.remove("/features"); });
  expect_error("/features", "missing group");
}

TEST_F(Malformed, MissingSplitsGroup) {
  make([](h5::File& f) { f.remove("/splits"); });
  expect_error("/splits", "missing group");
}

TEST_F(Malformed, ZeroModalities) {
  make([](h5::File& f) {
    f.write_strings_attr("/", "modalities", {});
    for (const char* m : {"/features/audio", "/features/visual", "/features/text"}) f.remove(m);
  });
  expect_error("/ (attribute modalities)", "zero modalities");
}

TEST_F(Malformed, ZeroWidthFeatures) {
  make([&](h5::File& f) { replace<float>(f, "/features/text", {}, {n(), 0}); });
  expect_error("/features/text", "zero-width");
}

TEST_F(Malformed, FeaturesOfWrongRank) {
  make([&](h5::File& f) { replace(f, "/features/audio", std::vector<float>(static_cast<size_t>(n()), 0.0f), {n()}); });
  expect_error("/features/audio", "expected float32 [N x d], found float32 [" + std::to_string(n()) + "]");
}

TEST_F(Malformed, FeaturesOfWrongDtype) {
  make([&](h5::File& f) { replace(f, "/features/audio", std::vector<double>(static_cast<size_t>(n() * 4), 0.0), {n(), 4}); });
  expect_error("/features/audio", "expected float32 [N x d], found float64 [" + std::to_string(n()) + " x 4]");
}

TEST_F(Malformed, FloatLabelsAreRejected) {
  make([&](h5::File& f) { replace(f, "/labels", std::vector<float>(static_cast<size_t>(n()), 1.0f), {n()}); });
  expect_error("/labels", "expected integers [?], found float32");
}

TEST_F(Malformed, LabelsOfWrongRank) {
  make([&](h5::File& f) { replace(f, "/labels", std::vector<int32_t>(static_cast<size_t>(n()), 1), {n(), 1}); });
  expect_error("/labels", "expected integers [?], found int32 [" + std::to_string(n()) + " x 1]");
}

TEST_F(Malformed, SpeakersNotStrings) {
  make([&](h5::File& f) { replace(f, "/speakers", std::vector<int32_t>(static_cast<size_t>(n()), 1), {n()}); });
  expect_error("/speakers", "expected strings [?], found int32");
}

TEST_F(Malformed, OffsetsAsFloats) {
  make([&](h5::File& f) { replace(f, "/conversations/offsets", std::vector<double>(9, 0.0), {9}); });
  expect_error("/conversations/offsets", "expected integers [?], found float64");
}

TEST_F(Malformed, FeatureRowsMismatch) {
  make([&](h5::File& f) { replace(f, "/features/visual", std::vector<float>(static_cast<size_t>((n() - 1) * 6), 0.0f), {n() - 1, 6}); });
  expect_error("/features/visual", "N mismatch");
}

TEST_F(Malformed, LabelsMismatch) {
  make([&](h5::File& f) { replace(f, "/labels", std::vector<int32_t>(static_cast<size_t>(n() + 2), 0), {n() + 2}); });
  expect_error("/labels", "N mismatch");
}

TEST_F(Malformed, SpeakersMismatch) {
  make([&](h5::File& f) { replace_strings(f, "/speakers", std::vector<std::string>(static_cast<size_t>(n() - 1), "M")); });
  expect_error("/speakers", "N mismatch");
}

TEST_F(Malformed, UtteranceIdsMismatch) {
  make([&](h5::File& f) {
    std::vector<std::string> ids = ds_.utterance_ids;
    ids.push_back("extra");
    replace_strings(f, "/utterance_ids", ids);
  });
  expect_error("/utterance_ids", "N mismatch");
}

TEST_F(Malformed, OffsetsCountMismatch) {
  make([&](h5::File& f) {
    std::vector<int64_t> off = ds_.conv_offsets;
    off.pop_back();
    replace(f, "/conversations/offsets", off, {static_cast<int64_t>(off.size())});
  });
  expect_error("/conversations/offsets", "8 entries, expected 9");
}

TEST_F(Malformed, SessionsCountMismatch) {
  make([&](h5::File& f) { replace_strings(f, "/conversations/sessions", {"Ses01"}); });
  expect_error("/conversations/sessions", "1 entries, but /conversations/ids has 8");
}

TEST_F(Malformed, OffsetsNotStartingAtZero) {
  make([&](h5::File& f) {
    std::vector<int64_t> off = ds_.conv_offsets;
    off[0] = 1;
    replace(f, "/conversations/offsets", off, {static_cast<int64_t>(off.size())});
  });
  expect_error("/conversations/offsets", "start at 1, expected 0");
}

TEST_F(Malformed, OffsetsDecreasing) {
  make([&](h5::File& f) {
    std::vector<int64_t> off = ds_.conv_offsets;
    std::swap(off[2], off[3]);
    replace(f, "/conversations/offsets", off, {static_cast<int64_t>(off.size())});
  });
  expect_error("/conversations/offsets", "decrease at index 3");
}

TEST_F(Malformed, OffsetsNotEndingAtN) {
  make([&](h5::File& f) {
    std::vector<int64_t> off = ds_.conv_offsets;
    off.back() -= 1;
    replace(f, "/conversations/offsets", off, {static_cast<int64_t>(off.size())});
  });
  expect_error("/conversations/offsets", "end at " + std::to_string(n() - 1) + ", expected N = " + std::to_string(n()));
}

TEST_F(Malformed, EmptyConversation) {
  make([&](h5::File& f) {
    std::vector<int64_t> off = ds_.conv_offsets;
    off[2] = off[1];  // conversation 1 becomes empty, conversation 2 grows
    replace(f, "/conversations/offsets", off, {static_cast<int64_t>(off.size())});
  });
  expect_error("/conversations/offsets", "empty conversation 'conv1'");
}

TEST_F(Malformed, DuplicateConversationIds) {
  make([&](h5::File& f) {
    std::vector<std::string> ids = ds_.conv_ids;
    ids[4] = ids[1];
    replace_strings(f, "/conversations/ids", ids);
  });
  expect_error("/conversations/ids", "duplicate conversation id 'conv1'");
}

TEST_F(Malformed, DuplicateUtteranceIds) {
  make([&](h5::File& f) {
    std::vector<std::string> ids = ds_.utterance_ids;
    ids[9] = ids[2];
    replace_strings(f, "/utterance_ids", ids);
  });
  expect_error("/utterance_ids", "duplicate utterance id '" + ds_.utterance_ids[2] + "' (rows 2 and 9)");
}

TEST_F(Malformed, SplitWithUnknownConversation) {
  make([&](h5::File& f) { replace_strings(f, "/splits/test", {"conv5", "conv99"}); });
  expect_error("/splits/test", "unknown conversation 'conv99'");
}

TEST_F(Malformed, ConversationInTwoSplits) {
  make([&](h5::File& f) { replace_strings(f, "/splits/test", {"conv5", "conv0"}); });
  expect_error("conv0", "two splits");
  expect_error("/splits/", "'test' and 'train'");
}

TEST_F(Malformed, NoTrainSplit) {
  make([](h5::File& f) { f.remove("/splits/train"); });
  expect_error("/splits/train", "missing split");
}

TEST_F(Malformed, NoTestSplit) {
  make([](h5::File& f) { f.remove("/splits/test"); });
  expect_error("/splits/test", "missing split");
}

TEST_F(Malformed, NaNFeatures) {
  make([&](h5::File& f) {
    Tensor t = ds_.features[1];
    t.at(3, 2) = std::numeric_limits<float>::quiet_NaN();
    f.remove("/features/visual");
    f.write_float32("/features/visual", t.data(), {t.rows(), t.cols()});
  });
  expect_error("/features/visual", "NaN (modality visual, row 3, column 2");
}

TEST_F(Malformed, InfFeatures) {
  make([&](h5::File& f) {
    Tensor t = ds_.features[2];
    t.at(n() - 1, 0) = -std::numeric_limits<float>::infinity();
    f.remove("/features/text");
    f.write_float32("/features/text", t.data(), {t.rows(), t.cols()});
  });
  expect_error("/features/text", "-Inf (modality text, row " + std::to_string(n() - 1) + ", column 0");
}

TEST_F(Malformed, LabelOutOfRange) {
  for (int32_t bad : {6, -2, 1 << 30}) {
    make([&](h5::File& f) {
      std::vector<int32_t> y = ds_.labels;
      y[5] = bad;
      replace(f, "/labels", y, {n()});
    });
    expect_error("/labels", "label " + std::to_string(bad) + " at row 5 out of range");
  }
}

// ---- tolerated variations (h5py and converters write these) ---------------------------

TEST_F(Malformed, AcceptsAnyIntegerTypeForLabelsAndOffsets) {
  make([&](h5::File& f) {
    std::vector<int16_t> y(ds_.labels.begin(), ds_.labels.end());
    replace(f, "/labels", y, {n()});
    std::vector<uint32_t> off(ds_.conv_offsets.begin(), ds_.conv_offsets.end());
    replace(f, "/conversations/offsets", off, {static_cast<int64_t>(off.size())});
  });
  expect_same(ds_, read_dataset(path()));
}

TEST_F(Malformed, AcceptsFixedLengthStringsAndCommaSeparatedNames) {
  make([&](h5::File& f) {
    f.remove("/speakers");
    f.write_fixed_strings("/speakers", ds_.speakers);
    f.remove("/splits/train");
    f.write_fixed_strings("/splits/train", ds_.splits.at("train"));
    f.write_string_attr("/", "label_names", "hap, sad,neu,ang,exc,fru");
  });
  expect_same(ds_, read_dataset(path()));
}

// A file made the way a Python converter would make it: h5py, int64 labels, a
// comma-separated label_names string, a valid split.
TEST(DatasetIo, ReadsAFileWrittenWithH5py) {
  TempDir dir;
  const std::string path = dir.file("py.h5");
  const std::string script = dir.file("make.py");
  std::ofstream(script) << "import sys, h5py, numpy as np\n"
                           "s = h5py.string_dtype()\n"
                           "with h5py.File(sys.argv[1], 'w') as f:\n"
                           "    f.attrs['schema'] = 'mman-dataset/1'\n"
                           "    f.attrs['label_names'] = 'pos,neg'\n"
                           "    f.attrs['modalities'] = ['text', 'audio']\n"
                           "    f['features/text'] = np.arange(10, dtype=np.float32).reshape(5, 2)\n"
                           "    f['features/audio'] = np.ones((5, 3), dtype=np.float32)\n"
                           "    f['labels'] = np.array([0, 1, -1, 1, 0], dtype=np.int64)\n"
                           "    f.create_dataset('speakers', data=['A', 'B', 'A', 'A', 'B'], dtype=s)\n"
                           "    f.create_dataset('utterance_ids', data=['a0', 'a1', 'b0', 'c0', 'c1'], dtype=s)\n"
                           "    f.create_dataset('conversations/ids', data=['a', 'b', 'c'], dtype=s)\n"
                           "    f['conversations/offsets'] = np.array([0, 2, 3, 5])\n"
                           "    f['conversations/sessions'] = np.array([b'S1', b'S1', b'S2'])\n"
                           "    f.create_dataset('splits/train', data=['a'], dtype=s)\n"
                           "    f.create_dataset('splits/valid', data=['b'], dtype=s)\n"
                           "    f.create_dataset('splits/test', data=['c'], dtype=s)\n";
  const test::CommandResult r = test::run_command(test::python_binary() + " " + script + " " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const Dataset ds = read_dataset(path);
  EXPECT_EQ(ds.label_names, (std::vector<std::string>{"pos", "neg"}));
  EXPECT_EQ(ds.modalities, (std::vector<std::string>{"text", "audio"}));
  EXPECT_EQ(ds.features[0].at(4, 1), 9.0f);
  EXPECT_EQ(ds.dim(1), 3);
  EXPECT_EQ(ds.labels, (std::vector<int32_t>{0, 1, -1, 1, 0}));
  EXPECT_EQ(ds.conv_offsets, (std::vector<int64_t>{0, 2, 3, 5}));
  EXPECT_EQ(ds.conv_sessions, (std::vector<std::string>{"S1", "S1", "S2"}));
  EXPECT_EQ(ds.splits.at("valid"), std::vector<std::string>{"b"});
}

// Random single-bit damage anywhere in a file: every read must end in a dataset or an
// mman::Error (some of these flips make HDF5 1.10 itself crash; h5::probe catches that),
// never in a crash of this process.
TEST(DatasetIo, DamagedBytesGiveErrorsNotCrashes) {
  TempDir dir;
  const std::string good = dir.file("good.h5"), bad = dir.file("bad.h5");
  write_dataset(tiny_dataset(), good);
  std::ifstream in(good, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Rng rng(1);
  int errors = 0;
  for (int i = 0; i < 100; ++i) {
    std::string damaged = bytes;
    const size_t pos = static_cast<size_t>(rng.below(damaged.size()));
    damaged[pos] = static_cast<char>(damaged[pos] ^ (1 << rng.below(8)));
    std::ofstream(bad, std::ios::binary | std::ios::trunc) << damaged;
    try {
      read_dataset(bad);
      // the flip hit feature values or padding: a valid file
    } catch (const Error& e) {
      ++errors;
      EXPECT_NE(std::string(e.what()).find("bad.h5"), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(errors, 0);
}

// ---- validate_dataset on in-memory datasets (what synthetic generators hit) ------------

TEST(ValidateDataset, NamesTheSourceOrSaysInMemory) {
  Dataset ds = tiny_dataset();
  EXPECT_NO_THROW(validate_dataset(ds));
  ds.features[0].resize(ds.features[0].rows() - 1, ds.features[0].cols());
  try {
    validate_dataset(ds);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("in-memory dataset: /features/audio: N mismatch"), std::string::npos)
        << e.what();
  }
  ds = tiny_dataset();
  ds.source = "synthetic:iemocap";
  ds.splits["valid"] = {"conv7"};  // also in test
  try {
    validate_dataset(ds);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("synthetic:iemocap: /splits/valid: conversation 'conv7' is in two splits"),
              std::string::npos)
        << e.what();
  }
}

TEST(ValidateDataset, RejectsStructuralMistakes) {
  auto message = [](const std::function<void(Dataset&)>& damage) {
    Dataset ds = tiny_dataset();
    damage(ds);
    try {
      validate_dataset(ds);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message([](Dataset& d) { d.features.pop_back(); }).find("2 feature matrices for 3 modalities"), std::string::npos);
  EXPECT_NE(message([](Dataset& d) { d.modalities[1] = "a/b"; }).find("invalid modality name"), std::string::npos);
  EXPECT_NE(message([](Dataset& d) { d.modalities[1] = "audio"; }).find("duplicate modality"), std::string::npos);
  EXPECT_NE(message([](Dataset& d) { d.label_names.clear(); }).find("no label names"), std::string::npos);
  EXPECT_NE(message([](Dataset& d) { d.splits["train"].clear(); }).find("the train split is empty"), std::string::npos);
  EXPECT_NE(message([](Dataset& d) { d.splits["test"].push_back("conv5"); }).find("listed twice"), std::string::npos);
  EXPECT_NE(message([](Dataset& d) { d.utterance_ids[0].clear(); }).find("empty utterance id"), std::string::npos);
  EXPECT_NE(message([](Dataset& d) {
              d.conv_ids.clear();
              d.conv_sessions.clear();
            }).find("no conversations"),
            std::string::npos);
}

}  // namespace
}  // namespace mman
