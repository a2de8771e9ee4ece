// Writes the binary seed corpora of the dataset and checkpoint fuzzers (small valid files to mutate): make_seeds CORPUS_DIR.
#include <cstdio>
#include <filesystem>
#include <string>

#include "fuzz/fuzz_targets.h"
#include "mman/error.h"
#include "mman/rng.h"
#include "support/tiny_dataset.h"

namespace {

using namespace mman;

void datasets(const std::string& dir) {
  std::filesystem::create_directories(dir);
  test::TinySpec small;  // few, short conversations: a seed of a few KB
  small.train_lengths = {3, 1, 2};
  small.test_lengths = {2, 1};
  small.dims = {3, 2, 2};
  write_dataset(test::tiny_dataset(small), dir + "/tiny.h5");

  test::TinySpec valid = small;
  valid.valid_lengths = {2};
  valid.unlabelled_every = 0;
  write_dataset(test::tiny_dataset(valid), dir + "/with_valid.h5");

  test::TinySpec other = small;  // another corpus: labels only the raw protocol accepts
  other.label_names = {"pos", "neg"};
  other.modalities = {"text"};
  other.dims = {2};
  write_dataset(test::tiny_dataset(other), dir + "/raw_labels.h5");
}

void checkpoints(const std::string& dir) {
  std::filesystem::create_directories(dir);
  for (const std::string& type : model_types()) {
    std::unique_ptr<Model> model = make_model(fuzz::tiny_model(type), fuzz::tiny_shape());
    Rng rng(1);
    model->init(rng);
    CheckpointMeta meta;
    meta.model_type = type;
    meta.model_name = type;
    meta.protocol = "iemocap4";
    meta.epoch = 1;
    write_checkpoint(dir + "/" + type + ".h5", model->params(), meta);
  }
  // One with a trainer state (/train_state), as a run's <model>.state.h5.
  std::unique_ptr<Model> model = make_model(fuzz::tiny_model("clstm_speech"), fuzz::tiny_shape());
  Rng rng(2);
  model->init(rng);
  const size_t n = model->params().values().size();
  TrainState s;
  s.adam.step = 6;
  s.adam.m.assign(n, 0.01f);
  s.adam.v.assign(n, 0.001f);
  s.epoch = 2;
  s.batch = 1;
  s.global_step = 6;
  s.best_epoch = 1;
  s.best_metric = 0.5;
  s.bad_epochs = 1;
  s.best_values = model->params().values();
  s.history = {EpochRecord{1, 1.2, 0.4, 1.3, 0.5, 0.45, 0.1}, EpochRecord{2, 1.1, 0.5, 1.35, 0.45, 0.4, 0.1}};
  s.partial_loss_sum = 2.5;
  s.partial_scored = 2;
  s.partial_correct = 1;
  CheckpointMeta meta;
  meta.model_type = "clstm_speech";
  meta.model_name = "clstm_speech";
  meta.config = "name: fuzz\n";
  meta.epoch = 2;
  meta.seed = 3;
  write_checkpoint(dir + "/clstm_speech.state.h5", model->params(), meta, &s);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds CORPUS_DIR (writes CORPUS_DIR/dataset/*.h5 and CORPUS_DIR/checkpoint/*.h5)\n");
    return 2;
  }
  try {
    datasets(std::string(argv[1]) + "/dataset");
    checkpoints(std::string(argv[1]) + "/checkpoint");
  } catch (const mman::Error& e) {
    std::fprintf(stderr, "make_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
