// DeviceTraining: what the trainer asks of a model whose parameters live on an accelerator (the CUDA backend).
#pragma once
#include "mman/data/batch.h"
#include "mman/layers/loss.h"
#include "mman/layers/mode.h"
#include "mman/train/optimizer.h"

namespace mman {

// A model on the CPU trains through Model::forward/backward and the host optimiser. A model
// on a GPU keeps its parameters, gradients and Adam moments on the device while it trains, and
// the trainer drives it through this interface instead (Model::device_training()), so one
// training step moves only a batch to the device and a loss back.
//
// Ownership of the parameters: outside begin_training() .. end_training() the host
// ParamStore (Model::params()) is the model's parameters, and the device copy is refreshed
// from it before every use. Inside, the device copy is; the host copy is brought up to date
// by download_values() (the trainer calls it before it reads values: a saved state, the best
// epoch, the epoch hook) and end_training(), and pushed back by upload_values() after the
// trainer changed it (restoring the best epoch).
class DeviceTraining {
 public:
  virtual ~DeviceTraining() = default;

  // Host -> device: values, trainable flags and Adam's state (the CPU optimiser's form,
  // e.g. a fresh Adam's or one loaded from a checkpoint). The device copy is authoritative
  // from now on.
  virtual void begin_training(const AdamState& adam) = 0;
  // Device -> host values; the host copy is authoritative again. Safe to call twice.
  virtual void end_training() = 0;
  virtual void download_values() = 0;
  virtual void upload_values() = 0;
  // Adam's state in the CPU optimiser's form (for the resumable state file).
  virtual AdamState adam_state() const = 0;

  // One training pass on `batch`: gradients zeroed, forward in Mode::Train with dropout keyed
  // by `key`, masked cross-entropy (mean over the labelled utterances; `heads` as
  // mman::masked_cross_entropy), backward; the loss and counts come back to the host, the
  // gradients stay on the device.
  virtual LossResult forward_backward(const Batch& batch, const DropoutKey& key, int heads) = 0;
  // The L2 norm of the trainable gradients in double (NaN or Inf when any element is).
  virtual double grad_norm() = 0;
  // mman::clip_grad_value / clip_grad_norm (which returns the norm before clipping).
  virtual void clip_grad_value(float clip_value) = 0;
  virtual double clip_grad_norm(double max_norm) = 0;
  // mman::Adam::step with these hyperparameters (bit-identical update rule).
  virtual void adam_step(const AdamConfig& config) = 0;
};

}  // namespace mman
