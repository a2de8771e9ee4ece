// Renderings of RunResults: results.json, report.md (Tables 2/3, Figure 3 layouts), metrics.csv, console table.
#include "mman/exp/results.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

namespace mman {
namespace {

// The paper's reported numbers on the real IEMOCAP (Tables 2 and 3), shown beside ours
// for orientation only.
const std::map<std::string, double> kPaperTable2 = {
    {"clstm_speech", 57.12}, {"clstm_ef", 69.75}, {"clstm_lf", 71.78}, {"clstm_mma", 71.66}, {"mman", 73.94}};
const std::map<std::string, std::vector<double>> kPaperTable3 = {
    {"clstm_mma", {92.15, 82.93, 76.99, 93.32}}, {"mman", {92.68, 83.14, 75.61, 92.90}}};

std::string pct(const MeanStd& m, size_t n) {
  return n > 1 ? fmt::format("{:.2f} ± {:.2f}", 100 * m.mean, 100 * m.std) : fmt::format("{:.2f}", 100 * m.mean);
}

MeanStd over_seeds(const ModelResults& m, double (*get)(const ModelSeedResult&)) {
  std::vector<double> v;
  for (const ModelSeedResult& s : m.seeds) v.push_back(get(s));
  return mean_std(v);
}

double wa(const ModelSeedResult& s) { return s.test.accuracy; }
double ua(const ModelSeedResult& s) { return s.test.unweighted_accuracy; }
double wf1(const ModelSeedResult& s) { return s.test.weighted_f1; }

// Models in the report's row order: the configured report list first, then the rest.
std::vector<const ModelResults*> ordered(const RunResults& r, bool report_only) {
  std::vector<const ModelResults*> out;
  for (const std::string& name : r.report_models)
    if (const ModelResults* m = r.find(name)) out.push_back(m);
  if (!report_only)
    for (const ModelResults& m : r.models)
      if (std::find(out.begin(), out.end(), &m) == out.end()) out.push_back(&m);
  return out;
}

// Confusion counts summed over seeds.
std::vector<int64_t> summed_confusion(const ModelResults& m, size_t classes) {
  std::vector<int64_t> sum(classes * classes, 0);
  for (const ModelSeedResult& s : m.seeds)
    if (s.test.classes.confusion.size() == sum.size())
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += s.test.classes.confusion[i];
  return sum;
}

std::string markdown_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::string out = "| " + fmt::format("{}", fmt::join(header, " | ")) + " |\n|";
  for (size_t i = 0; i < header.size(); ++i) out += i == 0 ? "---|" : "---:|";
  out += "\n";
  for (const auto& row : rows) out += "| " + fmt::format("{}", fmt::join(row, " | ")) + " |\n";
  return out;
}

std::string text_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size(); ++i) {
      // Count code points, not bytes ("±" is two bytes).
      size_t n = 0;
      for (unsigned char ch : row[i]) n += (ch & 0xC0) != 0x80;
      width[i] = std::max(width[i], n);
    }
  };
  measure(header);
  for (const auto& row : rows) measure(row);
  auto line = [&](const std::vector<std::string>& row) {
    std::string s;
    for (size_t i = 0; i < row.size(); ++i) {
      size_t n = 0;
      for (unsigned char ch : row[i]) n += (ch & 0xC0) != 0x80;
      const std::string pad(width[i] - n, ' ');
      s += i == 0 ? row[i] + pad : "  " + pad + row[i];
    }
    return s + "\n";
  };
  std::string out = line(header);
  size_t total = 0;
  for (size_t w : width) total += w + 2;
  out += std::string(total - 2, '-') + "\n";
  for (const auto& row : rows) out += line(row);
  return out;
}

std::vector<std::vector<std::string>> table2_rows(const RunResults& r, bool with_paper) {
  std::vector<std::vector<std::string>> rows;
  for (const ModelResults* m : ordered(r, true)) {
    const size_t n = m->seeds.size();
    if (n == 0) continue;
    std::vector<std::string> row = {m->name, pct(over_seeds(*m, wa), n), pct(over_seeds(*m, ua), n),
                                    pct(over_seeds(*m, wf1), n),
                                    fmt::format("{:.2f}", static_cast<double>(m->total_parameters) / 1e6)};
    if (with_paper) {
      auto it = kPaperTable2.find(m->type);
      row.push_back(it != kPaperTable2.end() && m->name == m->type ? fmt::format("{:.2f}", it->second) : "–");
    }
    rows.push_back(row);
  }
  return rows;
}

std::vector<std::vector<std::string>> table3_rows(const RunResults& r) {
  std::vector<std::vector<std::string>> rows;
  for (const ModelResults* m : ordered(r, true)) {
    const size_t n = m->seeds.size();
    if (n == 0 || m->seeds[0].test.heads.empty()) continue;
    std::vector<std::string> row = {m->name};
    for (size_t k = 0; k < m->seeds[0].test.heads.size(); ++k) {
      std::vector<double> acc, f1;
      for (const ModelSeedResult& s : m->seeds) {
        acc.push_back(s.test.heads[k].accuracy);
        f1.push_back(s.test.heads[k].weighted_f1);
      }
      row.push_back(pct(mean_std(acc), n));
      row.push_back(pct(mean_std(f1), n));
    }
    rows.push_back(row);
  }
  return rows;
}

std::vector<std::string> table3_header(const RunResults& r) {
  std::vector<std::string> h = {"model"};
  for (const std::string& c : r.protocol.class_names) {
    h.push_back(c + " acc (%)");
    h.push_back(c + " wF1 (%)");
  }
  return h;
}

}  // namespace

MeanStd mean_std(const std::vector<double>& values) {
  MeanStd m;
  if (values.empty()) return m;
  for (double v : values) m.mean += v;
  m.mean /= static_cast<double>(values.size());
  if (values.size() > 1) {
    double ss = 0;
    for (double v : values) ss += (v - m.mean) * (v - m.mean);
    m.std = std::sqrt(ss / static_cast<double>(values.size() - 1));
  }
  return m;
}

ModelResults& RunResults::model(const std::string& name, const std::string& type) {
  for (ModelResults& m : models)
    if (m.name == name) return m;
  models.push_back(ModelResults{});
  models.back().name = name;
  models.back().type = type;
  return models.back();
}

const ModelResults* RunResults::find(const std::string& name) const {
  for (const ModelResults& m : models)
    if (m.name == name) return &m;
  return nullptr;
}

void RunResults::set_history(int64_t seed, const std::string& stage, const std::string& model,
                             const std::vector<EpochRecord>& history) {
  epochs.erase(std::remove_if(epochs.begin(), epochs.end(),
                              [&](const EpochRow& e) { return e.seed == seed && e.model == model; }),
               epochs.end());
  for (const EpochRecord& rec : history) epochs.push_back(EpochRow{seed, stage, model, rec});
}

std::string results_json(const RunResults& r) {
  nlohmann::json j;
  j["schema"] = "mman-results/1";
  j["experiment"] = r.experiment;
  j["config_file"] = r.config_file;
  j["complete"] = r.complete;
  j["started_at"] = r.started_at;
  j["seconds"] = r.seconds;
  j["data"] = {{"source", r.data_source},
               {"synthetic", r.synthetic},
               {"protocol", r.protocol.name},
               {"class_names", r.protocol.class_names},
               {"valid_from_file", r.valid_from_file},
               {"splits",
                {{"train", {{"conversations", r.train.conversations}, {"utterances", r.train.utterances}, {"labelled", r.train.labelled}}},
                 {"valid", {{"conversations", r.valid.conversations}, {"utterances", r.valid.utterances}, {"labelled", r.valid.labelled}}},
                 {"test", {{"conversations", r.test.conversations}, {"utterances", r.test.utterances}, {"labelled", r.test.labelled}}}}}};
  j["backend"] = r.backend;
  j["threads"] = r.threads;
  j["seeds"] = r.seeds;
  j["versions"] = {{"mman", MMAN_VERSION}, {"build", MMAN_BUILD_TYPE}, {"blas", r.versions_blas}, {"cuda", r.versions_cuda}};
  nlohmann::json models = nlohmann::json::object();
  for (const ModelResults& m : r.models) {
    nlohmann::json jm;
    jm["type"] = m.type;
    if (!m.subnets.empty()) jm["subnets"] = m.subnets;
    jm["parameters"] = {{"total", m.total_parameters}, {"trainable", m.trainable_parameters}};
    nlohmann::json per_seed = nlohmann::json::object();
    std::vector<double> was, uas, wf1s, mf1s, secs;
    for (const ModelSeedResult& s : m.seeds) {
      nlohmann::json js;
      js["test"] = s.test;
      js["valid"] = s.valid;
      js["best_epoch"] = s.train.best_epoch;
      js["epochs_run"] = s.train.history.size();
      js["stopped_early"] = s.train.stopped_early;
      js["best_valid_accuracy"] = s.train.best_valid_accuracy;
      js["train_seconds"] = s.train.seconds;
      js["steps"] = s.train.steps;
      js["checkpoint"] = s.checkpoint;
      per_seed[std::to_string(s.seed)] = js;
      was.push_back(s.test.accuracy);
      uas.push_back(s.test.unweighted_accuracy);
      wf1s.push_back(s.test.weighted_f1);
      mf1s.push_back(s.test.macro_f1);
      secs.push_back(s.train.seconds);
    }
    jm["per_seed"] = per_seed;
    auto ms = [](const std::vector<double>& v) {
      const MeanStd x = mean_std(v);
      return nlohmann::json{{"mean", x.mean}, {"std", x.std}};
    };
    jm["summary"] = {{"accuracy", ms(was)}, {"unweighted_accuracy", ms(uas)}, {"weighted_f1", ms(wf1s)},
                     {"macro_f1", ms(mf1s)}, {"train_seconds", ms(secs)}, {"seeds", m.seeds.size()}};
    models[m.name] = jm;
  }
  j["models"] = models;
  j["report_models"] = r.report_models;
  return j.dump(2) + "\n";
}

std::string metrics_csv(const RunResults& r) {
  std::string out = "seed,stage,model,epoch,train_loss,train_acc,valid_loss,valid_acc,valid_ua,seconds\n";
  for (const EpochRow& e : r.epochs)
    out += fmt::format("{},{},{},{},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.3f}\n", e.seed, e.stage, e.model,
                       e.record.epoch, e.record.train_loss, e.record.train_accuracy, e.record.valid_loss,
                       e.record.valid_accuracy, e.record.valid_ua, e.record.seconds);
  return out;
}

std::string summary_table(const RunResults& r) {
  if (r.protocol.binary()) return text_table(table3_header(r), table3_rows(r));
  return text_table({"model", "WA (%)", "UA (%)", "weighted F1 (%)", "params (M)"}, table2_rows(r, false));
}

std::string report_markdown(const RunResults& r) {
  std::string md = fmt::format("# mman run `{}`\n\n", r.experiment);
  if (!r.complete) md += "**This run is not finished**: the tables hold the models completed so far.\n\n";
  if (r.synthetic)
    md += fmt::format(
        "**Data: {} — synthetic IEMOCAP-shaped data, not the real corpus.** Its numbers show that the pipeline "
        "works and how the models rank on data built to need fusion and context; they are not comparable to the "
        "paper's.\n\n",
        r.data_source);
  else
    md += fmt::format("Data: `{}`.\n\n", r.data_source);
  md += fmt::format("Protocol `{}` (classes: {}). Splits: train {} conversations / {} utterances ({} scored), "
                    "valid {} / {} ({}; {}), test {} / {} ({} scored). The test split is used for nothing but "
                    "these tables.\n\n",
                    r.protocol.name, fmt::join(r.protocol.class_names, ", "), r.train.conversations,
                    r.train.utterances, r.train.labelled, r.valid.conversations, r.valid.utterances,
                    r.valid_from_file ? "from the file" : "carved from train", r.valid.labelled,
                    r.test.conversations, r.test.utterances, r.test.labelled);
  md += fmt::format("Backend {}, {} threads, seeds [{}]; mman {} ({}); BLAS {}; CUDA {}. Started {}; {:.1f} s.\n\n",
                    r.backend, r.threads, fmt::join(r.seeds, ", "), MMAN_VERSION, MMAN_BUILD_TYPE, r.versions_blas,
                    r.versions_cuda, r.started_at, r.seconds);

  const bool several = r.seeds.size() > 1;
  if (r.protocol.binary()) {
    md += "## Table 3 layout: binary one-vs-rest accuracy and weighted F1 per emotion (test)\n\n";
    md += several ? "Mean ± standard deviation over seeds.\n\n" : "";
    md += markdown_table(table3_header(r), table3_rows(r)) + "\n";
    if (!r.synthetic) {
      md += "The paper's accuracies on IEMOCAP (happy, sad, neutral, angry): ";
      for (const auto& [name, v] : kPaperTable3) md += fmt::format("{} {}; ", name, fmt::join(v, "/"));
      md += "\n\n";
    }
  } else {
    md += "## Table 2 layout: test results\n\n";
    md += several ? "Mean ± standard deviation over seeds.\n\n" : "";
    md += markdown_table({"model", "WA (%)", "UA (%)", "weighted F1 (%)", "parameters (M)", "paper WA (%)"},
                         table2_rows(r, true));
    md += "\nWA: accuracy; UA: mean per-class recall; parameters: total, frozen sub-networks included "
          "(the paper reports 4.39M for MMAN, which its text does not determine). \"paper WA\" is the paper's "
          "Table 2 on the real IEMOCAP, for orientation only.\n\n";
  }

  md += "## Every model and seed\n\n";
  std::vector<std::vector<std::string>> rows;
  for (const ModelResults* m : ordered(r, false))
    for (const ModelSeedResult& s : m->seeds)
      rows.push_back({m->name, std::to_string(s.seed), fmt::format("{:.2f}", 100 * s.test.accuracy),
                      fmt::format("{:.2f}", 100 * s.test.unweighted_accuracy), fmt::format("{:.2f}", 100 * s.test.macro_f1),
                      fmt::format("{:.2f}", 100 * s.test.weighted_f1), fmt::format("{:.2f}", 100 * s.valid.accuracy),
                      fmt::format("{}/{}", s.train.best_epoch, s.train.history.size()),
                      fmt::format("{:.1f}", s.train.seconds), fmt::format("{}", m->trainable_parameters),
                      fmt::format("{}", m->total_parameters)});
  md += markdown_table({"model", "seed", "WA", "UA", "macro F1", "weighted F1", "valid acc", "best/epochs",
                        "train s", "trainable params", "total params"},
                       rows);
  md += "\n";

  if (!r.protocol.binary()) {
    md += "## Confusion matrices (test, row-normalised %, Figure 3 layout)\n\n";
    md += several ? "Counts summed over seeds, then each row divided by its total.\n\n" : "";
    const size_t c = r.protocol.class_names.size();
    for (const ModelResults* m : ordered(r, false)) {
      if (m->seeds.empty()) continue;
      const std::vector<int64_t> conf = summed_confusion(*m, c);
      std::vector<std::string> header = {"true \\ predicted"};
      header.insert(header.end(), r.protocol.class_names.begin(), r.protocol.class_names.end());
      header.push_back("recall (%)");
      std::vector<std::vector<std::string>> crow;
      for (size_t t = 0; t < c; ++t) {
        int64_t total = 0;
        for (size_t p = 0; p < c; ++p) total += conf[t * c + p];
        std::vector<std::string> row = {r.protocol.class_names[t]};
        for (size_t p = 0; p < c; ++p)
          row.push_back(total ? fmt::format("{:.2f}", 100.0 * static_cast<double>(conf[t * c + p]) / static_cast<double>(total)) : "–");
        row.push_back(total ? fmt::format("{:.2f}", 100.0 * static_cast<double>(conf[t * c + t]) / static_cast<double>(total)) : "–");
        crow.push_back(row);
      }
      md += fmt::format("### {}\n\n", m->name) + markdown_table(header, crow) + "\n";
      md += fmt::format("![confusion matrix of {0}](figures/confusion_{0}.png)\n\n", m->name);
    }
  }
  md += "## Learning curves\n\nPer-epoch training loss and validation accuracy of every model and seed are in "
        "`metrics.csv`.\n\n![learning curves](figures/learning_curves.png)\n";
  return md;
}

}  // namespace mman
