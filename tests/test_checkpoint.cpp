// Checkpoints: round trip with trainer state, h5py-written files, and every loader error.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "mman/error.h"
#include "mman/hdf5_io.h"
#include "mman/rng.h"
#include "mman/train/checkpoint.h"
#include "support/test_support.h"

namespace mman {
namespace {

// The tensors of tests/torch/make_checkpoint.py, in its order.
ParamStore small_store() {
  ParamStore ps;
  ps.add("lstm.weight_ih_l0", {8, 3});
  ps.add("lstm.weight_hh_l0", {8, 2});
  ps.add("lstm.bias_ih_l0", {8});
  ps.add("lstm.bias_hh_l0", {8});
  ps.add("fc.weight", {4, 2});
  ps.add("fc.bias", {4});
  ps.add("out.weight", {3, 4});
  ps.add("out.bias", {3});
  return ps;
}

void randomize(std::vector<float>& arena, const ParamStore& ps, Rng& rng) {
  for (const ParamInfo& p : ps.infos())
    for (size_t i = 0; i < p.size; ++i) arena[p.offset + i] = static_cast<float>(rng.normal());
}

CheckpointMeta small_meta() {
  CheckpointMeta m;
  m.model_type = "clstm_speech";
  m.model_name = "speech";
  m.config = "type: clstm_speech\nhidden: 2\n";
  m.protocol = "iemocap4";
  m.epoch = 12;
  m.seed = 0xFFFFFFFFFFFFFFF1ull;  // needs the full unsigned range
  m.metrics = R"({"accuracy": 0.625})";
  return m;
}

// Runs f, requires an mman::Error, and returns its message.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no mman::Error thrown";
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string write_small(const test::TempDir& dir, const std::string& name = "ck.h5") {
  ParamStore ps = small_store();
  Rng rng(1);
  randomize(ps.values(), ps, rng);
  const std::string path = dir.file(name);
  write_checkpoint(path, ps, small_meta());
  return path;
}

std::string run_make_checkpoint(const test::TempDir& dir, const std::string& args) {
  const std::string out = dir.file("torch.h5");
  const test::CommandResult r = test::run_command(test::python_binary() + " " + MMAN_TEST_SOURCE_DIR +
                                                  "/torch/make_checkpoint.py " + out + " " + args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return out;
}

// What make_checkpoint.py stores: tensor k holds (k + 1) + i / 1000 at flat index i.
void expect_python_values(const ParamStore& ps) {
  for (int k = 0; k < ps.count(); ++k)
    for (size_t i = 0; i < ps.info(k).size; ++i)
      ASSERT_EQ(ps.value(k)[i], static_cast<float>((k + 1) + static_cast<double>(i) / 1000.0))
          << ps.info(k).name << "[" << i << "]";
}

}  // namespace

TEST(Checkpoint, RoundTripsParametersAndAttributes) {
  test::TempDir dir;
  ParamStore ps = small_store();
  Rng rng(3);
  randomize(ps.values(), ps, rng);
  ps.set_trainable("lstm.", false);  // frozen tensors are stored too
  const std::string path = dir.file("model.h5");
  write_checkpoint(path, ps, small_meta());
  // Atomic write: only the final file is left in the folder.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    ++files;
    EXPECT_EQ(e.path().filename(), "model.h5");
  }
  EXPECT_EQ(files, 1);

  ParamStore back = small_store();
  const CheckpointMeta m = load_checkpoint(path, back, "clstm_speech");
  EXPECT_EQ(back.values(), ps.values());
  EXPECT_EQ(m.model_type, "clstm_speech");
  EXPECT_EQ(m.model_name, "speech");
  EXPECT_EQ(m.config, small_meta().config);
  EXPECT_EQ(m.protocol, "iemocap4");
  EXPECT_EQ(m.epoch, 12);
  EXPECT_EQ(m.seed, 0xFFFFFFFFFFFFFFF1ull);
  EXPECT_EQ(m.metrics, small_meta().metrics);
  EXPECT_EQ(m.mman_version, MMAN_VERSION);
  EXPECT_FALSE(checkpoint_has_train_state(path));
  EXPECT_EQ(read_checkpoint_meta(path).epoch, 12);

  // Datasets at the root, by state_dict name, with PyTorch's shapes.
  const h5::File f = h5::File::open(path);
  EXPECT_EQ(f.info("/lstm.weight_ih_l0").shape, (h5::Shape{8, 3}));
  EXPECT_EQ(f.info("/out.bias").type.name(), "float32");
}

// The training data's standardisation travels with the model: written by name, read back
// exactly, and a checkpoint that has it still loads its parameters (no "unexpected" group).
TEST(Checkpoint, RoundTripsTheInputNormalization) {
  test::TempDir dir;
  ParamStore ps = small_store();
  Rng rng(5);
  randomize(ps.values(), ps, rng);
  InputNormalization n;
  n.modalities = {"audio", "visual"};
  n.mean = {{1.5f, -2.0f, 1e3f}, {0.25f}};
  n.stddev = {{0.5f, 3.0f, 120.0f}, {1.0f}};
  const std::string path = dir.file("norm.h5");
  write_checkpoint(path, ps, small_meta(), nullptr, &n);
  InputNormalization back;
  ASSERT_TRUE(read_checkpoint_normalization(path, &back));
  EXPECT_EQ(back.modalities, n.modalities);
  EXPECT_EQ(back.mean, n.mean);
  EXPECT_EQ(back.stddev, n.stddev);
  ParamStore loaded = small_store();
  load_checkpoint(path, loaded, "clstm_speech");
  EXPECT_EQ(loaded.values(), ps.values());

  // Without one (any older or foreign file): false, and the output is untouched.
  const std::string plain = write_small(dir);
  InputNormalization untouched = n;
  EXPECT_FALSE(read_checkpoint_normalization(plain, &untouched));
  EXPECT_EQ(untouched.modalities, n.modalities);

  // A deviation of zero cannot standardise anything: refused with the dataset named.
  n.stddev[1][0] = 0.0f;
  const std::string bad = dir.file("bad.h5");
  write_checkpoint(bad, ps, small_meta(), nullptr, &n);
  const std::string message = test::error_message([&] { read_checkpoint_normalization(bad, &back); });
  EXPECT_NE(message.find(bad), std::string::npos) << message;
  EXPECT_NE(message.find("/normalization/visual/std"), std::string::npos) << message;
  EXPECT_NE(message.find("deviations must be finite and positive"), std::string::npos) << message;
}

TEST(Checkpoint, RoundTripsTrainState) {
  test::TempDir dir;
  ParamStore ps = small_store();
  Rng rng(4);
  randomize(ps.values(), ps, rng);
  TrainState s;
  s.adam.step = 17;
  s.adam.m.assign(ps.values().size(), 0.0f);
  s.adam.v.assign(ps.values().size(), 0.0f);
  randomize(s.adam.m, ps, rng);
  randomize(s.adam.v, ps, rng);
  s.best_values.assign(ps.values().size(), 0.0f);
  randomize(s.best_values, ps, rng);
  s.shuffle_state = 0xDEADBEEFCAFEF00Dull;
  s.epoch = 3;
  s.batch = 2;
  s.global_step = 17;
  s.best_epoch = 2;
  s.best_metric = 0.1 + 0.2;  // not exactly representable in decimal: must survive bit-exactly
  s.bad_epochs = 1;
  for (int e = 1; e <= 3; ++e) {
    EpochRecord r;
    r.epoch = e;
    r.train_loss = 1.0 / 3.0 * e;
    r.train_accuracy = 0.25 * e;
    r.valid_loss = 2.0 / 7.0;
    r.valid_accuracy = 0.3 + e * 0.01;
    r.valid_ua = 1e-17 * e;
    r.seconds = 0.5 * e;
    s.history.push_back(r);
  }
  s.partial_loss_sum = 12.345678901234567;
  s.partial_scored = 99;
  s.partial_correct = 41;
  s.partial_seconds = 0.75;
  s.stopped_early = true;
  const std::string path = dir.file("state.h5");
  write_checkpoint(path, ps, small_meta(), &s);
  EXPECT_TRUE(checkpoint_has_train_state(path));

  ParamStore back = small_store();
  TrainState r;
  load_checkpoint(path, back, "", &r);
  EXPECT_EQ(back.values(), ps.values());
  EXPECT_EQ(r.adam.step, 17);
  EXPECT_EQ(r.adam.m, s.adam.m);
  EXPECT_EQ(r.adam.v, s.adam.v);
  EXPECT_EQ(r.best_values, s.best_values);
  EXPECT_EQ(r.shuffle_state, s.shuffle_state);
  EXPECT_EQ(r.epoch, 3);
  EXPECT_EQ(r.batch, 2);
  EXPECT_EQ(r.global_step, 17);
  EXPECT_EQ(r.best_epoch, 2);
  EXPECT_EQ(r.best_metric, s.best_metric);
  EXPECT_EQ(r.bad_epochs, 1);
  ASSERT_EQ(r.history.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(r.history[i].epoch, s.history[i].epoch);
    EXPECT_EQ(r.history[i].train_loss, s.history[i].train_loss);
    EXPECT_EQ(r.history[i].train_accuracy, s.history[i].train_accuracy);
    EXPECT_EQ(r.history[i].valid_loss, s.history[i].valid_loss);
    EXPECT_EQ(r.history[i].valid_accuracy, s.history[i].valid_accuracy);
    EXPECT_EQ(r.history[i].valid_ua, s.history[i].valid_ua);
    EXPECT_EQ(r.history[i].seconds, s.history[i].seconds);
  }
  EXPECT_EQ(r.partial_loss_sum, s.partial_loss_sum);
  EXPECT_EQ(r.partial_scored, 99);
  EXPECT_EQ(r.partial_correct, 41);
  EXPECT_EQ(r.partial_seconds, 0.75);
  EXPECT_FALSE(r.finished);
  EXPECT_TRUE(r.stopped_early);

  // A fresh state (no epochs, no best copy) round-trips too.
  TrainState empty;
  empty.adam.m.assign(ps.values().size(), 0.0f);
  empty.adam.v.assign(ps.values().size(), 0.0f);
  write_checkpoint(path, ps, small_meta(), &empty);
  TrainState r2;
  load_checkpoint(path, back, "", &r2);
  EXPECT_TRUE(r2.history.empty());
  EXPECT_TRUE(r2.best_values.empty());
}

TEST(Checkpoint, LoadsH5pyStateDictAtRoot) {
  test::TempDir dir;
  const std::string path = run_make_checkpoint(dir, "--layout root --dtype float32");
  ParamStore ps = small_store();
  const CheckpointMeta m = load_checkpoint(path, ps, "clstm_speech");
  expect_python_values(ps);
  EXPECT_EQ(m.model_name, "speech_small");
  EXPECT_EQ(m.epoch, 3);
  EXPECT_EQ(m.seed, 7u);
  EXPECT_EQ(m.metrics, R"({"accuracy": 0.5})");
  EXPECT_EQ(m.mman_version, "");  // not written by that tool: optional
}

TEST(Checkpoint, LoadsH5pyStateDictUnderParamsAndFloat64) {
  test::TempDir dir;
  ParamStore ps = small_store();
  load_checkpoint(run_make_checkpoint(dir, "--layout params --dtype float32"), ps, "clstm_speech");
  expect_python_values(ps);
  ParamStore ps64 = small_store();
  load_checkpoint(run_make_checkpoint(dir, "--layout root --dtype float64"), ps64);
  expect_python_values(ps64);
}

TEST(Checkpoint, MissingTensorIsNamed) {
  test::TempDir dir;
  const std::string path = write_small(dir);
  {
    h5::File f = h5::File::edit(path);
    f.remove("/fc.bias");
    f.commit();
  }
  ParamStore ps = small_store();
  const std::vector<float> before = ps.values();
  const std::string msg = error_of([&] { load_checkpoint(path, ps); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "/fc.bias")) << msg;
  EXPECT_TRUE(contains(msg, "missing")) << msg;
  EXPECT_EQ(ps.values(), before);  // untouched on error
}

TEST(Checkpoint, MisshapenTensorIsNamed) {
  test::TempDir dir;
  const std::string path = write_small(dir);
  {
    h5::File f = h5::File::edit(path);
    f.remove("/out.weight");
    const std::vector<float> v(12, 1.0f);
    f.write_float32("/out.weight", v.data(), {4, 3});  // transposed
    f.commit();
  }
  ParamStore ps = small_store();
  const std::string msg = error_of([&] { load_checkpoint(path, ps); });
  EXPECT_TRUE(contains(msg, path + ": /out.weight: wrong shape")) << msg;
  EXPECT_TRUE(contains(msg, "[3 x 4]")) << msg;
  EXPECT_TRUE(contains(msg, "[4 x 3]")) << msg;
}

TEST(Checkpoint, NonFloatTensorIsRejected) {
  test::TempDir dir;
  const std::string path = write_small(dir);
  {
    h5::File f = h5::File::edit(path);
    f.remove("/fc.bias");
    f.write("/fc.bias", std::vector<int32_t>{1, 2, 3, 4});
    f.commit();
  }
  ParamStore ps = small_store();
  const std::string msg = error_of([&] { load_checkpoint(path, ps); });
  EXPECT_TRUE(contains(msg, "/fc.bias")) << msg;
  EXPECT_TRUE(contains(msg, "int32")) << msg;
}

TEST(Checkpoint, UnexpectedTensorsAreListed) {
  test::TempDir dir;
  const std::string path = write_small(dir);
  {
    h5::File f = h5::File::edit(path);
    f.write("/mma.q.audio.weight", std::vector<float>{1, 2});
    f.write("/lstm.weight_ih_l1", std::vector<float>{1, 2});
    f.commit();
  }
  ParamStore ps = small_store();
  const std::string msg = error_of([&] { load_checkpoint(path, ps); });
  EXPECT_TRUE(contains(msg, "2 unexpected tensors")) << msg;
  EXPECT_TRUE(contains(msg, "/mma.q.audio.weight")) << msg;
  EXPECT_TRUE(contains(msg, "/lstm.weight_ih_l1")) << msg;
}

TEST(Checkpoint, WrongModelTypeIsRejected) {
  test::TempDir dir;
  const std::string path = write_small(dir);
  ParamStore ps = small_store();
  const std::string msg = error_of([&] { load_checkpoint(path, ps, "clstm_mma"); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "model_type")) << msg;
  EXPECT_TRUE(contains(msg, "'clstm_speech'")) << msg;
  EXPECT_TRUE(contains(msg, "'clstm_mma'")) << msg;
}

TEST(Checkpoint, NotACheckpointIsRejected) {
  test::TempDir dir;
  ParamStore ps = small_store();
  // An HDF5 file without the schema attribute (e.g. a dataset file).
  const std::string other = dir.file("data.h5");
  {
    h5::File f = h5::File::create(other);
    f.write_string_attr("/", "schema", "mman-dataset/1");
    f.commit();
  }
  std::string msg = error_of([&] { load_checkpoint(other, ps); });
  EXPECT_TRUE(contains(msg, "expected 'mman-checkpoint/1', found 'mman-dataset/1'")) << msg;
  const std::string bare = dir.file("bare.h5");
  h5::File::create(bare).commit();
  msg = error_of([&] { read_checkpoint_meta(bare); });
  EXPECT_TRUE(contains(msg, "not a checkpoint")) << msg;
  // Not HDF5 at all, and no file.
  const std::string text = dir.file("notes.txt");
  std::ofstream(text) << "just some text, not HDF5\n";
  msg = error_of([&] { load_checkpoint(text, ps); });
  EXPECT_TRUE(contains(msg, text)) << msg;
  msg = error_of([&] { load_checkpoint(dir.file("absent.h5"), ps); });
  EXPECT_TRUE(contains(msg, "no such file")) << msg;
  // No model type.
  {
    h5::File f = h5::File::create(bare);
    f.write_string_attr("/", "schema", kCheckpointSchema);
    f.commit();
  }
  msg = error_of([&] { load_checkpoint(bare, ps); });
  EXPECT_TRUE(contains(msg, "model_type")) << msg;
}

TEST(Checkpoint, TruncatedFileIsRejected) {
  test::TempDir dir;
  const std::string path = write_small(dir);
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size / 2);
  ParamStore ps = small_store();
  const std::string msg = error_of([&] { load_checkpoint(path, ps); });
  EXPECT_TRUE(contains(msg, path)) << msg;
}

TEST(Checkpoint, ResumeNeedsTrainState) {
  test::TempDir dir;
  const std::string path = write_small(dir);
  ParamStore ps = small_store();
  TrainState s;
  const std::string msg = error_of([&] { load_checkpoint(path, ps, "", &s); });
  EXPECT_TRUE(contains(msg, "/train_state")) << msg;
}

TEST(Checkpoint, DamagedTrainStateIsNamed) {
  test::TempDir dir;
  ParamStore ps = small_store();
  TrainState s;
  s.adam.m.assign(ps.values().size(), 0.0f);
  s.adam.v.assign(ps.values().size(), 0.0f);
  const std::string path = dir.file("state.h5");
  write_checkpoint(path, ps, small_meta(), &s);
  {
    h5::File f = h5::File::edit(path);
    f.remove("/train_state/adam_v/fc.weight");
    f.commit();
  }
  TrainState r;
  const std::string msg = error_of([&] { load_checkpoint(path, ps, "", &r); });
  EXPECT_TRUE(contains(msg, "/train_state/adam_v/fc.weight")) << msg;
  // Moments of the wrong size are refused when writing.
  s.adam.m.resize(3);
  EXPECT_THROW(write_checkpoint(path, ps, small_meta(), &s), Error);
}

}  // namespace mman
