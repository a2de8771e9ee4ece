// Classification metrics: confusion counts first, every score derived from them.
#include "mman/train/metrics.h"

#include <nlohmann/json.hpp>

#include "mman/error.h"

namespace mman {

ClassMetrics score_classes(const std::vector<int32_t>& targets, const std::vector<int32_t>& predictions,
                           const std::vector<std::string>& class_names) {
  MMAN_CHECK(targets.size() == predictions.size(), "metrics: {} targets but {} predictions", targets.size(),
             predictions.size());
  const int num = static_cast<int>(class_names.size());
  MMAN_CHECK(num > 0, "metrics: no classes");
  const size_t c = static_cast<size_t>(num);
  ClassMetrics m;
  m.class_names = class_names;
  m.support.assign(c, 0);
  m.predicted.assign(c, 0);
  m.precision.assign(c, 0.0);
  m.recall.assign(c, 0.0);
  m.f1.assign(c, 0.0);
  m.confusion.assign(c * c, 0);
  m.confusion_percent.assign(c * c, 0.0);

  for (size_t i = 0; i < targets.size(); ++i) {
    const int32_t t = targets[i];
    if (t < 0) continue;
    const int32_t p = predictions[i];
    MMAN_CHECK(t < num, "metrics: target {} of row {} is not a class (there are {})", t, i, num);
    MMAN_CHECK(p >= 0 && p < num, "metrics: prediction {} of row {} is not a class (there are {})", p, i, num);
    ++m.confusion[static_cast<size_t>(t) * c + static_cast<size_t>(p)];
    ++m.support[static_cast<size_t>(t)];
    ++m.predicted[static_cast<size_t>(p)];
    ++m.count;
  }
  if (m.count == 0) return m;

  int64_t correct = 0;
  int present = 0, in_union = 0;
  double recall_sum = 0, f1_sum = 0, weighted = 0;
  for (size_t k = 0; k < c; ++k) {
    const int64_t tp = m.confusion[k * c + k];
    const int64_t fp = m.predicted[k] - tp;
    const int64_t fn = m.support[k] - tp;
    correct += tp;
    if (tp + fp > 0) m.precision[k] = static_cast<double>(tp) / static_cast<double>(tp + fp);
    if (tp + fn > 0) m.recall[k] = static_cast<double>(tp) / static_cast<double>(tp + fn);
    if (2 * tp + fp + fn > 0) m.f1[k] = 2.0 * static_cast<double>(tp) / static_cast<double>(2 * tp + fp + fn);
    if (m.support[k] > 0) {
      ++present;
      recall_sum += m.recall[k];
      for (size_t p = 0; p < c; ++p)
        m.confusion_percent[k * c + p] =
            100.0 * static_cast<double>(m.confusion[k * c + p]) / static_cast<double>(m.support[k]);
    }
    if (m.support[k] > 0 || m.predicted[k] > 0) {
      ++in_union;
      f1_sum += m.f1[k];
    }
    weighted += m.f1[k] * static_cast<double>(m.support[k]);
  }
  const double n = static_cast<double>(m.count);
  m.accuracy = static_cast<double>(correct) / n;
  m.unweighted_accuracy = recall_sum / present;  // present >= 1 because count > 0
  m.macro_f1 = f1_sum / in_union;
  m.weighted_f1 = weighted / n;
  return m;
}

std::vector<int32_t> predict_classes(const LabelProtocol& protocol, const Tensor& logits) {
  const int outputs = protocol.num_outputs();
  MMAN_CHECK(logits.cols() == outputs, "metrics: logits have {} columns but protocol {} has {} outputs",
             logits.cols(), protocol.name, outputs);
  const int heads = protocol.heads;
  std::vector<int32_t> out(static_cast<size_t>(logits.rows() * heads));
  for (int64_t r = 0; r < logits.rows(); ++r) {
    const float* x = logits.row(r);
    if (heads == 1) {
      int best = 0;
      for (int k = 1; k < outputs; ++k)
        if (x[k] > x[best]) best = k;
      out[static_cast<size_t>(r)] = best;
    } else {
      for (int k = 0; k < heads; ++k) out[static_cast<size_t>(r * heads + k)] = x[2 * k + 1] > x[2 * k] ? 1 : 0;
    }
  }
  return out;
}

Metrics compute_metrics(const LabelProtocol& protocol, const std::vector<int32_t>& targets,
                        const std::vector<int32_t>& predictions) {
  const int heads = protocol.heads;
  MMAN_CHECK(predictions.size() == targets.size() * static_cast<size_t>(heads),
             "metrics: {} predictions for {} rows and {} heads", predictions.size(), targets.size(), heads);
  Metrics m;
  if (heads == 1) {
    m.classes = score_classes(targets, predictions, protocol.class_names);
    m.count = m.classes.count;
    m.accuracy = m.classes.accuracy;
    m.unweighted_accuracy = m.classes.unweighted_accuracy;
    m.macro_f1 = m.classes.macro_f1;
    m.weighted_f1 = m.classes.weighted_f1;
    return m;
  }
  MMAN_CHECK(protocol.num_classes() == heads, "metrics: protocol {} has {} heads but {} classes", protocol.name,
             heads, protocol.num_classes());
  std::vector<int32_t> head_targets(targets.size()), head_predictions(targets.size());
  for (int k = 0; k < heads; ++k) {
    for (size_t r = 0; r < targets.size(); ++r) {
      const int32_t t = targets[r];
      MMAN_CHECK(t < heads, "metrics: target {} of row {} is not a class of protocol {}", t, r, protocol.name);
      head_targets[r] = t < 0 ? -1 : (t == k ? 1 : 0);
      head_predictions[r] = predictions[r * static_cast<size_t>(heads) + static_cast<size_t>(k)];
    }
    const std::string& name = protocol.class_names[static_cast<size_t>(k)];
    m.heads.push_back(score_classes(head_targets, head_predictions, {"not " + name, name}));
    const ClassMetrics& h = m.heads.back();
    m.count = h.count;  // the same labelled rows for every head
    m.accuracy += h.accuracy / heads;
    m.unweighted_accuracy += h.unweighted_accuracy / heads;
    m.macro_f1 += h.macro_f1 / heads;
    m.weighted_f1 += h.weighted_f1 / heads;
  }
  return m;
}

void to_json(nlohmann::json& j, const ClassMetrics& m) {
  j = nlohmann::json{{"count", m.count},
                     {"accuracy", m.accuracy},
                     {"unweighted_accuracy", m.unweighted_accuracy},
                     {"macro_f1", m.macro_f1},
                     {"weighted_f1", m.weighted_f1},
                     {"class_names", m.class_names},
                     {"support", m.support},
                     {"predicted", m.predicted},
                     {"precision", m.precision},
                     {"recall", m.recall},
                     {"f1", m.f1}};
  // Matrices as lists of rows (target-major), which reads naturally in JSON.
  const size_t c = m.class_names.size();
  nlohmann::json counts = nlohmann::json::array(), percent = nlohmann::json::array();
  for (size_t t = 0; t < c && m.confusion.size() == c * c; ++t) {
    counts.push_back(std::vector<int64_t>(m.confusion.begin() + static_cast<std::ptrdiff_t>(t * c),
                                          m.confusion.begin() + static_cast<std::ptrdiff_t>((t + 1) * c)));
    percent.push_back(std::vector<double>(m.confusion_percent.begin() + static_cast<std::ptrdiff_t>(t * c),
                                          m.confusion_percent.begin() + static_cast<std::ptrdiff_t>((t + 1) * c)));
  }
  j["confusion"] = std::move(counts);
  j["confusion_percent"] = std::move(percent);
}

void to_json(nlohmann::json& j, const Metrics& m) {
  j = nlohmann::json{{"count", m.count},
                     {"accuracy", m.accuracy},
                     {"unweighted_accuracy", m.unweighted_accuracy},
                     {"macro_f1", m.macro_f1},
                     {"weighted_f1", m.weighted_f1}};
  if (m.heads.empty()) {
    j["classes"] = m.classes;
  } else {
    j["heads"] = m.heads;
  }
}

}  // namespace mman
