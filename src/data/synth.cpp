// synth_dataset: the synthetic IEMOCAP stand-in (`mman_exp synth --preset iemocap`).
//
// Generative model of the `iemocap` preset (docs/synthetic_data.md says the same with
// the accuracies it gives). Every number is a field of IemocapModel below. All draws
// come from mman::Rng (fully specified, no std:: distributions) in three independent
// streams (structure, layout, noise), so a seed gives bit-identical data everywhere.
//
// Structure, per split (train: sessions Ses01..Ses04 x 30 conversations; test: Ses05 x 31):
//  1. Lengths: round(exp(N(log 44, 0.5))) clipped to [8, 110], then nudged one
//     utterance at a time (random conversations, staying in [8, 110]) until they sum
//     exactly to the split's Table 1 total (5810 / 1623).
//  2. Turns: the session's two actors ("Ses01_F", "Ses01_M") alternate; after each turn
//     the other one speaks with probability 0.8, so there are some runs of one speaker.
//  3. Labels: the split's exact multiset of raw labels (Table 1 counts of hap, sad, neu,
//     ang, exc, fru) is dealt without replacement, conversation by conversation in a
//     random order, so the counts are exact by construction. Each conversation draws a
//     theme class; each speaker carries a current emotion and keeps it on their next
//     turn with probability `stay` (0.8); otherwise, with probability `contagion` (0.5),
//     takes the other speaker's current emotion, else draws a new one with weight
//     remaining[k] x (1 + theme boost: 3 for the theme, 1.5 for its related class
//     hap-exc, ang-fru, sad-neu). So past turns predict the current emotion (context).
//
// Features, per modality m (audio 100-d, visual 512-d, text 100-d), are generated in a
// small latent space (24 / 32 / 24 dimensions) with orthonormal directions for arousal
// d_ar, valence d_va, a cross-modal interaction d_x, six class directions e_k and
// gender d_g, then mixed into the observed dimensions by a random matrix M_m (entries
// N(0, 1/latent)), so observed features are redundant and correlated like real ones:
//     z = r (a_m A_k d_ar + v_m V_k d_va + w_m e_k + x_m s c_m(k) d_x) + g_m G d_g
//         + o_conv + o_actor + o_turn + sigma_m eps                     (latent, eps ~ N(0, I))
//     x = M_m z + tau_m eps'                                            (observed)
//  - A_k / V_k: per-class arousal (hap .6, sad -.9, neu -.5, ang 1, exc .8, fru 0) and
//    valence (hap .9, sad -.7, neu 0, ang -.8, exc .7, fru -.6). Audio weighs arousal
//    (a 1.0, v .15), text valence (a .15, v 1.0), visual both weakly and more noisily.
//  - s in {-1, +1}: a hidden per-utterance sign on d_x in audio (c = 1) and in text
//    (c = joint[k]: +1 for neu and ang, -1 otherwise). Each modality alone sees +-x_m
//    whatever the class; only the product of the audio and text projections reveals
//    joint[k] (an interaction that attention's q.k can compute, no linear fusion can).
//  - r: utterance intensity; with probability `ambiguous` (0.2) r ~ U(0, 0.25), an
//    utterance with almost no own signal that only context can label; else U(0.7, 1.3).
//  - G = +1 for F, -1 for M: speakers are told apart by their voice (audio, and
//    visual more weakly), so a recurrent model can follow each speaker's state.
//  - o_conv (per conversation), o_actor (per actor, shared across the session) and
//    o_turn (per speaker within a conversation): small Gaussian nuisance offsets that a
//    model sees as shifts it can estimate from a conversation's context.
// Finally audio is mapped to openSMILE-like ranges: audio_j = mu_j + scale_j x_j with
// per-dimension log-uniform scales in [0.05, 60] and offsets up to a few hundred, so
// normalisation matters; visual and text stay near unit scale.
#include "mman/data/synth.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "mman/error.h"
#include "mman/rng.h"

namespace mman {
namespace {

constexpr int kClasses = 6;  // hap, sad, neu, ang, exc, fru (the IEMOCAP pickle's order)
const std::array<const char*, kClasses> kLabelNames = {"hap", "sad", "neu", "ang", "exc", "fru"};

// Table 1 of the paper: utterances per raw class and split.
constexpr std::array<int, kClasses> kTrainCounts = {504, 839, 1324, 933, 742, 1468};  // 5810
constexpr std::array<int, kClasses> kTestCounts = {144, 245, 384, 170, 299, 381};     // 1623

// Every tunable number of the generative model (see the comment at the top).
struct ModalityModel {
  const char* name;
  int dim, latent;                      // observed and latent dimensions
  double arousal, valence, own, joint;  // a_m, v_m, w_m, x_m
  double noise;                         // sigma_m per latent dimension
  double observation_noise;             // independent noise per observed dimension
  double conv_offset, actor_offset, turn_offset;
  double gender;                        // +gender (F) / -gender (M) along a gender direction
};
struct IemocapModel {
  // Per-class latent coordinates (hap, sad, neu, ang, exc, fru).
  std::array<double, kClasses> arousal = {0.6, -0.9, -0.5, 1.0, 0.8, 0.0};
  std::array<double, kClasses> valence = {0.9, -0.7, 0.0, -0.8, 0.7, -0.6};
  std::array<double, kClasses> joint = {-1, -1, +1, +1, -1, -1};
  // Theme affinity: the theme class itself 1, a related class 0.5 (hap-exc, ang-fru, sad-neu).
  std::array<int, kClasses> related = {4, 2, 1, 5, 0, 3};
  double stay = 0.8;          // a speaker keeps their emotion on their next turn
  double contagion = 0.5;     // a changing speaker adopts the other speaker's emotion
  double theme = 3.0;         // boost of the conversation's theme when drawing an emotion
  double switch_turn = 0.8;   // the other speaker talks next
  double ambiguous = 0.2;     // share of utterances with almost no own signal
  double ambiguous_max = 0.25;  // their intensity r ~ U(0, ambiguous_max)
  double intensity_lo = 0.7, intensity_hi = 1.3;  // the others' r ~ U(lo, hi)
  double length_median = 44, length_sigma = 0.5;  // conversation lengths, log-normal
  // audio, visual, text
  std::array<ModalityModel, 3> modalities = {{
      {"audio", 100, 24, 1.0, 0.15, 0.5, 1.0, 0.75, 0.3, 0.08, 0.08, 0.08, 1.0},
      {"visual", 512, 32, 0.5, 0.5, 0.6, 0.0, 0.8, 0.3, 0.08, 0.08, 0.08, 0.5},
      {"text", 100, 24, 0.15, 1.0, 0.5, 1.0, 0.75, 0.3, 0.08, 0.08, 0.08, 0.0},
  }};
};
constexpr int kMinLen = 8, kMaxLen = 110;

struct SplitPlan {
  const char* name;
  std::array<int, kClasses> counts;
  std::vector<int> sessions;  // session numbers
  int convs_per_session;
  int extra_convs;            // added to the last session (test: 31 = 30 + 1)
};

// Conversation names of one session, as in IEMOCAP: "Ses01F_impro01",
// "Ses01M_script02_1"; a session with more than 30 gets "b" takes of improvisations.
std::vector<std::string> session_conversation_names(int session, int count) {
  std::vector<std::string> base;
  for (int i = 1; i <= 8; ++i) base.push_back(fmt::format("impro{:02d}", i));
  for (const char* s : {"script01_1", "script01_2", "script01_3", "script02_1", "script02_2", "script03_1",
                        "script03_2"})
    base.push_back(s);
  std::vector<std::string> names;
  for (int i = 0; static_cast<int>(names.size()) < count; ++i) {
    const int take = i / static_cast<int>(2 * base.size());
    const int j = i % static_cast<int>(2 * base.size());
    const char gender = j < static_cast<int>(base.size()) ? 'F' : 'M';
    const std::string& b = base[static_cast<size_t>(j % static_cast<int>(base.size()))];
    if (take > 0 && b.rfind("impro", 0) != 0) continue;  // extra takes only of improvisations
    names.push_back(fmt::format("Ses{:02d}{}_{}{}", session, gender, b, take > 0 ? std::string(1, 'a' + take) : ""));
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Lengths in [kMinLen, kMaxLen] summing exactly to total.
std::vector<int> draw_lengths(Rng& rng, int count, int total, double median, double sigma) {
  MMAN_CHECK(count * kMinLen <= total && total <= count * kMaxLen,
             "synth: {} utterances cannot fill {} conversations of {}..{}", total, count, kMinLen, kMaxLen);
  std::vector<int> len(static_cast<size_t>(count));
  for (int& l : len) {
    const double v = std::exp(std::log(median) + sigma * rng.normal());
    l = std::clamp(static_cast<int>(std::lround(v)), kMinLen, kMaxLen);
  }
  int sum = std::accumulate(len.begin(), len.end(), 0);
  while (sum != total) {
    int& l = len[static_cast<size_t>(rng.below(static_cast<uint64_t>(count)))];
    if (sum < total && l < kMaxLen) {
      ++l;
      ++sum;
    } else if (sum > total && l > kMinLen) {
      --l;
      --sum;
    }
  }
  return len;
}

// Draws k with probability weight[k] / sum (sum > 0).
int draw_weighted(Rng& rng, const std::array<double, kClasses>& weight) {
  double sum = 0;
  for (double w : weight) sum += w;
  double u = rng.uniform() * sum;
  int last = -1;
  for (int k = 0; k < kClasses; ++k) {
    if (weight[static_cast<size_t>(k)] <= 0) continue;
    last = k;
    if (u < weight[static_cast<size_t>(k)]) return k;
    u -= weight[static_cast<size_t>(k)];
  }
  return last;  // rounding at the top end
}

// Orthonormal directions (Gram-Schmidt on Gaussian vectors), count <= dim.
std::vector<std::vector<double>> orthonormal_directions(Rng& rng, int dim, int count) {
  std::vector<std::vector<double>> dirs;
  while (static_cast<int>(dirs.size()) < count) {
    std::vector<double> v(static_cast<size_t>(dim));
    for (double& x : v) x = rng.normal();
    for (const auto& d : dirs) {
      double dot = 0;
      for (int i = 0; i < dim; ++i) dot += v[static_cast<size_t>(i)] * d[static_cast<size_t>(i)];
      for (int i = 0; i < dim; ++i) v[static_cast<size_t>(i)] -= dot * d[static_cast<size_t>(i)];
    }
    double norm = 0;
    for (double x : v) norm += x * x;
    norm = std::sqrt(norm);
    if (norm < 1e-6) continue;
    for (double& x : v) x /= norm;
    dirs.push_back(std::move(v));
  }
  return dirs;
}

// One conversation's structure before features are drawn.
struct ConvPlan {
  std::string id, session;
  int session_number = 0;
  std::vector<int> speaker;  // 0 = F, 1 = M per utterance
  std::vector<int> label;
};

Dataset make_iemocap(uint64_t seed, const IemocapModel& model) {
  const std::array<SplitPlan, 2> splits = {{
      {"train", kTrainCounts, {1, 2, 3, 4}, 30, 0},
      {"test", kTestCounts, {5}, 30, 1},
  }};
  // Independent streams: structure, directions/scales, per-utterance features.
  Rng structure(rng_key(seed, 1));
  Rng layout(rng_key(seed, 2));
  Rng noise(rng_key(seed, 3));

  Dataset ds;
  ds.source = fmt::format("synthetic iemocap (seed {})", seed);
  ds.synthetic = fmt::format("iemocap preset, seed {}", seed);
  for (const char* n : kLabelNames) ds.label_names.emplace_back(n);

  std::vector<ConvPlan> convs;
  for (const SplitPlan& sp : splits) {
    std::vector<ConvPlan> split_convs;
    for (size_t si = 0; si < sp.sessions.size(); ++si) {
      const int count = sp.convs_per_session + (si + 1 == sp.sessions.size() ? sp.extra_convs : 0);
      for (std::string& name : session_conversation_names(sp.sessions[si], count)) {
        ConvPlan c;
        c.id = std::move(name);
        c.session_number = sp.sessions[si];
        c.session = fmt::format("Ses{:02d}", sp.sessions[si]);
        split_convs.push_back(std::move(c));
      }
    }
    const int total = std::accumulate(sp.counts.begin(), sp.counts.end(), 0);
    const std::vector<int> lengths = draw_lengths(structure, static_cast<int>(split_convs.size()), total, model.length_median, model.length_sigma);

    // Turn-taking.
    for (size_t c = 0; c < split_convs.size(); ++c) {
      std::vector<int>& spk = split_convs[c].speaker;
      spk.resize(static_cast<size_t>(lengths[c]));
      spk[0] = static_cast<int>(structure.below(2));
      for (size_t t = 1; t < spk.size(); ++t) spk[t] = structure.uniform() < model.switch_turn ? 1 - spk[t - 1] : spk[t - 1];
      if (std::all_of(spk.begin(), spk.end(), [&](int s) { return s == spk[0]; })) spk.back() = 1 - spk[0];
    }

    // Deal the exact label multiset, conversations in random order.
    std::array<double, kClasses> remaining{};
    for (int k = 0; k < kClasses; ++k) remaining[static_cast<size_t>(k)] = sp.counts[static_cast<size_t>(k)];
    std::vector<size_t> order(split_convs.size());
    std::iota(order.begin(), order.end(), size_t{0});
    structure.shuffle(order);
    for (size_t c : order) {
      ConvPlan& conv = split_convs[c];
      const int theme = draw_weighted(structure, remaining);
      std::array<int, 2> current = {-1, -1};
      conv.label.resize(conv.speaker.size());
      for (size_t t = 0; t < conv.speaker.size(); ++t) {
        int& cur = current[static_cast<size_t>(conv.speaker[t])];
        const bool stay = structure.uniform() < model.stay;
        const int other = current[static_cast<size_t>(1 - conv.speaker[t])];
        const bool adopt = structure.uniform() < model.contagion;
        if (cur >= 0 && stay && remaining[static_cast<size_t>(cur)] > 0) {
          // keeps the emotion
        } else if (other >= 0 && adopt && remaining[static_cast<size_t>(other)] > 0) {
          cur = other;
        } else {
          std::array<double, kClasses> w = remaining;
          w[static_cast<size_t>(theme)] *= 1.0 + model.theme;
          w[static_cast<size_t>(model.related[static_cast<size_t>(theme)])] *= 1.0 + 0.5 * model.theme;
          cur = draw_weighted(structure, w);
        }
        conv.label[t] = cur;
        remaining[static_cast<size_t>(cur)] -= 1;
      }
    }
    ds.splits[sp.name] = {};
    for (ConvPlan& c : split_convs) {
      ds.splits[sp.name].push_back(c.id);
      convs.push_back(std::move(c));
    }
  }

  // Flat structure.
  ds.conv_offsets.push_back(0);
  for (const ConvPlan& c : convs) {
    std::array<int, 2> turn_count = {0, 0};
    for (size_t t = 0; t < c.speaker.size(); ++t) {
      const char g = c.speaker[t] == 0 ? 'F' : 'M';
      ds.utterance_ids.push_back(fmt::format("{}_{}{:03d}", c.id, g, turn_count[static_cast<size_t>(c.speaker[t])]++));
      ds.speakers.push_back(fmt::format("{}_{}", c.session, g));
      ds.labels.push_back(c.label[t]);
    }
    ds.conv_ids.push_back(c.id);
    ds.conv_sessions.push_back(c.session);
    ds.conv_offsets.push_back(ds.conv_offsets.back() + static_cast<int64_t>(c.speaker.size()));
  }
  const int64_t n = ds.conv_offsets.back();

  // Per-utterance hidden sign and intensity, shared by the modalities.
  std::vector<double> sign(static_cast<size_t>(n)), intensity(static_cast<size_t>(n));
  for (int64_t u = 0; u < n; ++u) {
    sign[static_cast<size_t>(u)] = noise.below(2) == 0 ? -1.0 : 1.0;
    intensity[static_cast<size_t>(u)] = noise.uniform() < model.ambiguous ? noise.uniform(0.0, model.ambiguous_max) : noise.uniform(model.intensity_lo, model.intensity_hi);
  }

  for (const ModalityModel& mm : model.modalities) {
    const int d = mm.dim, k = mm.latent;
    const size_t dk = static_cast<size_t>(k);
    ds.modalities.emplace_back(mm.name);
    const bool is_audio = std::string(mm.name) == "audio", is_text = std::string(mm.name) == "text";
    // Latent directions: 0 arousal, 1 valence, 2 interaction, 3..8 classes, 9 gender.
    const auto dirs = orthonormal_directions(layout, k, 4 + kClasses);
    const std::vector<double>& gender_dir = dirs[static_cast<size_t>(3 + kClasses)];
    // Mixing matrix [d x k], entries N(0, 1/k): every observed dimension mixes all
    // latent factors, so the features are redundant and correlated like real ones.
    std::vector<double> mix(static_cast<size_t>(d) * dk);
    for (double& a : mix) a = layout.normal() / std::sqrt(static_cast<double>(k));
    std::array<std::vector<double>, kClasses> mean;  // class signal in latent space (before r)
    for (int c = 0; c < kClasses; ++c) {
      auto& mu = mean[static_cast<size_t>(c)];
      mu.assign(dk, 0.0);
      for (size_t j = 0; j < dk; ++j)
        mu[j] = mm.arousal * model.arousal[static_cast<size_t>(c)] * dirs[0][j] +
                mm.valence * model.valence[static_cast<size_t>(c)] * dirs[1][j] +
                mm.own * dirs[static_cast<size_t>(3 + c)][j];
    }
    // openSMILE-like affine map for audio: log-uniform scales, offsets up to hundreds.
    std::vector<double> scale(static_cast<size_t>(d), 1.0), shift(static_cast<size_t>(d), 0.0);
    if (is_audio) {
      for (int i = 0; i < d; ++i) {
        scale[static_cast<size_t>(i)] = std::exp(layout.uniform(std::log(0.05), std::log(60.0)));
        shift[static_cast<size_t>(i)] = scale[static_cast<size_t>(i)] * layout.uniform(-1.0, 6.0);
      }
    }
    auto gaussian_vector = [&](double sigma) {
      std::vector<double> v(dk);
      for (double& x : v) x = sigma * noise.normal();
      return v;
    };
    // Speaker (actor) offsets per session and gender, drawn in session order.
    std::vector<std::array<std::vector<double>, 2>> actor(6);
    for (int s = 1; s <= 5; ++s)
      for (int g = 0; g < 2; ++g) actor[static_cast<size_t>(s)][static_cast<size_t>(g)] = gaussian_vector(mm.actor_offset);

    Tensor& x = ds.features.emplace_back(n, d);
    std::vector<double> z(dk);
    for (int c = 0; c < ds.num_conversations(); ++c) {
      const ConvPlan& plan = convs[static_cast<size_t>(c)];
      const int64_t begin = ds.conv_offsets[static_cast<size_t>(c)], end = ds.conv_offsets[static_cast<size_t>(c) + 1];
      const std::vector<double> conv_off = gaussian_vector(mm.conv_offset);
      const std::array<std::vector<double>, 2> turn_off = {gaussian_vector(mm.turn_offset), gaussian_vector(mm.turn_offset)};
      for (int64_t u = begin; u < end; ++u) {
        const size_t uu = static_cast<size_t>(u);
        const int label = ds.labels[uu];
        const int g = plan.speaker[static_cast<size_t>(u - begin)];
        const double r = intensity[uu];
        const double joint =
            mm.joint * sign[uu] * (is_audio ? 1.0 : is_text ? model.joint[static_cast<size_t>(label)] : 0.0);
        const double gender = g == 0 ? mm.gender : -mm.gender;
        const auto& mu = mean[static_cast<size_t>(label)];
        const auto& act = actor[static_cast<size_t>(plan.session_number)][static_cast<size_t>(g)];
        const auto& turn = turn_off[static_cast<size_t>(g)];
        for (size_t j = 0; j < dk; ++j)
          z[j] = r * (mu[j] + joint * dirs[2][j]) + gender * gender_dir[j] + conv_off[j] + act[j] + turn[j] +
                 mm.noise * noise.normal();
        float* row = x.row(u);
        for (int i = 0; i < d; ++i) {
          const double* a = mix.data() + static_cast<size_t>(i) * dk;
          double v = mm.observation_noise * noise.normal();
          for (size_t j = 0; j < dk; ++j) v += a[j] * z[j];
          row[i] = static_cast<float>(shift[static_cast<size_t>(i)] + scale[static_cast<size_t>(i)] * v);
        }
      }
    }
  }
  return ds;
}

}  // namespace

Dataset synth_dataset(const std::string& preset, uint64_t seed) {
  if (preset == "iemocap") return make_iemocap(seed, IemocapModel{});
  fail("synth: unknown preset '{}' (known: iemocap)", preset);
}

}  // namespace mman
