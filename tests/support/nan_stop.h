// Shared by the CPU and GPU trainer tests: a loss that turns NaN mid-run stops training with
// the model, epoch and batch named, and the state file keeps the last completed epoch.
#pragma once
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "mman/train/checkpoint.h"
#include "mman/data/batch.h"
#include "mman/models/model.h"
#include "mman/train/trainer.h"
#include "support/test_support.h"

namespace mman::test {

// Trains `model` (a clstm_speech; init done) for up to 4 epochs of 2-conversation batches,
// poisoning a feature of the first training conversation after epoch 1 (read_dataset would
// refuse such data; in practice a diverging model), and checks the error message and the
// state file under `dir`. Returns what the state file holds, for the caller's own checks.
struct SavedState {
  TrainState state;
  std::vector<float> values;
};
inline SavedState expect_nan_loss_stops_and_keeps_epoch_1(Model& model, Dataset& ds, const LabelProtocol& protocol,
                                                           const SplitIndices& splits, const TempDir& dir) {
  TrainConfig tc;
  tc.max_epochs = 4;
  tc.batch_size = 2;
  tc.patience = 0;
  const std::string state = dir.file("clstm_speech.state.h5");
  std::vector<float> after_epoch1;
  TrainHooks hooks;
  hooks.state_path = [&](const std::string&) { return state; };
  hooks.on_epoch = [&](const std::string&, const EpochRecord& rec, int) {
    if (rec.epoch != 1) return;
    after_epoch1 = model.params().values();
    ds.features[0].at(ds.conv_offsets[static_cast<size_t>(splits.train[0])], 0) =
        std::numeric_limits<float>::quiet_NaN();
  };
  const std::string message = error_message([&] { train_model(model, ds, protocol, splits, tc, hooks); });
  EXPECT_NE(message.find("training clstm_speech: the loss is nan at epoch 2, batch "), std::string::npos) << message;
  EXPECT_NE(message.find("the last saved state (1 epochs completed) is kept in " + state), std::string::npos)
      << message;
  ParamStore params = model.params();
  TrainState saved;
  load_checkpoint(state, params, "clstm_speech", &saved);
  EXPECT_EQ(saved.epoch, 1);
  EXPECT_EQ(params.values(), after_epoch1);  // exactly the parameters epoch 1 ended with
  return {saved, params.values()};
}

}  // namespace mman::test
