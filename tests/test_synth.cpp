// synth_dataset("iemocap"): Table 1 counts, structure, determinism and the presence of the designed class signal.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "mman/data/dataset.h"
#include "mman/data/synth.h"
#include "mman/error.h"
#include "mman/rng.h"

namespace mman {
namespace {

const std::vector<std::string> kNames = {"hap", "sad", "neu", "ang", "exc", "fru"};

// Generated once: every test reads the same dataset (generation takes a fraction of a second).
const Dataset& seed0() {
  static const Dataset ds = synth_dataset("iemocap", 0);
  return ds;
}

std::vector<int> split_convs(const Dataset& ds, const std::string& split) {
  std::vector<int> out;
  for (const std::string& id : ds.splits.at(split)) {
    const auto it = std::find(ds.conv_ids.begin(), ds.conv_ids.end(), id);
    EXPECT_NE(it, ds.conv_ids.end()) << id;
    out.push_back(static_cast<int>(it - ds.conv_ids.begin()));
  }
  return out;
}

std::vector<int64_t> split_rows(const Dataset& ds, const std::string& split) {
  std::vector<int64_t> rows;
  for (int c : split_convs(ds, split))
    for (int64_t u = ds.conv_offsets[static_cast<size_t>(c)]; u < ds.conv_offsets[static_cast<size_t>(c) + 1]; ++u)
      rows.push_back(u);
  return rows;
}

TEST(Synth, ValidatesAndHasTheIemocapShape) {
  const Dataset& ds = seed0();
  EXPECT_NO_THROW(validate_dataset(ds));
  EXPECT_EQ(ds.label_names, kNames);
  EXPECT_EQ(ds.modalities, (std::vector<std::string>{"audio", "visual", "text"}));
  ASSERT_EQ(ds.features.size(), 3u);
  EXPECT_EQ(ds.dim(0), 100);
  EXPECT_EQ(ds.dim(1), 512);
  EXPECT_EQ(ds.dim(2), 100);
  EXPECT_EQ(ds.num_utterances(), 5810 + 1623);
  for (const Tensor& t : ds.features) {
    EXPECT_EQ(t.rows(), ds.num_utterances());
    for (int64_t i = 0; i < t.size(); ++i) ASSERT_TRUE(std::isfinite(t.data()[i]));
  }
  // Only train and test: the loader carves valid from train.
  EXPECT_EQ(ds.splits.size(), 2u);
  EXPECT_EQ(ds.splits.count("train"), 1u);
  EXPECT_EQ(ds.splits.count("test"), 1u);
}

TEST(Synth, ExactTable1CountsPerClassAndSplit) {
  const Dataset& ds = seed0();
  const std::map<std::string, std::vector<int>> expected = {{"train", {504, 839, 1324, 933, 742, 1468}},
                                                            {"test", {144, 245, 384, 170, 299, 381}}};
  for (const auto& [split, want] : expected) {
    std::vector<int> got(6, 0);
    for (int64_t u : split_rows(ds, split)) {
      const int l = ds.labels[static_cast<size_t>(u)];
      ASSERT_GE(l, 0);
      ASSERT_LT(l, 6);
      ++got[static_cast<size_t>(l)];
    }
    EXPECT_EQ(got, want) << split;
  }
}

TEST(Synth, ConversationsSessionsLengthsAndSpeakers) {
  const Dataset& ds = seed0();
  const std::vector<int> train = split_convs(ds, "train"), test = split_convs(ds, "test");
  EXPECT_EQ(train.size(), 120u);
  EXPECT_EQ(test.size(), 31u);
  EXPECT_EQ(ds.num_conversations(), 151);

  std::map<std::string, int> train_sessions;
  for (int c : train) ++train_sessions[ds.conv_sessions[static_cast<size_t>(c)]];
  EXPECT_EQ(train_sessions, (std::map<std::string, int>{{"Ses01", 30}, {"Ses02", 30}, {"Ses03", 30}, {"Ses04", 30}}));
  for (int c : test) EXPECT_EQ(ds.conv_sessions[static_cast<size_t>(c)], "Ses05");

  for (const auto* convs : {&train, &test}) {
    std::vector<int> len;
    for (int c : *convs) len.push_back(ds.conv_length(c));
    const double mean = std::accumulate(len.begin(), len.end(), 0.0) / static_cast<double>(len.size());
    EXPECT_GE(*std::min_element(len.begin(), len.end()), 8);
    EXPECT_LE(*std::max_element(len.begin(), len.end()), 110);
    EXPECT_GT(mean, 40.0);
    EXPECT_LT(mean, 60.0);
    // Realistic spread, not all alike: IEMOCAP has dialogues from about 8 to 110 turns.
    EXPECT_LT(*std::min_element(len.begin(), len.end()), 30);
    EXPECT_GT(*std::max_element(len.begin(), len.end()), 80);
  }

  std::set<std::string> conv_ids(ds.conv_ids.begin(), ds.conv_ids.end());
  EXPECT_EQ(conv_ids.size(), ds.conv_ids.size());
  std::set<std::string> utt_ids(ds.utterance_ids.begin(), ds.utterance_ids.end());
  EXPECT_EQ(static_cast<int64_t>(utt_ids.size()), ds.num_utterances());

  for (int c = 0; c < ds.num_conversations(); ++c) {
    const std::string& id = ds.conv_ids[static_cast<size_t>(c)];
    const std::string& session = ds.conv_sessions[static_cast<size_t>(c)];
    EXPECT_EQ(id.substr(0, 5), session) << id;  // "Ses01F_impro01" belongs to Ses01
    std::set<std::string> speakers;
    int switches = 0;
    for (int64_t u = ds.conv_offsets[static_cast<size_t>(c)]; u < ds.conv_offsets[static_cast<size_t>(c) + 1]; ++u) {
      const std::string& spk = ds.speakers[static_cast<size_t>(u)];
      speakers.insert(spk);
      const std::string& uid = ds.utterance_ids[static_cast<size_t>(u)];
      EXPECT_EQ(uid.substr(0, id.size() + 1), id + "_") << uid;
      EXPECT_EQ(uid[id.size() + 1], spk.back()) << uid << " spoken by " << spk;  // "..._F003" by "Ses01_F"
      if (u > ds.conv_offsets[static_cast<size_t>(c)] && spk != ds.speakers[static_cast<size_t>(u - 1)]) ++switches;
    }
    EXPECT_EQ(speakers, (std::set<std::string>{session + "_F", session + "_M"})) << id;
    // Mostly alternating turns, with some runs of one speaker.
    EXPECT_GT(switches, (ds.conv_length(c) - 1) / 2) << id;
  }
}

TEST(Synth, SameSeedIsBitIdenticalOtherSeedsDiffer) {
  const Dataset a = synth_dataset("iemocap", 7);
  const Dataset b = synth_dataset("iemocap", 7);
  const Dataset& other = seed0();
  ASSERT_EQ(a.features.size(), b.features.size());
  for (size_t m = 0; m < a.features.size(); ++m) {
    ASSERT_EQ(a.features[m].size(), b.features[m].size());
    EXPECT_EQ(std::memcmp(a.features[m].data(), b.features[m].data(), sizeof(float) * static_cast<size_t>(a.features[m].size())), 0);
  }
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.speakers, b.speakers);
  EXPECT_EQ(a.utterance_ids, b.utterance_ids);
  EXPECT_EQ(a.conv_ids, b.conv_ids);
  EXPECT_EQ(a.conv_offsets, b.conv_offsets);
  EXPECT_EQ(a.splits, b.splits);

  EXPECT_NE(a.labels, other.labels);
  EXPECT_NE(a.conv_offsets, other.conv_offsets);
  for (size_t m = 0; m < a.features.size(); ++m) {
    const size_t n = static_cast<size_t>(std::min(a.features[m].size(), other.features[m].size()));
    EXPECT_NE(std::memcmp(a.features[m].data(), other.features[m].data(), sizeof(float) * n), 0);
  }
}

TEST(Synth, UnknownPresetIsAnError) {
  try {
    synth_dataset("msp-podcast", 0);
    FAIL() << "expected mman::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("msp-podcast"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("iemocap"), std::string::npos) << e.what();
  }
}

TEST(Synth, AudioLooksUnnormalisedVisualAndTextNearUnitScale) {
  const Dataset& ds = seed0();
  auto max_abs = [](const Tensor& t) {
    float m = 0;
    for (int64_t i = 0; i < t.size(); ++i) m = std::max(m, std::fabs(t.data()[i]));
    return m;
  };
  EXPECT_GT(max_abs(ds.features[0]), 100.0f);  // openSMILE-like ranges: normalisation matters
  EXPECT_LT(max_abs(ds.features[1]), 20.0f);
  EXPECT_LT(max_abs(ds.features[2]), 20.0f);
}

// ---- signal: the statistics below are what the models must learn; with the signal
// removed they would be near zero. Features are standardised with train statistics.

std::vector<std::vector<double>> standardised(const Dataset& ds, int m) {
  const Tensor& x = ds.features[static_cast<size_t>(m)];
  const int64_t d = x.cols();
  const std::vector<int64_t> train = split_rows(ds, "train");
  std::vector<double> mean(static_cast<size_t>(d), 0.0), var(static_cast<size_t>(d), 0.0);
  for (int64_t u : train)
    for (int64_t j = 0; j < d; ++j) mean[static_cast<size_t>(j)] += x.at(u, j);
  for (double& v : mean) v /= static_cast<double>(train.size());
  for (int64_t u : train)
    for (int64_t j = 0; j < d; ++j) var[static_cast<size_t>(j)] += std::pow(x.at(u, j) - mean[static_cast<size_t>(j)], 2);
  std::vector<std::vector<double>> z(static_cast<size_t>(x.rows()), std::vector<double>(static_cast<size_t>(d)));
  for (int64_t u = 0; u < x.rows(); ++u)
    for (int64_t j = 0; j < d; ++j)
      z[static_cast<size_t>(u)][static_cast<size_t>(j)] =
          (x.at(u, j) - mean[static_cast<size_t>(j)]) / std::sqrt(var[static_cast<size_t>(j)] / static_cast<double>(train.size()));
  return z;
}

// Separation (Cohen's d) on the test split between utterances of classes `pos` and
// `neg`, along the direction joining their class means on the train split.
double separation(const Dataset& ds, const std::vector<std::vector<double>>& z, const std::set<int>& pos,
                  const std::set<int>& neg) {
  const size_t d = z[0].size();
  std::vector<double> mp(d, 0.0), mn(d, 0.0);
  double np = 0, nn = 0;
  for (int64_t u : split_rows(ds, "train")) {
    const int l = ds.labels[static_cast<size_t>(u)];
    std::vector<double>* acc = pos.count(l) ? &mp : neg.count(l) ? &mn : nullptr;
    if (acc == nullptr) continue;
    (pos.count(l) ? np : nn) += 1;
    for (size_t j = 0; j < d; ++j) (*acc)[j] += z[static_cast<size_t>(u)][j];
  }
  std::vector<double> dir(d);
  for (size_t j = 0; j < d; ++j) dir[j] = mp[j] / np - mn[j] / nn;
  std::vector<double> proj_pos, proj_neg;
  for (int64_t u : split_rows(ds, "test")) {
    const int l = ds.labels[static_cast<size_t>(u)];
    if (!pos.count(l) && !neg.count(l)) continue;
    double p = 0;
    for (size_t j = 0; j < d; ++j) p += dir[j] * z[static_cast<size_t>(u)][j];
    (pos.count(l) ? proj_pos : proj_neg).push_back(p);
  }
  auto mean_var = [](const std::vector<double>& v) {
    const double m = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return std::make_pair(m, s / static_cast<double>(v.size()));
  };
  const auto [a, va] = mean_var(proj_pos);
  const auto [b, vb] = mean_var(proj_neg);
  return (a - b) / std::sqrt(0.5 * (va + vb));
}

// Raw classes: hap 0, sad 1, neu 2, ang 3, exc 4, fru 5.
const std::set<int> kHighArousal = {0, 3, 4}, kLowArousal = {1, 2};
const std::set<int> kPositive = {0, 4}, kNegative = {1, 3, 5};

TEST(Synth, AudioCarriesArousalTextCarriesValenceVisualWeaker) {
  const Dataset& ds = seed0();
  const auto audio = standardised(ds, 0), visual = standardised(ds, 1), text = standardised(ds, 2);
  const double audio_arousal = separation(ds, audio, kHighArousal, kLowArousal);
  const double text_arousal = separation(ds, text, kHighArousal, kLowArousal);
  const double text_valence = separation(ds, text, kPositive, kNegative);
  const double audio_valence = separation(ds, audio, kPositive, kNegative);
  const double visual_arousal = separation(ds, visual, kHighArousal, kLowArousal);
  const double visual_valence = separation(ds, visual, kPositive, kNegative);
  // Clear but far from separable (a d of 0.5 .. 3 between the groups) ...
  EXPECT_GT(audio_arousal, 0.5);
  EXPECT_LT(audio_arousal, 3.0);
  EXPECT_GT(text_valence, 0.5);
  EXPECT_LT(text_valence, 3.0);
  // ... each modality stronger on its own dimension than the other modality is ...
  EXPECT_GT(audio_arousal, text_arousal);
  EXPECT_GT(text_valence, audio_valence);
  // ... and visual weaker than the specialist modality, but not empty.
  EXPECT_GT(visual_arousal, 0.2);
  EXPECT_GT(visual_valence, 0.2);
  EXPECT_LT(visual_arousal, audio_arousal);
  EXPECT_LT(visual_valence, text_valence);
}

// Largest singular value of a square matrix by power iteration on A^T A.
double top_singular_value(const std::vector<std::vector<double>>& a) {
  const size_t n = a.size();
  std::vector<double> v(n, 1.0 / std::sqrt(static_cast<double>(n))), w(n), av(n);
  double sigma = 0;
  for (int it = 0; it < 200; ++it) {
    for (size_t i = 0; i < n; ++i) {
      av[i] = 0;
      for (size_t j = 0; j < n; ++j) av[i] += a[i][j] * v[j];
    }
    for (size_t j = 0; j < n; ++j) {
      w[j] = 0;
      for (size_t i = 0; i < n; ++i) w[j] += a[i][j] * av[i];
    }
    double norm = 0;
    for (double x : w) norm += x * x;
    norm = std::sqrt(norm);
    sigma = std::sqrt(norm);
    for (size_t j = 0; j < n; ++j) v[j] = w[j] / norm;
  }
  return sigma;
}

// The cross-modal part: within-class audio-text cross-covariance differs in sign
// between neu/ang and the other classes (a rank-one difference), which no single
// modality shows. Compared with the same statistic for a random grouping of the
// utterances into groups of the same sizes.
TEST(Synth, AudioTextInteractionIsVisibleOnlyJointly) {
  const Dataset& ds = seed0();
  const auto audio = standardised(ds, 0), text = standardised(ds, 2);
  const std::vector<int64_t> rows = split_rows(ds, "train");
  const size_t d = audio[0].size();
  // Class means removed so that only the within-class joint structure remains.
  std::vector<std::vector<double>> ma(6, std::vector<double>(d, 0.0)), mt(6, std::vector<double>(d, 0.0));
  std::vector<double> count(6, 0.0);
  for (int64_t u : rows) {
    const int l = ds.labels[static_cast<size_t>(u)];
    count[static_cast<size_t>(l)] += 1;
    for (size_t j = 0; j < d; ++j) {
      ma[static_cast<size_t>(l)][j] += audio[static_cast<size_t>(u)][j];
      mt[static_cast<size_t>(l)][j] += text[static_cast<size_t>(u)][j];
    }
  }
  for (int l = 0; l < 6; ++l)
    for (size_t j = 0; j < d; ++j) {
      ma[static_cast<size_t>(l)][j] /= count[static_cast<size_t>(l)];
      mt[static_cast<size_t>(l)][j] /= count[static_cast<size_t>(l)];
    }
  auto statistic = [&](const std::vector<char>& group) {
    std::vector<std::vector<double>> diff(d, std::vector<double>(d, 0.0));
    double n1 = 0, n0 = 0;
    for (size_t i = 0; i < rows.size(); ++i) (group[i] ? n1 : n0) += 1;
    for (size_t i = 0; i < rows.size(); ++i) {
      const size_t u = static_cast<size_t>(rows[i]);
      const size_t l = static_cast<size_t>(ds.labels[u]);
      const double w = group[i] ? 1.0 / n1 : -1.0 / n0;
      for (size_t j = 0; j < d; ++j) {
        const double a = w * (audio[u][j] - ma[l][j]);
        for (size_t k = 0; k < d; ++k) diff[j][k] += a * (text[u][k] - mt[l][k]);
      }
    }
    return top_singular_value(diff);
  };
  std::vector<char> joint(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const int l = ds.labels[static_cast<size_t>(rows[i])];
    joint[i] = l == 2 || l == 3;  // neu, ang
  }
  std::vector<char> random_group = joint;
  Rng rng(123);
  rng.shuffle(random_group);
  const double designed = statistic(joint);
  const double chance = statistic(random_group);
  EXPECT_GT(designed, 3.0 * chance) << "designed grouping " << designed << ", random grouping " << chance;
}

// Context: emotions persist along a speaker's turns, so a speaker's previous label
// predicts the next far better than the class frequencies do.
TEST(Synth, EmotionsPersistAlongASpeakersTurns) {
  const Dataset& ds = seed0();
  int64_t same = 0, pairs = 0;
  std::vector<double> freq(6, 0.0);
  for (int c = 0; c < ds.num_conversations(); ++c) {
    std::map<std::string, int> last;
    for (int64_t u = ds.conv_offsets[static_cast<size_t>(c)]; u < ds.conv_offsets[static_cast<size_t>(c) + 1]; ++u) {
      const std::string& spk = ds.speakers[static_cast<size_t>(u)];
      const int l = ds.labels[static_cast<size_t>(u)];
      freq[static_cast<size_t>(l)] += 1;
      const auto it = last.find(spk);
      if (it != last.end()) {
        ++pairs;
        same += it->second == l;
      }
      last[spk] = l;
    }
  }
  double chance = 0;  // agreement of two independent draws from the class frequencies
  for (double f : freq) chance += std::pow(f / static_cast<double>(ds.num_utterances()), 2);
  const double agreement = static_cast<double>(same) / static_cast<double>(pairs);
  EXPECT_GT(agreement, chance + 0.3) << "agreement " << agreement << ", chance " << chance;
  EXPECT_LT(agreement, 0.98);  // emotions do change within a conversation
}

}  // namespace
}  // namespace mman
