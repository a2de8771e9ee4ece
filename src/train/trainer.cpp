// Evaluation, one training phase (epochs, model selection, early stopping, resumable state) and staged training.
#include "mman/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>

#include <nlohmann/json.hpp>

#include "mman/error.h"
#include "mman/layers/activation.h"
#include "mman/layers/loss.h"
#include "mman/models/device_training.h"
#include "mman/nvtx.h"
#include "mman/rng.h"
#include "mman/threads.h"

namespace mman {
namespace {

constexpr uint64_t kShuffleStream = 0x73687566;  // "shuf"

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void check_config(const TrainConfig& c, const std::string& model) {
  MMAN_CHECK(c.batch_size >= 1, "training {}: batch_size must be >= 1, got {}", model, c.batch_size);
  MMAN_CHECK(c.max_epochs >= 1, "training {}: max_epochs must be >= 1, got {}", model, c.max_epochs);
  MMAN_CHECK(c.patience >= 0, "training {}: patience must be >= 0 (0 = off), got {}", model, c.patience);
  MMAN_CHECK(c.clip_norm >= 0, "training {}: clip_norm must be >= 0 (0 = off), got {}", model, c.clip_norm);
  MMAN_CHECK(c.clip_value >= 0, "training {}: clip_value must be >= 0 (0 = off), got {}", model, c.clip_value);
  MMAN_CHECK(c.threads >= 0, "training {}: threads must be >= 0, got {}", model, c.threads);
}

std::string name_of(const Model& model) {
  return model.config().name.empty() ? model.config().type : model.config().name;
}

// One training phase of one model: the state machine behind train_model().
class Phase {
 public:
  Phase(Model& model, const Dataset& ds, const LabelProtocol& protocol, const SplitIndices& splits,
        const TrainConfig& config, const TrainHooks& hooks)
      : model_(model), ds_(ds), protocol_(protocol), splits_(splits), config_(config), hooks_(hooks),
        name_(name_of(model)), adam_(model.params(), config.adam()), dev_(model.device_training()) {
    check_config(config, name_);
    MMAN_CHECK(!splits.train.empty(), "training {}: the train split has no conversations", name_);
    if (hooks.state_path) path_ = hooks.state_path(name_);
    state_.adam = adam_.state();
    state_.shuffle_state = rng_key(config.seed, kShuffleStream);
  }

  TrainResult run() {
    if (config_.threads > 0) set_num_threads(config_.threads);
    if (hooks_.resume && !path_.empty() && std::filesystem::exists(path_)) load_state();
    // A model on a GPU holds its parameters there from here until end_training(); the guard
    // brings them back to the host when training stops with an error (e.g. a diverged loss).
    DeviceSession session(dev_, adam_.state());
    bool interrupted = false;
    while (!state_.finished) {
      if (!run_epoch()) {
        save_state();
        interrupted = true;
        break;
      }
    }
    session.end();
    return result(interrupted);
  }

 private:
  void load_state() {
    TrainState s;
    // Checked before anything is loaded, so a wrong file leaves the model untouched.
    const CheckpointMeta meta = read_checkpoint_meta(path_);
    MMAN_CHECK(meta.seed == config_.seed && meta.model_name == name_,
               "{}: cannot resume: the state belongs to model '{}' with seed {}, this run trains '{}' with seed {}",
               path_, meta.model_name, meta.seed, name_, config_.seed);
    load_checkpoint(path_, model_.params(), model_.config().type, &s);
    adam_.set_state(s.adam);
    state_ = std::move(s);
  }

  void save_state() {
    if (path_.empty()) return;
    if (dev_ != nullptr) {
      dev_->download_values();
      state_.adam = dev_->adam_state();
    } else {
      state_.adam = adam_.state();
    }
    CheckpointMeta meta;
    meta.model_type = model_.config().type;
    meta.model_name = name_;
    meta.config = hooks_.config_text;
    meta.protocol = protocol_.name;
    meta.epoch = state_.finished ? state_.best_epoch : state_.epoch;
    meta.seed = config_.seed;
    nlohmann::json metrics = {{"best_epoch", state_.best_epoch}, {"best_valid_accuracy", state_.best_metric}};
    if (state_.best_epoch > 0) {
      const EpochRecord& b = state_.history[static_cast<size_t>(state_.best_epoch - 1)];
      metrics["valid_loss"] = b.valid_loss;
      metrics["valid_ua"] = b.valid_ua;
    }
    meta.metrics = metrics.dump();
    write_checkpoint(path_, model_.params(), meta, &state_);
  }

  // Trains the remaining batches of the next epoch, validates and selects. Returns false
  // when a stop was requested before a batch (the state is then consistent mid-epoch).
  bool run_epoch() {
    MMAN_NVTX_RANGE("epoch");
    const double start = now_seconds();
    const int epoch = state_.epoch + 1;
    Rng shuffle(state_.shuffle_state);
    const std::vector<std::vector<int>> plan = plan_batches(splits_.train, config_.batch_size, &shuffle);
    ParamStore& params = model_.params();
    for (size_t b = static_cast<size_t>(state_.batch); b < plan.size(); ++b) {
      MMAN_NVTX_RANGE("step");  // forward, loss, backward, clipping and optimiser step of one batch
      if (hooks_.should_stop && hooks_.should_stop()) {
        state_.partial_seconds += now_seconds() - start;
        return false;
      }
      if (!frozen_precomputed_ && dev_ == nullptr) {
        // Frozen sub-networks (stage 2 of clstm_lf and mman) computed for the training
        // and validation conversations at once, inside the first epoch this call trains
        // and its timing: the same outputs the batches would compute, computed faster
        // (Model::precompute_frozen); a no-op for other models.
        std::vector<int> convs = splits_.train;
        convs.insert(convs.end(), splits_.valid.begin(), splits_.valid.end());
        // The stop hook is polled between its groups too; a stop there ends it early and
        // stops training before the batch.
        bool stopped = false;
        std::function<bool()> stop;
        if (hooks_.should_stop) stop = [&] { return stopped = stopped || hooks_.should_stop(); };
        model_.precompute_frozen(ds_, protocol_, convs, stop);
        frozen_precomputed_ = true;
        if (stopped) {
          state_.partial_seconds += now_seconds() - start;
          return false;
        }
      }
      make_batch(ds_, protocol_, plan[b], batch_);
      state_.batch = static_cast<int64_t>(b) + 1;
      if (batch_.num_labelled == 0) continue;  // nothing to learn from; no step
      const DropoutKey key{config_.seed, static_cast<uint64_t>(state_.global_step)};
      const LossResult loss = dev_ != nullptr ? device_step(key, epoch, b + 1) : host_step(key, epoch, b + 1);
      ++state_.global_step;
      state_.partial_loss_sum += loss.loss * static_cast<double>(loss.scored);
      state_.partial_scored += loss.scored;
      state_.partial_correct += loss.correct;
    }
    if (dev_ != nullptr) dev_->download_values();  // model selection, the epoch hook and the state read them

    EpochRecord rec;
    rec.epoch = epoch;
    const double scored = static_cast<double>(state_.partial_scored);
    rec.train_loss = scored > 0 ? state_.partial_loss_sum / scored : 0.0;
    rec.train_accuracy = scored > 0 ? static_cast<double>(state_.partial_correct) / scored : 0.0;
    const bool has_valid = !splits_.valid.empty();
    if (has_valid) {
      const Evaluation ev = evaluate(model_, ds_, protocol_, splits_.valid, config_.batch_size);
      rec.valid_loss = ev.loss;
      rec.valid_accuracy = ev.metrics.accuracy;
      rec.valid_ua = ev.metrics.unweighted_accuracy;
    }
    rec.seconds = state_.partial_seconds + (now_seconds() - start);
    state_.history.push_back(rec);

    // Model selection: strictly better validation accuracy wins, so ties keep the earlier
    // epoch; without a validation split the last epoch is the model.
    if (!has_valid || state_.best_epoch == 0 || rec.valid_accuracy > state_.best_metric) {
      state_.best_epoch = epoch;
      state_.best_metric = rec.valid_accuracy;
      state_.best_values = params.values();
      state_.bad_epochs = 0;
    } else {
      ++state_.bad_epochs;
    }
    state_.epoch = epoch;
    state_.batch = 0;
    state_.shuffle_state = shuffle.state();
    state_.partial_loss_sum = 0;
    state_.partial_scored = 0;
    state_.partial_correct = 0;
    state_.partial_seconds = 0;
    if (hooks_.on_epoch) hooks_.on_epoch(name_, rec, config_.max_epochs);  // sees this epoch's parameters
    const bool patience_out = has_valid && config_.patience > 0 && state_.bad_epochs >= config_.patience;
    if (epoch >= config_.max_epochs || patience_out) {
      state_.stopped_early = patience_out && epoch < config_.max_epochs;
      state_.finished = true;
      params.values() = state_.best_values;  // restore the best epoch
      if (dev_ != nullptr) dev_->upload_values();
    }
    save_state();
    return true;
  }

  // One optimiser step on the CPU: forward, loss, backward, checks, clipping, Adam.
  LossResult host_step(const DropoutKey& key, int epoch, size_t batch) {
    ParamStore& params = model_.params();
    params.zero_trainable_grads();
    const Tensor& logits = model_.forward(batch_, Mode::Train, key);
    const LossResult loss = masked_cross_entropy(logits, batch_.targets.data(), protocol_.heads, &dlogits_);
    if (!std::isfinite(loss.loss)) diverged("the loss is", loss.loss, epoch, batch);
    model_.backward(batch_, dlogits_);
    // A non-finite gradient would make every parameter NaN in one Adam step (and the
    // clamp of clip_value would hide NaN as -clip_value): stop before the step. With
    // norm clipping alone, its norm (of the raw gradients, in double) is the check.
    const bool clamp = config_.clip_value > 0;
    if (clamp || config_.clip_norm <= 0) {
      const double norm = grad_norm(params);
      if (!std::isfinite(norm)) diverged("the gradient norm is", norm, epoch, batch);
    }
    if (clamp) clip_grad_value(params, static_cast<float>(config_.clip_value));
    if (config_.clip_norm > 0) {
      const double norm = clip_grad_norm(params, config_.clip_norm);
      if (!std::isfinite(norm)) diverged("the gradient norm is", norm, epoch, batch);
    }
    adam_.step(params);
    return loss;
  }

  // The same step on the model's device (DeviceTraining): the same checks in the same order;
  // only the loss and the norms come back to the host.
  LossResult device_step(const DropoutKey& key, int epoch, size_t batch) {
    const LossResult loss = dev_->forward_backward(batch_, key, protocol_.heads);
    if (!std::isfinite(loss.loss)) diverged("the loss is", loss.loss, epoch, batch);
    const bool clamp = config_.clip_value > 0;
    if (clamp || config_.clip_norm <= 0) {
      const double norm = dev_->grad_norm();
      if (!std::isfinite(norm)) diverged("the gradient norm is", norm, epoch, batch);
    }
    if (clamp) dev_->clip_grad_value(static_cast<float>(config_.clip_value));
    if (config_.clip_norm > 0) {
      const double norm = dev_->clip_grad_norm(config_.clip_norm);
      if (!std::isfinite(norm)) diverged("the gradient norm is", norm, epoch, batch);
    }
    dev_->adam_step(config_.adam());
    return loss;
  }

  // begin_training() .. end_training() of a device model, ended on every way out of run().
  class DeviceSession {
   public:
    DeviceSession(DeviceTraining* dev, const AdamState& adam) : dev_(dev) {
      if (dev_ != nullptr) dev_->begin_training(adam);
    }
    void end() {
      if (dev_ != nullptr) dev_->end_training();
      dev_ = nullptr;
    }
    ~DeviceSession() {
      // Leaving by an exception: bring the parameters back if the device still answers; the
      // exception already in flight is the one to report.
      if (dev_ != nullptr) try {
          dev_->end_training();
        } catch (...) {
        }
    }
    DeviceSession(const DeviceSession&) = delete;
    DeviceSession& operator=(const DeviceSession&) = delete;

   private:
    DeviceTraining* dev_;
  };

  // Stops training on a NaN or Inf before it reaches the parameters. The state file keeps
  // the last completed epoch (saved when it ended), so nothing good is lost. A NaN is named
  // "nan" whatever its sign bit (x86's default NaN prints as "-nan").
  [[noreturn]] void diverged(const char* what, double value, int epoch, size_t batch) const {
    fail("training {}: {} {} at epoch {}, batch {} (diverged; try a lower train.lr, clipping, or data.normalize: "
         "true){}",
         name_, what, std::isnan(value) ? "nan" : fmt::format("{}", value), epoch, batch,
         path_.empty() || !std::filesystem::exists(path_)
             ? std::string()
             : fmt::format("; the last saved state ({} epochs completed) is kept in {}", state_.epoch, path_));
  }


  TrainResult result(bool interrupted) const {
    TrainResult r;
    r.model_name = name_;
    r.history = state_.history;
    r.best_epoch = state_.best_epoch;
    r.best_valid_accuracy = state_.best_metric;
    r.stopped_early = state_.stopped_early;
    r.interrupted = interrupted;
    r.steps = state_.global_step;
    r.seconds = state_.partial_seconds;
    for (const EpochRecord& e : state_.history) r.seconds += e.seconds;
    r.trainable_parameters = model_.params().num_parameters(true);
    r.total_parameters = model_.params().num_parameters(false);
    return r;
  }

  Model& model_;
  const Dataset& ds_;
  const LabelProtocol& protocol_;
  const SplitIndices& splits_;
  const TrainConfig& config_;
  const TrainHooks& hooks_;
  std::string name_;
  std::string path_;
  Adam adam_;
  DeviceTraining* dev_;  // the model's device interface, or null on the CPU
  TrainState state_;
  Batch batch_;
  bool frozen_precomputed_ = false;  // precompute_frozen() ran in this call
  Tensor dlogits_;
};

}  // namespace

DataShape data_shape_of(const Dataset& ds, const LabelProtocol& protocol) {
  DataShape s;
  s.modalities = ds.modalities;
  for (int m = 0; m < static_cast<int>(ds.modalities.size()); ++m) s.dims.push_back(ds.dim(m));
  s.num_outputs = protocol.num_outputs();
  s.heads = protocol.heads;
  return s;
}

void init_model(Model& model, uint64_t seed) {
  Rng rng(rng_key(seed, kInitStream));
  model.init(rng);
}

Evaluation evaluate(Model& model, const Dataset& ds, const LabelProtocol& protocol, const std::vector<int>& convs,
                    int batch_size) {
  MMAN_NVTX_RANGE("evaluate");
  MMAN_CHECK(batch_size >= 1, "evaluate: batch_size must be >= 1, got {}", batch_size);
  const int outputs = protocol.num_outputs();
  const int heads = protocol.heads;
  // Output row of each conversation's first utterance, conversations in the given order.
  std::vector<int64_t> first_row(static_cast<size_t>(ds.num_conversations()), -1);
  int64_t rows = 0;
  for (int c : convs) {
    MMAN_CHECK(c >= 0 && c < ds.num_conversations(), "evaluate: conversation index {} out of range (the data has {})",
               c, ds.num_conversations());
    MMAN_CHECK(first_row[static_cast<size_t>(c)] < 0, "evaluate: conversation {} ('{}') listed twice", c,
               ds.conv_ids[static_cast<size_t>(c)]);
    first_row[static_cast<size_t>(c)] = rows;
    rows += ds.conv_length(c);
  }
  Evaluation ev;
  ev.utterances.assign(static_cast<size_t>(rows), -1);
  ev.targets.assign(static_cast<size_t>(rows), -1);
  ev.predictions.assign(static_cast<size_t>(rows * heads), 0);
  ev.probabilities.resize(rows, outputs);
  double loss_sum = 0;
  int64_t scored = 0;
  Batch batch;
  Tensor probs;
  for (const std::vector<int>& part : plan_batches(convs, batch_size, nullptr)) {
    make_batch(ds, protocol, part, batch);
    const Tensor& logits = model.forward(batch, Mode::Eval, DropoutKey{});
    MMAN_CHECK(logits.rows() == batch.rows() && logits.cols() == outputs,
               "evaluate: model {} returned logits [{} x {}] for {} rows and {} outputs", name_of(model),
               logits.rows(), logits.cols(), batch.rows(), outputs);
    const LossResult loss = masked_cross_entropy(logits, batch.targets.data(), heads, nullptr);
    loss_sum += loss.loss * static_cast<double>(loss.scored);
    scored += loss.scored;
    probs.resize(logits.rows(), outputs);
    softmax_forward(logits.data(), outputs, logits.rows(), outputs, heads == 1 ? outputs : 2, probs.data(), outputs);
    const std::vector<int32_t> pred = predict_classes(protocol, logits);
    const Tensor* att = model.attention();
    if (att != nullptr && ev.attention.empty()) ev.attention.resize(rows, att->cols());
    const PackedLayout& layout = batch.layout;
    for (int b = 0; b < layout.convs(); ++b) {
      const int64_t base = first_row[static_cast<size_t>(batch.conv_index[static_cast<size_t>(b)])];
      for (int t = 0; t < layout.lengths[static_cast<size_t>(b)]; ++t) {
        const int64_t r = layout.row(b, t), out = base + t;
        ev.utterances[static_cast<size_t>(out)] = batch.utterance[static_cast<size_t>(r)];
        ev.targets[static_cast<size_t>(out)] = batch.targets[static_cast<size_t>(r)];
        std::copy_n(probs.row(r), outputs, ev.probabilities.row(out));
        std::copy_n(pred.begin() + r * heads, heads, ev.predictions.begin() + out * heads);
        if (att != nullptr) std::copy_n(att->row(r), att->cols(), ev.attention.row(out));
      }
    }
  }
  ev.loss = scored > 0 ? loss_sum / static_cast<double>(scored) : 0.0;
  ev.metrics = compute_metrics(protocol, ev.targets, ev.predictions);
  return ev;
}

TrainResult train_model(Model& model, const Dataset& ds, const LabelProtocol& protocol, const SplitIndices& splits,
                        const TrainConfig& config, const TrainHooks& hooks) {
  MMAN_NVTX_RANGE("train_model");
  Phase phase(model, ds, protocol, splits, config, hooks);
  return phase.run();
}

StagedResult train_staged(Model& model, const Dataset& ds, const LabelProtocol& protocol, const SplitIndices& splits,
                          const TrainConfig& config, SubnetCache* cache, const TrainHooks& hooks) {
  StagedResult out;
  const std::vector<ModelConfig> subnets = model.subnet_configs();
  if (!subnets.empty()) {
    const DataShape shape = data_shape_of(ds, protocol);
    for (const ModelConfig& sub_config : subnets) {
      MMAN_NVTX_RANGE("stage1.subnet");
      const std::string name = sub_config.name.empty() ? sub_config.type : sub_config.name;
      TrainedSubnet trained;
      if (cache != nullptr && cache->count(name)) {
        trained = cache->at(name);
      } else {
        trained.model = std::shared_ptr<Model>(model.make_like(sub_config, shape));
        init_model(*trained.model, config.seed);
        trained.result = train_model(*trained.model, ds, protocol, splits, config, hooks);
        if (trained.result.interrupted) {
          out.subnets.emplace_back(name, trained.result);
          out.interrupted = true;
          return out;
        }
        if (cache != nullptr) (*cache)[name] = trained;
      }
      const std::string prefix = "subnets." + name + ".";
      const int copied = model.params().copy_from(trained.model->params(), "", prefix);
      int expected = 0;
      for (const ParamInfo& p : model.params().infos()) expected += p.name.compare(0, prefix.size(), prefix) == 0;
      MMAN_CHECK(copied == expected && copied == trained.model->params().count(),
                 "training {}: sub-network {} has {} tensors but the composite holds {} under '{}'", name_of(model),
                 name, trained.model->params().count(), expected, prefix);
      model.params().set_trainable(prefix, false);
      out.subnets.emplace_back(name, trained.result);
    }
  }
  MMAN_NVTX_RANGE(subnets.empty() ? "train" : "stage2");
  out.result = train_model(model, ds, protocol, splits, config, hooks);
  out.interrupted = out.result.interrupted;
  return out;
}

}  // namespace mman
