// validate_dataset: every invariant of an mman-dataset/1 dataset, one clear error each.
#include <cctype>
#include <cmath>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "mman/data/dataset.h"
#include "mman/error.h"

namespace mman {

namespace {

// Messages read "<file>: <hdf5 path>: <problem>", as if the dataset were on disk.
class Checker {
 public:
  explicit Checker(const Dataset& ds) : file_(ds.source.empty() ? std::string("in-memory dataset") : ds.source) {}
  template <class... Args>
  [[noreturn]] void fail(const std::string& path, fmt::format_string<Args...> format, Args&&... args) const {
    throw Error(fmt::format("{}: {}: {}", file_, path, fmt::format(format, std::forward<Args>(args)...)));
  }

 private:
  std::string file_;
};

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// Names that become HDF5 link names (modalities, splits) must be usable as one.
void check_link_name(const Checker& ck, const std::string& where, const std::string& kind, const std::string& name) {
  if (name.empty() || name == "." || name.find('/') != std::string::npos)
    ck.fail(where, "invalid {} name '{}' (it must be non-empty, not '.', without '/')", kind, name);
}

void check_names(const Dataset& ds, const Checker& ck) {
  const std::string labels_path = "/ (attribute label_names)";
  if (ds.label_names.empty()) ck.fail(labels_path, "no label names");
  std::unordered_map<std::string, size_t> seen;
  for (size_t i = 0; i < ds.label_names.size(); ++i) {
    const std::string& name = ds.label_names[i];
    if (name.empty()) ck.fail(labels_path, "label name {} is empty", i);
    // Protocols match label names case-insensitively, so 'Hap' and 'hap' would collide.
    const auto [it, fresh] = seen.emplace(lower(name), i);
    if (!fresh) ck.fail(labels_path, "duplicate label name '{}' (positions {} and {})", name, it->second, i);
  }

  const std::string mod_path = "/ (attribute modalities)";
  if (ds.modalities.empty()) ck.fail(mod_path, "zero modalities (at least one of audio, visual, text is needed)");
  std::unordered_set<std::string> mods;
  for (const std::string& m : ds.modalities) {
    check_link_name(ck, mod_path, "modality", m);
    if (!mods.insert(m).second) ck.fail(mod_path, "duplicate modality '{}'", m);
  }
  if (ds.features.size() != ds.modalities.size())
    ck.fail("/features", "{} feature matrices for {} modalities", ds.features.size(), ds.modalities.size());
}

void check_utterances(const Dataset& ds, const Checker& ck) {
  const int64_t n = ds.num_utterances();
  for (size_t m = 0; m < ds.modalities.size(); ++m) {
    const std::string path = "/features/" + ds.modalities[m];
    const Tensor& f = ds.features[m];
    if (f.rows() != n) ck.fail(path, "N mismatch: {} rows, but /labels has {} utterances", f.rows(), n);
    if (f.cols() <= 0) ck.fail(path, "zero-width features ({} columns)", f.cols());
  }
  if (static_cast<int64_t>(ds.speakers.size()) != n)
    ck.fail("/speakers", "N mismatch: {} entries, but /labels has {} utterances", ds.speakers.size(), n);
  if (static_cast<int64_t>(ds.utterance_ids.size()) != n)
    ck.fail("/utterance_ids", "N mismatch: {} entries, but /labels has {} utterances", ds.utterance_ids.size(), n);

  const int num_labels = static_cast<int>(ds.label_names.size());
  for (int64_t i = 0; i < n; ++i) {
    const int32_t y = ds.labels[static_cast<size_t>(i)];
    if (y < -1 || y >= num_labels)
      ck.fail("/labels", "label {} at row {} out of range (-1 for unlabelled or 0..{} for the {} label names)", y, i,
              num_labels - 1, num_labels);
  }

  std::unordered_map<std::string, int64_t> seen;
  seen.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const std::string& id = ds.utterance_ids[static_cast<size_t>(i)];
    if (id.empty()) ck.fail("/utterance_ids", "empty utterance id at row {}", i);
    const auto [it, fresh] = seen.emplace(id, i);
    if (!fresh) ck.fail("/utterance_ids", "duplicate utterance id '{}' (rows {} and {})", id, it->second, i);
  }
}

void check_conversations(const Dataset& ds, const Checker& ck) {
  const size_t c = ds.conv_ids.size();
  if (c == 0) ck.fail("/conversations/ids", "no conversations");
  if (ds.conv_sessions.size() != c)
    ck.fail("/conversations/sessions", "{} entries, but /conversations/ids has {}", ds.conv_sessions.size(), c);
  const std::string off = "/conversations/offsets";
  if (ds.conv_offsets.size() != c + 1)
    ck.fail(off, "{} entries, expected {} (one more than the {} conversation ids)", ds.conv_offsets.size(), c + 1, c);
  if (ds.conv_offsets[0] != 0) ck.fail(off, "offsets start at {}, expected 0", ds.conv_offsets[0]);
  for (size_t i = 0; i < c; ++i) {
    const int64_t a = ds.conv_offsets[i], b = ds.conv_offsets[i + 1];
    if (b < a) ck.fail(off, "offsets decrease at index {} ({} then {})", i + 1, a, b);
    if (b == a) ck.fail(off, "empty conversation '{}' (index {}: offsets {} and {})", ds.conv_ids[i], i, a, b);
  }
  if (ds.conv_offsets[c] != ds.num_utterances())
    ck.fail(off, "offsets end at {}, expected N = {} utterances (/labels)", ds.conv_offsets[c], ds.num_utterances());

  std::unordered_map<std::string, size_t> seen;
  for (size_t i = 0; i < c; ++i) {
    const std::string& id = ds.conv_ids[i];
    if (id.empty()) ck.fail("/conversations/ids", "empty conversation id at index {}", i);
    const auto [it, fresh] = seen.emplace(id, i);
    if (!fresh) ck.fail("/conversations/ids", "duplicate conversation id '{}' (indices {} and {})", id, it->second, i);
  }
}

void check_splits(const Dataset& ds, const Checker& ck) {
  for (const char* required : {"train", "test"})
    if (ds.splits.count(required) == 0)
      ck.fail(std::string("/splits/") + required, "missing split (train and test are required; valid is optional)");
  std::unordered_set<std::string> conv_ids(ds.conv_ids.begin(), ds.conv_ids.end());
  std::unordered_map<std::string, std::string> split_of;  // conversation id -> split
  for (const auto& [name, ids] : ds.splits) {
    const std::string path = "/splits/" + name;
    check_link_name(ck, path, "split", name);
    if (ids.empty() && (name == "train" || name == "test")) ck.fail(path, "the {} split is empty", name);
    for (const std::string& id : ids) {
      if (conv_ids.count(id) == 0) ck.fail(path, "unknown conversation '{}' (not in /conversations/ids)", id);
      const auto [it, fresh] = split_of.emplace(id, name);
      if (!fresh) {
        if (it->second == name) ck.fail(path, "conversation '{}' listed twice", id);
        ck.fail(path, "conversation '{}' is in two splits ('{}' and '{}')", id, it->second, name);
      }
    }
  }
}

// Last, because it touches every feature value.
void check_finite(const Dataset& ds, const Checker& ck) {
  for (size_t m = 0; m < ds.modalities.size(); ++m) {
    const Tensor& f = ds.features[m];
    const float* p = f.data();
    const int64_t size = f.size();
    for (int64_t i = 0; i < size; ++i) {
      if (!std::isfinite(p[i])) {
        const int64_t row = i / f.cols(), col = i % f.cols();
        ck.fail("/features/" + ds.modalities[m], "non-finite value {} (modality {}, row {}, column {}, utterance '{}')",
                std::isnan(p[i]) ? "NaN" : (p[i] > 0 ? "Inf" : "-Inf"), ds.modalities[m], row, col,
                ds.utterance_ids[static_cast<size_t>(row)]);
      }
    }
  }
}

}  // namespace

void validate_dataset(const Dataset& ds) {
  const Checker ck(ds);
  check_names(ds, ck);
  check_utterances(ds, ck);
  check_conversations(ds, ck);
  check_splits(ds, ck);
  check_finite(ds, ck);
}

}  // namespace mman
