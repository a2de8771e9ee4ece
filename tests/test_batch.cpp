// Splits, normalisation, packed batches and epoch plans over the tiny dataset.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>

#include "mman/data/batch.h"
#include "mman/error.h"
#include "support/tiny_dataset.h"

namespace mman {
namespace {

using test::tiny_dataset;
using test::TinySpec;

std::vector<int> range(int a, int b) {
  std::vector<int> v(static_cast<size_t>(b - a));
  std::iota(v.begin(), v.end(), a);
  return v;
}

// ---- resolve_splits -------------------------------------------------------------------

TEST(ResolveSplits, UsesTheFilesValidSplitWhenPresent) {
  TinySpec spec;
  spec.valid_lengths = {2, 2};
  const Dataset ds = tiny_dataset(spec);  // 5 train, 2 valid, 3 test, stored in that order
  const SplitIndices s = resolve_splits(ds, 0.5, 1);
  EXPECT_TRUE(s.valid_from_file);
  EXPECT_EQ(s.train, range(0, 5));
  EXPECT_EQ(s.valid, range(5, 7));
  EXPECT_EQ(s.test, range(7, 10));
}

TEST(ResolveSplits, IndicesKeepFileOrderWhateverTheSplitListOrder) {
  Dataset ds = tiny_dataset();
  std::reverse(ds.splits["train"].begin(), ds.splits["train"].end());
  const SplitIndices s = resolve_splits(ds, 0.0, 1);
  EXPECT_EQ(s.train, range(0, 5));
  EXPECT_TRUE(s.valid.empty());
  EXPECT_FALSE(s.valid_from_file);
}

TEST(ResolveSplits, CarvesValidFromTrainDeterministicallyPerSeed) {
  TinySpec spec;
  spec.train_lengths = std::vector<int>(40, 3);
  const Dataset ds = tiny_dataset(spec);
  const SplitIndices a = resolve_splits(ds, 0.2, 7);
  EXPECT_FALSE(a.valid_from_file);
  EXPECT_EQ(a.valid.size(), 8u);  // round(0.2 * 40)
  EXPECT_EQ(a.train.size(), 32u);
  EXPECT_TRUE(std::is_sorted(a.train.begin(), a.train.end()));
  EXPECT_TRUE(std::is_sorted(a.valid.begin(), a.valid.end()));
  std::vector<int> all = a.train;
  all.insert(all.end(), a.valid.begin(), a.valid.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, range(0, 40));  // a partition of the file's train split
  EXPECT_EQ(a.test, range(40, 43));

  const SplitIndices again = resolve_splits(ds, 0.2, 7);
  EXPECT_EQ(again.valid, a.valid);
  EXPECT_EQ(again.train, a.train);
  std::set<std::vector<int>> draws;
  for (uint64_t seed = 0; seed < 6; ++seed) draws.insert(resolve_splits(ds, 0.2, seed).valid);
  EXPECT_GT(draws.size(), 1u) << "the seed does not change the carving";
}

TEST(ResolveSplits, RoundsAndKeepsOneTrainingConversation) {
  const Dataset ds = tiny_dataset();  // 5 train
  EXPECT_EQ(resolve_splits(ds, 0.1, 1).valid.size(), 1u);   // round(0.5) = 1
  EXPECT_EQ(resolve_splits(ds, 0.09, 1).valid.size(), 0u);  // round(0.45) = 0
  EXPECT_EQ(resolve_splits(ds, 0.99, 1).train.size(), 1u);
}

TEST(ResolveSplits, RejectsBadFractionsAndMissingSplits) {
  const Dataset ds = tiny_dataset();
  for (double bad : {1.0, -0.1, 1.5, std::numeric_limits<double>::quiet_NaN()})
    EXPECT_THROW(resolve_splits(ds, bad, 1), Error) << bad;
  for (const char* split : {"train", "test"}) {
    Dataset d = tiny_dataset();
    d.source = "corpus.h5";
    d.splits.erase(split);
    try {
      resolve_splits(d, 0.1, 1);
      FAIL() << "no error without " << split;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("corpus.h5: /splits/") + split + ": missing split"),
                std::string::npos)
          << e.what();
    }
  }
}

// ---- Normalizer ------------------------------------------------------------------------

// Mean and population deviation of column j of modality m over conversations convs,
// computed directly.
std::pair<double, double> column_stats(const Dataset& ds, size_t m, int64_t j, const std::vector<int>& convs) {
  std::vector<double> v;
  for (int c : convs)
    for (int64_t r = ds.conv_offsets[static_cast<size_t>(c)]; r < ds.conv_offsets[static_cast<size_t>(c) + 1]; ++r)
      v.push_back(ds.features[m].at(r, j));
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return {mean, std::sqrt(ss / static_cast<double>(v.size()))};
}

TEST(Normalizer, FitsMeanAndDeviationOnTheGivenConversations) {
  Dataset ds = tiny_dataset();
  const std::vector<int> train = resolve_splits(ds, 0.0, 1).train;
  const Normalizer n = Normalizer::fit(ds, train);
  ASSERT_EQ(n.mean.size(), 3u);
  for (size_t m = 0; m < 3; ++m) {
    ASSERT_EQ(n.mean[m].size(), static_cast<size_t>(ds.dim(static_cast<int>(m))));
    for (int64_t j = 0; j < ds.dim(static_cast<int>(m)); ++j) {
      const auto [mean, sd] = column_stats(ds, m, j, train);
      EXPECT_NEAR(n.mean[m][static_cast<size_t>(j)], mean, 1e-6 * (1 + std::abs(mean)));
      EXPECT_NEAR(n.stddev[m][static_cast<size_t>(j)], sd, 1e-6 * sd);
    }
  }
  n.apply(ds);
  for (size_t m = 0; m < 3; ++m)
    for (int64_t j = 0; j < ds.dim(static_cast<int>(m)); ++j) {
      const auto [mean, sd] = column_stats(ds, m, j, train);
      EXPECT_NEAR(mean, 0.0, 1e-5);
      EXPECT_NEAR(sd, 1.0, 1e-5);
    }
}

TEST(Normalizer, IgnoresConversationsOutsideTheFit) {
  Dataset ds = tiny_dataset();
  const SplitIndices s = resolve_splits(ds, 0.0, 1);
  const Normalizer before = Normalizer::fit(ds, s.train);
  for (int c : s.test)
    for (int64_t r = ds.conv_offsets[static_cast<size_t>(c)]; r < ds.conv_offsets[static_cast<size_t>(c) + 1]; ++r)
      for (Tensor& f : ds.features)
        for (int64_t j = 0; j < f.cols(); ++j) f.at(r, j) = 1e6f;
  const Normalizer after = Normalizer::fit(ds, s.train);
  EXPECT_EQ(before.mean, after.mean);
  EXPECT_EQ(before.stddev, after.stddev);
  EXPECT_NE(Normalizer::fit(ds, range(0, ds.num_conversations())).mean, before.mean);
}

TEST(Normalizer, LargeOffsetsKeepPrecisionAndConstantColumnsStayFinite) {
  TinySpec spec;
  spec.modalities = {"audio"};
  spec.dims = {3};
  Dataset ds = tiny_dataset(spec);
  // openSMILE-like magnitudes: 500 + small spread, and one constant column.
  for (int64_t r = 0; r < ds.num_utterances(); ++r) {
    ds.features[0].at(r, 0) = 500.0f + 0.25f * static_cast<float>(r % 7);
    ds.features[0].at(r, 2) = 42.0f;
  }
  const std::vector<int> all = range(0, ds.num_conversations());
  const Normalizer n = Normalizer::fit(ds, all);
  EXPECT_EQ(n.stddev[0][2], 1.0f);
  EXPECT_EQ(n.mean[0][2], 42.0f);
  n.apply(ds);
  const auto [mean0, sd0] = column_stats(ds, 0, 0, all);
  EXPECT_NEAR(mean0, 0.0, 1e-4);
  EXPECT_NEAR(sd0, 1.0, 1e-4);
  for (int64_t r = 0; r < ds.num_utterances(); ++r) EXPECT_EQ(ds.features[0].at(r, 2), 0.0f);
}

TEST(Normalizer, RejectsEmptyFitsAndMismatchedDatasets) {
  Dataset ds = tiny_dataset();
  EXPECT_THROW(Normalizer::fit(ds, {}), Error);
  EXPECT_THROW(Normalizer::fit(ds, {99}), Error);
  const Normalizer n = Normalizer::fit(ds, {0});
  TinySpec other;
  other.dims = {4, 6, 5};
  Dataset wider = tiny_dataset(other);
  EXPECT_THROW(n.apply(wider), Error);
}

// ---- make_batch ------------------------------------------------------------------------

// Checks every packed row against the dataset: the right utterance, its features, its target.
void expect_batch_matches(const Dataset& ds, const LabelProtocol& p, const Batch& b) {
  ASSERT_EQ(b.features.size(), ds.features.size());
  std::set<int64_t> seen;
  int64_t labelled = 0;
  for (int k = 0; k < b.layout.convs(); ++k) {
    const int c = b.conv_index[static_cast<size_t>(k)];
    ASSERT_EQ(b.layout.lengths[static_cast<size_t>(k)], ds.conv_length(c));
    for (int t = 0; t < ds.conv_length(c); ++t) {
      const int64_t row = b.layout.row(k, t);
      const int64_t u = ds.conv_offsets[static_cast<size_t>(c)] + t;
      ASSERT_EQ(b.utterance[static_cast<size_t>(row)], u) << "conversation slot " << k << " step " << t;
      seen.insert(row);
      for (size_t m = 0; m < ds.features.size(); ++m)
        for (int64_t j = 0; j < ds.features[m].cols(); ++j) ASSERT_EQ(b.features[m].at(row, j), ds.features[m].at(u, j));
      ASSERT_EQ(b.targets[static_cast<size_t>(row)], p.map(ds.labels[static_cast<size_t>(u)]));
      labelled += b.targets[static_cast<size_t>(row)] >= 0;
    }
  }
  EXPECT_EQ(static_cast<int64_t>(seen.size()), b.rows());  // every row filled exactly once
  EXPECT_EQ(b.num_labelled, labelled);
  for (size_t m = 0; m < ds.features.size(); ++m) {
    EXPECT_EQ(b.features[m].rows(), b.rows());
    EXPECT_EQ(b.features[m].cols(), ds.features[m].cols());
  }
}

TEST(MakeBatch, PacksConversationsLongestFirstTimeMajor) {
  const Dataset ds = tiny_dataset();  // lengths 5 3 7 2 4 | 6 1 3
  const LabelProtocol p = make_protocol("iemocap4", ds.label_names);
  Batch b;
  make_batch(ds, p, {0, 1, 2, 3}, b);
  EXPECT_EQ(b.conv_index, (std::vector<int>{2, 0, 1, 3}));
  EXPECT_EQ(b.layout.lengths, (std::vector<int>{7, 5, 3, 2}));
  EXPECT_EQ(b.layout.batch_sizes, (std::vector<int>{4, 4, 3, 2, 2, 1, 1}));
  EXPECT_EQ(b.rows(), 17);
  // Row 1 is conversation 0's first utterance (slot 1 at step 0): dataset row 0.
  EXPECT_EQ(b.utterance[1], 0);
  // Row 4 is conversation 2's second utterance (slot 0 at step 1): dataset row 8 + 1.
  EXPECT_EQ(b.utterance[4], 9);
  expect_batch_matches(ds, p, b);
}

TEST(MakeBatch, TiesKeepTheGivenOrder) {
  TinySpec spec;
  spec.train_lengths = {3, 4, 3, 3};
  const Dataset ds = tiny_dataset(spec);
  const LabelProtocol p = make_protocol("iemocap6", ds.label_names);
  Batch b;
  make_batch(ds, p, {3, 0, 1, 2}, b);
  EXPECT_EQ(b.conv_index, (std::vector<int>{1, 3, 0, 2}));
  expect_batch_matches(ds, p, b);
}

TEST(MakeBatch, TargetsFollowTheProtocol) {
  const Dataset ds = tiny_dataset();
  Batch b;
  for (const char* name : {"iemocap4", "iemocap6", "binary4", "raw"}) {
    const LabelProtocol p = make_protocol(name, ds.label_names);
    make_batch(ds, p, range(0, ds.num_conversations()), b);
    expect_batch_matches(ds, p, b);
    if (std::string(name) == "binary4") {
      // exc (4) and fru (5) utterances are present as rows but carry no target.
      for (int64_t r = 0; r < b.rows(); ++r) {
        const int raw = ds.labels[static_cast<size_t>(b.utterance[static_cast<size_t>(r)])];
        if (raw == 4 || raw == 5) {
          EXPECT_EQ(b.targets[static_cast<size_t>(r)], -1);
        }
      }
    }
  }
  const LabelProtocol raw = make_protocol("raw", ds.label_names);
  make_batch(ds, raw, range(0, ds.num_conversations()), b);
  int64_t labelled = 0;
  for (int32_t y : ds.labels) labelled += y >= 0;
  EXPECT_EQ(b.num_labelled, labelled);
  EXPECT_LT(b.num_labelled, ds.num_utterances());  // tiny_dataset has unlabelled rows
}

TEST(MakeBatch, ReusesBuffersWhenShapesDoNotGrow) {
  const Dataset ds = tiny_dataset();
  const LabelProtocol p = make_protocol("iemocap4", ds.label_names);
  Batch b;
  make_batch(ds, p, {0, 1, 2, 3, 4}, b);  // 21 rows
  std::vector<const float*> feature_ptrs;
  for (const Tensor& t : b.features) feature_ptrs.push_back(t.data());
  const int32_t* targets = b.targets.data();
  const int64_t* utterance = b.utterance.data();
  make_batch(ds, p, {5, 6, 7}, b);  // 10 rows
  expect_batch_matches(ds, p, b);
  for (size_t m = 0; m < b.features.size(); ++m) EXPECT_EQ(b.features[m].data(), feature_ptrs[m]);
  EXPECT_EQ(b.targets.data(), targets);
  EXPECT_EQ(b.utterance.data(), utterance);
}

TEST(MakeBatch, EmptyAndInvalidRequests) {
  const Dataset ds = tiny_dataset();
  const LabelProtocol p = make_protocol("iemocap4", ds.label_names);
  Batch b;
  make_batch(ds, p, {}, b);
  EXPECT_EQ(b.rows(), 0);
  EXPECT_EQ(b.num_labelled, 0);
  EXPECT_THROW(make_batch(ds, p, {0, 8}, b), Error);
  EXPECT_THROW(make_batch(ds, p, {-1}, b), Error);
  const LabelProtocol other = make_protocol("raw", {"pos", "neg"});
  EXPECT_THROW(make_batch(ds, other, {0}, b), Error);
}

// ---- plan_batches ----------------------------------------------------------------------

TEST(PlanBatches, CutsInFileOrderWithASmallerLastBatch) {
  const auto plan = plan_batches(range(10, 18), 3, nullptr);
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[0], (std::vector<int>{10, 11, 12}));
  EXPECT_EQ(plan[1], (std::vector<int>{13, 14, 15}));
  EXPECT_EQ(plan[2], (std::vector<int>{16, 17}));
  EXPECT_TRUE(plan_batches({}, 3, nullptr).empty());
  EXPECT_EQ(plan_batches(range(0, 4), 10, nullptr).size(), 1u);
  EXPECT_THROW(plan_batches(range(0, 4), 0, nullptr), Error);
}

TEST(PlanBatches, ShufflesDeterministicallyAndAdvancesTheGenerator) {
  const std::vector<int> convs = range(0, 23);
  auto flatten = [](const std::vector<std::vector<int>>& plan) {
    std::vector<int> v;
    for (const auto& b : plan) v.insert(v.end(), b.begin(), b.end());
    return v;
  };
  Rng r1(5), r2(5);
  const auto e1 = plan_batches(convs, 10, &r1);
  const auto e2 = plan_batches(convs, 10, &r2);
  EXPECT_EQ(e1, e2);  // same seed, same plan
  ASSERT_EQ(e1.size(), 3u);
  EXPECT_EQ(e1[2].size(), 3u);
  std::vector<int> order = flatten(e1);
  EXPECT_NE(order, convs);
  std::sort(order.begin(), order.end());
  EXPECT_EQ(order, convs);  // a permutation
  EXPECT_NE(flatten(plan_batches(convs, 10, &r1)), flatten(e1));  // next epoch differs
}

}  // namespace
}  // namespace mman
