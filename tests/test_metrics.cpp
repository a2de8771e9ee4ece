// Metrics: hand-computed examples and agreement with independent formulas on random data.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "mman/error.h"
#include "mman/rng.h"
#include "mman/train/metrics.h"

namespace mman {
namespace {

const std::vector<std::string> kAbcd = {"a", "b", "c", "d"};

LabelProtocol single_protocol(int classes) {
  LabelProtocol p;
  p.name = "test";
  for (int k = 0; k < classes; ++k) p.class_names.push_back(std::string(1, static_cast<char>('a' + k)));
  return p;
}

LabelProtocol binary_protocol() {
  LabelProtocol p;
  p.name = "binary4";
  p.class_names = {"happy", "sad", "neutral", "angry"};
  p.heads = 4;
  return p;
}

}  // namespace

// Scored pairs (target, prediction), row 6 masked:
//   a: (a,a) (a,b) (a,a)        support 3, tp 2
//   b: (b,b) (b,a)              support 2, tp 1
//   c: (c,c) (c,c) (c,a) (c,c)  support 4, tp 3
//   d: none; predicted a 4x, b 2x, c 3x, d 0x (the masked row's d does not count).
// precision a 2/4, b 1/2, c 3/3; recall a 2/3, b 1/2, c 3/4;
// F1 = 2tp/(2tp+fp+fn): a 4/7, b 1/2, c 6/7, d 0.
TEST(Metrics, HandComputedExample) {
  const std::vector<int32_t> t = {0, 0, 0, 1, 1, 2, -1, 2, 2, 2};
  const std::vector<int32_t> p = {0, 1, 0, 1, 0, 2, 3, 2, 0, 2};
  const ClassMetrics m = score_classes(t, p, kAbcd);
  EXPECT_EQ(m.count, 9);
  EXPECT_DOUBLE_EQ(m.accuracy, 6.0 / 9.0);
  EXPECT_DOUBLE_EQ(m.unweighted_accuracy, (2.0 / 3 + 1.0 / 2 + 3.0 / 4) / 3.0);  // d has no support
  EXPECT_DOUBLE_EQ(m.macro_f1, 9.0 / 14.0);  // (4/7 + 1/2 + 6/7) / 3: d neither true nor predicted
  EXPECT_DOUBLE_EQ(m.weighted_f1, 43.0 / 63.0);  // (3*4/7 + 2*1/2 + 4*6/7) / 9
  EXPECT_EQ(m.support, (std::vector<int64_t>{3, 2, 4, 0}));
  EXPECT_EQ(m.predicted, (std::vector<int64_t>{4, 2, 3, 0}));
  EXPECT_DOUBLE_EQ(m.precision[0], 0.5);
  EXPECT_DOUBLE_EQ(m.precision[2], 1.0);
  EXPECT_DOUBLE_EQ(m.recall[0], 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.recall[1], 0.5);
  EXPECT_DOUBLE_EQ(m.recall[3], 0.0);
  EXPECT_DOUBLE_EQ(m.f1[0], 4.0 / 7.0);
  EXPECT_DOUBLE_EQ(m.f1[2], 6.0 / 7.0);
  EXPECT_DOUBLE_EQ(m.f1[3], 0.0);
  EXPECT_EQ(m.confusion_at(0, 1), 1);
  EXPECT_EQ(m.confusion_at(2, 0), 1);
  EXPECT_EQ(m.confusion_at(2, 2), 3);
  EXPECT_EQ(m.confusion_at(3, 3), 0);
  EXPECT_DOUBLE_EQ(m.confusion_percent[0 * 4 + 0], 200.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.confusion_percent[2 * 4 + 0], 25.0);
  EXPECT_DOUBLE_EQ(m.confusion_percent[3 * 4 + 3], 0.0);  // empty row stays 0
}

// A class that is predicted but never true counts in macro F1 with F1 0 (sklearn's
// label union), and a class that is true but never predicted also has F1 0; neither
// contributes to weighted F1 beyond its support.
TEST(Metrics, ClassesMissingFromTargetsOrPredictions) {
  // a: (a,a) (a,d); b: (b,a); c, d never true; b, c never predicted... c nowhere.
  const std::vector<int32_t> t = {0, 0, 1};
  const std::vector<int32_t> p = {0, 3, 0};
  const ClassMetrics m = score_classes(t, p, kAbcd);
  // F1 a = 2/(2+1+1) = 1/2, b = 0 (support, no tp), d = 0 (predicted, no support), c excluded.
  EXPECT_DOUBLE_EQ(m.macro_f1, (0.5 + 0.0 + 0.0) / 3.0);
  EXPECT_DOUBLE_EQ(m.weighted_f1, (2 * 0.5 + 1 * 0.0) / 3.0);
  EXPECT_DOUBLE_EQ(m.unweighted_accuracy, (0.5 + 0.0) / 2.0);
  EXPECT_DOUBLE_EQ(m.precision[3], 0.0);
  EXPECT_DOUBLE_EQ(m.precision[1], 0.0);  // 0/0 -> 0
}

TEST(Metrics, NoScoredRowsGivesZeros) {
  const ClassMetrics m = score_classes({-1, -1}, {0, 1}, kAbcd);
  EXPECT_EQ(m.count, 0);
  EXPECT_EQ(m.accuracy, 0.0);
  EXPECT_EQ(m.macro_f1, 0.0);
  EXPECT_EQ(m.confusion, std::vector<int64_t>(16, 0));
}

TEST(Metrics, RejectsBadInput) {
  EXPECT_THROW(score_classes({0, 1}, {0}, kAbcd), Error);
  EXPECT_THROW(score_classes({4}, {0}, kAbcd), Error);
  EXPECT_THROW(score_classes({0}, {-1}, kAbcd), Error);
  EXPECT_THROW(score_classes({0}, {0}, {}), Error);
  Tensor logits(2, 3);
  EXPECT_THROW(predict_classes(single_protocol(4), logits), Error);
}

// Random predictions: every score agrees with a formula written independently of the
// implementation's confusion-matrix route.
TEST(Metrics, AgreesWithIndependentFormulas) {
  Rng rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    const int classes = 2 + static_cast<int>(rng.below(5));
    const int rows = 1 + static_cast<int>(rng.below(60));
    std::vector<int32_t> t(static_cast<size_t>(rows)), p(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) {
      // Skewed targets so some classes are often missing; predictions right half the time.
      t[static_cast<size_t>(r)] = rng.uniform() < 0.1 ? -1 : static_cast<int32_t>(rng.below(rng.below(classes) + 1));
      p[static_cast<size_t>(r)] = rng.uniform() < 0.5 && t[static_cast<size_t>(r)] >= 0
                                      ? t[static_cast<size_t>(r)]
                                      : static_cast<int32_t>(rng.below(classes));
    }
    std::vector<std::string> names;
    for (int k = 0; k < classes; ++k) names.push_back(std::to_string(k));
    const ClassMetrics m = score_classes(t, p, names);

    int n = 0, correct = 0;
    for (int r = 0; r < rows; ++r)
      if (t[static_cast<size_t>(r)] >= 0) {
        ++n;
        correct += t[static_cast<size_t>(r)] == p[static_cast<size_t>(r)];
      }
    ASSERT_EQ(m.count, n);
    if (n == 0) continue;
    EXPECT_NEAR(m.accuracy, static_cast<double>(correct) / n, 1e-12);

    // Per class from scratch; F1 as the harmonic mean of precision and recall.
    double ua = 0, macro = 0;
    int present = 0, in_union = 0;
    std::vector<double> f1(static_cast<size_t>(classes), 0.0);
    for (int k = 0; k < classes; ++k) {
      int tp = 0, pred = 0, sup = 0;
      for (int r = 0; r < rows; ++r) {
        if (t[static_cast<size_t>(r)] < 0) continue;
        sup += t[static_cast<size_t>(r)] == k;
        pred += p[static_cast<size_t>(r)] == k;
        tp += t[static_cast<size_t>(r)] == k && p[static_cast<size_t>(r)] == k;
      }
      const double prec = pred ? static_cast<double>(tp) / pred : 0.0;
      const double rec = sup ? static_cast<double>(tp) / sup : 0.0;
      f1[static_cast<size_t>(k)] = prec + rec > 0 ? 2 * prec * rec / (prec + rec) : 0.0;
      EXPECT_NEAR(m.f1[static_cast<size_t>(k)], f1[static_cast<size_t>(k)], 1e-12);
      EXPECT_NEAR(m.recall[static_cast<size_t>(k)], rec, 1e-12);
      EXPECT_NEAR(m.precision[static_cast<size_t>(k)], prec, 1e-12);
      if (sup) {
        ++present;
        ua += rec;
        // The diagonal of the row-normalised confusion is the recall (Figure 3).
        EXPECT_NEAR(m.confusion_percent[static_cast<size_t>(k * classes + k)], 100.0 * rec, 1e-9);
      }
      if (sup || pred) {
        ++in_union;
        macro += f1[static_cast<size_t>(k)];
      }
    }
    EXPECT_NEAR(m.unweighted_accuracy, ua / present, 1e-12);
    EXPECT_NEAR(m.macro_f1, macro / in_union, 1e-12);
    // Weighted F1 as a mean over rows of the F1 of each row's true class.
    double weighted = 0;
    for (int r = 0; r < rows; ++r)
      if (t[static_cast<size_t>(r)] >= 0) weighted += f1[static_cast<size_t>(t[static_cast<size_t>(r)])];
    EXPECT_NEAR(m.weighted_f1, weighted / n, 1e-12);
  }
}

TEST(Metrics, PredictClassesTakesFirstMaximum) {
  Tensor logits(3, 3);
  const float v[] = {1, 3, 3, -1, -2, -3, 0, 0, 0.5f};
  std::copy(v, v + 9, logits.data());
  EXPECT_EQ(predict_classes(single_protocol(3), logits), (std::vector<int32_t>{1, 0, 2}));
}

TEST(Metrics, SingleHeadSummaryEqualsClassScores) {
  const LabelProtocol proto = single_protocol(3);
  const std::vector<int32_t> t = {0, 1, 2, 2, -1};
  const std::vector<int32_t> p = {0, 2, 2, 1, 0};
  const Metrics m = compute_metrics(proto, t, p);
  EXPECT_TRUE(m.heads.empty());
  EXPECT_EQ(m.count, 4);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.5);
  EXPECT_DOUBLE_EQ(m.unweighted_accuracy, (1.0 + 0.0 + 0.5) / 3.0);
  EXPECT_DOUBLE_EQ(m.macro_f1, m.classes.macro_f1);
  EXPECT_EQ(m.classes.class_names, proto.class_names);
}

// binary4: four rows labelled happy, sad, neutral, angry plus one context row. Head k
// predicts "is k" when column 2k+1 beats column 2k (a tie says "not k").
TEST(Metrics, Binary4PerEmotionAccuracyAndWeightedF1) {
  const LabelProtocol proto = binary_protocol();
  const std::vector<int32_t> t = {0, 1, 2, 3, -1, 0};
  Tensor logits(6, 8);
  // Row r, head k: set the winning column; everything else 0.
  // happy head predicts yes for rows 0, 1; sad head yes for row 1 only; neutral head
  // never; angry head yes for rows 3, 5 (and the context row, which is not scored).
  auto yes = [&](int r, int k) { logits.at(r, 2 * k + 1) = 1.0f; };
  yes(0, 0), yes(1, 0), yes(1, 1), yes(3, 3), yes(5, 3), yes(4, 3);
  logits.at(2, 2 * 2 + 1) = 0.0f;  // a tie at neutral for row 2 -> "not neutral"
  const std::vector<int32_t> pred = predict_classes(proto, logits);
  ASSERT_EQ(pred.size(), 24u);
  EXPECT_EQ(pred[1 * 4 + 0], 1);
  EXPECT_EQ(pred[2 * 4 + 2], 0);
  const Metrics m = compute_metrics(proto, t, pred);
  ASSERT_EQ(m.heads.size(), 4u);
  EXPECT_EQ(m.count, 5);
  EXPECT_TRUE(m.classes.class_names.empty());
  // happy: truth 1,0,0,0,1; pred 1,1,0,0,0 -> acc 3/5. not-happy: tp 2 fp 1 fn 1 -> F1 2/3
  // (support 3); happy: tp 1 fp 1 fn 1 -> F1 1/2 (support 2). Weighted (3*2/3 + 2*1/2)/5 = 3/5.
  EXPECT_DOUBLE_EQ(m.heads[0].accuracy, 0.6);
  EXPECT_DOUBLE_EQ(m.heads[0].weighted_f1, 0.6);
  EXPECT_EQ(m.heads[0].class_names, (std::vector<std::string>{"not happy", "happy"}));
  // sad: truth 0,1,0,0,0; pred 0,1,0,0,0 -> acc 1, F1 1.
  EXPECT_DOUBLE_EQ(m.heads[1].accuracy, 1.0);
  EXPECT_DOUBLE_EQ(m.heads[1].weighted_f1, 1.0);
  // neutral: truth 0,0,1,0,0; pred all 0 -> acc 4/5; not-neutral F1 = 8/(8+1) = 8/9 with
  // support 4, neutral F1 0 -> weighted 4/5 * 8/9 = 32/45.
  EXPECT_DOUBLE_EQ(m.heads[2].accuracy, 0.8);
  EXPECT_DOUBLE_EQ(m.heads[2].weighted_f1, 32.0 / 45.0);
  // angry: truth 0,0,0,1,0; pred 0,0,0,1,1 -> acc 4/5; not-angry tp 3 fn 1 -> 6/7 (support 4);
  // angry tp 1 fp 1 -> 2/3 (support 1): weighted (4*6/7 + 2/3)/5.
  EXPECT_DOUBLE_EQ(m.heads[3].accuracy, 0.8);
  EXPECT_NEAR(m.heads[3].weighted_f1, (4.0 * 6.0 / 7.0 + 2.0 / 3.0) / 5.0, 1e-15);
  EXPECT_NEAR(m.accuracy, (0.6 + 1.0 + 0.8 + 0.8) / 4.0, 1e-15);
  EXPECT_NEAR(m.weighted_f1,
              (0.6 + 1.0 + 32.0 / 45.0 + (4.0 * 6.0 / 7.0 + 2.0 / 3.0) / 5.0) / 4.0, 1e-15);
}

TEST(Metrics, JsonHoldsSummaryAndConfusionRows) {
  const Metrics m = compute_metrics(single_protocol(2), {0, 1, 1}, {0, 1, 0});
  const nlohmann::json j = m;
  EXPECT_DOUBLE_EQ(j.at("accuracy").get<double>(), 2.0 / 3.0);
  EXPECT_EQ(j.at("classes").at("confusion"), nlohmann::json::parse("[[1,0],[1,1]]"));
  EXPECT_DOUBLE_EQ(j.at("classes").at("confusion_percent")[1][0].get<double>(), 50.0);
  const Metrics b = compute_metrics(binary_protocol(), {0}, {1, 0, 0, 0});
  const nlohmann::json jb = b;
  EXPECT_EQ(jb.at("heads").size(), 4u);
  EXPECT_FALSE(jb.contains("classes"));
}

}  // namespace mman
