// The model factory: type defaults, config and data-shape checks, and the Model wrapper.
#include <algorithm>
#include <set>

#include "mman/error.h"
#include "mman/layers/mma.h"
#include "mman/models/clstm.h"
#include "mman/models/model.h"
#include "mman/models/network.h"
#include "src/models/networks.h"

#ifdef MMAN_WITH_CUDA
#include "mman/cuda/model.h"
#endif

namespace mman {

namespace {

const std::vector<std::string> kModelTypes = {"clstm_speech", "clstm_visual", "clstm_text", "clstm_ef",
                                              "clstm_lf",     "clstm_mma",    "mman"};

bool is_unimodal(const std::string& t) { return t == "clstm_speech" || t == "clstm_visual" || t == "clstm_text"; }
bool is_composite(const std::string& t) { return t == "clstm_lf" || t == "mman"; }

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

void check_dropout(const std::string& who, const char* key, float p) {
  MMAN_CHECK(p >= 0.0f && p < 1.0f, "{}: {} is {}, expected a probability in [0, 1)", who, key, p);
}

void check_shape(const DataShape& shape) {
  MMAN_CHECK(shape.modalities.size() == shape.dims.size(), "data shape: {} modality names but {} widths",
             shape.modalities.size(), shape.dims.size());
  for (size_t i = 0; i < shape.dims.size(); ++i)
    MMAN_CHECK(shape.dims[i] > 0, "data shape: modality '{}' has width {}", shape.modalities[i], shape.dims[i]);
  MMAN_CHECK(shape.num_outputs > 0, "data shape: {} outputs, expected at least 1", shape.num_outputs);
  MMAN_CHECK(shape.heads >= 1 && (shape.heads == 1 || shape.num_outputs == 2 * shape.heads),
             "data shape: {} heads with {} outputs (binary heads need 2 outputs each)", shape.heads,
             shape.num_outputs);
}

}  // namespace

ModalityInputs modality_inputs(const ModelConfig& c, const DataShape& shape, const std::string& who) {
  ModalityInputs in;
  std::set<std::string> seen;
  for (const std::string& m : c.modalities) {
    MMAN_CHECK(seen.insert(m).second, "{}: modality '{}' is listed twice", who, m);
    const auto it = std::find(shape.modalities.begin(), shape.modalities.end(), m);
    MMAN_CHECK(it != shape.modalities.end(), "{}: reads modality '{}', but the data has {}", who, m,
               shape.modalities.empty() ? std::string("no modalities") : join(shape.modalities));
    const int idx = static_cast<int>(it - shape.modalities.begin());
    in.names.push_back(m);
    in.index.push_back(idx);
    in.dims.push_back(static_cast<int>(shape.dims[static_cast<size_t>(idx)]));
  }
  return in;
}

namespace {

// A Model is one Network on the model's own parameter store, built at slot 0.
class NetworkModel : public Model {
 public:
  NetworkModel(const ModelConfig& resolved, const DataShape& shape) : Model(resolved) {
    net_ = make_network(config_, shape, params_, "", 0);
  }
  void init(Rng& rng) override { net_->init(params_, rng); }
  const Tensor& forward(const Batch& batch, Mode mode, const DropoutKey& key) override {
    net_->forward(params_, batch, mode, key, logits_);
    return logits_;
  }
  void backward(const Batch& batch, const Tensor& dlogits) override { net_->backward(params_, batch, dlogits); }
  const Tensor* attention() const override { return net_->attention(); }
  int64_t precompute_frozen(const Dataset& ds, const LabelProtocol& protocol, const std::vector<int>& conversations,
                            const std::function<bool()>& stop) override {
    return net_->precompute_frozen(params_, ds, protocol, conversations, stop);
  }
  std::vector<ModelConfig> subnet_configs() const override { return config_.subnets; }

 private:
  std::unique_ptr<Network> net_;
  Tensor logits_;
};

}  // namespace

ModelConfig resolved_config(const ModelConfig& config) {
  const std::string who = config.name.empty() ? "model" : "model '" + config.name + "'";
  MMAN_CHECK(std::find(kModelTypes.begin(), kModelTypes.end(), config.type) != kModelTypes.end(),
             "{}: unknown model type '{}' (expected one of {})", who, config.type, join(kModelTypes));
  ModelConfig c = config;
  if (c.name.empty()) c.name = c.type;
  if (c.modalities.empty()) {
    if (c.type == "clstm_speech") c.modalities = {"audio"};
    if (c.type == "clstm_visual") c.modalities = {"visual"};
    if (c.type == "clstm_text") c.modalities = {"text"};
    if (c.type == "clstm_ef" || c.type == "clstm_mma") c.modalities = {"audio", "visual", "text"};
  }
  if (c.lstm_layers < 0) c.lstm_layers = c.type == "clstm_lf" || c.type == "clstm_mma" ? 1 : 2;
  if (is_composite(c.type) && c.subnets.empty()) {
    std::vector<std::string> types = {"clstm_speech", "clstm_visual", "clstm_text"};
    if (c.type == "mman") types.insert(types.begin(), "clstm_mma");
    for (const std::string& t : types) {
      ModelConfig s;
      s.type = t;
      c.subnets.push_back(s);
    }
  }
  for (ModelConfig& s : c.subnets) s = resolved_config(s);
  return c;
}

std::unique_ptr<Network> make_network(const ModelConfig& c, const DataShape& shape, ParamStore& params,
                                      const std::string& prefix, uint64_t slot_base) {
  const std::string who = "model '" + c.name + "' (" + c.type + ")";
  check_shape(shape);
  MMAN_CHECK(std::find(kModelTypes.begin(), kModelTypes.end(), c.type) != kModelTypes.end(),
             "{}: unknown model type '{}' (expected one of {})", who, c.type, join(kModelTypes));
  MMAN_CHECK(c.hidden > 0 && c.fc > 0, "{}: hidden ({}) and fc ({}) must be positive", who, c.hidden, c.fc);
  MMAN_CHECK(c.lstm_layers >= 1 && c.lstm_layers <= kClstmMaxLayers, "{}: lstm_layers is {}, expected 1 to {}", who,
             c.lstm_layers, kClstmMaxLayers);
  check_dropout(who, "lstm_dropout", c.lstm_dropout);
  check_dropout(who, "dropout", c.dropout);

  if (is_composite(c.type)) {
    MMAN_CHECK(c.modalities.empty(),
               "{}: a late-fusion model reads no modalities itself (got {}); configure its subnets instead", who,
               join(c.modalities));
    MMAN_CHECK(!c.subnets.empty() && static_cast<int>(c.subnets.size()) <= kMaxSubnets,
               "{}: {} subnets, expected 1 to {}", who, c.subnets.size(), kMaxSubnets);
    std::set<std::string> names;
    std::vector<std::unique_ptr<Network>> subs;
    for (size_t i = 0; i < c.subnets.size(); ++i) {
      const ModelConfig& s = c.subnets[i];
      MMAN_CHECK(!is_composite(s.type), "{}: subnet '{}' is of type {}; subnets must be clstm_speech, clstm_visual, "
                 "clstm_text, clstm_ef or clstm_mma", who, s.name, s.type);
      MMAN_CHECK(!s.name.empty(), "{}: subnet {} has no name (resolve the config first)", who, i);
      MMAN_CHECK(names.insert(s.name).second, "{}: two subnets are named '{}'; names must be unique", who, s.name);
      subs.push_back(make_network(s, shape, params, prefix + "subnets." + s.name + ".",
                                  slot_base + (i + 1) * kSubnetSlots));
    }
    return make_fusion_network(c, std::move(subs), shape, params, prefix, slot_base);
  }

  MMAN_CHECK(c.subnets.empty(), "{}: only clstm_lf and mman take subnets", who);
  MMAN_CHECK(!c.modalities.empty(), "{}: no modalities to read", who);
  const ModalityInputs in = modality_inputs(c, shape, who);
  if (is_unimodal(c.type))
    MMAN_CHECK(in.names.size() == 1, "{}: a uni-modal model reads exactly one modality, got {}", who,
               join(in.names));
  if (c.type == "clstm_mma") {
    MMAN_CHECK(static_cast<int>(in.names.size()) <= kMmaMaxModalities, "{}: {} modalities, MMA takes at most {}",
               who, in.names.size(), kMmaMaxModalities);
    MMAN_CHECK(c.d_model > 0, "{}: d_model is {}, expected a positive width", who, c.d_model);
    check_dropout(who, "mma_dropout", c.mma_dropout);
    return make_mma_network(c, in, shape.num_outputs, params, prefix, slot_base);
  }
  return make_clstm_network(c, in, shape.num_outputs, params, prefix, slot_base);
}

std::unique_ptr<Model> make_model(const ModelConfig& config, const DataShape& shape) {
  return std::make_unique<NetworkModel>(resolved_config(config), shape);
}

std::unique_ptr<Model> Model::make_like(const ModelConfig& config, const DataShape& shape) const {
  return make_model(config, shape);
}

std::unique_ptr<Model> make_model(const ModelConfig& config, const DataShape& shape, const std::string& backend) {
  if (backend == "cpu") return make_model(config, shape);
  MMAN_CHECK(backend == "cuda", "unknown backend '{}' (expected cpu or cuda)", backend);
#ifdef MMAN_WITH_CUDA
  return cuda::make_cuda_model(config, shape, cuda::shared_context());
#else
  fail("backend cuda: this build has no CUDA backend (configure with -DMMAN_CUDA=ON where nvcc is installed)");
#endif
}

std::vector<std::string> model_types() { return kModelTypes; }

}  // namespace mman
