// `mman_exp inspect`: validates a dataset file and prints its shape, label counts and conversation statistics.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "mman/data/dataset.h"
#include "mman/data/protocol.h"
#include "mman/error.h"
#include "mman/hdf5_io.h"
#include "src/cli/commands.h"

namespace mman::cli {
namespace {

// A plain text table: first column left-aligned, the others right-aligned.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(const std::string& indent = "  ") const {
    std::vector<size_t> width;
    for (const auto& r : rows_) {
      if (width.size() < r.size()) width.resize(r.size(), 0);
      for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    }
    for (const auto& r : rows_) {
      std::string line = indent;
      for (size_t i = 0; i < r.size(); ++i) {
        if (i == 0)
          line += fmt::format("{:<{}}", r[i], width[i]);
        else
          line += fmt::format("  {:>{}}", r[i], width[i]);
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      fmt::print("{}\n", line);
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

// Splits in a reader's order: train, valid, test, then any others by name.
std::vector<std::string> ordered_splits(const Dataset& ds) {
  std::vector<std::string> names;
  for (const char* n : {"train", "valid", "test"})
    if (ds.splits.count(n)) names.emplace_back(n);
  for (const auto& [name, ids] : ds.splits)
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  return names;
}

struct SplitView {
  std::string name;
  std::vector<int> convs;  // dataset conversation indices
};

std::string percent(int64_t part, int64_t whole) {
  return whole > 0 ? fmt::format("{:.1f}%", 100.0 * static_cast<double>(part) / static_cast<double>(whole)) : "-";
}

// Utterance counts per class of a protocol (or of the raw labels when protocol is null).
void print_counts(const Dataset& ds, const std::vector<SplitView>& views, const LabelProtocol* protocol) {
  const std::vector<std::string>& names = protocol ? protocol->class_names : ds.label_names;
  const size_t k = names.size();
  // column k: utterances outside the classes (unlabelled, or context only under a protocol)
  std::vector<std::vector<int64_t>> counts;
  for (const SplitView& v : views) {
    std::vector<int64_t> row(k + 1, 0);
    for (int c : v.convs)
      for (int64_t u = ds.conv_offsets[static_cast<size_t>(c)]; u < ds.conv_offsets[static_cast<size_t>(c) + 1]; ++u) {
        const int raw = ds.labels[static_cast<size_t>(u)];
        const int cls = protocol ? protocol->map(raw) : raw;
        ++row[cls >= 0 ? static_cast<size_t>(cls) : k];
      }
    counts.push_back(std::move(row));
  }
  bool any_other = false;
  for (const auto& row : counts) any_other = any_other || row[k] > 0;

  std::vector<std::string> header = {"split"};
  for (const std::string& n : names) header.push_back(n);
  if (any_other) header.emplace_back(protocol ? "context" : "unlabelled");
  header.emplace_back("total");
  // For one-vs-rest tasks a most frequent class across tasks means nothing.
  const bool majority = !(protocol && protocol->binary());
  if (majority) header.emplace_back("majority");
  Table t(header);
  for (size_t s = 0; s < views.size(); ++s) {
    const auto& row = counts[s];
    std::vector<std::string> cells = {views[s].name};
    int64_t labelled = 0, best = 0;
    size_t best_k = 0;
    for (size_t i = 0; i < k; ++i) {
      cells.push_back(fmt::format("{}", row[i]));
      labelled += row[i];
      if (row[i] > best) best = row[i], best_k = i;
    }
    if (any_other) cells.push_back(fmt::format("{}", row[k]));
    cells.push_back(fmt::format("{}", labelled + row[k]));
    if (majority) cells.push_back(labelled > 0 ? fmt::format("{} {}", names[best_k], percent(best, labelled)) : "-");
    t.add(std::move(cells));
  }
  t.print();
}

std::string mapping_note(const LabelProtocol& p, const std::vector<std::string>& label_names) {
  std::vector<std::string> parts;
  for (int cls = 0; cls < p.num_classes(); ++cls) {
    std::vector<std::string> from;
    for (size_t r = 0; r < label_names.size(); ++r)
      if (p.raw_to_class[r] == cls) from.push_back(label_names[r]);
    parts.push_back(join(from, "+") + " -> " + p.class_names[static_cast<size_t>(cls)]);
  }
  std::vector<std::string> context;
  for (size_t r = 0; r < label_names.size(); ++r)
    if (p.raw_to_class[r] < 0) context.push_back(label_names[r]);
  std::string note = join(parts);
  if (!context.empty()) note += "; " + join(context) + " context only";
  if (p.binary()) note += "; one-vs-rest binary tasks";
  return note;
}

}  // namespace

int cmd_inspect(const InspectArgs& args) {
  const Dataset ds = read_dataset(args.file);  // validates everything, or throws naming the problem

  // Root attributes Dataset does not carry: the schema string and the synthetic marker.
  std::string schema = kDatasetSchema, synthetic;
  {
    const h5::File f = h5::File::open(args.file);
    schema = f.read_string_attr("/", "schema");
    if (f.has_attr("/", "synthetic")) synthetic = f.read_string_attr("/", "synthetic");
  }

  std::vector<SplitView> views;
  std::map<std::string, int> conv_index;
  for (int c = 0; c < ds.num_conversations(); ++c) conv_index[ds.conv_ids[static_cast<size_t>(c)]] = c;
  std::vector<bool> in_split(static_cast<size_t>(ds.num_conversations()), false);
  for (const std::string& name : ordered_splits(ds)) {
    SplitView v{name, {}};
    for (const std::string& id : ds.splits.at(name)) {
      const int c = conv_index.at(id);  // validated: every split id names a conversation
      v.convs.push_back(c);
      in_split[static_cast<size_t>(c)] = true;
    }
    views.push_back(std::move(v));
  }
  SplitView outside{"(no split)", {}};
  for (int c = 0; c < ds.num_conversations(); ++c)
    if (!in_split[static_cast<size_t>(c)]) outside.convs.push_back(c);
  std::vector<SplitView> rows = views;
  if (!outside.convs.empty()) rows.push_back(outside);
  SplitView all{"all", {}};
  for (int c = 0; c < ds.num_conversations(); ++c) all.convs.push_back(c);
  rows.push_back(all);

  auto utterances_of = [&](const SplitView& v) {
    int64_t n = 0;
    for (int c : v.convs) n += ds.conv_length(c);
    return n;
  };
  std::vector<std::string> conv_parts, utt_parts;
  for (const SplitView& v : views) {
    conv_parts.push_back(fmt::format("{} {}", v.name, v.convs.size()));
    utt_parts.push_back(fmt::format("{} {}", v.name, utterances_of(v)));
  }
  if (!outside.convs.empty()) {
    conv_parts.push_back(fmt::format("in no split {}", outside.convs.size()));
    utt_parts.push_back(fmt::format("in no split {}", utterances_of(outside)));
  }

  fmt::print("file: {}\n", args.file);
  fmt::print("schema: {}\n", schema);
  if (!synthetic.empty())
    fmt::print("data: SYNTHETIC ({}), generated by `mman_exp synth`, not real recordings\n", synthetic);
  fmt::print("conversations: {} ({})\n", ds.num_conversations(), join(conv_parts));
  fmt::print("utterances: {} ({})\n", ds.num_utterances(), join(utt_parts));
  std::vector<std::string> mods;
  for (int m = 0; m < static_cast<int>(ds.modalities.size()); ++m)
    mods.push_back(fmt::format("{} {}", ds.modalities[static_cast<size_t>(m)], ds.dim(m)));
  fmt::print("modalities: {} (float32)\n", join(mods));
  fmt::print("label names: {}\n", join(ds.label_names));

  // Sessions and speakers, overall and per split (disjoint speakers = speaker-independent test).
  auto distinct = [&](const std::vector<int>& convs) {
    std::set<std::string> sessions, speakers;
    for (int c : convs) {
      sessions.insert(ds.conv_sessions[static_cast<size_t>(c)]);
      for (int64_t u = ds.conv_offsets[static_cast<size_t>(c)]; u < ds.conv_offsets[static_cast<size_t>(c) + 1]; ++u)
        speakers.insert(ds.speakers[static_cast<size_t>(u)]);
    }
    return std::make_pair(sessions, speakers);
  };
  const auto [all_sessions, all_speakers] = distinct(all.convs);
  std::vector<std::string> sess_parts, spk_parts;
  for (const SplitView& v : views) {
    const auto [s, p] = distinct(v.convs);
    sess_parts.push_back(fmt::format("{} {}", v.name, s.size()));
    spk_parts.push_back(fmt::format("{} {}", v.name, p.size()));
  }
  const std::vector<std::string> session_list(all_sessions.begin(), all_sessions.end());
  fmt::print("sessions: {} ({}): {}\n", all_sessions.size(), join(sess_parts),
             session_list.size() <= 12 ? join(session_list) : join({session_list.front(), "...", session_list.back()}));
  fmt::print("speakers: {} ({})\n", all_speakers.size(), join(spk_parts));

  fmt::print("\nutterances per raw label:\n");
  print_counts(ds, rows, nullptr);

  std::vector<LabelProtocol> protocols;
  bool iemocap_names = true;
  try {
    protocols.push_back(make_protocol("iemocap4", ds.label_names));
  } catch (const Error&) {
    iemocap_names = false;  // another corpus: no default mapping
  }
  if (!args.protocol.empty() && (!iemocap_names || args.protocol != "iemocap4")) {
    protocols.push_back(make_protocol(args.protocol, ds.label_names));  // throws naming the problem
  }
  for (const LabelProtocol& p : protocols) {
    fmt::print("\nutterances per class, protocol {} ({}):\n", p.name, mapping_note(p, ds.label_names));
    print_counts(ds, rows, &p);
  }

  fmt::print("\nconversation lengths (utterances):\n");
  Table lengths({"split", "conversations", "min", "mean", "median", "max"});
  for (const SplitView& v : rows) {
    std::vector<int> len;
    for (int c : v.convs) len.push_back(ds.conv_length(c));
    if (len.empty()) {
      lengths.add({v.name, "0", "-", "-", "-", "-"});
      continue;
    }
    std::sort(len.begin(), len.end());
    double sum = 0;
    for (int l : len) sum += l;
    const size_t n = len.size();
    const double median = n % 2 ? len[n / 2] : 0.5 * (len[n / 2 - 1] + len[n / 2]);
    lengths.add({v.name, fmt::format("{}", n), fmt::format("{}", len.front()), fmt::format("{:.1f}", sum / static_cast<double>(n)),
                 fmt::format("{:g}", median), fmt::format("{}", len.back())});
  }
  lengths.print();
  return 0;
}

}  // namespace mman::cli
