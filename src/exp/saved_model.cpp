// load_saved_model: checkpoint attributes -> model config, data preparation, parameters.
#include "mman/exp/saved_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <yaml-cpp/yaml.h>

#include "mman/error.h"
#include "mman/exp/config.h"
#include "mman/train/trainer.h"

namespace mman {
namespace {

// The checkpoint's statistics applied by modality name. A modality of the file that the
// training data did not have stays as it is (the model cannot read it: it was built on the
// training data's modalities); one with another width is an error.
void apply_stored_normalization(const InputNormalization& stored, Dataset& ds, const std::string& checkpoint) {
  Normalizer n;
  for (size_t m = 0; m < ds.modalities.size(); ++m) {
    const size_t d = static_cast<size_t>(ds.dim(static_cast<int>(m)));
    const auto it = std::find(stored.modalities.begin(), stored.modalities.end(), ds.modalities[m]);
    if (it == stored.modalities.end()) {
      n.mean.emplace_back(d, 0.0f);
      n.stddev.emplace_back(d, 1.0f);
      continue;
    }
    const size_t k = static_cast<size_t>(it - stored.modalities.begin());
    if (stored.mean[k].size() != d)
      fail("{}: /normalization/{}: statistics for {} features, but {} has {}", checkpoint, ds.modalities[m],
           stored.mean[k].size(), ds.source, d);
    n.mean.push_back(stored.mean[k]);
    n.stddev.push_back(stored.stddev[k]);
  }
  n.apply(ds);
}

}  // namespace

SavedModel load_saved_model(const std::string& checkpoint, Dataset& ds, const std::string& protocol_name) {
  SavedModel s;
  s.meta = read_checkpoint_meta(checkpoint);
  const std::string name = s.meta.model_name.empty() ? s.meta.model_type : s.meta.model_name;
  ExperimentConfig cfg;
  if (!s.meta.config.empty()) {
    // Either a whole experiment (what `mman_exp run` stores) or one model's settings
    // such as {"type": "clstm_speech", "hidden": 300} (what another tool may write).
    std::string text = s.meta.config;
    try {
      const YAML::Node root = YAML::Load(text);
      if (root.IsMap() && !root["models"] && root["type"]) {
        YAML::Emitter flow;
        flow << YAML::Flow << root;
        text = fmt::format("models:\n  {}: {}\ndata: {{normalize: false}}\n", name, flow.c_str());
      }
    } catch (const YAML::Exception&) {
      // parse_experiment reports it with a location
    }
    try {
      cfg = parse_experiment(text, checkpoint + " (attribute config)");
    } catch (const Error& e) {
      fail("{}: the config attribute is not a usable experiment: {}", checkpoint, e.what());
    }
  } else {
    // A file made by another tool: the model type's defaults (SPEC section 2).
    cfg = parse_experiment(fmt::format("models:\n  {}: {{type: {}}}\ndata: {{normalize: false}}\n", name, s.meta.model_type),
                           checkpoint + " (defaults of model_type)");
  }
  const ModelEntry* entry = cfg.find_model(name);
  if (entry == nullptr) fail("{}: the config attribute defines no model named '{}'", checkpoint, name);
  if (entry->model.type != s.meta.model_type)
    fail("{}: model_type is {} but its config says {} is a {}", checkpoint, s.meta.model_type, name, entry->model.type);

  const std::string protocol = !protocol_name.empty() ? protocol_name
                               : !s.meta.protocol.empty() ? s.meta.protocol
                                                          : cfg.data.protocol;
  try {
    s.protocol = make_protocol(protocol, ds.label_names);
    s.splits = resolve_splits(ds, cfg.data.valid_fraction, cfg.data.valid_seed);
  } catch (const Error& e) {
    fail("{}: {}", ds.source, e.what());
  }
  try {
    s.model = make_model(entry->model, data_shape_of(ds, s.protocol));
  } catch (const Error& e) {
    fail("{}: model {} does not fit the data {}: {}", checkpoint, name, ds.source, e.what());
  }
  load_checkpoint(checkpoint, s.model->params(), s.meta.model_type);
  // After the model and its parameters: a file the model does not fit is reported as such.
  if (cfg.data.normalize) {
    InputNormalization stored;
    if (read_checkpoint_normalization(checkpoint, &stored)) {
      apply_stored_normalization(stored, ds, checkpoint);
      s.normalization = "with the training statistics stored in the checkpoint";
    } else {
      Normalizer::fit(ds, s.splits.train).apply(ds);
      s.normalization = "with statistics fitted on this file's train split (the checkpoint stores none)";
    }
  }
  return s;
}

}  // namespace mman
