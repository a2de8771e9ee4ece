// The seven models and their factory: parameter counts and names, finite-difference gradients of
// every model at small sizes, frozen sub-networks, attention export, packing invariance, errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "mman/error.h"
#include "mman/layers/activation.h"
#include "mman/models/model.h"

namespace mman {
namespace {

// ---------------------------------------------------------------------------------------
// Parameter counts, derived here from the layer definitions (PyTorch's nn.LSTM and
// nn.Linear), independently of the implementation.
// ---------------------------------------------------------------------------------------

int64_t linear_params(int64_t in, int64_t out) { return in * out + out; }
int64_t lstm_params(int64_t in, int64_t h, int layers, bool bi) {
  const int dirs = bi ? 2 : 1;
  int64_t n = 0;
  for (int k = 0; k < layers; ++k) {
    const int64_t in_k = k == 0 ? in : h * dirs;
    n += dirs * (4 * h * in_k + 4 * h * h + 2 * 4 * h);  // W_ih, W_hh, b_ih, b_hh
  }
  return n;
}
struct Sizes {
  int64_t hidden = 300, fc = 200, d_model = 150;
  bool bi = false, concat = false;
};
int64_t block_params(int64_t in, int64_t outputs, int layers, const Sizes& s) {
  return lstm_params(in, s.hidden, layers, s.bi) + linear_params(s.hidden * (s.bi ? 2 : 1), s.fc) +
         linear_params(s.fc, outputs);
}
int64_t mma_params(const std::vector<int64_t>& dims, const Sizes& s) {
  int64_t n = 0;
  for (int64_t d : dims) n += linear_params(d, s.d_model) + 3 * linear_params(s.d_model, s.d_model);
  return n;
}
int64_t mma_width(size_t m, const Sizes& s) { return static_cast<int64_t>(m) * s.d_model * (s.concat ? 2 : 1); }

// Expected counts for data dims a/v/t and `outputs` logits per utterance, all sub-networks
// with the same sizes.
std::map<std::string, int64_t> expected_counts(int64_t a, int64_t v, int64_t t, int64_t outputs, const Sizes& s) {
  std::map<std::string, int64_t> e;
  e["clstm_speech"] = block_params(a, outputs, 2, s);
  e["clstm_visual"] = block_params(v, outputs, 2, s);
  e["clstm_text"] = block_params(t, outputs, 2, s);
  e["clstm_ef"] = block_params(a + v + t, outputs, 2, s);
  e["clstm_mma"] = mma_params({a, v, t}, s) + block_params(mma_width(3, s), outputs, 1, s);
  const int64_t unimodal = e["clstm_speech"] + e["clstm_visual"] + e["clstm_text"];
  e["clstm_lf"] = unimodal + block_params(3 * outputs, outputs, 1, s);
  e["mman"] = e["clstm_mma"] + unimodal + linear_params(4 * outputs, outputs);
  return e;
}

ModelConfig sized(const std::string& type, const Sizes& s) {
  ModelConfig c;
  c.type = type;
  c.hidden = static_cast<int>(s.hidden);
  c.fc = static_cast<int>(s.fc);
  c.d_model = static_cast<int>(s.d_model);
  c.bidirectional = s.bi;
  c.skip = s.concat ? MmaSkip::Concat : MmaSkip::Residual;
  if (type == "clstm_lf" || type == "mman") {
    std::vector<std::string> subs = {"clstm_speech", "clstm_visual", "clstm_text"};
    if (type == "mman") subs.insert(subs.begin(), "clstm_mma");
    for (const std::string& t : subs) c.subnets.push_back(sized(t, s));
  }
  return c;
}

DataShape iemocap_shape(int outputs = 4, int heads = 1) {
  DataShape s;
  s.modalities = {"audio", "visual", "text"};
  s.dims = {100, 512, 100};
  s.num_outputs = outputs;
  s.heads = heads;
  return s;
}

TEST(ModelFactory, ParameterCountsMatchSpec) {
  const std::map<std::string, int64_t> spec = {
      {"clstm_speech", 1265804}, {"clstm_visual", 1760204}, {"clstm_text", 1265804}, {"clstm_ef", 2000204},
      {"clstm_lf", 4729616},     {"clstm_mma", 1274504},    {"mman", 5566384}};
  const std::map<std::string, int64_t> derived = expected_counts(100, 512, 100, 4, Sizes());
  ASSERT_EQ(model_types().size(), spec.size());
  for (const std::string& type : model_types()) {
    ModelConfig c;
    c.type = type;
    const auto model = make_model(c, iemocap_shape());
    EXPECT_EQ(model->params().num_parameters(), spec.at(type)) << type;
    EXPECT_EQ(derived.at(type), spec.at(type)) << type << ": the test's own formula";
  }
}

TEST(ModelFactory, ParameterCountsScaleWithDimsClassesAndSizes) {
  struct Variant {
    int64_t a, v, t;
    int outputs, heads;
    Sizes s;
  };
  Sizes small;
  small.hidden = 7;
  small.fc = 5;
  small.d_model = 6;
  Sizes bi_concat = small;
  bi_concat.bi = true;
  bi_concat.concat = true;
  const Variant variants[] = {{100, 512, 100, 6, 1, Sizes()}, {13, 9, 4, 3, 1, small}, {13, 9, 4, 8, 4, bi_concat}};
  for (const Variant& var : variants) {
    DataShape shape;
    shape.modalities = {"audio", "visual", "text"};
    shape.dims = {var.a, var.v, var.t};
    shape.num_outputs = var.outputs;
    shape.heads = var.heads;
    const auto expected = expected_counts(var.a, var.v, var.t, var.outputs, var.s);
    for (const std::string& type : model_types()) {
      const auto model = make_model(sized(type, var.s), shape);
      EXPECT_EQ(model->params().num_parameters(), expected.at(type)) << type << " outputs " << var.outputs;
    }
  }
}

std::vector<std::string> names_of(const ParamStore& ps) {
  std::vector<std::string> n;
  for (const ParamInfo& p : ps.infos()) n.push_back(p.name);
  return n;
}

TEST(ModelFactory, ParameterNamesAreThePytorchStateDict) {
  ModelConfig c;
  c.type = "clstm_speech";
  auto speech = make_model(c, iemocap_shape());
  EXPECT_EQ(names_of(speech->params()),
            (std::vector<std::string>{"lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0",
                                      "lstm.weight_ih_l1", "lstm.weight_hh_l1", "lstm.bias_ih_l1", "lstm.bias_hh_l1",
                                      "fc.weight", "fc.bias", "out.weight", "out.bias"}));
  const ParamStore& sp = speech->params();
  EXPECT_EQ(sp.info(sp.find("lstm.weight_ih_l0")).shape, (std::vector<int64_t>{1200, 100}));
  EXPECT_EQ(sp.info(sp.find("fc.weight")).shape, (std::vector<int64_t>{200, 300}));
  EXPECT_EQ(sp.info(sp.find("out.weight")).shape, (std::vector<int64_t>{4, 200}));

  c.type = "clstm_mma";
  auto mma = make_model(c, iemocap_shape());
  const std::vector<std::string> n = names_of(mma->params());
  ASSERT_EQ(n.size(), 24u + 4u + 4u);
  EXPECT_EQ(n.front(), "mma.std.audio.weight");
  EXPECT_EQ(n[23], "mma.v.text.bias");
  EXPECT_EQ(n[24], "clstm.lstm.weight_ih_l0");
  EXPECT_EQ(n.back(), "clstm.out.bias");
  const ParamStore& mp = mma->params();
  EXPECT_EQ(mp.info(mp.find("clstm.lstm.weight_ih_l0")).shape, (std::vector<int64_t>{1200, 450}));

  c.type = "mman";
  auto mman = make_model(c, iemocap_shape());
  const ParamStore& p = mman->params();
  EXPECT_GE(p.find("subnets.clstm_mma.mma.q.visual.weight"), 0);
  EXPECT_GE(p.find("subnets.clstm_speech.lstm.weight_hh_l1"), 0);
  EXPECT_GE(p.find("subnets.clstm_text.out.bias"), 0);
  EXPECT_EQ(p.info(p.find("fusion.weight")).shape, (std::vector<int64_t>{4, 16}));
  EXPECT_EQ(names_of(p).back(), "fusion.bias");
  EXPECT_EQ(names_of(p).front(), "subnets.clstm_mma.mma.std.audio.weight");

  c.type = "clstm_lf";
  auto lf = make_model(c, iemocap_shape());
  const ParamStore& l = lf->params();
  EXPECT_EQ(l.info(l.find("clstm.lstm.weight_ih_l0")).shape, (std::vector<int64_t>{1200, 12}));
  EXPECT_EQ(l.find("clstm.lstm.weight_ih_l1"), -1);  // one LSTM layer on top
  EXPECT_EQ(names_of(l).back(), "clstm.out.bias");
}

TEST(ModelFactory, ResolvesDefaultsAndReportsSubnets) {
  ModelConfig c;
  c.type = "mman";
  auto m = make_model(c, iemocap_shape());
  EXPECT_EQ(m->config().name, "mman");
  const std::vector<ModelConfig> subs = m->subnet_configs();
  ASSERT_EQ(subs.size(), 4u);
  EXPECT_EQ(subs[0].name, "clstm_mma");
  EXPECT_EQ(subs[0].modalities, (std::vector<std::string>{"audio", "visual", "text"}));
  EXPECT_EQ(subs[0].lstm_layers, 1);
  EXPECT_EQ(subs[1].name, "clstm_speech");
  EXPECT_EQ(subs[1].modalities, (std::vector<std::string>{"audio"}));
  EXPECT_EQ(subs[1].lstm_layers, 2);
  EXPECT_EQ(subs[3].name, "clstm_text");
  c.type = "clstm_ef";
  auto ef = make_model(c, iemocap_shape());
  EXPECT_TRUE(ef->subnet_configs().empty());
  EXPECT_EQ(ef->config().lstm_layers, 2);
  // Each subnet config builds, stand-alone, the tensors the composite holds under its name.
  for (const ModelConfig& s : subs) {
    auto alone = make_model(s, iemocap_shape());
    EXPECT_EQ(m->params().copy_from(alone->params(), "", "subnets." + s.name + "."), alone->params().count());
  }
}

void expect_error(const ModelConfig& c, const DataShape& shape, const std::vector<std::string>& fragments) {
  try {
    make_model(c, shape);
    ADD_FAILURE() << "no error for type " << c.type;
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << msg << " lacks " << f;
  }
}

TEST(ModelFactory, RejectsBadConfigsWithClearMessages) {
  DataShape audio_text;
  audio_text.modalities = {"audio", "text"};
  audio_text.dims = {10, 5};
  audio_text.num_outputs = 4;
  ModelConfig c;
  c.type = "clstm_sound";
  expect_error(c, audio_text, {"unknown model type 'clstm_sound'", "clstm_speech", "mman"});
  c.type = "clstm_visual";
  expect_error(c, audio_text, {"clstm_visual", "'visual'", "audio, text"});
  c.type = "clstm_mma";
  expect_error(c, audio_text, {"clstm_mma", "'visual'"});
  c.type = "mman";  // its default clstm_mma and clstm_visual subnets need visual
  expect_error(c, audio_text, {"'visual'"});
  c.type = "clstm_speech";
  c.modalities = {"audio", "text"};
  expect_error(c, audio_text, {"exactly one modality"});
  c.type = "clstm_ef";
  c.modalities = {"audio", "audio"};
  expect_error(c, audio_text, {"'audio' is listed twice"});
  c.type = "clstm_lf";
  c.modalities = {"audio"};
  expect_error(c, audio_text, {"subnets"});
  c.modalities.clear();
  ModelConfig sub;
  sub.type = "clstm_speech";
  c.subnets = {sub, sub};
  expect_error(c, audio_text, {"two subnets are named 'clstm_speech'"});
  ModelConfig nested;
  nested.type = "clstm_lf";
  c.subnets = {nested};
  expect_error(c, audio_text, {"subnet 'clstm_lf'"});
  ModelConfig ef;
  ef.type = "clstm_ef";
  ef.modalities = {"audio", "text"};
  ef.subnets = {sub};
  expect_error(ef, audio_text, {"only clstm_lf and mman take subnets"});
  ef.subnets.clear();
  ef.dropout = 1.0f;
  expect_error(ef, audio_text, {"dropout", "[0, 1)"});
  ef.dropout = 0.5f;
  ef.lstm_layers = 0;
  expect_error(ef, audio_text, {"lstm_layers"});
  ef.lstm_layers = -1;
  DataShape bad = audio_text;
  bad.num_outputs = 6;
  bad.heads = 4;
  expect_error(ef, bad, {"heads"});
  EXPECT_NO_THROW(make_model(ef, audio_text));
}

// ---------------------------------------------------------------------------------------
// Small models on hand-packed batches
// ---------------------------------------------------------------------------------------

// Conversations of a tiny dataset, stored conversation-major per modality.
struct TinyData {
  DataShape shape;
  std::vector<int> lengths;                      // per conversation
  std::vector<std::vector<Tensor>> features;     // [conversation][modality] len x d
  std::vector<std::vector<int32_t>> targets;     // [conversation] len
};

TinyData tiny_data(int outputs, int heads, uint64_t seed, std::vector<int> lengths = {5, 2, 6, 1, 3}) {
  TinyData d;
  d.shape.modalities = {"audio", "visual", "text"};
  d.shape.dims = {3, 5, 2};
  d.shape.num_outputs = outputs;
  d.shape.heads = heads;
  d.lengths = lengths;
  const int classes = heads > 1 ? heads : outputs;
  Rng rng(seed);
  for (int len : lengths) {
    std::vector<Tensor> f;
    for (int64_t dim : d.shape.dims) {
      Tensor t(len, dim);
      for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(rng.uniform(-1.5, 1.5));
      f.push_back(std::move(t));
    }
    d.features.push_back(std::move(f));
    std::vector<int32_t> tg;
    for (int t = 0; t < len; ++t)
      tg.push_back(rng.uniform() < 0.2 ? -1 : static_cast<int32_t>(rng.below(static_cast<uint64_t>(classes))));
    d.targets.push_back(tg);
  }
  return d;
}

// Packs the chosen conversations like make_batch: sorted by non-increasing length (ties
// in the given order), time-major.
Batch pack(const TinyData& d, std::vector<int> convs) {
  std::stable_sort(convs.begin(), convs.end(), [&](int x, int y) { return d.lengths[x] > d.lengths[y]; });
  Batch b;
  b.conv_index = convs;
  std::vector<int> lens;
  for (int c : convs) lens.push_back(d.lengths[c]);
  b.layout = PackedLayout::from_lengths(lens);
  const int64_t rows = b.layout.rows();
  for (size_t m = 0; m < d.shape.dims.size(); ++m) b.features.emplace_back(rows, d.shape.dims[m]);
  b.targets.assign(static_cast<size_t>(rows), -1);
  b.utterance.assign(static_cast<size_t>(rows), -1);
  for (size_t bi = 0; bi < convs.size(); ++bi) {
    const int c = convs[bi];
    for (int t = 0; t < d.lengths[c]; ++t) {
      const int64_t r = b.layout.row(static_cast<int>(bi), t);
      for (size_t m = 0; m < d.shape.dims.size(); ++m)
        std::copy_n(d.features[c][m].row(t), d.shape.dims[m], b.features[m].row(r));
      b.targets[r] = d.targets[c][t];
      b.utterance[r] = c * 1000 + t;
      b.num_labelled += b.targets[r] >= 0;
    }
  }
  return b;
}

std::vector<int> all_convs(const TinyData& d) {
  std::vector<int> v;
  for (size_t c = 0; c < d.lengths.size(); ++c) v.push_back(static_cast<int>(c));
  return v;
}

Sizes tiny_sizes(bool concat = false, bool bi = false) {
  Sizes s;
  s.hidden = 6;
  s.fc = 5;
  s.d_model = 4;
  s.concat = concat;
  s.bi = bi;
  return s;
}

// Like test::expect_gradient_matches, but aware of ReLU kinks: the cLSTM block's ReLUs
// see every row, so a perturbation of eps can move some pre-activation across zero and
// bend the central difference. Where the central difference disagrees, the check is
// repeated with a step of eps/4: the analytic value must then match the central
// difference or, when the two one-sided differences disagree (a kink inside the step),
// the one on the side the unperturbed point lies on (either side is accepted). A wrong
// gradient matches none of them.
void expect_gradient_matches_piecewise(std::vector<float>& x, const std::vector<float>& analytic,
                                       const std::function<double()>& loss, const std::string& what, float eps,
                                       size_t max_checks, int* kinks) {
  const size_t n = x.size();
  const size_t stride = n <= max_checks ? 1 : n / max_checks;
  auto close = [](double a, double b, double atol, double rtol) {
    return std::fabs(a - b) <= atol + rtol * std::max(std::fabs(a), std::fabs(b));
  };
  int failures = 0;
  for (size_t i = 0; i < n && failures < 5; i += stride) {
    const float saved = x[i];
    auto at = [&](float v) {
      x[i] = v;
      const double l = loss();
      x[i] = saved;
      return l;
    };
    const double a = analytic[i];
    const double central = (at(saved + eps) - at(saved - eps)) / (2.0 * eps);
    if (close(a, central, 5e-4, 3e-2)) continue;
    const float e = eps / 4;
    const double mid = at(saved), up = at(saved + e), down = at(saved - e);
    const double c2 = (up - down) / (2.0 * e), right = (up - mid) / e, left = (mid - down) / e;
    const bool ok = close(a, c2, 2e-3, 3e-2) ||
                    (!close(left, right, 2e-3, 3e-2) && (close(a, left, 2e-3, 5e-2) || close(a, right, 2e-3, 5e-2)));
    if (ok) {
      ++*kinks;
      continue;
    }
    ++failures;
    ADD_FAILURE() << what << "[" << i << "]: analytic " << a << " vs numeric " << central << " (step " << eps
                  << "), " << c2 << " (step " << e << "; one-sided " << left << ", " << right << ")";
  }
}

// Central differences of L = sum(R * logits) for every parameter tensor (up to
// `per_tensor` entries each) against the model's backward; frozen parameters must have
// no gradient at all.
void check_model_gradients(Model& model, const Batch& batch, Mode mode, const std::string& what,
                           size_t per_tensor = 12) {
  SCOPED_TRACE(what);
  const DropoutKey key{17, 4};
  const Tensor& logits = model.forward(batch, mode, key);
  Tensor r(logits.rows(), logits.cols());
  Rng rng(5);
  for (int64_t i = 0; i < r.size(); ++i) r.data()[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  ParamStore& ps = model.params();
  ps.zero_grads();
  model.backward(batch, r);
  auto loss = [&]() {
    const Tensor& y = model.forward(batch, mode, key);
    double s = 0.0;
    for (int64_t i = 0; i < y.size(); ++i) s += static_cast<double>(y.data()[i]) * r.data()[i];
    return s;
  };
  int kinks = 0, checked = 0;
  for (int id = 0; id < ps.count(); ++id) {
    const ParamInfo& info = ps.info(id);
    std::vector<float> w(ps.value(id), ps.value(id) + info.size);
    const std::vector<float> g(ps.grad(id), ps.grad(id) + info.size);
    if (!info.trainable) {
      for (float v : g) ASSERT_EQ(v, 0.0f) << info.name << " is frozen but has a gradient";
      continue;
    }
    auto loss_w = [&]() {
      std::copy(w.begin(), w.end(), ps.value(id));
      return loss();
    };
    expect_gradient_matches_piecewise(w, g, loss_w, info.name, 1e-3f, per_tensor, &kinks);
    checked += static_cast<int>(std::min(info.size, per_tensor));
    std::copy(w.begin(), w.end(), ps.value(id));
  }
  // Kinks are the exception: most points must pass the plain central difference.
  EXPECT_LT(kinks, std::max(3, checked / 10)) << kinks << " of " << checked << " checks needed the kink fallback";
}

std::unique_ptr<Model> tiny_model(const ModelConfig& c, const DataShape& shape, uint64_t seed) {
  auto m = make_model(c, shape);
  Rng rng(seed);
  m->init(rng);
  return m;
}

TEST(ModelGradients, UnimodalAndEarlyFusion) {
  const TinyData d = tiny_data(4, 1, 1);
  const Batch b = pack(d, all_convs(d));
  for (const char* type : {"clstm_speech", "clstm_visual", "clstm_text", "clstm_ef"})
    for (Mode mode : {Mode::Eval, Mode::Train}) {
      auto m = tiny_model(sized(type, tiny_sizes()), d.shape, 3);
      check_model_gradients(*m, b, mode, std::string(type) + (mode == Mode::Train ? " train" : " eval"));
    }
}

TEST(ModelGradients, BidirectionalCLstm) {
  const TinyData d = tiny_data(4, 1, 2);
  const Batch b = pack(d, all_convs(d));
  auto m = tiny_model(sized("clstm_text", tiny_sizes(false, true)), d.shape, 4);
  check_model_gradients(*m, b, Mode::Train, "clstm_text bidirectional");
}

TEST(ModelGradients, ClstmMmaBothScoresBothSkips) {
  const TinyData d = tiny_data(4, 1, 3);
  const Batch b = pack(d, all_convs(d));
  for (MmaScore score : {MmaScore::ScaledDot, MmaScore::Cosine})
    for (bool concat : {false, true})
      for (Mode mode : {Mode::Eval, Mode::Train}) {
        ModelConfig c = sized("clstm_mma", tiny_sizes(concat));
        c.score = score;
        auto m = tiny_model(c, d.shape, 5);
        check_model_gradients(*m, b, mode,
                              std::string("clstm_mma ") + (score == MmaScore::Cosine ? "cosine " : "scaled_dot ") +
                                  (concat ? "concat " : "residual ") + (mode == Mode::Train ? "train" : "eval"));
      }
}

TEST(ModelGradients, LateFusionTrainableAndFrozen) {
  const TinyData d = tiny_data(4, 1, 4);
  const Batch b = pack(d, all_convs(d));
  for (Mode mode : {Mode::Eval, Mode::Train}) {
    auto m = tiny_model(sized("clstm_lf", tiny_sizes()), d.shape, 6);
    check_model_gradients(*m, b, mode, std::string("clstm_lf end-to-end ") + (mode == Mode::Train ? "train" : "eval"),
                          6);
    m->params().set_trainable("subnets.", false);
    check_model_gradients(*m, b, mode, std::string("clstm_lf frozen ") + (mode == Mode::Train ? "train" : "eval"));
  }
}

TEST(ModelGradients, MmanBothScoresBothSkipsAndBinaryHeads) {
  for (int heads : {1, 4}) {
    const TinyData d = tiny_data(heads == 1 ? 4 : 8, heads, 5);
    const Batch b = pack(d, all_convs(d));
    for (MmaScore score : {MmaScore::ScaledDot, MmaScore::Cosine})
      for (bool concat : {false, true}) {
        ModelConfig c = sized("mman", tiny_sizes(concat));
        c.subnets[0].score = score;
        const std::string what = std::string("mman ") + (score == MmaScore::Cosine ? "cosine " : "scaled_dot ") +
                                 (concat ? "concat " : "residual ") + (heads > 1 ? "binary4 " : "");
        auto m = tiny_model(c, d.shape, 7);
        check_model_gradients(*m, b, Mode::Train, what + "end-to-end", 6);
        m->params().set_trainable("subnets.", false);
        check_model_gradients(*m, b, Mode::Train, what + "frozen");
      }
  }
}

TEST(ModelGradients, AccumulateAcrossBackwardCalls) {
  const TinyData d = tiny_data(4, 1, 6);
  const Batch b = pack(d, all_convs(d));
  auto m = tiny_model(sized("mman", tiny_sizes()), d.shape, 8);
  const Tensor& logits = m->forward(b, Mode::Train, DropoutKey{1, 1});
  Tensor dl(logits.rows(), logits.cols());
  for (int64_t i = 0; i < dl.size(); ++i) dl.data()[i] = 0.1f * static_cast<float>(i % 7) - 0.3f;
  m->params().zero_grads();
  m->backward(b, dl);
  const std::vector<float> once = m->params().grads();
  m->backward(b, dl);
  double norm = 0.0;
  for (size_t i = 0; i < once.size(); ++i) {
    EXPECT_NEAR(m->params().grads()[i], 2.0f * once[i], 1e-6f + 1e-5f * std::fabs(once[i]));
    norm += std::fabs(once[i]);
  }
  EXPECT_GT(norm, 0.0);
}

// ---------------------------------------------------------------------------------------
// Forward behaviour
// ---------------------------------------------------------------------------------------

TEST(ModelForward, ConversationsDoNotInfluenceEachOther) {
  // A conversation's logits are the same whatever else shares its batch (packing,
  // ragged ends, bidirectional included).
  const TinyData d = tiny_data(4, 1, 7);
  const Batch all = pack(d, all_convs(d));
  for (const char* type : {"clstm_ef", "clstm_mma", "mman", "clstm_lf"})
    for (bool bi : {false, true}) {
      auto m = tiny_model(sized(type, tiny_sizes(false, bi)), d.shape, 9);
      const Tensor full = m->forward(all, Mode::Eval, DropoutKey{});
      for (int c : {1, 2}) {
        const Batch one = pack(d, {c});
        const Tensor& alone = m->forward(one, Mode::Eval, DropoutKey{});
        const int bi_all = static_cast<int>(std::find(all.conv_index.begin(), all.conv_index.end(), c) -
                                            all.conv_index.begin());
        for (int t = 0; t < d.lengths[c]; ++t)
          for (int64_t j = 0; j < alone.cols(); ++j)
            EXPECT_NEAR(alone.at(one.layout.row(0, t), j), full.at(all.layout.row(bi_all, t), j), 1e-5)
                << type << " conv " << c << " t " << t;
      }
    }
}

TEST(ModelForward, DropoutIsKeyedAndEvalIsDeterministic) {
  const TinyData d = tiny_data(4, 1, 8);
  const Batch b = pack(d, all_convs(d));
  auto m = tiny_model(sized("clstm_mma", tiny_sizes()), d.shape, 10);
  const Tensor e1 = m->forward(b, Mode::Eval, DropoutKey{1, 1});
  const Tensor e2 = m->forward(b, Mode::Eval, DropoutKey{2, 9});
  const Tensor t1 = m->forward(b, Mode::Train, DropoutKey{1, 1});
  const Tensor t1b = m->forward(b, Mode::Train, DropoutKey{1, 1});
  const Tensor t2 = m->forward(b, Mode::Train, DropoutKey{1, 2});
  auto same = [](const Tensor& x, const Tensor& y) {
    return std::equal(x.data(), x.data() + x.size(), y.data());
  };
  EXPECT_TRUE(same(e1, e2));
  EXPECT_TRUE(same(t1, t1b));
  EXPECT_FALSE(same(t1, t2));
  EXPECT_FALSE(same(t1, e1));
}

TEST(ModelForward, FrozenSubnetsRunInEvalModeWhileTraining) {
  // mman's fusion head has no dropout: with frozen subnets, a Train-mode forward must
  // equal the Eval-mode one; with trainable subnets it must not.
  const TinyData d = tiny_data(4, 1, 9);
  const Batch b = pack(d, all_convs(d));
  auto m = tiny_model(sized("mman", tiny_sizes()), d.shape, 11);
  const Tensor eval = m->forward(b, Mode::Eval, DropoutKey{3, 3});
  const Tensor train = m->forward(b, Mode::Train, DropoutKey{3, 3});
  EXPECT_FALSE(std::equal(eval.data(), eval.data() + eval.size(), train.data()));
  m->params().set_trainable("subnets.", false);
  const Tensor frozen = m->forward(b, Mode::Train, DropoutKey{3, 3});
  for (int64_t i = 0; i < eval.size(); ++i) EXPECT_EQ(frozen.data()[i], eval.data()[i]);
  // Freezing one subnet only: the others still train (so the output changes again).
  m->params().set_trainable("subnets.clstm_text.", true);
  const Tensor partly = m->forward(b, Mode::Train, DropoutKey{3, 3});
  EXPECT_FALSE(std::equal(eval.data(), eval.data() + eval.size(), partly.data()));
}

TEST(ModelForward, FusionReadsCopiedSubnetProbabilities) {
  // Stage 1 -> stage 2: copy stand-alone sub-networks into mman, then make the fusion
  // head select one sub-network's probabilities; the logits must be that network's
  // softmax (per head for binary4).
  for (int heads : {1, 4}) {
    const int outputs = heads == 1 ? 4 : 8;
    const TinyData d = tiny_data(outputs, heads, 10);
    const Batch b = pack(d, all_convs(d));
    auto m = make_model(sized("mman", tiny_sizes()), d.shape);
    const std::vector<ModelConfig> subs = m->subnet_configs();
    ASSERT_EQ(subs.size(), 4u);
    for (size_t s = 0; s < subs.size(); ++s) {
      auto alone = tiny_model(subs[s], d.shape, 100 + s);
      m->params().copy_from(alone->params(), "", "subnets." + subs[s].name + ".");
      ParamStore& p = m->params();
      float* w = p.value(p.find("fusion.weight"));
      std::fill_n(w, outputs * 4 * outputs, 0.0f);
      std::fill_n(p.value(p.find("fusion.bias")), outputs, 0.0f);
      for (int j = 0; j < outputs; ++j) w[j * 4 * outputs + static_cast<int>(s) * outputs + j] = 1.0f;
      const Tensor fused = m->forward(b, Mode::Eval, DropoutKey{});
      const Tensor& own = alone->forward(b, Mode::Eval, DropoutKey{});
      Tensor probs(own.rows(), own.cols());
      softmax_forward(own.data(), outputs, own.rows(), outputs, heads > 1 ? 2 : outputs, probs.data(), outputs);
      for (int64_t i = 0; i < probs.size(); ++i) EXPECT_NEAR(fused.data()[i], probs.data()[i], 1e-6) << subs[s].name;
      if (heads > 1) {
        for (int64_t r = 0; r < fused.rows(); ++r)
          for (int k = 0; k < heads; ++k) EXPECT_NEAR(fused.at(r, 2 * k) + fused.at(r, 2 * k + 1), 1.0, 1e-5);
      }
    }
  }
}

TEST(ModelForward, EarlyFusionEqualsOneBlockOnTheConcatenation) {
  // Data with an extra modality "at" that holds [audio, text]: clstm_ef over audio and
  // text must equal a one-modality network over "at" with the same weights.
  TinyData d = tiny_data(4, 1, 11);
  d.shape.modalities.push_back("at");
  d.shape.dims.push_back(5);
  for (size_t c = 0; c < d.lengths.size(); ++c) {
    Tensor at(d.lengths[c], 5);
    for (int t = 0; t < d.lengths[c]; ++t) {
      std::copy_n(d.features[c][0].row(t), 3, at.row(t));
      std::copy_n(d.features[c][2].row(t), 2, at.row(t) + 3);
    }
    d.features[c].push_back(std::move(at));
  }
  const Batch b = pack(d, all_convs(d));
  ModelConfig ef = sized("clstm_ef", tiny_sizes());
  ef.modalities = {"audio", "text"};
  ModelConfig one = sized("clstm_speech", tiny_sizes());
  one.modalities = {"at"};
  auto m_ef = tiny_model(ef, d.shape, 12);
  auto m_one = make_model(one, d.shape);
  EXPECT_EQ(m_one->params().copy_from(m_ef->params(), "", ""), m_ef->params().count());
  const Tensor a = m_ef->forward(b, Mode::Eval, DropoutKey{});
  const Tensor& c = m_one->forward(b, Mode::Eval, DropoutKey{});
  for (int64_t i = 0; i < a.size(); ++i) EXPECT_EQ(a.data()[i], c.data()[i]);
}

TEST(ModelForward, AttentionExportForMmaModelsOnly) {
  const TinyData d = tiny_data(4, 1, 12);
  const Batch b = pack(d, all_convs(d));
  for (const std::string& type : model_types()) {
    auto m = tiny_model(sized(type, tiny_sizes()), d.shape, 13);
    const Tensor& logits = m->forward(b, Mode::Eval, DropoutKey{});
    EXPECT_EQ(logits.rows(), b.rows());
    EXPECT_EQ(logits.cols(), 4);
    const Tensor* att = m->attention();
    if (type != "clstm_mma" && type != "mman") {
      EXPECT_EQ(att, nullptr) << type;
      continue;
    }
    ASSERT_NE(att, nullptr) << type;
    ASSERT_EQ(att->rows(), b.rows());
    ASSERT_EQ(att->cols(), 9);
    for (int64_t r = 0; r < att->rows(); ++r)
      for (int q = 0; q < 3; ++q) {
        double s = 0.0;
        for (int k = 0; k < 3; ++k) {
          EXPECT_GE(att->at(r, 3 * q + k), 0.0f);
          s += att->at(r, 3 * q + k);
        }
        EXPECT_NEAR(s, 1.0, 1e-6) << type;
      }
  }
}

TEST(ModelForward, RejectsBatchesThatDoNotMatchTheData) {
  const TinyData d = tiny_data(4, 1, 13);
  Batch b = pack(d, all_convs(d));
  auto m = tiny_model(sized("clstm_visual", tiny_sizes()), d.shape, 14);
  b.features[1].resize(b.rows(), 4);  // visual should be 5 wide
  EXPECT_THROW(m->forward(b, Mode::Eval, DropoutKey{}), Error);
  b.features.resize(1);
  EXPECT_THROW(m->forward(b, Mode::Eval, DropoutKey{}), Error);
}

}  // namespace
}  // namespace mman
