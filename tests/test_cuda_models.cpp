// GPU models and the GPU training loop against the CPU backend: every model type's forward,
// backward, training step, staged training, resume and evaluation. They need a usable device;
// elsewhere they skip with the runtime's reason. The backend selection tests run everywhere.
//
// The same file builds a second executable, test_cuda_models_emulated, in builds without the
// CUDA backend (MMAN_DEVICE_EMULATION): there the "device" is the host emulation of
// tests/emulation (kernels through the SIMT layer, cuBLAS by a reference GEMM, cuDNN's LSTM by
// the CPU one), and every GPU test runs. That checks all of the GPU code path except the
// libraries' own semantics and real device effects; the native run checks those.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "mman/cuda_info.h"
#include "mman/data/batch.h"
#include "mman/data/protocol.h"
#include "mman/error.h"
#include "mman/exp/pipeline.h"
#include "mman/layers/loss.h"
#include "mman/models/model.h"
#include "mman/train/checkpoint.h"
#include "mman/train/trainer.h"
#include "support/cuda_test.h"
#include "support/nan_stop.h"
#include "support/test_support.h"
#include "support/tiny_dataset.h"

#ifdef MMAN_WITH_CUDA
#include "mman/cuda/model.h"
#endif

namespace mman {
namespace {

using test::cuda_unusable_reason;

struct Fixture {
  Dataset ds;
  LabelProtocol protocol;
  SplitIndices splits;
  DataShape shape;
};

// Ragged conversations (1 to 12 utterances), some unlabelled rows, three modalities.
Fixture make_fixture(const std::string& protocol = "iemocap4", int train = 6, int valid = 3, int test = 3) {
  test::TinySpec spec;
  spec.train_lengths.clear();
  spec.valid_lengths.clear();
  spec.test_lengths.clear();
  Rng rng(17);
  for (int i = 0; i < train; ++i) spec.train_lengths.push_back(1 + static_cast<int>(rng.below(12)));
  for (int i = 0; i < valid; ++i) spec.valid_lengths.push_back(1 + static_cast<int>(rng.below(12)));
  for (int i = 0; i < test; ++i) spec.test_lengths.push_back(1 + static_cast<int>(rng.below(12)));
  spec.dims = {7, 9, 5};
  Fixture f;
  f.ds = test::tiny_dataset(spec);
  f.protocol = make_protocol(protocol, f.ds.label_names);
  int c = 0;
  for (int i = 0; i < train; ++i) f.splits.train.push_back(c++);
  for (int i = 0; i < valid; ++i) f.splits.valid.push_back(c++);
  for (int i = 0; i < test; ++i) f.splits.test.push_back(c++);
  f.splits.valid_from_file = true;
  f.shape = data_shape_of(f.ds, f.protocol);
  return f;
}

// Small sizes for every part, sub-networks included (a composite's own sizes configure only
// its top part).
ModelConfig small_config(const std::string& type) {
  auto sized = [](ModelConfig c) {
    c.hidden = 8;
    c.fc = 6;
    c.d_model = 10;
    return c;
  };
  ModelConfig c;
  c.type = type;
  c = sized(c);
  if (type == "clstm_lf" || type == "mman") {
    std::vector<std::string> subs = {"clstm_speech", "clstm_visual", "clstm_text"};
    if (type == "mman") subs.insert(subs.begin(), "clstm_mma");
    for (const std::string& t : subs) {
      ModelConfig s;
      s.type = t;
      c.subnets.push_back(sized(s));
    }
  }
  return c;
}

const std::vector<std::string> kTypes = {"clstm_speech", "clstm_visual", "clstm_text", "clstm_ef",
                                         "clstm_lf",     "clstm_mma",    "mman"};

// ---- backend selection: everywhere ----

TEST(CudaModels, UnknownBackendIsRejected) {
  const Fixture f = make_fixture();
  try {
    make_model(small_config("clstm_speech"), f.shape, "gpu");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "unknown backend 'gpu' (expected cpu or cuda)");
  }
}

TEST(CudaModels, CudaModelWithoutAUsableDeviceFailsWithTheReason) {
  if (query_cuda().usable()) GTEST_SKIP() << "a CUDA device is usable here";
  const Fixture f = make_fixture();
  try {
    make_model(small_config("clstm_speech"), f.shape, "cuda");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_TRUE(what.find("no usable CUDA device: ") == 0 || what.find("this build has no CUDA backend") != std::string::npos)
        << what;
  }
}

TEST(CudaModels, BackendResolution) {
  std::string note;
  EXPECT_EQ(resolve_backend("cpu", &note), "cpu");
  EXPECT_TRUE(note.empty());
  const CudaState s = query_cuda();
  if (s.usable()) {
    EXPECT_EQ(resolve_backend("cuda", &note), "cuda");
    EXPECT_EQ(resolve_backend("auto", &note), "cuda");
    EXPECT_NE(note.find("backend auto: training on the GPU"), std::string::npos) << note;
  } else {
    EXPECT_EQ(resolve_backend("auto", &note), "cpu");
    EXPECT_NE(note.find("running on the CPU"), std::string::npos) << note;
    const std::string expected = s.compiled ? "backend cuda: no usable CUDA device: " + s.unusable_reason
                                            : std::string("backend cuda: this build has no CUDA backend");
    EXPECT_EQ(test::error_message([] { resolve_backend("cuda", nullptr); }).find(expected), 0u);
  }
  EXPECT_EQ(test::error_message([] { resolve_backend("tpu", nullptr); }), "backend 'tpu': expected auto, cpu or cuda");
}

TEST(CudaModels, CpuModelsReportTheirBackendAndMakeCpuSiblings) {
  const Fixture f = make_fixture();
  auto m = make_model(small_config("clstm_lf"), f.shape, "cpu");
  EXPECT_EQ(m->backend(), "cpu");
  EXPECT_EQ(m->device_training(), nullptr);
  auto sub = m->make_like(small_config("clstm_text"), f.shape);
  EXPECT_EQ(sub->backend(), "cpu");
  EXPECT_EQ(sub->config().type, "clstm_text");
}

#ifndef MMAN_WITH_CUDA

TEST(CudaModels, NeedTheCudaBackend) { MMAN_REQUIRE_CUDA(); }

#else

// ---- GPU against CPU ----

// A model on the device (the shared context; the emulated one in the emulation build, where
// make_model's "cuda" backend does not exist because the core library is built without CUDA).
std::unique_ptr<Model> gpu_model(const ModelConfig& c, const DataShape& shape) {
  return cuda::make_cuda_model(c, shape, cuda::shared_context());
}

constexpr double kUnit = 1.0 / (1 << 24);  // float32's unit roundoff

// max |a - b| over max |b|: the normalised error of STYLE practice 5.
double normalized_error(const float* a, const float* b, size_t n) {
  double diff = 0, mag = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    mag = std::max(mag, std::fabs(static_cast<double>(b[i])));
  }
  return mag > 0 ? diff / mag : diff;
}

// Rounding-error growth through a network: `k` the longest dot product (gate pre-activations,
// plus the rows a gradient sums over), `t` the longest conversation (the recurrence), `depth`
// the layers in sequence; 8 u k t depth, the bound tests/test_cuda_backend.cpp uses for the LSTM.
double bound(int64_t k, int64_t t, int64_t depth) { return 8.0 * kUnit * static_cast<double>(k * t * depth); }

int64_t longest(const Fixture& f) {
  int64_t t = 0;
  for (int c = 0; c < f.ds.num_conversations(); ++c) t = std::max<int64_t>(t, f.ds.conv_length(c));
  return t;
}

// The same model on both backends with the same initial weights.
struct Pair {
  std::unique_ptr<Model> cpu, gpu;
};
Pair make_pair(const ModelConfig& c, const Fixture& f, uint64_t seed = 5) {
  Pair p;
  p.cpu = make_model(c, f.shape, "cpu");
  p.gpu = gpu_model(c, f.shape);
  init_model(*p.cpu, seed);
  init_model(*p.gpu, seed);
  EXPECT_EQ(p.cpu->params().values(), p.gpu->params().values());
  return p;
}

// Forward (logits, attention) and backward (every gradient) in both modes; the gradient of the
// loss is the CPU's masked cross-entropy gradient, given to both.
void expect_forward_backward_match(Model& cpu, Model& gpu, const Fixture& f, const std::vector<int>& convs,
                                   int64_t k) {
  Batch batch;
  make_batch(f.ds, f.protocol, convs, batch);
  const int64_t t = longest(f);
  for (Mode mode : {Mode::Train, Mode::Eval}) {
    SCOPED_TRACE(mode == Mode::Train ? "training mode" : "evaluation mode");
    const DropoutKey key{3, 9};
    const Tensor& lc = cpu.forward(batch, mode, key);
    const Tensor& lg = gpu.forward(batch, mode, key);
    ASSERT_EQ(lg.rows(), lc.rows());
    ASSERT_EQ(lg.cols(), lc.cols());
    const double fwd = bound(k, t, 6);
    EXPECT_LE(normalized_error(lg.data(), lc.data(), static_cast<size_t>(lc.size())), fwd);
    ASSERT_EQ(cpu.attention() == nullptr, gpu.attention() == nullptr);
    if (cpu.attention() != nullptr) {
      EXPECT_LE(normalized_error(gpu.attention()->data(), cpu.attention()->data(),
                                 static_cast<size_t>(cpu.attention()->size())),
                fwd);
    }
    Tensor dlogits;
    masked_cross_entropy(lc, batch.targets.data(), f.protocol.heads, &dlogits);
    cpu.params().zero_grads();
    gpu.params().zero_grads();
    cpu.backward(batch, dlogits);
    gpu.backward(batch, dlogits);
    const double bwd = bound(k + batch.rows(), t, 12);
    for (const ParamInfo& p : cpu.params().infos()) {
      SCOPED_TRACE(p.name);
      const float* gc = cpu.params().grads().data() + p.offset;
      const float* gg = gpu.params().grads().data() + p.offset;
      EXPECT_LE(normalized_error(gg, gc, p.size), bwd);
    }
  }
}

class CudaEveryModel : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaEveryModel, ForwardAndBackwardMatchTheCpu) {
  MMAN_REQUIRE_CUDA();
  for (const std::string protocol : {"iemocap4", "binary4"}) {
    SCOPED_TRACE(protocol);
    const Fixture f = make_fixture(protocol);
    Pair p = make_pair(small_config(GetParam()), f);
    expect_forward_backward_match(*p.cpu, *p.gpu, f, f.splits.train, 40);
  }
}

// One optimiser step (one batch holding every training conversation, gradient clipping on):
// Adam's first update is lr * g / (|g| + eps), about lr * sign(g), so an element whose CPU
// gradient is within the gradient tolerance of zero may move either way (|diff| <= 2 lr); every
// other element must agree to rounding.
void expect_one_step_matches(const std::string& type, const TrainConfig& config) {
  const Fixture f = make_fixture();
  Pair p = make_pair(small_config(type), f);
  // The CPU gradient of that step, to know which elements are near zero.
  Batch batch;
  make_batch(f.ds, f.protocol, f.splits.train, batch);
  TrainConfig tc = config;
  tc.batch_size = static_cast<int>(f.splits.train.size());
  tc.max_epochs = 1;
  SplitIndices no_valid = f.splits;
  no_valid.valid.clear();
  auto probe = make_model(small_config(type), f.shape, "cpu");
  init_model(*probe, 5);
  const Tensor& logits = probe->forward(batch, Mode::Train, DropoutKey{tc.seed, 0});
  Tensor dlogits;
  masked_cross_entropy(logits, batch.targets.data(), f.protocol.heads, &dlogits);
  probe->params().zero_grads();
  probe->backward(batch, dlogits);
  const std::vector<float> g = probe->params().grads();
  double gmax = 0;
  for (float x : g) gmax = std::max(gmax, std::fabs(static_cast<double>(x)));

  const TrainResult rc = train_model(*p.cpu, f.ds, f.protocol, no_valid, tc);
  const TrainResult rg = train_model(*p.gpu, f.ds, f.protocol, no_valid, tc);
  ASSERT_EQ(rc.steps, 1);
  ASSERT_EQ(rg.steps, 1);
  EXPECT_NEAR(rg.history[0].train_loss, rc.history[0].train_loss, 1e-5 * std::fabs(rc.history[0].train_loss));
  EXPECT_EQ(rg.history[0].train_accuracy, rc.history[0].train_accuracy);
  const double gtol = bound(40 + batch.rows(), longest(f), 12) * gmax;
  // A clamp at clip_value makes every gradient beyond it exactly +-clip_value on both sides,
  // whatever the rounding below it.
  const std::vector<float>& vc = p.cpu->params().values();
  const std::vector<float>& vg = p.gpu->params().values();
  int64_t sign_flips = 0;
  for (size_t i = 0; i < vc.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(vg[i]) - vc[i]);
    if (std::fabs(g[i]) <= gtol) {
      EXPECT_LE(diff, 2 * tc.lr * 1.0001) << "element " << i;
      sign_flips += diff > 1e-6;
    } else {
      EXPECT_LE(diff, 1e-6 + 1e-5 * std::fabs(vc[i])) << "element " << i << " gradient " << g[i];
    }
  }
  EXPECT_LE(sign_flips, static_cast<int64_t>(vc.size() / 100)) << "too many near-zero gradients moved apart";
}

TEST_P(CudaEveryModel, OneTrainingStepMatchesTheCpu) {
  MMAN_REQUIRE_CUDA();
  TrainConfig tc;  // clipping by norm (5), as the paper's runs
  tc.seed = 2;
  expect_one_step_matches(GetParam(), tc);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, CudaEveryModel, ::testing::ValuesIn(kTypes));

TEST(CudaModels, PaperSizeClstmMmaMatchesTheCpu) {
  MMAN_REQUIRE_CUDA();
  const Fixture f = make_fixture();
  ModelConfig c;
  c.type = "clstm_mma";  // SPEC sizes: hidden 300, fc 200, d_model 150 (the fused kernels' case)
  Pair p = make_pair(c, f);
  expect_forward_backward_match(*p.cpu, *p.gpu, f, f.splits.train, 450);
}

// The other clipping settings of the device step: a clamp first (the authors' 1e-3) then the
// norm, and no clipping at all (the norm is then only checked for finiteness).
TEST(CudaModels, ClampedAndUnclippedStepsMatchTheCpu) {
  MMAN_REQUIRE_CUDA();
  TrainConfig clamp;
  clamp.clip_value = 1e-3;
  clamp.seed = 4;
  expect_one_step_matches("clstm_mma", clamp);
  TrainConfig none;
  none.clip_norm = 0;
  none.seed = 4;
  expect_one_step_matches("clstm_ef", none);
}

// A NaN reaching the loss on the device stops training with the CPU's message, and the state
// file keeps the last completed epoch (written from the device's parameters).
TEST(CudaModels, ANonFiniteLossStopsTrainingWithTheCpuMessage) {
  MMAN_REQUIRE_CUDA();
  test::TempDir dir;
  Fixture f = make_fixture();
  auto model = gpu_model(small_config("clstm_speech"), f.shape);
  init_model(*model, 0);
  test::expect_nan_loss_stops_and_keeps_epoch_1(*model, f.ds, f.protocol, f.splits, dir);
  // The model's host copy came back from the device when training stopped: all finite.
  for (float v : model->params().values()) ASSERT_TRUE(std::isfinite(v));
}

TEST(CudaModels, FusedAndUnfusedMmaAgree) {
  MMAN_REQUIRE_CUDA();
  const Fixture f = make_fixture();
  for (const std::string type : {"clstm_mma", "mman"}) {
    SCOPED_TRACE(type);
    Pair p = make_pair(small_config(type), f);
    auto unfused = gpu_model(small_config(type), f.shape);
    init_model(*unfused, 5);
    cuda::set_fused_mma(*unfused, false);
    expect_forward_backward_match(*p.gpu, *unfused, f, f.splits.train, 40);
  }
  auto cpu = make_model(small_config("clstm_mma"), f.shape, "cpu");
  EXPECT_THROW(cuda::set_fused_mma(*cpu, false), Error);
}

// Stage 2 of a composite: the sub-networks are frozen; on the GPU they get no gradient, run in
// evaluation mode, and keep their values through training.
TEST(CudaModels, FrozenSubnetsStayFrozenOnTheGpu) {
  MMAN_REQUIRE_CUDA();
  const Fixture f = make_fixture();
  for (const std::string type : {"clstm_lf", "mman"}) {
    SCOPED_TRACE(type);
    Pair p = make_pair(small_config(type), f);
    p.cpu->params().set_trainable("subnets.", false);
    p.gpu->params().set_trainable("subnets.", false);
    expect_forward_backward_match(*p.cpu, *p.gpu, f, f.splits.train, 40);
    for (const ParamInfo& info : p.gpu->params().infos()) {
      if (info.name.rfind("subnets.", 0) != 0) continue;
      for (size_t i = 0; i < info.size; ++i) ASSERT_EQ(p.gpu->params().grads()[info.offset + i], 0.0f) << info.name;
    }
    const std::vector<float> before = p.gpu->params().values();
    TrainConfig tc;
    tc.max_epochs = 2;
    tc.batch_size = 4;
    train_model(*p.gpu, f.ds, f.protocol, f.splits, tc);
    for (const ParamInfo& info : p.gpu->params().infos()) {
      const bool frozen = info.name.rfind("subnets.", 0) == 0;
      bool same = true;
      for (size_t i = 0; i < info.size; ++i) same = same && p.gpu->params().values()[info.offset + i] == before[info.offset + i];
      if (frozen) {
        EXPECT_TRUE(same) << info.name << " changed while frozen";
      }
    }
  }
}

// The whole staged protocol on the GPU: stage 1 trains GPU sub-networks, stage 2 the fusion.
TEST(CudaModels, StagedTrainingRunsOnTheGpu) {
  MMAN_REQUIRE_CUDA();
  const Fixture f = make_fixture();
  for (const std::string type : {"clstm_lf", "mman"}) {
    SCOPED_TRACE(type);
    Pair p = make_pair(small_config(type), f);
    TrainConfig tc;
    tc.max_epochs = 3;
    tc.batch_size = 4;
    SubnetCache cache_cpu, cache_gpu;
    const StagedResult sc = train_staged(*p.cpu, f.ds, f.protocol, f.splits, tc, &cache_cpu);
    const StagedResult sg = train_staged(*p.gpu, f.ds, f.protocol, f.splits, tc, &cache_gpu);
    ASSERT_EQ(sg.subnets.size(), sc.subnets.size());
    for (const auto& [name, trained] : cache_gpu) EXPECT_EQ(trained.model->backend(), "cuda") << name;
    for (size_t s = 0; s < sc.subnets.size(); ++s) {
      ASSERT_EQ(sg.subnets[s].second.history.size(), sc.subnets[s].second.history.size());
      // The first epoch's loss averages the first steps, which start from the same weights.
      EXPECT_NEAR(sg.subnets[s].second.history[0].train_loss, sc.subnets[s].second.history[0].train_loss,
                  1e-2 * sc.subnets[s].second.history[0].train_loss);
    }
    ASSERT_EQ(sg.result.history.size(), sc.result.history.size());
    for (const EpochRecord& r : sg.result.history) EXPECT_TRUE(std::isfinite(r.train_loss));
    // The composite's sub-network parameters are the stage-1 models', frozen.
    for (const auto& [name, trained] : cache_gpu) {
      for (const ParamInfo& info : trained.model->params().infos()) {
        const int id = p.gpu->params().find("subnets." + name + "." + info.name);
        ASSERT_GE(id, 0);
        EXPECT_FALSE(p.gpu->params().info(id).trainable);
        for (size_t i = 0; i < info.size; ++i)
          ASSERT_EQ(p.gpu->params().value(id)[i], trained.model->params().values()[info.offset + i]) << info.name;
      }
    }
    const Evaluation ev = evaluate(*p.gpu, f.ds, f.protocol, f.splits.test);
    EXPECT_GE(ev.metrics.accuracy, 0.0);
    EXPECT_EQ(ev.predictions.size(), ev.targets.size() * static_cast<size_t>(f.protocol.heads));
  }
}

// Stopping mid-epoch and resuming from the state file gives the uninterrupted run's result bit
// for bit on the GPU too (the device computations are deterministic on one device).
TEST(CudaModels, ResumeOnTheGpuIsBitIdentical) {
  MMAN_REQUIRE_CUDA();
  const Fixture f = make_fixture();
  test::TempDir dir;
  TrainConfig tc;
  tc.max_epochs = 3;
  tc.batch_size = 2;
  tc.patience = 0;
  auto full = gpu_model(small_config("clstm_mma"), f.shape);
  init_model(*full, 5);
  const TrainResult rf = train_model(*full, f.ds, f.protocol, f.splits, tc);

  auto part = gpu_model(small_config("clstm_mma"), f.shape);
  init_model(*part, 5);
  TrainHooks hooks;
  const std::string state = dir.file("state.h5");
  hooks.state_path = [&](const std::string&) { return state; };
  int polls = 0;
  hooks.should_stop = [&] { return ++polls == 5; };
  const TrainResult r1 = train_model(*part, f.ds, f.protocol, f.splits, tc, hooks);
  ASSERT_TRUE(r1.interrupted);
  auto resumed = gpu_model(small_config("clstm_mma"), f.shape);
  init_model(*resumed, 99);  // overwritten by the state
  hooks.should_stop = nullptr;
  hooks.resume = true;
  const TrainResult r2 = train_model(*resumed, f.ds, f.protocol, f.splits, tc, hooks);
  ASSERT_FALSE(r2.interrupted);
  ASSERT_EQ(r2.history.size(), rf.history.size());
  for (size_t e = 0; e < rf.history.size(); ++e) {
    EXPECT_EQ(r2.history[e].train_loss, rf.history[e].train_loss) << "epoch " << e + 1;
    EXPECT_EQ(r2.history[e].valid_loss, rf.history[e].valid_loss) << "epoch " << e + 1;
  }
  EXPECT_EQ(resumed->params().values(), full->params().values());
}

// evaluate() on a GPU model: probabilities and attention as the CPU's, predictions equal where
// the CPU's winning margin is beyond the tolerance.
TEST(CudaModels, EvaluationMatchesTheCpu) {
  MMAN_REQUIRE_CUDA();
  const Fixture f = make_fixture();
  for (const std::string type : {"clstm_ef", "clstm_mma", "mman"}) {
    SCOPED_TRACE(type);
    Pair p = make_pair(small_config(type), f);
    const Evaluation ec = evaluate(*p.cpu, f.ds, f.protocol, f.splits.test, 2);
    const Evaluation eg = evaluate(*p.gpu, f.ds, f.protocol, f.splits.test, 2);
    ASSERT_EQ(eg.targets, ec.targets);
    const double tol = bound(40, longest(f), 6);
    EXPECT_LE(normalized_error(eg.probabilities.data(), ec.probabilities.data(),
                               static_cast<size_t>(ec.probabilities.size())),
              tol);
    EXPECT_NEAR(eg.loss, ec.loss, 1e-5 * std::max(1.0, ec.loss));
    ASSERT_EQ(eg.attention.size(), ec.attention.size());
    if (ec.attention.size() > 0) {
      EXPECT_LE(normalized_error(eg.attention.data(), ec.attention.data(), static_cast<size_t>(ec.attention.size())),
                tol);
    }
  }
}

#endif  // MMAN_WITH_CUDA

}  // namespace
}  // namespace mman
