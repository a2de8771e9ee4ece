// `mman_exp eval` and `mman_exp predict`: a checkpoint applied to a dataset file.
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <numeric>

#include "mman/atomic_file.h"
#include "mman/data/dataset.h"
#include "mman/error.h"
#include "mman/exp/saved_model.h"
#include "mman/train/trainer.h"
#include "src/cli/commands.h"

namespace mman::cli {
namespace {

std::vector<int> split_conversations(const SavedModel& s, const Dataset& ds, const std::string& split) {
  if (split == "all") {
    std::vector<int> all(static_cast<size_t>(ds.num_conversations()));
    std::iota(all.begin(), all.end(), 0);
    return all;
  }
  if (split == "train") return s.splits.train;
  if (split == "valid") return s.splits.valid;
  if (split == "test") return s.splits.test;
  fail("--split {}: expected all, train, valid or test", split);
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

}  // namespace

int cmd_eval(const EvalArgs& args) {
  Dataset ds = read_dataset(args.data);
  SavedModel s = load_saved_model(args.checkpoint, ds, args.protocol);
  const std::vector<int> convs = split_conversations(s, ds, args.split);
  if (convs.empty()) fail("{}: split '{}' has no conversations", args.data, args.split);
  const Evaluation e = evaluate(*s.model, ds, s.protocol, convs);
  if (args.json) {
    fmt::print("{}\n", nlohmann::json{{"checkpoint", args.checkpoint}, {"data", args.data}, {"split", args.split},
                                      {"loss", e.loss}, {"metrics", e.metrics}}
                           .dump(2));
    return 0;
  }
  const Metrics& m = e.metrics;
  fmt::print("{} ({} '{}') on {} split {}: {} scored utterances{}\n", args.checkpoint, s.meta.model_type,
             s.meta.model_name, args.data, args.split, m.count,
             s.normalization.empty() ? std::string() : " (normalised " + s.normalization + ")");
  fmt::print("loss {:.4f}  WA {:.2f}%  UA {:.2f}%  macro F1 {:.2f}%  weighted F1 {:.2f}%\n", e.loss, 100 * m.accuracy,
             100 * m.unweighted_accuracy, 100 * m.macro_f1, 100 * m.weighted_f1);
  if (!m.heads.empty()) {
    for (const ClassMetrics& h : m.heads)
      fmt::print("  {:<10} accuracy {:.2f}%  weighted F1 {:.2f}%\n", h.class_names.back(), 100 * h.accuracy, 100 * h.weighted_f1);
    return 0;
  }
  const ClassMetrics& c = m.classes;
  fmt::print("\n{:<10}", "true\\pred");
  for (const std::string& n : c.class_names) fmt::print(" {:>9}", n);
  fmt::print(" {:>9}\n", "recall");
  for (int t = 0; t < c.num_classes(); ++t) {
    fmt::print("{:<10}", c.class_names[static_cast<size_t>(t)]);
    for (int p = 0; p < c.num_classes(); ++p)
      fmt::print(" {:>9}", c.confusion_at(t, p));
    fmt::print(" {:>8.2f}%\n", 100 * c.recall[static_cast<size_t>(t)]);
  }
  return 0;
}

int cmd_predict(const EvalArgs& args) {
  Dataset ds = read_dataset(args.data);
  SavedModel s = load_saved_model(args.checkpoint, ds, args.protocol);
  const std::vector<int> convs = split_conversations(s, ds, args.split);
  const Evaluation e = evaluate(*s.model, ds, s.protocol, convs);

  // Which split each conversation is in, for the CSV.
  std::vector<std::string> split_of(static_cast<size_t>(ds.num_conversations()), "");
  for (int c : s.splits.train) split_of[static_cast<size_t>(c)] = "train";
  for (int c : s.splits.valid) split_of[static_cast<size_t>(c)] = "valid";
  for (int c : s.splits.test) split_of[static_cast<size_t>(c)] = "test";
  std::vector<int> conv_of(static_cast<size_t>(ds.num_utterances()));
  for (int c = 0; c < ds.num_conversations(); ++c)
    for (int64_t u = ds.conv_offsets[static_cast<size_t>(c)]; u < ds.conv_offsets[static_cast<size_t>(c) + 1]; ++u)
      conv_of[static_cast<size_t>(u)] = c;

  const LabelProtocol& p = s.protocol;
  const int heads = p.heads;
  std::string csv = "conversation,utterance,speaker,split,label,target";
  if (heads == 1) {
    csv += ",prediction";
    for (const std::string& c : p.class_names) csv += ",p_" + c;
  } else {
    for (const std::string& c : p.class_names) csv += ",pred_" + c + ",p_" + c;
  }
  const bool attention = e.attention.rows() == static_cast<int64_t>(e.utterances.size()) && e.attention.cols() == 9;
  // Attention columns are named by the modalities of the model's MMA (its own, or its
  // clstm_mma sub-network's for mman).
  std::vector<std::string> mods = s.model->config().modalities;
  for (const ModelConfig& sub : s.model->config().subnets)
    if (sub.type == "clstm_mma") mods = sub.modalities;
  if (attention)
    for (int q = 0; q < 3; ++q)
      for (int k = 0; k < 3; ++k)
        csv += fmt::format(",att_{}_{}", mods.size() == 3 ? mods[static_cast<size_t>(q)] : std::to_string(q),
                           mods.size() == 3 ? mods[static_cast<size_t>(k)] : std::to_string(k));
  csv += "\n";
  for (size_t r = 0; r < e.utterances.size(); ++r) {
    const size_t u = static_cast<size_t>(e.utterances[r]);
    const int conv = conv_of[u];
    const int raw = ds.labels[u];
    const int target = e.targets[r];
    csv += fmt::format("{},{},{},{},{},{}", csv_field(ds.conv_ids[static_cast<size_t>(conv)]), csv_field(ds.utterance_ids[u]),
                       csv_field(ds.speakers[u]), split_of[static_cast<size_t>(conv)],
                       raw >= 0 ? csv_field(ds.label_names[static_cast<size_t>(raw)]) : "",
                       target >= 0 ? p.class_names[static_cast<size_t>(target)] : "");
    const float* prob = e.probabilities.row(static_cast<int64_t>(r));
    if (heads == 1) {
      csv += "," + p.class_names[static_cast<size_t>(e.predictions[r])];
      for (int c = 0; c < p.num_classes(); ++c) csv += fmt::format(",{:.6f}", prob[c]);
    } else {
      for (int k = 0; k < heads; ++k)
        csv += fmt::format(",{},{:.6f}", e.predictions[r * static_cast<size_t>(heads) + static_cast<size_t>(k)],
                           prob[2 * k + 1]);
    }
    if (attention)
      for (int j = 0; j < 9; ++j) csv += fmt::format(",{:.6f}", e.attention.at(static_cast<int64_t>(r), j));
    csv += "\n";
  }
  write_file_atomic(args.out, csv);
  fmt::print("{}: {} utterances ({} split{}){}\n", args.out, e.utterances.size(), args.split,
             args.split == "all" ? "s" : "", attention ? ", with 3x3 attention weights" : "");
  return 0;
}

}  // namespace mman::cli
