// Model: the interface every network (clstm_*, clstm_mma, mman) implements, and its factory.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mman/data/batch.h"
#include "mman/layers/mode.h"
#include "mman/params.h"
#include "mman/rng.h"
#include "mman/tensor.h"

namespace mman {

class DeviceTraining;  // mman/models/device_training.h

enum class MmaScore { ScaledDot, Cosine };
enum class MmaSkip { Residual, Concat };

// The resolved hyperparameters of one model instance (SPEC section 2 defaults). The
// YAML runner fills it; tests fill it directly.
struct ModelConfig {
  std::string type;                       // clstm_speech | clstm_visual | clstm_text | clstm_ef | clstm_lf | clstm_mma | mman
  std::string name;                       // instance name in an experiment (default: type)
  std::vector<std::string> modalities;    // inputs of uni-modal / EF / MMA models; empty = the type's default
  int hidden = 300;                       // LSTM hidden size
  int lstm_layers = -1;                   // -1 = the type's default (2 uni-modal/EF, 1 LF/MMA)
  float lstm_dropout = 0.5f;              // between stacked LSTM layers
  bool bidirectional = false;
  int fc = 200;                           // width of the dense layer after the LSTM
  float dropout = 0.5f;                   // after ReLU(LSTM) and after ReLU(fc)
  int d_model = 150;                      // MMA: standardised width, d_k = d_v = d_model
  float mma_dropout = 0.1f;               // MMA: after standardisation and on z_m
  MmaScore score = MmaScore::ScaledDot;
  MmaSkip skip = MmaSkip::Residual;
  std::vector<ModelConfig> subnets;       // clstm_lf, mman: the sub-networks (uni-modal, clstm_mma)
};

// What a model needs to know about the data: modality names and widths from the file,
// and the output width of the label protocol.
struct DataShape {
  std::vector<std::string> modalities;
  std::vector<int64_t> dims;
  int num_outputs = 0;
  int heads = 1;  // binary4: 4 heads of 2 outputs
};

class Model {
 public:
  virtual ~Model() = default;

  const ModelConfig& config() const { return config_; }
  ParamStore& params() { return params_; }
  const ParamStore& params() const { return params_; }

  // PyTorch-default initialisation of every parameter from rng.
  virtual void init(Rng& rng) = 0;
  // Logits [rows x num_outputs] for every row of the batch. In Mode::Train it keeps
  // what backward() needs and applies dropout keyed by `key`.
  virtual const Tensor& forward(const Batch& batch, Mode mode, const DropoutKey& key) = 0;
  // Gradient of the loss w.r.t. the last forward's logits -> parameter gradients,
  // accumulated (+=) into params().grads() for trainable parameters.
  virtual void backward(const Batch& batch, const Tensor& dlogits) = 0;
  // MMA models: the last forward's attention weights [rows x 9] (query m, key n at
  // column 3m + n, modalities in the model's order); others: nullptr.
  virtual const Tensor* attention() const { return nullptr; }
  // Composite models (clstm_lf, mman) whose sub-networks are frozen: computes those
  // sub-networks' outputs for the given conversations ahead of the batches that will read
  // them (src/models/frozen_cache.h), in groups of conversations of similar length spread
  // over the threads, which is cheaper than batch by batch. Results are the same bits
  // either way. `stop`, when given, is polled between groups: once it answers true no new
  // group starts (what is computed stays cached; the batches compute the rest). Returns how
  // many (sub-network, conversation) outputs it computed: 0 when all were ready, nothing is
  // frozen, or the model keeps no such cache (the default). attention() still describes
  // the last forward(), not this.
  virtual int64_t precompute_frozen(const Dataset& ds, const LabelProtocol& protocol,
                                    const std::vector<int>& conversations, const std::function<bool()>& stop = {}) {
    (void)ds, (void)protocol, (void)conversations, (void)stop;
    return 0;
  }
  // Composite models (clstm_lf, mman): the sub-network configs whose parameters live
  // under "subnets.<name>." and are trained in stage 1.
  virtual std::vector<ModelConfig> subnet_configs() const { return {}; }

  // Where the model computes: "cpu" or "cuda".
  virtual std::string backend() const { return "cpu"; }
  // A new model of another config on this model's backend (and device): how train_staged
  // builds the sub-networks of a composite.
  virtual std::unique_ptr<Model> make_like(const ModelConfig& config, const DataShape& shape) const;
  // Models whose parameters live on an accelerator while they train (the CUDA backend): the
  // trainer's interface to them. CPU models: nullptr.
  virtual DeviceTraining* device_training() { return nullptr; }

 protected:
  Model(ModelConfig config) : config_(std::move(config)) {}
  ModelConfig config_;
  ParamStore params_;
};

// The one factory keyed by type (STYLE practice 9). Throws mman::Error for an unknown
// type or a modality the data does not have.
std::unique_ptr<Model> make_model(const ModelConfig& config, const DataShape& shape);
// The same on a backend: "cpu", or "cuda" (the process's shared context on device 0; throws
// mman::Error "no usable CUDA device: <reason>" without one, or when the build has no CUDA
// backend).
std::unique_ptr<Model> make_model(const ModelConfig& config, const DataShape& shape, const std::string& backend);
std::vector<std::string> model_types();

}  // namespace mman

namespace mman {

// The config with the type's defaults filled in (as make_model uses it and Model::config()
// reports it): name = type when empty; modalities audio / visual / text for
// clstm_speech / clstm_visual / clstm_text and all three (audio, visual, text) for
// clstm_ef and clstm_mma; lstm_layers 2 for uni-modal and EF, 1 for clstm_lf and
// clstm_mma; subnets of clstm_lf = clstm_speech, clstm_visual, clstm_text and of mman =
// clstm_mma, clstm_speech, clstm_visual, clstm_text, each with the SPEC defaults (a
// composite's own hyperparameters configure its top part only, as in the PyTorch
// reference tests/torch/mman_torch.py; list subnets explicitly to change theirs); every
// subnet resolved in turn. Throws mman::Error for an unknown type.
ModelConfig resolved_config(const ModelConfig& config);

}  // namespace mman
