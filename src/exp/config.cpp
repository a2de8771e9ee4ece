// load_experiment: the experiment YAML schema, its defaults and its cross-checks.
#include "mman/exp/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>

#include "mman/data/protocol.h"
#include "mman/error.h"
#include "mman/exp/yaml_reader.h"

namespace mman {
namespace {

constexpr int64_t kMaxSeed = (int64_t{1} << 62);
const std::vector<std::string> kMmaKeys = {"d_model", "mma_dropout", "score", "skip"};
const std::vector<std::string> kCompositeTypes = {"clstm_lf", "mman"};

bool is_composite_type(const std::string& type) {
  return std::find(kCompositeTypes.begin(), kCompositeTypes.end(), type) != kCompositeTypes.end();
}

std::vector<std::string> default_subnets(const std::string& type) {
  if (type == "clstm_lf") return {"clstm_speech", "clstm_visual", "clstm_text"};
  if (type == "mman") return {"clstm_mma", "clstm_speech", "clstm_visual", "clstm_text"};
  return {};
}

TrainSettings read_train(YamlMap& t, const TrainSettings& base) {
  TrainSettings s = base;
  s.optimizer = t.choice("optimizer", base.optimizer, {"adam"});
  s.lr = t.number("lr", base.lr, 0.0, 10.0, /*min_exclusive=*/true);
  if (t.has("betas")) {
    const std::vector<double> betas = t.number_list("betas", {}, 0.0, 0.999999999);
    if (betas.size() != 2) t.fail_key("betas", fmt::format("expected two numbers [beta1, beta2], found {}", betas.size()));
    s.beta1 = betas[0];
    s.beta2 = betas[1];
  }
  // Adam adds eps in float32: anything below float's normal range (1e-38) would be 0
  // there, and 0/0 for parameters without gradient yet makes them NaN.
  s.eps = t.number("eps", base.eps, 1e-38, 1.0);
  s.weight_decay = t.number("weight_decay", base.weight_decay, 0.0, 1.0);
  s.batch_size = static_cast<int>(t.integer("batch_size", base.batch_size, 1, 100000));
  s.epochs = static_cast<int>(t.integer("epochs", base.epochs, 1, 100000));
  if (t.has("early_stopping")) {
    YamlMap es = t.map("early_stopping");
    s.patience = static_cast<int>(es.integer("patience", base.patience, 0, 100000));
    es.finish();
  }
  if (t.has("clip")) {
    YamlMap clip = t.map("clip");
    const bool has_norm = clip.has("norm"), has_value = clip.has("value");
    if (has_norm && has_value) clip.fail_key("value", "give either clip.norm or clip.value, not both");
    s.clip_norm = clip.number("norm", has_value ? 0.0 : base.clip_norm, 0.0, 1e9);
    s.clip_value = clip.number("value", has_norm ? 0.0 : base.clip_value, 0.0, 1e9);
    if (!has_norm && !has_value && clip.node().IsMap() && clip.node().size() == 0) {
      s.clip_norm = 0;  // `clip: {}` switches clipping off
      s.clip_value = 0;
    }
    clip.finish();
  }
  return s;
}

void emit_train(YAML::Emitter& e, const TrainSettings& s) {
  e << YAML::BeginMap;
  e << YAML::Key << "optimizer" << YAML::Value << s.optimizer;
  e << YAML::Key << "lr" << YAML::Value << s.lr;
  e << YAML::Key << "betas" << YAML::Value << YAML::Flow << YAML::BeginSeq << s.beta1 << s.beta2 << YAML::EndSeq;
  e << YAML::Key << "eps" << YAML::Value << s.eps;
  e << YAML::Key << "weight_decay" << YAML::Value << s.weight_decay;
  e << YAML::Key << "batch_size" << YAML::Value << s.batch_size;
  e << YAML::Key << "epochs" << YAML::Value << s.epochs;
  e << YAML::Key << "early_stopping" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "patience"
    << YAML::Value << s.patience << YAML::EndMap;
  e << YAML::Key << "clip" << YAML::Value << YAML::Flow << YAML::BeginMap;
  if (s.clip_value > 0) {
    e << YAML::Key << "value" << YAML::Value << s.clip_value;
  } else {
    e << YAML::Key << "norm" << YAML::Value << s.clip_norm;
  }
  e << YAML::EndMap;
  e << YAML::EndMap;
}

std::string resolve_yaml(const ExperimentConfig& c) {
  YAML::Emitter e;
  e.SetDoublePrecision(9);
  e << YAML::BeginMap;
  e << YAML::Key << "name" << YAML::Value << c.name;
  e << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  if (!c.data.file.empty()) {
    e << YAML::Key << "file" << YAML::Value << c.data.file;
  } else {
    e << YAML::Key << "synthetic" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "preset"
      << YAML::Value << c.data.synthetic << YAML::Key << "seed" << YAML::Value << c.data.synthetic_seed << YAML::EndMap;
  }
  e << YAML::Key << "protocol" << YAML::Value << c.data.protocol;
  e << YAML::Key << "valid_fraction" << YAML::Value << c.data.valid_fraction;
  e << YAML::Key << "valid_seed" << YAML::Value << c.data.valid_seed;
  e << YAML::Key << "normalize" << YAML::Value << c.data.normalize;
  e << YAML::EndMap;
  e << YAML::Key << "models" << YAML::Value << YAML::BeginMap;
  for (const ModelEntry& m : c.models) {
    const ModelConfig& mc = m.model;
    e << YAML::Key << m.name << YAML::Value << YAML::BeginMap;
    e << YAML::Key << "type" << YAML::Value << mc.type;
    if (m.composite()) {
      e << YAML::Key << "subnets" << YAML::Value << YAML::Flow << m.subnet_names;
    } else {
      e << YAML::Key << "modalities" << YAML::Value << YAML::Flow << mc.modalities;
    }
    if (mc.type != "mman") {
      e << YAML::Key << "hidden" << YAML::Value << mc.hidden;
      e << YAML::Key << "lstm_layers" << YAML::Value << mc.lstm_layers;
      e << YAML::Key << "lstm_dropout" << YAML::Value << mc.lstm_dropout;
      e << YAML::Key << "bidirectional" << YAML::Value << mc.bidirectional;
      e << YAML::Key << "fc" << YAML::Value << mc.fc;
      e << YAML::Key << "dropout" << YAML::Value << mc.dropout;
    }
    if (mc.type == "clstm_mma") {
      e << YAML::Key << "d_model" << YAML::Value << mc.d_model;
      e << YAML::Key << "mma_dropout" << YAML::Value << mc.mma_dropout;
      e << YAML::Key << "score" << YAML::Value << (mc.score == MmaScore::Cosine ? "cosine" : "scaled_dot");
      e << YAML::Key << "skip" << YAML::Value << (mc.skip == MmaSkip::Concat ? "concat" : "residual");
    }
    e << YAML::Key << "train" << YAML::Value;
    emit_train(e, m.train);
    e << YAML::EndMap;
  }
  e << YAML::EndMap;
  e << YAML::Key << "train" << YAML::Value;
  {
    // The global block plus the seeds.
    YAML::Emitter tmp;
    emit_train(tmp, c.train);
    YAML::Node t = YAML::Load(tmp.c_str());
    t["seeds"] = c.seeds;
    t["seeds"].SetStyle(YAML::EmitterStyle::Flow);
    e << t;
  }
  e << YAML::Key << "stages" << YAML::Value << YAML::BeginSeq;
  for (const StageSettings& s : c.stages) {
    e << YAML::Flow << YAML::BeginMap << YAML::Key << "name" << YAML::Value << s.name << YAML::Key << "models"
      << YAML::Value << s.models << YAML::Key << "after" << YAML::Value << s.after << YAML::EndMap;
  }
  e << YAML::EndSeq;
  e << YAML::Key << "report" << YAML::Value << YAML::Flow << c.report;
  e << YAML::Key << "output" << YAML::Value << YAML::BeginMap << YAML::Key << "dir" << YAML::Value << c.output.dir
    << YAML::Key << "checkpoints" << YAML::Value << c.output.checkpoints << YAML::Key << "plots" << YAML::Value
    << c.output.plots << YAML::EndMap;
  e << YAML::Key << "backend" << YAML::Value << c.backend;
  e << YAML::Key << "threads" << YAML::Value << c.threads;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace

namespace {
ExperimentConfig build_experiment(YAML::Node root, const std::shared_ptr<YamlSource>& source, const std::string& file);
}  // namespace

const ModelEntry* ExperimentConfig::find_model(const std::string& name) const {
  for (const ModelEntry& m : models)
    if (m.name == name) return &m;
  return nullptr;
}

ExperimentConfig load_experiment(const std::string& file, const std::vector<std::string>& overrides) {
  auto source = std::make_shared<YamlSource>();
  return build_experiment(load_yaml_with_overrides(file, overrides, *source), source, file);
}

ExperimentConfig parse_experiment(const std::string& yaml_text, const std::string& source_name,
                                  const std::vector<std::string>& overrides) {
  auto source = std::make_shared<YamlSource>();
  return build_experiment(parse_yaml_with_overrides(yaml_text, source_name, overrides, *source), source, source_name);
}

namespace {

ExperimentConfig build_experiment(YAML::Node root, const std::shared_ptr<YamlSource>& source, const std::string& file) {
  YamlMap r(source, root, "");
  ExperimentConfig c;
  c.file = file;
  c.name = r.string("name", std::filesystem::path(file).stem().string());
  if (c.name.empty() || c.name.find('/') != std::string::npos)
    r.fail_key("name", "expected a non-empty name without '/'");

  // ---- data ----
  {
    YamlMap d = r.map("data");
    c.data.file = d.string("file", "");
    // `--set data.file=...` on a config with synthetic data (or the reverse) switches the
    // source: the command line wins over the file.
    auto overridden = [&](const std::string& key) {
      for (const auto& o : source->overrides)
        if (o.first == key || o.first.compare(0, key.size() + 1, key + ".") == 0) return true;
      return false;
    };
    const bool file_overridden = overridden("data.file"), synthetic_overridden = overridden("data.synthetic");
    if (file_overridden && !synthetic_overridden) d.raw("synthetic");  // known, ignored
    if (synthetic_overridden && !file_overridden) c.data.file.clear();
    if (d.has("synthetic") && !(file_overridden && !synthetic_overridden)) {
      if (!c.data.file.empty()) d.fail_key("synthetic", "give either data.file or data.synthetic, not both");
      const YAML::Node syn = d.raw("synthetic");
      if (syn.IsScalar()) {
        c.data.synthetic = d.choice("synthetic", "iemocap", {"iemocap"});
      } else {
        YamlMap s = d.map("synthetic");
        c.data.synthetic = s.choice("preset", "iemocap", {"iemocap"});
        c.data.synthetic_seed = static_cast<uint64_t>(s.integer("seed", 0, 0, kMaxSeed));
        s.finish();
      }
    } else if (c.data.file.empty()) {
      c.data.synthetic = "iemocap";  // the embedded default
    }
    c.data.protocol = d.choice("protocol", c.data.protocol, protocol_names());
    c.data.valid_fraction = d.number("valid_fraction", c.data.valid_fraction, 0.0, 0.9);
    c.data.valid_seed = static_cast<uint64_t>(d.integer("valid_seed", 0, 0, kMaxSeed));
    c.data.normalize = d.boolean("normalize", c.data.normalize);
    d.finish();
  }

  // ---- train (global) ----
  {
    YamlMap t = r.map("train");
    c.train = read_train(t, TrainSettings{});
    c.seeds = t.integer_list("seeds", {0}, 0, kMaxSeed);
    std::set<int64_t> unique(c.seeds.begin(), c.seeds.end());
    if (unique.size() != c.seeds.size()) t.fail_key("seeds", "seeds must be distinct");
    t.finish();
  }

  // ---- models ----
  YamlMap models = r.map("models");
  const std::vector<std::string> names = models.keys();
  if (names.empty()) r.fail(root, "models", "at least one model must be defined under `models:`");
  const std::vector<std::string> types = model_types();
  std::map<std::string, YAML::Node> subnet_nodes;
  for (const std::string& name : names) {
    YamlMap m = models.map(name);
    ModelEntry entry;
    entry.name = name;
    ModelConfig& mc = entry.model;
    const bool name_is_type = std::find(types.begin(), types.end(), name) != types.end();
    if (!m.has("type") && !name_is_type)
      m.fail(m.node(), m.key_path("type"),
             fmt::format("is required (one of {}){}", fmt::join(types, ", "), did_you_mean(name, types)));
    mc.type = m.choice("type", name_is_type ? name : "", types);
    mc.name = name;
    const bool mma = mc.type == "clstm_mma";
    const bool composite = is_composite_type(mc.type);
    if (!mma)
      for (const std::string& k : kMmaKeys)
        if (m.has(k)) m.fail_key(k, fmt::format("applies to clstm_mma only, not to type {}", mc.type));
    if (!composite && m.has("subnets"))
      m.fail_key("subnets", fmt::format("applies to clstm_lf and mman only, not to type {}", mc.type));
    if (composite && m.has("modalities"))
      m.fail_key("modalities", fmt::format("does not apply to type {}: it reads its sub-networks' outputs", mc.type));
    mc.modalities = m.string_list("modalities", {});
    for (const std::string& mod : mc.modalities)
      if (std::count(mc.modalities.begin(), mc.modalities.end(), mod) > 1)
        m.fail_key("modalities", fmt::format("modality '{}' is listed twice", mod));
    if (mc.type != "mman") {
      mc.hidden = static_cast<int>(m.integer("hidden", mc.hidden, 1, 8192));
      mc.lstm_layers = static_cast<int>(m.integer("lstm_layers", (mc.type == "clstm_lf" || mma) ? 1 : 2, 1, 16));
      mc.lstm_dropout = static_cast<float>(m.number("lstm_dropout", mc.lstm_dropout, 0.0, 0.99));
      mc.bidirectional = m.boolean("bidirectional", mc.bidirectional);
      mc.fc = static_cast<int>(m.integer("fc", mc.fc, 1, 8192));
      mc.dropout = static_cast<float>(m.number("dropout", mc.dropout, 0.0, 0.99));
    }
    if (mma) {
      mc.d_model = static_cast<int>(m.integer("d_model", mc.d_model, 1, 8192));
      mc.mma_dropout = static_cast<float>(m.number("mma_dropout", mc.mma_dropout, 0.0, 0.99));
      mc.score = m.choice("score", "scaled_dot", {"scaled_dot", "cosine"}) == "cosine" ? MmaScore::Cosine
                                                                                     : MmaScore::ScaledDot;
      mc.skip = m.choice("skip", "residual", {"residual", "concat"}) == "concat" ? MmaSkip::Concat : MmaSkip::Residual;
    }
    if (composite) {
      entry.subnet_names = m.string_list("subnets", default_subnets(mc.type));
      if (entry.subnet_names.empty()) m.fail_key("subnets", "a fusion model needs at least one sub-network");
      if (m.has("subnets")) subnet_nodes[name] = m.raw("subnets");
    }
    YamlMap t = m.map("train");
    entry.train = read_train(t, c.train);
    t.finish();
    m.finish();
    c.models.push_back(std::move(entry));
  }
  models.finish();

  // Sub-network references: explicit names must be defined; the defaults of a fusion type
  // are defined implicitly (with default hyperparameters) when the file does not.
  std::vector<std::string> candidates = names;
  candidates.insert(candidates.end(), types.begin(), types.end());
  for (size_t i = 0; i < c.models.size(); ++i) {
    const ModelEntry entry = c.models[i];
    for (const std::string& sub : entry.subnet_names) {
      if (c.find_model(sub) != nullptr) continue;
      // An undefined name that is a sub-network type (`subnets: [clstm_mma, clstm_speech]`,
      // as experiments/mman_only.yaml writes) is that type with default hyperparameters,
      // like a `models:` key named after its type; any other undefined name is an error.
      const bool type_name = std::find(types.begin(), types.end(), sub) != types.end() && !is_composite_type(sub);
      if (subnet_nodes.count(entry.name) && !type_name)
        throw Error(yaml_error_message(*source, subnet_nodes[entry.name], "models." + entry.name + ".subnets",
                                       fmt::format("references model '{}', which is not defined under `models:`{}",
                                                   sub, did_you_mean(sub, candidates))));
      ModelEntry implicit;
      implicit.name = sub;
      implicit.model.type = sub;
      implicit.model.name = sub;
      implicit.model.lstm_layers = sub == "clstm_mma" ? 1 : 2;
      implicit.train = c.train;
      c.models.push_back(implicit);
    }
  }
  for (ModelEntry& entry : c.models) {
    for (const std::string& sub : entry.subnet_names) {
      const ModelEntry* s = c.find_model(sub);
      const std::string where = "models." + entry.name + ".subnets";
      const YAML::Node node = subnet_nodes.count(entry.name) ? subnet_nodes[entry.name] : YAML::Node();
      if (sub == entry.name)
        throw Error(yaml_error_message(*source, node, where, fmt::format("model '{}' cannot be its own sub-network", sub)));
      if (s->composite())
        throw Error(yaml_error_message(*source, node, where,
                                       fmt::format("sub-network '{}' is itself a fusion model ({}); sub-networks "
                                                   "must be clstm_speech/visual/text, clstm_ef or clstm_mma",
                                                   sub, s->model.type)));
      entry.model.subnets.push_back(s->model);
    }
  }

  // ---- stages ----
  {
    const YAML::Node stages_node = r.raw("stages");
    std::map<std::string, const YAML::Node> stage_nodes;
    if (stages_node.IsDefined() && !stages_node.IsNull()) {
      if (!stages_node.IsSequence())
        r.fail(stages_node, "stages", "expected a list of {name, models, after} entries");
      std::set<std::string> seen_models;
      for (size_t i = 0; i < stages_node.size(); ++i) {
        YamlMap s(source, stages_node[i], fmt::format("stages[{}]", i));
        StageSettings st;
        st.name = s.required_string("name");
        st.models = s.string_list("models", {});
        st.after = s.string_list("after", {});
        s.finish();
        if (st.models.empty()) s.fail_key("models", "a stage needs at least one model");
        for (const StageSettings& other : c.stages)
          if (other.name == st.name) s.fail_key("name", fmt::format("stage '{}' is defined twice", st.name));
        for (const std::string& mname : st.models) {
          if (c.find_model(mname) == nullptr) {
            std::vector<std::string> all;
            for (const ModelEntry& m : c.models) all.push_back(m.name);
            s.fail_key("models", fmt::format("references model '{}', which is not defined under `models:`{}", mname,
                                             did_you_mean(mname, all)));
          }
          if (!seen_models.insert(mname).second)
            s.fail_key("models", fmt::format("model '{}' is in more than one stage", mname));
        }
        stage_nodes.emplace(st.name, stages_node[i]);
        c.stages.push_back(std::move(st));
      }
      for (const StageSettings& st : c.stages)
        for (const std::string& a : st.after)
          if (!stage_nodes.count(a)) {
            std::vector<std::string> stage_names;
            for (const StageSettings& s2 : c.stages) stage_names.push_back(s2.name);
            YamlMap s(source, stage_nodes.at(st.name), "stages." + st.name);
            s.fail_key("after", fmt::format("references stage '{}', which is not defined{}", a,
                                            did_you_mean(a, stage_names)));
          }
      // Models in no stage: allowed for sub-networks (trained on demand before their
      // fusion model), an error otherwise (probably forgotten).
      for (const ModelEntry& m : c.models) {
        if (seen_models.count(m.name)) continue;
        bool is_subnet = false;
        for (const ModelEntry& other : c.models)
          is_subnet |= std::count(other.subnet_names.begin(), other.subnet_names.end(), m.name) > 0;
        if (!is_subnet) r.fail(stages_node, "stages", fmt::format("model '{}' is in no stage", m.name));
      }
      // Topological order by `after`, reporting a cycle with its path.
      std::vector<StageSettings> ordered;
      std::map<std::string, int> state;  // 0 new, 1 visiting, 2 done
      std::vector<std::string> trail;
      std::function<void(const std::string&)> visit = [&](const std::string& name) {
        if (state[name] == 2) return;
        if (state[name] == 1) {
          auto start = std::find(trail.begin(), trail.end(), name);
          std::vector<std::string> cycle(start, trail.end());
          cycle.push_back(name);
          YamlMap s(source, stage_nodes.at(name), "stages." + name);
          s.fail_key("after", fmt::format("stages form a cycle: {}", fmt::join(cycle, " -> ")));
        }
        state[name] = 1;
        trail.push_back(name);
        const StageSettings* st = nullptr;
        for (const StageSettings& s : c.stages)
          if (s.name == name) st = &s;
        for (const std::string& a : st->after) visit(a);
        trail.pop_back();
        state[name] = 2;
        ordered.push_back(*st);
      };
      for (const StageSettings& st : c.stages) visit(st.name);
      c.stages = std::move(ordered);
      // A fusion model's sub-networks must be trained before it: in an earlier stage or
      // in no stage (on demand), never in the same or a later one.
      std::map<std::string, size_t> stage_of;
      for (size_t i = 0; i < c.stages.size(); ++i)
        for (const std::string& mname : c.stages[i].models) stage_of[mname] = i;
      for (const ModelEntry& m : c.models)
        for (const std::string& sub : m.subnet_names)
          if (stage_of.count(sub) && stage_of.count(m.name) && stage_of[sub] >= stage_of[m.name]) {
            YamlMap s(source, stage_nodes.at(c.stages[stage_of[m.name]].name), "stages." + c.stages[stage_of[m.name]].name);
            s.fail_key("models", fmt::format("fusion model '{}' needs its sub-network '{}' trained in an earlier stage "
                                             "(add `after: [{}]`)",
                                             m.name, sub, c.stages[stage_of[sub]].name));
          }
    } else {
      // Default: stage 1 trains every non-fusion model, stage 2 the fusion models.
      StageSettings s1{"stage1", {}, {}}, s2{"stage2", {}, {"stage1"}};
      for (const ModelEntry& m : c.models) (m.composite() ? s2 : s1).models.push_back(m.name);
      if (!s1.models.empty()) c.stages.push_back(s1);
      if (!s2.models.empty()) {
        if (s1.models.empty()) s2.after.clear();
        c.stages.push_back(s2);
      }
    }
  }

  // ---- report, output, backend, threads ----
  {
    std::vector<std::string> all;
    for (const ModelEntry& m : c.models) all.push_back(m.name);
    c.report = r.string_list("report", {});
    if (c.report.empty()) {
      for (const StageSettings& s : c.stages) c.report.insert(c.report.end(), s.models.begin(), s.models.end());
    }
    for (const std::string& name : c.report)
      if (c.find_model(name) == nullptr)
        r.fail_key("report", fmt::format("references model '{}', which is not defined under `models:`{}", name,
                                         did_you_mean(name, all)));
    YamlMap o = r.map("output");
    c.output.dir = o.string("dir", "runs/" + c.name);
    c.output.checkpoints = o.boolean("checkpoints", true);
    c.output.plots = o.boolean("plots", true);
    o.finish();
    c.backend = r.choice("backend", "auto", {"auto", "cpu", "cuda"});
    c.threads = static_cast<int>(r.integer("threads", 0, 0, 1024));
  }
  r.finish();
  c.resolved_yaml = resolve_yaml(c);
  return c;
}

}  // namespace

}  // namespace mman
