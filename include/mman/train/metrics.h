// Classification metrics (WA, UA, macro/weighted F1, recall, confusion) and binary4 per-emotion scores.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "mman/data/protocol.h"
#include "mman/tensor.h"

namespace mman {

// Scores of one single-label classification task over the rows whose target is >= 0
// (rows with target -1 are context only and excluded from everything).
//
// Definitions (C classes, n scored rows, tp/fp/fn per class):
// - accuracy (WA): correct / n.
// - unweighted_accuracy (UA): mean recall over the classes present in the targets
//   (support > 0). A class absent from the scored rows has no defined recall; averaging
//   a 0 for it would punish the model for the data, so it is left out (it is also what
//   the usual "mean of the confusion matrix diagonal over its non-empty rows" gives).
// - precision, recall, f1 per class: tp/(tp+fp), tp/(tp+fn), 2tp/(2tp+fp+fn); a 0/0 is
//   0 (sklearn's zero_division=0).
// - macro_f1: mean F1 over the classes present in the targets or the predictions
//   (sklearn's f1_score(average="macro") without `labels`, which uses that union); a
//   class with neither support nor predictions has F1 0 and is not averaged.
// - weighted_f1: sum of F1 weighted by support / n (sklearn's average="weighted").
// - confusion: counts [true x predicted], row-major C x C; confusion_percent: each row
//   divided by its support x 100 (Figure 3 of the paper); an empty row stays 0.
// With n == 0 every score is 0.
struct ClassMetrics {
  std::vector<std::string> class_names;
  int64_t count = 0;
  double accuracy = 0, unweighted_accuracy = 0, macro_f1 = 0, weighted_f1 = 0;
  std::vector<int64_t> support;    // [C] scored rows whose target is the class
  std::vector<int64_t> predicted;  // [C] scored rows predicted as the class
  std::vector<double> precision, recall, f1;  // [C]
  std::vector<int64_t> confusion;             // [C * C], row = target, column = prediction
  std::vector<double> confusion_percent;      // [C * C]

  int num_classes() const { return static_cast<int>(class_names.size()); }
  int64_t confusion_at(int target, int prediction) const {
    return confusion[static_cast<size_t>(target) * class_names.size() + static_cast<size_t>(prediction)];
  }
};

// Metrics of a model's predictions under a label protocol.
// Single-head protocols: the fields are those of `classes`' summary; `heads` is empty.
// binary4 (protocol.heads == 4, MulT's protocol as in Table 3 of the paper): `heads[k]`
// is the binary task "not <class k>" vs "<class k>" over the labelled rows, with its
// accuracy and support-weighted F1 as reported per emotion; the summary fields are the
// means over the heads (so model selection on `accuracy` uses the mean binary
// accuracy), and `classes` is empty.
struct Metrics {
  int64_t count = 0;  // scored (labelled) rows
  double accuracy = 0, unweighted_accuracy = 0, macro_f1 = 0, weighted_f1 = 0;
  ClassMetrics classes;
  std::vector<ClassMetrics> heads;
};

// Scores predicted class indices against targets (same length; target -1 = not scored).
// Targets and predictions of scored rows must lie in [0, C); anything else throws
// mman::Error.
ClassMetrics score_classes(const std::vector<int32_t>& targets, const std::vector<int32_t>& predictions,
                           const std::vector<std::string>& class_names);

// Predicted class per row and head from logits [rows x protocol.num_outputs()]:
// returned as [rows * heads] (row-major). Single head: argmax over the classes (the
// first maximum on ties, like torch.argmax). binary4: head k predicts 1 ("is class k")
// iff logit[2k+1] > logit[2k].
std::vector<int32_t> predict_classes(const LabelProtocol& protocol, const Tensor& logits);

// Metrics from targets [rows] (protocol classes, -1 = context) and the predictions of
// predict_classes ([rows * heads]). binary4: head k's target of a labelled row is
// (target == k).
Metrics compute_metrics(const LabelProtocol& protocol, const std::vector<int32_t>& targets,
                        const std::vector<int32_t>& predictions);

// JSON form for results files and checkpoint attributes: summary scores, then per class
// (names, support, precision, recall, f1), the confusion in counts and percent, and for
// binary4 the heads.
void to_json(nlohmann::json& j, const ClassMetrics& m);
void to_json(nlohmann::json& j, const Metrics& m);

}  // namespace mman
