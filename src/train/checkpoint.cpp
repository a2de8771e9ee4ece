// Checkpoint files: writing parameters, attributes and /train_state; loading with full checks.
#include "mman/train/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "mman/error.h"
#include "mman/hdf5_io.h"

namespace mman {
namespace {

constexpr const char* kState = "/train_state";
constexpr const char* kNormalization = "/normalization";

h5::Shape shape_of(const ParamInfo& p) { return h5::Shape(p.shape.begin(), p.shape.end()); }

// Writes one arena (params layout) as a dataset per tensor under `group` ("" = root).
void write_arena(h5::File& f, const std::string& group, const ParamStore& params, const std::vector<float>& arena) {
  for (const ParamInfo& p : params.infos()) f.write_float32(group + "/" + p.name, arena.data() + p.offset, shape_of(p));
}

// Reads one tensor into dst (p.size floats): float32 directly, other float widths
// converted; anything else, or another shape, is an error naming the dataset.
void read_tensor(const h5::File& f, const std::string& path, const ParamInfo& p, float* dst) {
  const h5::ArrayInfo ai = f.info(path);
  const h5::Shape want = shape_of(p);
  const std::string expected = want.empty() ? std::string("float32 scalar") : "float32 " + h5::describe_shape(want);
  if (ai.type.cls != h5::TypeClass::Float)
    f.fail(path, fmt::format("expected {} (parameter {}), found {}", expected, p.name, ai.describe()));
  if (ai.scalar != want.empty() || ai.shape != want)
    f.fail(path, fmt::format("wrong shape: expected {} (parameter {}), found {}", expected, p.name, ai.describe()));
  if (ai.type.size == 4) {
    f.read_float32_into(path, want, dst);
  } else {
    const std::vector<double> v = f.read_float64(path, want);
    std::transform(v.begin(), v.end(), dst, [](double x) { return static_cast<float>(x); });
  }
}

// Reads every tensor of `params` from `group` into an arena of the params layout.
// Parameter values must be finite (the trainer never saves NaN or Inf weights, so such a
// file is damaged and would only give NaN predictions); Adam moments are not checked.
std::vector<float> read_arena(const h5::File& f, const std::string& group, const ParamStore& params,
                              bool finite_values) {
  std::vector<float> arena(params.values().size(), 0.0f);
  for (const ParamInfo& p : params.infos()) {
    const std::string path = group + "/" + p.name;
    if (!f.exists(path)) f.fail(path, fmt::format("missing tensor (parameter {})", p.name));
    float* dst = arena.data() + p.offset;
    read_tensor(f, path, p, dst);
    if (finite_values)
      for (size_t i = 0; i < p.size; ++i)
        if (!std::isfinite(dst[i]))
          f.fail(path, fmt::format("value {} at flat index {} (parameter {}): parameters must be finite", dst[i], i,
                                   p.name));
  }
  return arena;
}

// Children of `group` that are neither a parameter nor an allowed group, listed.
void check_no_extras(const h5::File& f, const std::string& group, const ParamStore& params,
                     const std::set<std::string>& allowed_groups) {
  std::vector<std::string> extra;
  for (const std::string& name : f.children(group.empty() ? "/" : group)) {
    const std::string path = group + "/" + name;
    if (f.is_group(path)) {
      if (!allowed_groups.count(name)) extra.push_back(path + " (group)");
    } else if (params.find(name) < 0) {
      extra.push_back(path);
    }
  }
  if (!extra.empty()) {
    std::string list;
    for (const std::string& e : extra) list += (list.empty() ? "" : ", ") + e;
    f.fail(group.empty() ? "/" : group,
           fmt::format("{} unexpected tensor{} that the model does not have: {}", extra.size(),
                       extra.size() == 1 ? "" : "s", list));
  }
}

std::string string_attr_or(const h5::File& f, const char* name, const std::string& fallback) {
  return f.has_attr("/", name) ? f.read_string_attr("/", name) : fallback;
}

CheckpointMeta read_meta(const h5::File& f) {
  if (!f.has_attr("/", "schema"))
    f.fail("/", fmt::format("not a checkpoint: no 'schema' attribute (expected '{}')", kCheckpointSchema));
  const std::string schema = f.read_string_attr("/", "schema");
  if (schema != kCheckpointSchema)
    f.fail("/ (attribute schema)", fmt::format("expected '{}', found '{}'", kCheckpointSchema, schema));
  if (!f.has_attr("/", "model_type")) f.fail("/", "missing attribute 'model_type'");
  CheckpointMeta m;
  m.model_type = f.read_string_attr("/", "model_type");
  m.model_name = string_attr_or(f, "model_name", m.model_type);
  m.config = string_attr_or(f, "config", "");
  m.protocol = string_attr_or(f, "protocol", "");
  m.metrics = string_attr_or(f, "metrics", "{}");
  m.mman_version = string_attr_or(f, "mman_version", "");
  if (f.has_attr("/", "epoch")) m.epoch = f.read_int_attr("/", "epoch");
  if (f.has_attr("/", "seed")) m.seed = f.read_uint_attr("/", "seed");
  return m;
}

// The group the parameters live in: "" (the root, what mman writes) or "/params".
std::string param_group(const h5::File& f) { return f.is_group("/params") ? "/params" : ""; }

const char* const kHistoryColumns[] = {"train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "valid_ua",
                                       "seconds"};

double& history_field(EpochRecord& r, int column) {
  switch (column) {
    case 0: return r.train_loss;
    case 1: return r.train_accuracy;
    case 2: return r.valid_loss;
    case 3: return r.valid_accuracy;
    case 4: return r.valid_ua;
    default: return r.seconds;
  }
}

void write_state(h5::File& f, const ParamStore& params, const TrainState& s) {
  MMAN_CHECK(s.adam.m.size() == params.values().size() && s.adam.v.size() == params.values().size(),
             "{}: train state: Adam moments have {} / {} values but the parameters {}", f.path(), s.adam.m.size(),
             s.adam.v.size(), params.values().size());
  MMAN_CHECK(s.best_values.empty() || s.best_values.size() == params.values().size(),
             "{}: train state: the best-epoch copy has {} values but the parameters {}", f.path(),
             s.best_values.size(), params.values().size());
  f.create_group(kState);
  write_arena(f, std::string(kState) + "/adam_m", params, s.adam.m);
  write_arena(f, std::string(kState) + "/adam_v", params, s.adam.v);
  if (!s.best_values.empty()) write_arena(f, std::string(kState) + "/best", params, s.best_values);
  std::vector<int32_t> epochs;
  for (const EpochRecord& r : s.history) epochs.push_back(r.epoch);
  f.write(std::string(kState) + "/history/epoch", epochs);
  for (int c = 0; c < 6; ++c) {
    std::vector<double> column;
    for (EpochRecord r : s.history) column.push_back(history_field(r, c));
    f.write(std::string(kState) + "/history/" + kHistoryColumns[c], column);
  }
  f.write_int_attr(kState, "adam_step", s.adam.step);
  f.write_uint_attr(kState, "shuffle_state", s.shuffle_state);
  f.write_int_attr(kState, "epoch", s.epoch);
  f.write_int_attr(kState, "batch", s.batch);
  f.write_int_attr(kState, "global_step", s.global_step);
  f.write_int_attr(kState, "best_epoch", s.best_epoch);
  f.write_double_attr(kState, "best_metric", s.best_metric);
  f.write_int_attr(kState, "bad_epochs", s.bad_epochs);
  f.write_double_attr(kState, "partial_loss_sum", s.partial_loss_sum);
  f.write_int_attr(kState, "partial_scored", s.partial_scored);
  f.write_int_attr(kState, "partial_correct", s.partial_correct);
  f.write_double_attr(kState, "partial_seconds", s.partial_seconds);
  f.write_int_attr(kState, "finished", s.finished ? 1 : 0);
  f.write_int_attr(kState, "stopped_early", s.stopped_early ? 1 : 0);
}

int int_attr(const h5::File& f, const char* name, int64_t lo, int64_t hi) {
  if (!f.has_attr(kState, name)) f.fail(kState, fmt::format("missing attribute '{}'", name));
  const int64_t v = f.read_int_attr(kState, name);
  if (v < lo || v > hi)
    f.fail(fmt::format("{} (attribute {})", kState, name), fmt::format("{} is outside [{}, {}]", v, lo, hi));
  return static_cast<int>(v);
}

int64_t int64_attr(const h5::File& f, const char* name) {
  if (!f.has_attr(kState, name)) f.fail(kState, fmt::format("missing attribute '{}'", name));
  const int64_t v = f.read_int_attr(kState, name);
  if (v < 0) f.fail(fmt::format("{} (attribute {})", kState, name), fmt::format("negative value {}", v));
  return v;
}

double double_attr(const h5::File& f, const char* name) {
  if (!f.has_attr(kState, name)) f.fail(kState, fmt::format("missing attribute '{}'", name));
  return f.read_double_attr(kState, name);
}

void write_normalization(h5::File& f, const InputNormalization& n) {
  MMAN_CHECK(n.mean.size() == n.modalities.size() && n.stddev.size() == n.modalities.size(),
             "{}: normalization: {} modalities with {} means and {} deviations", f.path(), n.modalities.size(),
             n.mean.size(), n.stddev.size());
  f.create_group(kNormalization);
  for (size_t m = 0; m < n.modalities.size(); ++m) {
    const std::string& name = n.modalities[m];
    MMAN_CHECK(!name.empty() && name.find('/') == std::string::npos,
               "{}: normalization: modality name '{}' cannot be stored as a group", f.path(), name);
    MMAN_CHECK(n.mean[m].size() == n.stddev[m].size(), "{}: normalization of '{}': {} means and {} deviations",
               f.path(), name, n.mean[m].size(), n.stddev[m].size());
    const std::string g = std::string(kNormalization) + "/" + name;
    f.create_group(g);
    const h5::Shape shape{static_cast<int64_t>(n.mean[m].size())};
    f.write_float32(g + "/mean", n.mean[m].data(), shape);
    f.write_float32(g + "/std", n.stddev[m].data(), shape);
  }
}

InputNormalization read_normalization(const h5::File& f) {
  InputNormalization n;
  for (const std::string& name : f.children(kNormalization)) {
    const std::string g = std::string(kNormalization) + "/" + name;
    if (!f.is_group(g)) f.fail(g, "expected a group with datasets mean and std");
    std::vector<float> v[2];
    const char* parts[2] = {"mean", "std"};
    for (int i = 0; i < 2; ++i) {
      const std::string path = g + "/" + parts[i];
      if (!f.exists(path)) f.fail(path, "missing dataset");
      const std::vector<double> d = f.read_float64(path, {h5::kAny});
      for (size_t j = 0; j < d.size(); ++j)
        if (!std::isfinite(d[j]) || (i == 1 && !(d[j] > 0)))
          f.fail(path, fmt::format("value {} at index {}: {}", d[j], j,
                                   i == 0 ? "means must be finite" : "deviations must be finite and positive"));
      v[i].assign(d.begin(), d.end());
    }
    if (v[0].size() != v[1].size() || v[0].empty())
      f.fail(g, fmt::format("mean has {} values and std {}; expected the same positive number", v[0].size(),
                            v[1].size()));
    n.modalities.push_back(name);
    n.mean.push_back(std::move(v[0]));
    n.stddev.push_back(std::move(v[1]));
  }
  return n;
}

TrainState read_state(const h5::File& f, const ParamStore& params) {
  if (!f.is_group(kState)) f.fail(kState, "missing group: the checkpoint has no trainer state to resume from");
  TrainState s;
  const std::string g = kState;
  s.adam.m = read_arena(f, g + "/adam_m", params, false);
  s.adam.v = read_arena(f, g + "/adam_v", params, false);
  if (f.exists(g + "/best")) s.best_values = read_arena(f, g + "/best", params, true);
  s.adam.step = int64_attr(f, "adam_step");
  if (!f.has_attr(kState, "shuffle_state")) f.fail(kState, "missing attribute 'shuffle_state'");
  s.shuffle_state = f.read_uint_attr(kState, "shuffle_state");
  constexpr int64_t kMaxInt = 2147483647;
  s.epoch = int_attr(f, "epoch", 0, kMaxInt);
  s.batch = int64_attr(f, "batch");
  s.global_step = int64_attr(f, "global_step");
  s.best_epoch = int_attr(f, "best_epoch", 0, s.epoch);
  s.best_metric = double_attr(f, "best_metric");
  s.bad_epochs = int_attr(f, "bad_epochs", 0, s.epoch);
  s.partial_loss_sum = double_attr(f, "partial_loss_sum");
  s.partial_scored = int64_attr(f, "partial_scored");
  s.partial_correct = int64_attr(f, "partial_correct");
  s.partial_seconds = double_attr(f, "partial_seconds");
  s.finished = int_attr(f, "finished", 0, 1) != 0;
  s.stopped_early = int_attr(f, "stopped_early", 0, 1) != 0;
  if (s.best_epoch > 0 && s.best_values.empty())
    f.fail(g + "/best", fmt::format("missing group: best_epoch is {} but no best parameters are stored", s.best_epoch));

  const std::vector<int64_t> epochs = f.read_int64(g + "/history/epoch", {h5::kAny});
  if (static_cast<int64_t>(epochs.size()) != s.epoch)
    f.fail(g + "/history/epoch", fmt::format("{} rows for {} completed epochs", epochs.size(), s.epoch));
  s.history.resize(epochs.size());
  for (size_t i = 0; i < epochs.size(); ++i) s.history[i].epoch = static_cast<int>(epochs[i]);
  for (int c = 0; c < 6; ++c) {
    const std::vector<double> column =
        f.read_float64(g + "/history/" + kHistoryColumns[c], {static_cast<int64_t>(epochs.size())});
    for (size_t i = 0; i < column.size(); ++i) history_field(s.history[i], c) = column[i];
  }
  return s;
}

}  // namespace

void write_checkpoint(const std::string& path, const ParamStore& params, const CheckpointMeta& meta,
                      const TrainState* state, const InputNormalization* normalization) {
  MMAN_CHECK(!meta.model_type.empty(), "{}: cannot write a checkpoint without a model type", path);
  for (const ParamInfo& p : params.infos())
    MMAN_CHECK(p.name != "train_state" && p.name != "params" && p.name != "normalization" &&
                   p.name.find('/') == std::string::npos,
               "{}: parameter name '{}' cannot be stored as a checkpoint dataset", path, p.name);
  h5::File f = h5::File::create(path);
  f.write_string_attr("/", "schema", kCheckpointSchema);
  f.write_string_attr("/", "model_type", meta.model_type);
  f.write_string_attr("/", "model_name", meta.model_name.empty() ? meta.model_type : meta.model_name);
  f.write_string_attr("/", "config", meta.config);
  f.write_string_attr("/", "protocol", meta.protocol);
  f.write_int_attr("/", "epoch", meta.epoch);
  f.write_uint_attr("/", "seed", meta.seed);
  f.write_string_attr("/", "metrics", meta.metrics.empty() ? std::string("{}") : meta.metrics);
  f.write_string_attr("/", "mman_version", MMAN_VERSION);
  write_arena(f, "", params, params.values());
  if (state != nullptr) write_state(f, params, *state);
  if (normalization != nullptr && !normalization->empty()) write_normalization(f, *normalization);
  f.commit();
}

// HDF5 1.10 can crash or hang on a damaged file (a corrupt variable-length string heap,
// found by tests/fuzz/fuzz_checkpoint), so every entry point first does its reads in a
// forked child (h5::probe), which turns that into an error, then repeats them here.

CheckpointMeta read_checkpoint_meta(const std::string& path) {
  auto read = [&] {
    const h5::File f = h5::File::open(path);
    return read_meta(f);
  };
  h5::probe(path, [&] { read(); });
  return read();
}

bool checkpoint_has_train_state(const std::string& path) {
  auto read = [&] {
    const h5::File f = h5::File::open(path);
    read_meta(f);
    return f.is_group(kState);
  };
  h5::probe(path, [&] { read(); });
  return read();
}

namespace {

CheckpointMeta load_checkpoint_in_process(const std::string& path, ParamStore& params, const std::string& expected_type,
                                          TrainState* state) {
  const h5::File f = h5::File::open(path);
  CheckpointMeta meta = read_meta(f);
  if (!expected_type.empty() && meta.model_type != expected_type)
    f.fail("/ (attribute model_type)",
           fmt::format("the checkpoint holds a '{}' model, expected '{}'", meta.model_type, expected_type));
  const std::string group = param_group(f);
  std::vector<float> values = read_arena(f, group, params, true);
  if (group.empty()) {
    check_no_extras(f, "", params, {"train_state", "normalization"});
  } else {
    check_no_extras(f, group, params, {});
    check_no_extras(f, "", ParamStore(), {"train_state", "params", "normalization"});
  }
  TrainState loaded;
  if (state != nullptr) loaded = read_state(f, params);
  // Only a fully checked file changes the caller's objects.
  params.values() = std::move(values);
  if (state != nullptr) *state = std::move(loaded);
  return meta;
}

}  // namespace

bool read_checkpoint_normalization(const std::string& path, InputNormalization* out) {
  auto read = [&](InputNormalization* into) {
    const h5::File f = h5::File::open(path);
    read_meta(f);
    if (!f.is_group(kNormalization)) return false;
    *into = read_normalization(f);
    return true;
  };
  InputNormalization scratch;
  h5::probe(path, [&] { read(&scratch); });
  return read(out);
}

CheckpointMeta load_checkpoint(const std::string& path, ParamStore& params, const std::string& expected_type,
                               TrainState* state) {
  // The child's copies of params and state are its own: the probe changes nothing here.
  h5::probe(path, [&] { load_checkpoint_in_process(path, params, expected_type, state); });
  return load_checkpoint_in_process(path, params, expected_type, state);
}

}  // namespace mman
