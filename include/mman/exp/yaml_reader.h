// Strict, location-aware reading of YAML configs: typed getters, range checks, unknown-key
// errors with did-you-mean, and `--set key.path=value` overrides.
#pragma once
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace mman {

// Everything a message needs to point at the offending text: the file, and which key
// paths were replaced from the command line (those are reported as `--set path=value`).
struct YamlSource {
  std::string file;
  std::vector<std::pair<std::string, std::string>> overrides;  // (key.path, value text)
};

// Formats "file:line:column: key.path: message" (or "--set key.path=value: message" for
// values that came from an override). Line and column are 1-based.
std::string yaml_error_message(const YamlSource& source, const YAML::Node& node, const std::string& path,
                               const std::string& message);

// Edit distance counting adjacent transpositions as one edit; suggestions are offered within distance <= max(1, len/3).
size_t edit_distance(const std::string& a, const std::string& b);
// " (did you mean 'x'?)" or "" when nothing is close.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

// Reads one YAML mapping strictly. Each getter marks its key as known; finish() throws
// for any key of the mapping that no getter asked for, suggesting the closest known key.
// Every problem throws mman::Error with the location of the offending node.
class YamlMap {
 public:
  // `node` must be a mapping (or null/absent, treated as empty); `path` is its key path
  // ("" for the root), used in messages.
  YamlMap(std::shared_ptr<const YamlSource> source, YAML::Node node, std::string path);

  const std::string& path() const { return path_; }
  bool has(const std::string& key) const;
  YAML::Node raw(const std::string& key) const;  // marks key as known
  std::string key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  std::string string(const std::string& key, const std::string& fallback);
  std::string required_string(const std::string& key);
  std::string choice(const std::string& key, const std::string& fallback, const std::vector<std::string>& options);
  bool boolean(const std::string& key, bool fallback);
  int64_t integer(const std::string& key, int64_t fallback, int64_t min, int64_t max);
  double number(const std::string& key, double fallback, double min, double max, bool min_exclusive = false);
  std::vector<std::string> string_list(const std::string& key, const std::vector<std::string>& fallback);
  std::vector<int64_t> integer_list(const std::string& key, const std::vector<int64_t>& fallback, int64_t min,
                                    int64_t max);
  std::vector<double> number_list(const std::string& key, const std::vector<double>& fallback, double min,
                                  double max);
  // A nested mapping (absent -> empty mapping).
  YamlMap map(const std::string& key);
  // The keys in file order (for maps whose keys are names, e.g. `models`).
  std::vector<std::string> keys() const;

  // Throws for the first unknown key.
  void finish() const;
  [[noreturn]] void fail(const YAML::Node& node, const std::string& path, const std::string& message) const;
  [[noreturn]] void fail_key(const std::string& key, const std::string& message) const;

  const std::shared_ptr<const YamlSource>& source() const { return source_; }
  const YAML::Node& node() const { return node_; }

 private:
  std::shared_ptr<const YamlSource> source_;
  YAML::Node node_;
  std::string path_;
  std::set<std::string> known_;
};

// Loads a YAML file (clear error for a missing, unreadable or syntactically broken file,
// with the parser's line and column), then applies `key.path=value` overrides: the value
// is parsed as YAML (so `[1, 2]` is a list), intermediate mappings are created.
YAML::Node load_yaml_with_overrides(const std::string& file, const std::vector<std::string>& overrides,
                                    YamlSource& source);
// The same for YAML text already in memory; `file` names it in messages.
YAML::Node parse_yaml_with_overrides(const std::string& text, const std::string& file,
                                     const std::vector<std::string>& overrides, YamlSource& source);

}  // namespace mman
