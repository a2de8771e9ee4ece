// read_dataset / write_dataset: the mman-dataset/1 HDF5 layout <-> Dataset.
#include <algorithm>
#include <set>
#include <string>

#include "mman/data/dataset.h"
#include "mman/error.h"
#include "mman/hdf5_io.h"

namespace mman {

int Dataset::modality_index(const std::string& name) const {
  for (size_t m = 0; m < modalities.size(); ++m)
    if (modalities[m] == name) return static_cast<int>(m);
  return -1;
}

namespace {

using h5::kAny;

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \t");
  return s.substr(a, b - a + 1);
}

// A root attribute holding a list of names: a string array, or (as some converters
// write) one comma-separated string.
std::vector<std::string> read_name_list(const h5::File& f, const std::string& name) {
  const std::string label = "/ (attribute " + name + ")";
  if (!f.has_attr("/", name)) f.fail(label, "missing attribute");
  std::vector<std::string> values = f.read_strings_attr("/", name);
  if (values.size() == 1 && values[0].find(',') != std::string::npos) {
    std::vector<std::string> parts;
    size_t pos = 0;
    while (true) {
      const size_t next = values[0].find(',', pos);
      parts.push_back(trim(values[0].substr(pos, next == std::string::npos ? std::string::npos : next - pos)));
      if (next == std::string::npos) break;
      pos = next + 1;
    }
    values = std::move(parts);
  }
  return values;
}

// Reads /features/<modality> straight into its Tensor (one H5Dread, no copy).
Tensor read_features(const h5::File& f, const std::string& path) {
  const h5::ArrayInfo info = f.info(path);
  if (info.type.cls != h5::TypeClass::Float || info.type.size != 4 || info.scalar || info.shape.size() != 2)
    f.fail(path, "expected float32 [N x d], found " + info.describe());
  Tensor t(info.shape[0], info.shape[1]);
  f.read_float32_into(path, info.shape, t.data());
  return t;
}

std::vector<std::string> read_string_list(const h5::File& f, const std::string& path) {
  return f.read_strings(path, {kAny});
}

}  // namespace

namespace {

Dataset read_dataset_in_process(const std::string& path) {
  const h5::File f = h5::File::open(path);
  Dataset ds;
  ds.source = path;

  const std::string schema_label = "/ (attribute schema)";
  if (!f.has_attr("/", "schema")) f.fail(schema_label, std::string("missing attribute (not an ") + kDatasetSchema + " file)");
  const std::string schema = f.read_string_attr("/", "schema");
  if (schema != kDatasetSchema) f.fail(schema_label, fmt::format("wrong schema '{}', expected '{}'", schema, kDatasetSchema));

  ds.label_names = read_name_list(f, "label_names");
  ds.modalities = read_name_list(f, "modalities");
  if (f.has_attr("/", "synthetic")) ds.synthetic = f.read_string_attr("/", "synthetic");
  if (ds.modalities.empty() || (ds.modalities.size() == 1 && ds.modalities[0].empty()))
    f.fail("/ (attribute modalities)", "zero modalities (at least one of audio, visual, text is needed)");

  // The modalities attribute fixes the order; /features must hold exactly those.
  if (!f.is_group("/features")) f.fail("/features", f.exists("/features") ? "expected a group" : "missing group");
  const std::vector<std::string> stored = f.children("/features");
  const std::set<std::string> stored_set(stored.begin(), stored.end());
  const std::set<std::string> listed(ds.modalities.begin(), ds.modalities.end());
  if (listed.size() != ds.modalities.size()) f.fail("/ (attribute modalities)", "a modality is listed twice");
  for (const std::string& m : ds.modalities)
    if (stored_set.count(m) == 0) f.fail("/features/" + m, "missing dataset (listed in the modalities attribute)");
  for (const std::string& m : stored)
    if (listed.count(m) == 0)
      f.fail("/features/" + m, "not listed in the modalities attribute (which must name every /features dataset)");
  for (const std::string& m : ds.modalities) ds.features.push_back(read_features(f, "/features/" + m));

  // Labels: any integer type is fine (converters write int64); floats are not labels.
  const std::vector<int64_t> labels = f.read_int64("/labels", {kAny});
  const int64_t num_labels = static_cast<int64_t>(ds.label_names.size());
  ds.labels.resize(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < -1 || labels[i] >= num_labels)
      f.fail("/labels", fmt::format("label {} at row {} out of range (-1 for unlabelled or 0..{} for the {} label names)",
                                    labels[i], i, num_labels - 1, num_labels));
    ds.labels[i] = static_cast<int32_t>(labels[i]);
  }
  ds.speakers = read_string_list(f, "/speakers");
  ds.utterance_ids = read_string_list(f, "/utterance_ids");

  ds.conv_ids = read_string_list(f, "/conversations/ids");
  ds.conv_offsets = f.read_int64("/conversations/offsets", {kAny});
  ds.conv_sessions = read_string_list(f, "/conversations/sessions");

  if (!f.is_group("/splits"))
    f.fail("/splits", f.exists("/splits") ? "expected a group" : "missing group (train and test splits are required)");
  for (const std::string& name : f.children("/splits")) ds.splits[name] = read_string_list(f, "/splits/" + name);

  validate_dataset(ds);
  return ds;
}

}  // namespace

Dataset read_dataset(const std::string& path) {
  // HDF5 itself can crash on some damaged files; a first read in a child process turns
  // that into an error message (see h5::probe), then the real read is known to be safe.
  h5::probe(path, [&] { read_dataset_in_process(path); });
  return read_dataset_in_process(path);
}

void write_dataset(const Dataset& ds, const std::string& path) {
  try {
    validate_dataset(ds);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: not written, the dataset is invalid: {}", path, e.what()));
  }
  h5::File f = h5::File::create(path);
  f.write_string_attr("/", "schema", kDatasetSchema);
  f.write_strings_attr("/", "label_names", ds.label_names);
  f.write_strings_attr("/", "modalities", ds.modalities);
  if (!ds.synthetic.empty()) f.write_string_attr("/", "synthetic", ds.synthetic);
  f.create_group("/features");
  for (size_t m = 0; m < ds.modalities.size(); ++m) {
    const Tensor& t = ds.features[m];
    f.write_float32("/features/" + ds.modalities[m], t.data(), {t.rows(), t.cols()});
  }
  f.write("/labels", ds.labels);
  f.write_strings("/speakers", ds.speakers);
  f.write_strings("/utterance_ids", ds.utterance_ids);
  f.write_strings("/conversations/ids", ds.conv_ids);
  f.write("/conversations/offsets", ds.conv_offsets);
  f.write_strings("/conversations/sessions", ds.conv_sessions);
  f.create_group("/splits");
  for (const auto& [name, ids] : ds.splits) f.write_strings("/splits/" + name, ids);
  f.commit();
}

}  // namespace mman
