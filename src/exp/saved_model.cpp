// load_saved_model: checkpoint attributes -> model config, data preparation, parameters.
#include "mman/exp/saved_model.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "mman/error.h"
#include "mman/exp/config.h"
#include "mman/train/trainer.h"

namespace mman {

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
  if (cfg.data.normalize) {
    Normalizer::fit(ds, s.splits.train).apply(ds);
    s.normalized = true;
  }
  try {
    s.model = make_model(entry->model, data_shape_of(ds, s.protocol));
  } catch (const Error& e) {
    fail("{}: model {} does not fit the data {}: {}", checkpoint, name, ds.source, e.what());
  }
  load_checkpoint(checkpoint, s.model->params(), s.meta.model_type);
  return s;
}

}  // namespace mman
