// YamlMap and override handling: strict typed reading of experiment configs with precise errors.
#include "mman/exp/yaml_reader.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "mman/error.h"

namespace mman {
namespace {

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return "nothing";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Scalar: return fmt::format("'{}'", node.Scalar());
  }
  return "something else";
}

bool parse_integer(const std::string& text, int64_t& out) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end == nullptr || *end != '\0') return false;
  out = v;
  return true;
}

bool parse_number(const std::string& text, double& out) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (errno != 0 || end == nullptr || *end != '\0' || !std::isfinite(v)) return false;
  out = v;
  return true;
}

std::string format_number(double v) { return fmt::format("{:g}", v); }

}  // namespace

std::string yaml_error_message(const YamlSource& source, const YAML::Node& node, const std::string& path,
                               const std::string& message) {
  for (const auto& [key, value] : source.overrides) {
    if (path == key || path.compare(0, key.size() + 1, key + ".") == 0)
      return fmt::format("--set {}={}: {}: {}", key, value, path, message);
  }
  const YAML::Mark mark = node.IsDefined() ? node.Mark() : YAML::Mark::null_mark();
  if (mark.is_null()) return fmt::format("{}: {}: {}", source.file, path.empty() ? "(root)" : path, message);
  return fmt::format("{}:{}:{}: {}: {}", source.file, mark.line + 1, mark.column + 1, path.empty() ? "(root)" : path,
                     message);
}

size_t edit_distance(const std::string& a, const std::string& b) {
  // Optimal string alignment: insertions, deletions, substitutions and adjacent
  // transpositions ("cdua" -> "cuda") each cost 1, the typos people actually make.
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0u : 1u)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  const size_t limit = std::max<size_t>(1, word.size() / 3);
  size_t best = std::numeric_limits<size_t>::max();
  std::string best_word;
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best) {
      best = d;
      best_word = c;
    }
  }
  return best <= limit ? fmt::format(" (did you mean '{}'?)", best_word) : std::string();
}

YamlMap::YamlMap(std::shared_ptr<const YamlSource> source, YAML::Node node, std::string path)
    : source_(std::move(source)), node_(std::move(node)), path_(std::move(path)) {
  if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap())
    fail(node_, path_, "expected a mapping of keys to values, found " + describe(node_));
  // yaml-cpp keeps both copies of a repeated key (YAML forbids them): one would be read
  // and the other ignored, or a model defined twice trained twice (found by fuzz_config).
  if (node_.IsMap()) {
    std::set<std::string> seen;
    for (auto it = node_.begin(); it != node_.end(); ++it)
      if (it->first.IsScalar() && !seen.insert(it->first.Scalar()).second) {
        const std::string key = it->first.Scalar();
        fail(it->first, path_.empty() ? key : path_ + "." + key, fmt::format("key '{}' appears twice", key));
      }
  }
}

bool YamlMap::has(const std::string& key) const {
  if (!node_.IsMap()) return false;
  const YAML::Node& n = node_;
  const YAML::Node child = n[key];
  return child.IsDefined() && !child.IsNull();
}

YAML::Node YamlMap::raw(const std::string& key) const {
  const_cast<YamlMap*>(this)->known_.insert(key);
  if (!node_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  const YAML::Node& n = node_;
  const YAML::Node child = n[key];
  // A missing key yields an "invalid" node on which most calls throw; hand out a valid
  // undefined node instead.
  return child.IsDefined() ? child : YAML::Node(YAML::NodeType::Undefined);
}

void YamlMap::fail(const YAML::Node& node, const std::string& path, const std::string& message) const {
  throw Error(yaml_error_message(*source_, node.IsDefined() ? node : node_, path, message));
}

void YamlMap::fail_key(const std::string& key, const std::string& message) const {
  fail(raw(key), key_path(key), message);
}

std::string YamlMap::string(const std::string& key, const std::string& fallback) {
  const YAML::Node n = raw(key);
  if (!n.IsDefined() || n.IsNull()) return fallback;
  if (!n.IsScalar()) fail(n, key_path(key), "expected a string, found " + describe(n));
  return n.Scalar();
}

std::string YamlMap::required_string(const std::string& key) {
  const YAML::Node n = raw(key);
  if (!n.IsDefined() || n.IsNull()) fail(node_, key_path(key), "is required (a string)");
  return string(key, "");
}

std::string YamlMap::choice(const std::string& key, const std::string& fallback,
                            const std::vector<std::string>& options) {
  const std::string v = string(key, fallback);
  if (std::find(options.begin(), options.end(), v) == options.end())
    fail(raw(key), key_path(key),
         fmt::format("expected one of {}, found '{}'{}", fmt::join(options, ", "), v, did_you_mean(v, options)));
  return v;
}

bool YamlMap::boolean(const std::string& key, bool fallback) {
  const YAML::Node n = raw(key);
  if (!n.IsDefined() || n.IsNull()) return fallback;
  if (n.IsScalar()) {
    const std::string& s = n.Scalar();
    if (s == "true" || s == "True" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "False" || s == "no" || s == "off") return false;
  }
  fail(n, key_path(key), "expected true or false, found " + describe(n));
}

int64_t YamlMap::integer(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  const YAML::Node n = raw(key);
  if (!n.IsDefined() || n.IsNull()) return fallback;
  int64_t v = 0;
  if (!n.IsScalar() || !parse_integer(n.Scalar(), v))
    fail(n, key_path(key), "expected an integer, found " + describe(n));
  if (v < min || v > max)
    fail(n, key_path(key), fmt::format("expected an integer in [{}, {}], found {}", min, max, v));
  return v;
}

double YamlMap::number(const std::string& key, double fallback, double min, double max, bool min_exclusive) {
  const YAML::Node n = raw(key);
  if (!n.IsDefined() || n.IsNull()) return fallback;
  double v = 0;
  if (!n.IsScalar() || !parse_number(n.Scalar(), v))
    fail(n, key_path(key), "expected a number, found " + describe(n));
  if (v < min || v > max || (min_exclusive && v == min))
    fail(n, key_path(key),
         fmt::format("expected a number in {}{}, {}], found {}", min_exclusive ? "(" : "[", format_number(min),
                     format_number(max), format_number(v)));
  return v;
}

std::vector<std::string> YamlMap::string_list(const std::string& key, const std::vector<std::string>& fallback) {
  const YAML::Node n = raw(key);
  if (!n.IsDefined() || n.IsNull()) return fallback;
  if (n.IsScalar()) return {n.Scalar()};  // a single name is a list of one
  if (!n.IsSequence()) fail(n, key_path(key), "expected a list of strings, found " + describe(n));
  std::vector<std::string> out;
  for (size_t i = 0; i < n.size(); ++i) {
    if (!n[i].IsScalar())
      fail(n[i], fmt::format("{}[{}]", key_path(key), i), "expected a string, found " + describe(n[i]));
    out.push_back(n[i].Scalar());
  }
  return out;
}

std::vector<int64_t> YamlMap::integer_list(const std::string& key, const std::vector<int64_t>& fallback,
                                           int64_t min, int64_t max) {
  const YAML::Node n = raw(key);
  if (!n.IsDefined() || n.IsNull()) return fallback;
  std::vector<YAML::Node> items;
  if (n.IsScalar()) {
    items.push_back(n);
  } else if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) items.push_back(n[i]);
  } else {
    fail(n, key_path(key), "expected a list of integers, found " + describe(n));
  }
  if (items.empty()) fail(n, key_path(key), "expected at least one integer, found an empty list");
  std::vector<int64_t> out;
  for (size_t i = 0; i < items.size(); ++i) {
    int64_t v = 0;
    const std::string p = n.IsSequence() ? fmt::format("{}[{}]", key_path(key), i) : key_path(key);
    if (!items[i].IsScalar() || !parse_integer(items[i].Scalar(), v))
      fail(items[i], p, "expected an integer, found " + describe(items[i]));
    if (v < min || v > max) fail(items[i], p, fmt::format("expected an integer in [{}, {}], found {}", min, max, v));
    out.push_back(v);
  }
  return out;
}

std::vector<double> YamlMap::number_list(const std::string& key, const std::vector<double>& fallback, double min,
                                         double max) {
  const YAML::Node n = raw(key);
  if (!n.IsDefined() || n.IsNull()) return fallback;
  if (!n.IsSequence()) fail(n, key_path(key), "expected a list of numbers, found " + describe(n));
  std::vector<double> out;
  for (size_t i = 0; i < n.size(); ++i) {
    double v = 0;
    const std::string p = fmt::format("{}[{}]", key_path(key), i);
    if (!n[i].IsScalar() || !parse_number(n[i].Scalar(), v))
      fail(n[i], p, "expected a number, found " + describe(n[i]));
    if (v < min || v > max)
      fail(n[i], p, fmt::format("expected a number in [{}, {}], found {}", format_number(min), format_number(max),
                                format_number(v)));
    out.push_back(v);
  }
  return out;
}

YamlMap YamlMap::map(const std::string& key) { return YamlMap(source_, raw(key), key_path(key)); }

std::vector<std::string> YamlMap::keys() const {
  std::vector<std::string> out;
  if (!node_.IsMap()) return out;
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    if (!it->first.IsScalar()) fail(it->first, path_, "keys must be plain names");
    out.push_back(it->first.Scalar());
  }
  return out;
}

void YamlMap::finish() const {
  if (!node_.IsMap()) return;
  const std::vector<std::string> candidates(known_.begin(), known_.end());
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    const std::string key = it->first.IsScalar() ? it->first.Scalar() : std::string("?");
    if (known_.count(key)) continue;
    fail(it->first, key_path(key),
         fmt::format("unknown key '{}'{}", key,
                     candidates.empty() ? std::string() : did_you_mean(key, candidates)));
  }
}

YAML::Node load_yaml_with_overrides(const std::string& file, const std::vector<std::string>& overrides,
                                    YamlSource& source) {
  // A folder opens as an empty stream on Linux and would read as an empty config.
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) fail("{}: is a folder, not a config file", file);
  std::ifstream in(file);
  if (!in) fail("{}: cannot open the config file", file);
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: cannot read the config file", file);
  return parse_yaml_with_overrides(text.str(), file, overrides, source);
}

YAML::Node parse_yaml_with_overrides(const std::string& text, const std::string& file,
                                     const std::vector<std::string>& overrides, YamlSource& source) {
  source.file = file;
  source.overrides.clear();
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("{}:{}:{}: invalid YAML: {}", file, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) fail("{}:1:1: (root): expected a mapping of keys to values", file);

  for (const std::string& item : overrides) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      fail("--set {}: expected key.path=value (e.g. --set train.lr=0.0005)", item);
    const std::string path = item.substr(0, eq);
    const std::string value_text = item.substr(eq + 1);
    std::vector<std::string> parts;
    size_t start = 0;
    while (true) {
      const size_t dot = path.find('.', start);
      parts.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    for (const std::string& p : parts)
      if (p.empty()) fail("--set {}: empty component in key path '{}'", item, path);
    YAML::Node value;
    try {
      value = YAML::Load(value_text);
    } catch (const YAML::Exception& e) {
      fail("--set {}: the value is not valid YAML: {}", item, e.msg);
    }
    if (!value.IsDefined()) value = YAML::Node(YAML::NodeType::Null);
    YAML::Node cur;
    cur.reset(root);
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      YAML::Node next = cur[parts[i]];
      if (!next.IsMap()) {
        if (next.IsDefined() && !next.IsNull())
          fail("--set {}: '{}' is not a mapping, so it has no key '{}'", item,
               fmt::join(parts.begin(), parts.begin() + static_cast<long>(i) + 1, "."), parts[i + 1]);
        cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
        next.reset(cur[parts[i]]);
      }
      cur.reset(next);
    }
    cur[parts.back()] = value;
    source.overrides.emplace_back(path, value_text);
  }
  return root;
}

}  // namespace mman
