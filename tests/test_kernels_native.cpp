// Every custom kernel launcher (cuda/<op>.cu) run natively on a GPU against the same CPU references, inputs
// and tolerances as its SIMT test (tests/test_kernels_*.cpp, test_simt.cpp); skips without a usable device.
//
// The SIMT tests run the same kernel source on the CPU; these run the nvcc build of it, on the device, so
// they also check what the emulation cannot: device math libraries, FMA contraction, real scheduling,
// global-memory bounds (tools/sanitize_kernels.sh runs this binary under compute-sanitizer; buffers here
// are exact-size cudaMallocs, so an access one element past the end is reported). Comparisons are exact
// where the SIMT test's are, except that a NaN compares by isnan: arithmetic on a NaN returns the
// device's canonical NaN, not the CPU's payload. Where the SIMT bound relied on the host's own exp and
// log (the cross-entropy loss), the device's few-ulp library difference is added and said so.
// The grouped softmax's launchers have their native test in test_kernels_group_softmax.cpp.
//
// CPU-only builds also compile this file as test_kernels_native_emulated against the device emulation
// (tests/emulation: host memory, exact-size allocations that ASan checks, kernels through the SIMT layer),
// so the test code itself and the launchers' host side run in CI.
#include <gtest/gtest.h>

#include <string>

#include "mman/cuda_info.h"
#include "support/cuda_test.h"
#include "support/kernel_inputs.h"

#ifdef MMAN_WITH_CUDA
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "cuda/adam.cuh"
#include "cuda/attention.cuh"
#include "cuda/cross_entropy.cuh"
#include "cuda/dropout.cuh"
#include "cuda/elementwise.cuh"
#include "cuda/grad_clip.cuh"
#include "cuda/lstm_cell.cuh"
#include "cuda/mma.cuh"
#include "cuda/simt_examples.cuh"
#include "mman/blas.h"
#include "mman/cuda/context.h"
#include "mman/error.h"
#include "mman/layers/activation.h"
#include "mman/layers/dropout.h"
#include "mman/layers/loss.h"
#include "mman/layers/mma.h"
#include "mman/params.h"
#include "mman/rng.h"
#include "mman/tensor.h"
#include "mman/train/optimizer.h"
#include "src/layers/lstm_cell.h"
#include "support/attention_cases.h"
#include "support/mma_cases.h"
#include "support/kernel_checks.h"
#include "support/modalities.h"
#endif

namespace mman {
namespace {

using test::adam_store;
using test::clip_store;
using test::cross_entropy_huge_mixed_cases;
using test::cross_entropy_huge_tie_case;
using test::cross_entropy_nan_cases;
using test::cross_entropy_shape_cases;
using test::cross_entropy_tie_cases;
using test::CrossEntropyCase;

using test::cuda_unusable_reason;

// Every test skips with the runtime's reason where no device is usable; tools/sanitize_kernels.sh reads
// DeviceIsUsable's verdict to decide whether a sanitizer run means anything.
class KernelsNative : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = cuda_unusable_reason();
    if (!reason.empty()) GTEST_SKIP() << "no usable CUDA device: " << reason;
  }
};

#ifndef MMAN_WITH_CUDA

TEST_F(KernelsNative, DeviceIsUsable) {}

#else

// One context for the whole executable; everything goes onto its stream.
cuda::CudaContext& context() {
  static cuda::CudaContext ctx(0);
  return ctx;
}
cudaStream_t stream() { return context().stream(); }

TEST_F(KernelsNative, DeviceIsUsable) { context().synchronize(); }

// An exact-size device allocation (a cudaMalloc of n elements, without DeviceBuffer's growth headroom), so
// that memcheck reports an access one element past the end. Transfers go through the context's stream.
template <class T>
class DeviceVec {
 public:
  explicit DeviceVec(size_t n) : n_(n) {
    const cudaError_t err = cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T));
    MMAN_CHECK(err == cudaSuccess, "test: cudaMalloc of {} elements failed: {}", n, cudaGetErrorString(err));
  }
  explicit DeviceVec(const std::vector<T>& h) : DeviceVec(h.size()) { upload(h); }
  ~DeviceVec() { cudaFree(p_); }
  DeviceVec(const DeviceVec&) = delete;
  DeviceVec& operator=(const DeviceVec&) = delete;

  T* get() const { return static_cast<T*>(p_); }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& h) const {
    MMAN_CHECK(h.size() == n_, "test: uploading {} elements into {}", h.size(), n_);
    if (n_ > 0) context().upload(p_, h.data(), n_ * sizeof(T));
  }
  std::vector<T> download() const {  // waits for the stream: a failed kernel throws here
    std::vector<T> h(n_);
    if (n_ > 0) context().download(h.data(), p_, n_ * sizeof(T));
    return h;
  }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

template <class T>
T download_one(const DeviceVec<T>& d) {
  return d.download().at(0);
}

constexpr double kFloatEps = FLT_EPSILON;

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Bit for bit, except that NaN matches any NaN.
::testing::AssertionResult same_values(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "sizes " << got.size() << " and " << want.size();
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i]) ? std::isnan(got[i]) : same_bits(got[i], want[i])) continue;
    return ::testing::AssertionFailure() << "element " << i << ": device " << got[i] << ", cpu " << want[i];
  }
  return ::testing::AssertionSuccess();
}

bool identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

const auto uniform_values = test::uniform_floats;

// ---- elementwise (test_kernels_elementwise.cpp) ----

// ReLU forward and backward of a case on the device against the CPU's results.
void check_relu_on_device(const test::ReluCase& c) {
  const DeviceVec<float> d_x(c.x), d_dy(c.dy), d_y(c.x.size()), d_back(c.x.size());
  cuda::relu_forward_device(d_x.get(), d_y.get(), c.n(), stream());
  cuda::relu_backward_device(d_x.get(), d_dy.get(), d_back.get(), c.n(), stream());
  EXPECT_TRUE(same_values(d_y.download(), c.want_y));
  EXPECT_TRUE(same_values(d_back.download(), c.want_back));
}

// The SIMT test's sizes plus one beyond the grid (kElementwiseMaxBlocks blocks): the grid-stride loop.
TEST_F(KernelsNative, ReluForwardAndBackwardEqualTheCpuFunctions) {
  const long long big = kernels::kElementwiseMaxBlocks * kernels::kElementwiseThreads + 777;
  for (long long n : {1LL, 100LL, 256LL, 1001LL, big}) {
    SCOPED_TRACE("n " + std::to_string(n));
    const test::ReluCase c = test::relu_random_case(n);
    check_relu_on_device(c);
    const DeviceVec<float> d_x(c.x);
    cuda::relu_forward_device(d_x.get(), d_x.get(), n, stream());  // in place
    EXPECT_TRUE(same_values(d_x.download(), c.want_y));
  }
}

TEST_F(KernelsNative, ReluKeepsNanAndMatchesTheCpuOnEverySpecialValue) { check_relu_on_device(test::relu_special_case()); }

TEST_F(KernelsNative, ReluDropoutEqualsReluThenDropoutOnAColumnBlock) {
  const DropoutKey key{11, 12};
  for (float p : {0.0f, 0.1f, 0.6f})
    for (Mode mode : {Mode::Train, Mode::Eval}) {
      SCOPED_TRACE("p " + std::to_string(p) + (mode == Mode::Train ? ", train" : ", eval"));
      const Dropout layer(p, 33);
      const test::ReluDropoutBlockCase c = test::relu_dropout_block_case(layer, mode, key);
      const kernels::DropoutView v = kernels::dropout_view(c.rows, c.d, c.ld, c.ld, "test");
      const DeviceVec<float> d_x(c.x), d_y(c.x), d_dy(c.dy), d_back(c.dy);
      cuda::relu_dropout_forward_device(layer, d_x.get() + c.col0, d_y.get() + c.col0, v, mode, key, stream());
      cuda::relu_dropout_backward_device(layer, d_y.get() + c.col0, d_dy.get() + c.col0, d_back.get() + c.col0, v,
                                         mode, stream());
      EXPECT_TRUE(same_values(d_y.download(), c.want_y));
      EXPECT_TRUE(same_values(d_back.download(), c.want_back));
    }
}

// ---- dropout (test_kernels_dropout.cpp) ----

TEST_F(KernelsNative, DropoutForwardAndBackwardEqualTheCpuLayerBitForBit) {
  const DropoutKey key{2024, 9};
  for (long long n : {1LL, 255LL, 256LL, 257LL, 3001LL})
    for (float p : {0.0f, 0.1f, 0.5f, 0.9f})
      for (Mode mode : {Mode::Train, Mode::Eval}) {
        SCOPED_TRACE("n " + std::to_string(n) + ", p " + std::to_string(p) + (mode == Mode::Train ? ", train" : ", eval"));
        const Dropout layer(p, 7);
        const std::vector<float> x = uniform_values(static_cast<size_t>(n), -3, 3, 5 + static_cast<uint64_t>(n));
        std::vector<float> ref(x.size()), ref_back(x.size());
        DropoutContext ctx;
        layer.forward(x.data(), ref.data(), n, mode, key, ctx);
        layer.backward(x.data(), ref_back.data(), n, ctx);
        const DeviceVec<float> d_x(x), d_y(x.size()), d_back(x.size()), d_inplace(x);
        const kernels::DropoutView v = kernels::dropout_view(1, n, n, n, "test");
        cuda::dropout_forward_device(layer, d_x.get(), d_y.get(), v, mode, key, stream());
        cuda::dropout_backward_device(layer, d_x.get(), d_back.get(), v, mode, key, stream());
        cuda::dropout_forward_device(layer, d_inplace.get(), d_inplace.get(), v, mode, key, stream());
        EXPECT_TRUE(same_values(d_y.download(), ref));
        EXPECT_TRUE(same_values(d_back.download(), ref_back));
        EXPECT_TRUE(same_values(d_inplace.download(), ref));
      }
}

TEST_F(KernelsNative, DropoutStridedViewAndGridStride) {
  const DropoutKey key{3, 4};
  const Dropout layer(0.3f, 12);
  const long long rows = 37, d = 45, ld = 3 * d, col0 = d;
  const std::vector<float> x = uniform_values(static_cast<size_t>(rows * ld), -3, 3, 8);
  std::vector<float> block(static_cast<size_t>(rows * d)), ref(block.size());
  for (long long r = 0; r < rows; ++r)
    for (long long c = 0; c < d; ++c) block[static_cast<size_t>(r * d + c)] = x[static_cast<size_t>(r * ld + col0 + c)];
  DropoutContext ctx;
  layer.forward(block.data(), ref.data(), rows * d, Mode::Train, key, ctx);
  std::vector<float> want = x;
  for (long long r = 0; r < rows; ++r)
    for (long long c = 0; c < d; ++c) want[static_cast<size_t>(r * ld + col0 + c)] = ref[static_cast<size_t>(r * d + c)];
  const DeviceVec<float> d_x(x), d_y(x);
  cuda::dropout_forward_device(layer, d_x.get() + col0, d_y.get() + col0, kernels::dropout_view(rows, d, ld, ld, "test"),
                               Mode::Train, key, stream());
  EXPECT_TRUE(same_values(d_y.download(), want));

  const long long n = kernels::kElementwiseMaxBlocks * kernels::kElementwiseThreads + 777;
  const Dropout wide(0.2f, 1);
  const std::vector<float> xs = uniform_values(static_cast<size_t>(n), -3, 3, 3);
  std::vector<float> ref_wide(xs.size());
  wide.forward(xs.data(), ref_wide.data(), n, Mode::Train, DropoutKey{1, 1}, ctx);
  const DeviceVec<float> d_xs(xs), d_ys(xs.size());
  cuda::dropout_forward_device(wide, d_xs.get(), d_ys.get(), kernels::dropout_view(1, n, n, n, "test"), Mode::Train,
                               DropoutKey{1, 1}, stream());
  EXPECT_TRUE(same_values(d_ys.download(), ref_wide));
}

// ---- Adam (test_kernels_adam.cpp) ----

// A parameter store's trainable spans with their bounds table on the device.
struct DeviceSpans {
  std::vector<long long> bounds;
  std::unique_ptr<DeviceVec<long long>> d_bounds;
  kernels::ArenaSpans view;
  explicit DeviceSpans(const ParamStore& ps) {
    long long longest = 0;
    bounds = kernels::arena_span_bounds(ps, &longest);
    d_bounds = std::make_unique<DeviceVec<long long>>(bounds);
    view = {d_bounds->get(), static_cast<int>(bounds.size() / 2), longest};
  }
};

void adam_bit_identical(const AdamConfig& config, int steps, double grad_scale) {
  ParamStore cpu = adam_store(3);
  Adam adam(cpu, config);
  const std::vector<float> start = cpu.values();
  const DeviceSpans spans(cpu);
  ASSERT_EQ(spans.view.count, 2);
  const DeviceVec<float> d_p(start), d_g(start.size()), d_m(std::vector<float>(start.size(), 0.0f)),
      d_v(std::vector<float>(start.size(), 0.0f));
  Rng rng(4);
  for (int t = 1; t <= steps; ++t) {
    SCOPED_TRACE("step " + std::to_string(t));
    for (const ParamInfo& info : cpu.infos())
      for (size_t i = 0; i < info.size; ++i) cpu.grads()[info.offset + i] = static_cast<float>(grad_scale * rng.normal());
    d_g.upload(cpu.grads());
    adam.step(cpu);
    cuda::adam_step_device(d_p.get(), d_g.get(), d_m.get(), d_v.get(), spans.view, config, t, stream());
    ASSERT_TRUE(same_values(d_p.download(), cpu.values()));
    ASSERT_TRUE(same_values(d_m.download(), adam.state().m));
    ASSERT_TRUE(same_values(d_v.download(), adam.state().v));
  }
  const std::vector<float> p = d_p.download();
  for (const ParamInfo& info : cpu.infos()) {
    if (info.trainable) continue;
    for (size_t i = info.offset; i < info.offset + info.size; ++i) ASSERT_EQ(p[i], start[i]) << info.name;
  }
}

TEST_F(KernelsNative, AdamStepsAreBitIdenticalToTheCpuOptimiser) {
  adam_bit_identical(AdamConfig{}, 4, 1.0);
  AdamConfig decay;
  decay.weight_decay = 0.01;
  decay.lr = 3e-3;
  adam_bit_identical(decay, 3, 1.0);
  AdamConfig betas;
  betas.beta1 = 0.5;
  betas.beta2 = 0.9;
  betas.eps = 1e-6;
  adam_bit_identical(betas, 3, 1e-5);
  adam_bit_identical(AdamConfig{}, 2, 1e3);
}

TEST_F(KernelsNative, AdamLaterStepFromARestoredStateIsBitIdentical) {
  ParamStore cpu = adam_store(5);
  Adam adam(cpu, AdamConfig{});
  const AdamState state = test::restored_adam_state(cpu, 6);
  adam.set_state(state);
  const DeviceSpans spans(cpu);
  const DeviceVec<float> d_p(cpu.values()), d_g(cpu.grads()), d_m(state.m), d_v(state.v);
  adam.step(cpu);
  cuda::adam_step_device(d_p.get(), d_g.get(), d_m.get(), d_v.get(), spans.view, AdamConfig{}, 1000, stream());
  EXPECT_TRUE(same_values(d_p.download(), cpu.values()));
  EXPECT_TRUE(same_values(d_m.download(), adam.state().m));
  EXPECT_TRUE(same_values(d_v.download(), adam.state().v));
}

// ---- gradient clipping (test_kernels_grad_clip.cpp) ----

TEST_F(KernelsNative, GradNormAndClipMatchTheCpu) {
  struct Case {
    int64_t big;
    double grad_scale, max_norm;
  };
  for (const Case& c : {Case{1000, 1.0, 5.0}, Case{1000, 1.0, 1e4}, Case{300, 1e-3, 1e-2}, Case{70000, 1.0, 5.0}}) {
    SCOPED_TRACE("span " + std::to_string(c.big) + ", max_norm " + std::to_string(c.max_norm));
    ParamStore ps = clip_store(c.big, c.grad_scale, 7 + static_cast<uint64_t>(c.big));
    const std::vector<float> start = ps.grads();
    const DeviceSpans spans(ps);
    const double cpu_norm = clip_grad_norm(ps, c.max_norm);
    const double n = static_cast<double>(ps.num_parameters(true));
    const DeviceVec<float> d_g(start);
    const DeviceVec<double> d_partial(static_cast<size_t>(kernels::grad_norm_partial_count(spans.view)));
    const DeviceVec<kernels::GradNormResult> d_result(1);
    cuda::clip_grad_norm_device(d_g.get(), spans.view, c.max_norm, d_partial.get(), d_result.get(), stream());
    const kernels::GradNormResult result = download_one(d_result);
    EXPECT_NEAR(result.norm, cpu_norm, n * DBL_EPSILON * cpu_norm);
    EXPECT_EQ(result.clip, c.max_norm / (cpu_norm + 1e-6) < 1.0 ? 1 : 0);
    EXPECT_TRUE(same_values(d_g.download(), ps.grads()));
    // Deterministic: a second run gives the same bits.
    d_g.upload(start);
    cuda::clip_grad_norm_device(d_g.get(), spans.view, c.max_norm, d_partial.get(), d_result.get(), stream());
    const kernels::GradNormResult again = download_one(d_result);
    EXPECT_EQ(std::memcmp(&again.sum_squares, &result.sum_squares, sizeof(double)), 0);
  }
}

TEST_F(KernelsNative, GradNormOnlyLeavesGradientsAloneAndNoSpansGiveZero) {
  ParamStore ps = clip_store(500, 2.0, 1);
  const DeviceSpans spans(ps);
  const DeviceVec<float> d_g(ps.grads());
  const DeviceVec<double> d_partial(static_cast<size_t>(kernels::grad_norm_partial_count(spans.view)));
  const DeviceVec<kernels::GradNormResult> d_result(1);
  cuda::grad_norm_device(d_g.get(), spans.view, 0.0, d_partial.get(), d_result.get(), stream());
  const kernels::GradNormResult result = download_one(d_result);
  EXPECT_EQ(result.clip, 0);
  EXPECT_TRUE(same_values(d_g.download(), ps.grads()));
  EXPECT_NEAR(result.norm, clip_grad_norm(ps, 1e30), 600 * DBL_EPSILON * result.norm);

  kernels::GradNormResult poisoned;
  poisoned.norm = NAN;
  const DeviceVec<kernels::GradNormResult> d_empty(std::vector<kernels::GradNormResult>{poisoned});
  cuda::grad_norm_device(nullptr, {}, 5.0, d_partial.get(), d_empty.get(), stream());
  const kernels::GradNormResult empty = download_one(d_empty);
  EXPECT_EQ(empty.norm, 0.0);
  EXPECT_EQ(empty.clip, 0);
}

TEST_F(KernelsNative, ClampByValueMatchesTheCpuIncludingNan) {
  ParamStore ps = clip_store(777, 1e-3, 9);
  ps.grads()[3] = NAN;
  ps.grads()[4] = INFINITY;
  ps.grads()[5] = -INFINITY;
  const std::vector<float> start = ps.grads();
  const DeviceSpans spans(ps);
  clip_grad_value(ps, 1e-3f);
  const DeviceVec<float> d_g(start);
  cuda::clip_grad_value_device(d_g.get(), spans.view, 1e-3f, stream());
  EXPECT_TRUE(same_values(d_g.download(), ps.grads()));
}

// ---- masked cross-entropy (test_kernels_cross_entropy.cpp) ----

struct CrossEntropyRun {
  kernels::CrossEntropyResult result;
  std::vector<float> dlogits;
};

CrossEntropyRun cross_entropy_on_device(const Tensor& logits, const std::vector<int32_t>& targets, int heads) {
  const std::vector<float> z(logits.data(), logits.data() + logits.size());
  const DeviceVec<float> d_logits(z), d_dlogits(std::vector<float>(z.size(), NAN));
  const DeviceVec<int32_t> d_targets(targets);
  const DeviceVec<kernels::CrossEntropyPartial> d_partial(
      static_cast<size_t>(kernels::cross_entropy_partial_count(logits.rows())));
  const DeviceVec<kernels::CrossEntropyResult> d_result(1);
  cuda::cross_entropy_device(d_logits.get(), d_targets.get(), logits.rows(), static_cast<int>(logits.cols()), heads,
                             d_dlogits.get(), d_partial.get(), d_result.get(), stream());
  CrossEntropyRun run;
  run.result = download_one(d_result);
  run.dlogits = d_dlogits.download();
  return run;
}

// The SIMT test's bounds: the gradient within one float ulp (FLT_EPSILON |want| + FLT_MIN), the loss within
// (rows + 1) DBL_EPSILON |loss| for the different summation order. On the host the kernel's per-row losses
// come from the CPU's own exp and log; the device's double exp and log differ by up to 2 ulps (CUDA
// Programming Guide, double-precision functions), so each row's log(sum) - (z_t - mx) may move by a few
// DBL_EPSILON times its terms' size: 4 DBL_EPSILON (1 + log(cols) + max |z_t - mx|) is added.
void check_cross_entropy(const Tensor& logits, const std::vector<int32_t>& targets, int heads, const std::string& what) {
  SCOPED_TRACE(what);
  Tensor ref_grad;
  const LossResult ref = masked_cross_entropy(logits, targets.data(), heads, &ref_grad);
  const CrossEntropyRun run = cross_entropy_on_device(logits, targets, heads);
  const kernels::CrossEntropyResult& r = run.result;
  EXPECT_EQ(r.bad_row, -1);
  EXPECT_EQ(r.labelled, ref.labelled);
  EXPECT_EQ(r.scored, ref.scored);
  EXPECT_EQ(r.correct, ref.correct);
  double spread = 0.0;  // max |z_j - z_k| within a row: bounds |z_t - mx|
  for (int64_t row = 0; row < logits.rows(); ++row) {
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t c = 0; c < logits.cols(); ++c) lo = std::min(lo, logits.row(row)[c]), hi = std::max(hi, logits.row(row)[c]);
    spread = std::max(spread, static_cast<double>(hi) - lo);
  }
  const double library = 4 * DBL_EPSILON * (1.0 + std::log(static_cast<double>(logits.cols())) + spread);
  if (std::isnan(ref.loss))
    EXPECT_TRUE(std::isnan(r.loss)) << r.loss;
  else
    EXPECT_NEAR(r.loss, ref.loss, static_cast<double>(logits.rows() + 1) * DBL_EPSILON * std::fabs(ref.loss) + library);
  for (size_t i = 0; i < run.dlogits.size(); ++i) {
    const float want = ref_grad.data()[i];
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(run.dlogits[i])) << "element " << i << ": device " << run.dlogits[i] << ", cpu NaN";
      continue;
    }
    ASSERT_LE(std::fabs(run.dlogits[i] - want), FLT_EPSILON * std::fabs(want) + FLT_MIN)
        << "element " << i << ": device " << run.dlogits[i] << ", cpu " << want;
  }
  const CrossEntropyRun again = cross_entropy_on_device(logits, targets, heads);  // deterministic
  EXPECT_EQ(std::memcmp(&again.result.loss_sum, &r.loss_sum, sizeof(double)), 0);
}

void check_cross_entropy(const CrossEntropyCase& c) { check_cross_entropy(c.logits, c.targets, c.heads, c.what); }

TEST_F(KernelsNative, CrossEntropyMatchesTheCpuForHeadsRowCountsTiesAndExtremes) {
  for (const CrossEntropyCase& c : cross_entropy_shape_cases()) check_cross_entropy(c);
  for (const CrossEntropyCase& c : cross_entropy_tie_cases()) check_cross_entropy(c);
  test::expect_all_masked_gives_zero(cross_entropy_on_device);
}

TEST_F(KernelsNative, CrossEntropyHugeLogitsKeepLogSumExp) {
  check_cross_entropy(cross_entropy_huge_tie_case());
  for (const CrossEntropyCase& c : cross_entropy_huge_mixed_cases()) check_cross_entropy(c);
  test::expect_huge_ties_give_log_k(cross_entropy_on_device);
}

TEST_F(KernelsNative, CrossEntropyNanLogitsGiveNanLikeTheCpu) {
  for (const CrossEntropyCase& c : cross_entropy_nan_cases()) check_cross_entropy(c);
}

TEST_F(KernelsNative, CrossEntropyInvalidTargetsAreReportedLikeTheCpu) {
  test::expect_invalid_targets_reported_like_the_cpu(cross_entropy_on_device);
}

TEST_F(KernelsNative, CrossEntropyZeroRowsGiveAnEmptyResult) {
  kernels::CrossEntropyResult poisoned;
  poisoned.loss = NAN;
  const DeviceVec<kernels::CrossEntropyResult> d_result(std::vector<kernels::CrossEntropyResult>{poisoned});
  const DeviceVec<kernels::CrossEntropyPartial> d_partial(1);
  cuda::cross_entropy_device(nullptr, nullptr, 0, 4, 1, nullptr, d_partial.get(), d_result.get(), stream());
  const kernels::CrossEntropyResult r = download_one(d_result);
  EXPECT_EQ(r.loss, 0.0);
  EXPECT_EQ(r.scored, 0);
  EXPECT_EQ(r.bad_row, -1);
}

// ---- LSTM cell (test_kernels_lstm_cell.cpp) ----

void check_cell_step(const test::LstmCellCase& k) {
  const test::LstmCellStep& s = k.s;
  SCOPED_TRACE(test::describe(s));
  const size_t nh = static_cast<size_t>(s.n) * s.h;
  const DeviceVec<float> d_bias(k.bias), d_gates(k.gates_in), d_c_prev(k.c_prev), d_c(nh), d_tanh_c(nh),
      d_h(std::vector<float>(k.h_out.size(), -7.0f));
  cuda::lstm_cell_forward_device(s.n, s.n_prev, s.h, d_bias.get(), d_gates.get(), d_c_prev.get(), d_c.get(),
                                 d_tanh_c.get(), d_h.get(), s.ldh, stream());
  EXPECT_TRUE(same_values(d_gates.download(), k.gates));
  EXPECT_TRUE(same_values(d_c.download(), k.c));
  EXPECT_TRUE(same_values(d_tanh_c.download(), k.tanh_c));
  EXPECT_TRUE(same_values(d_h.download(), k.h_out));  // the padding between rows of h_out untouched
  const DeviceVec<float> d_acts(k.gates), d_ctc(k.tanh_c), d_dy(k.dy), d_dh(k.dh_rec), d_dc(k.dc_in),
      d_dgates(k.gates.size());
  cuda::lstm_cell_backward_device(s.n, s.n_prev, s.h, d_acts.get(), d_c_prev.get(), d_ctc.get(), d_dy.get(), s.ldy,
                                  d_dh.get(), d_dc.get(), d_dgates.get(), stream());
  EXPECT_TRUE(same_values(d_dc.download(), k.dc));
  EXPECT_TRUE(same_values(d_dgates.download(), k.dgates));
}

TEST_F(KernelsNative, LstmCellStepsAreBitIdenticalToTheCpuCell) {
  for (const test::LstmCellStep& s : test::lstm_cell_steps())
    check_cell_step(test::lstm_cell_case(s, test::lstm_cell_random_gates(s)));
}

TEST_F(KernelsNative, LstmCellExtremePreActivationsAreBitIdentical) {
  check_cell_step(test::lstm_cell_case(test::lstm_cell_extreme_step(), test::lstm_cell_extreme_gates()));
}

// ---- MMA attention (tolerance, references and checks: tests/support/mma_tolerance.h, attention_cases.h,
// mma_cases.h, shared with test_kernels_attention.cpp and test_kernels_mma.cpp) ----

void expect_finite(const std::vector<float>& v, const std::string& what) {
  for (size_t i = 0; i < v.size(); ++i) ASSERT_TRUE(std::isfinite(v[i])) << what << " element " << i;
}

// ---- unfused attention (test_kernels_attention.cpp) ----

void run_attention_case(const test::AttentionCase& c) {
  SCOPED_TRACE(test::describe(c));
  test::AttentionReference ref;
  test::build_attention_reference(c, ref);
  const size_t n = ref.elements();
  const std::vector<float> dout(ref.dout.data(), ref.dout.data() + ref.dout.size());
  const DeviceVec<float> d_xhat(ref.xhat), d_q(ref.proj[0]), d_k(ref.proj[1]), d_v(ref.proj[2]), d_dout(dout);
  const DeviceVec<float> d_alpha(static_cast<size_t>(c.rows) * c.modalities * c.modalities),
      d_out(static_cast<size_t>(ref.out.size()));
  const DeviceVec<float> d_dq(n), d_dk(n), d_dv(n), d_dxhat(n);
  cuda::attention_forward_device(d_xhat.get(), d_q.get(), d_k.get(), d_v.get(), ref.shape, d_alpha.get(), d_out.get(),
                                 stream());
  cuda::attention_backward_device(d_q.get(), d_k.get(), d_v.get(), d_alpha.get(), d_dout.get(), ref.shape, d_dq.get(),
                                  d_dk.get(), d_dv.get(), d_dxhat.get(), stream());
  test::AttentionOutputs k{d_out.download(), d_alpha.download(), d_dq.download(),
                           d_dk.download(),  d_dv.download(),    d_dxhat.download()};
  for (const auto* v : {&k.out, &k.alpha, &k.dq, &k.dk, &k.dv}) expect_finite(*v, "attention output");
  expect_finite(k.dxhat, "attention dxhat");
  const std::vector<float> first_out = k.out;
  test::check_attention_outputs(ref, std::move(k));
  // No atomics, fixed reduction orders: a second run gives the same bits.
  cuda::attention_forward_device(d_xhat.get(), d_q.get(), d_k.get(), d_v.get(), ref.shape, d_alpha.get(), d_out.get(),
                                 stream());
  EXPECT_TRUE(identical(d_out.download(), first_out));
}

TEST_F(KernelsNative, AttentionUnfusedMatchesTheCpuLayer) {
  for (const test::AttentionCase& c : test::attention_main_cases()) run_attention_case(c);
  for (const test::AttentionCase& c : test::attention_other_shape_cases()) run_attention_case(c);
}

TEST_F(KernelsNative, AttentionHugeQueriesAndKeysStayFiniteLikeTheCpu) {
  for (const test::AttentionCase& c : test::attention_huge_cases()) run_attention_case(c);
}

// ---- fused MMA (test_kernels_mma.cpp) ----

using test::MmaCase;
using test::MmaOutputs;
using test::MmaReference;

MmaOutputs mma_on_device(MmaReference& cpu, bool backward) {
  const kernels::MmaShape& s = cpu.shape;
  const size_t rows = static_cast<size_t>(s.rows), md = static_cast<size_t>(3 * s.d);
  const DeviceVec<float> d_values(cpu.ps.values()), d_grads(cpu.grad_start), d_xhat(cpu.xhat);
  const std::vector<float> dout(cpu.dout.data(), cpu.dout.data() + cpu.dout.size());
  const DeviceVec<float> d_dout(dout);
  kernels::MmaWeights w;
  kernels::MmaWeightGrads g;
  kernels::mma_param_pointers(cpu.ps, "mma.", cpu.cfg.modalities, d_values.get(), d_grads.get(), &w, &g);
  const DeviceVec<float> d_alpha(rows * 9), d_out(rows * static_cast<size_t>(cpu.mma.output_dim()));
  const DeviceVec<float> d_q(rows * md), d_k(rows * md), d_v(rows * md), d_dq(rows * md), d_dk(rows * md),
      d_dv(rows * md), d_dxhat(rows * md);
  cuda::mma_fused_forward_device(d_xhat.get(), w, s, backward ? d_q.get() : nullptr, backward ? d_k.get() : nullptr,
                                 backward ? d_v.get() : nullptr, d_alpha.get(), d_out.get(), stream());
  MmaOutputs run;
  run.alpha = d_alpha.download();
  run.out = d_out.download();
  if (!backward) return run;
  cuda::mma_fused_backward_device(d_q.get(), d_k.get(), d_v.get(), d_alpha.get(), d_dout.get(), w, s, d_dq.get(),
                                  d_dk.get(), d_dv.get(), d_dxhat.get(), stream());
  cuda::mma_weight_grad_device(d_xhat.get(), d_dq.get(), d_dk.get(), d_dv.get(), g, s.rows, 3, s.d, stream());
  run.q = d_q.download(), run.k = d_k.download(), run.v = d_v.download();
  run.dq = d_dq.download(), run.dk = d_dk.download(), run.dv = d_dv.download(), run.dxhat = d_dxhat.download();
  run.grads = d_grads.download();
  return run;
}

void run_mma_case(const MmaCase& setup, const std::function<void(ParamStore&)>& tweak = {}) {
  SCOPED_TRACE(test::describe(setup));
  MmaReference cpu(setup, test::mma_seed(setup), tweak);
  const bool backward = setup.mode == Mode::Train;
  const MmaOutputs first = mma_on_device(cpu, backward);
  ASSERT_NO_FATAL_FAILURE(test::expect_mma_finite(first));
  test::check_mma_outputs(setup, cpu, first);
  EXPECT_TRUE(mma_on_device(cpu, backward) == first) << "two runs differ";  // no atomics: deterministic
}

TEST_F(KernelsNative, MmaFusedMatchesTheCpuLayerForAllScoresSkipsAndModes) {
  for (MmaScore score : {MmaScore::ScaledDot, MmaScore::Cosine})
    for (MmaSkip skip : {MmaSkip::Residual, MmaSkip::Concat})
      for (Mode mode : {Mode::Eval, Mode::Train}) run_mma_case({score, skip, mode, 19, 37});
}

TEST_F(KernelsNative, MmaFusedMatchesTheCpuLayerAtPaperAndEdgeWidths) {
  for (MmaScore score : {MmaScore::ScaledDot, MmaScore::Cosine})
    for (MmaSkip skip : {MmaSkip::Residual, MmaSkip::Concat}) run_mma_case({score, skip, Mode::Train, 1, 150});
  run_mma_case({MmaScore::ScaledDot, MmaSkip::Residual, Mode::Train, 35, 150});
  run_mma_case({MmaScore::Cosine, MmaSkip::Concat, Mode::Eval, 35, 150});
  run_mma_case({MmaScore::ScaledDot, MmaSkip::Residual, Mode::Train, 17, 1});
  for (int d : {2, 32, 64, 65, 160}) run_mma_case({MmaScore::Cosine, MmaSkip::Residual, Mode::Train, 17, d});
}

TEST_F(KernelsNative, MmaFusedCosineWithAZeroQueryStaysFinite) {
  const MmaCase setup{MmaScore::Cosine, MmaSkip::Residual, Mode::Train, 3, 20};
  MmaReference cpu(setup, 77, test::zero_text_query);
  const MmaOutputs k = mma_on_device(cpu, true);
  ASSERT_NO_FATAL_FAILURE(test::expect_mma_finite(k));
  for (int64_t r = 0; r < setup.rows; ++r)
    for (int n = 0; n < 3; ++n) EXPECT_FLOAT_EQ(k.alpha[static_cast<size_t>(r * 9 + 6 + n)], 1.0f / 3.0f);
  test::check_mma_outputs(setup, cpu, k);
}

TEST_F(KernelsNative, MmaFusedHugeQueriesAndKeysStayFiniteLikeTheCpu) {
  for (MmaScore score : {MmaScore::ScaledDot, MmaScore::Cosine}) {
    run_mma_case({score, MmaSkip::Residual, Mode::Train, 19, 37}, test::scale_queries_and_keys);
    run_mma_case({score, MmaSkip::Concat, Mode::Train, 3, 150}, test::scale_queries_and_keys);
  }
}

// A larger batch than the SIMT tests can afford (fibers cost ~1 us a switch): 40 blocks of rows.
TEST_F(KernelsNative, MmaFusedMatchesTheCpuLayerOnAFullBatch) {
#ifdef MMAN_DEVICE_EMULATION
  GTEST_SKIP() << "a device's batch: ~13 s through the SIMT layer, whose tests cover these blocks' shapes";
#endif
  run_mma_case({MmaScore::ScaledDot, MmaSkip::Residual, Mode::Train, 640, 150});
}

// ---- the SIMT layer's example kernels (test_simt.cpp: SimtKernels.*) ----

TEST_F(KernelsNative, SumMatchesDoubleReferenceForManySizes) {
  for (long long n : {0LL, 1LL, 31LL, 255LL, 256LL, 257LL, 1000LL, 4099LL, 256LL * 256 + 1000}) {
    SCOPED_TRACE("n " + std::to_string(n));
    const test::SumCase c = test::sum_case(n, 100 + static_cast<uint64_t>(n));
    const DeviceVec<float> d_x(c.x), d_partial(static_cast<size_t>(cuda::sum_device_scratch(n))), d_out(1);
    cuda::sum_device(d_x.get(), n, d_partial.get(), d_out.get(), stream());
    const float out = download_one(d_out);
    EXPECT_NEAR(out, c.sum, static_cast<double>(n) * kFloatEps * c.abs_sum);
    cuda::sum_device(d_x.get(), n, d_partial.get(), d_out.get(), stream());
    EXPECT_TRUE(same_bits(download_one(d_out), out));  // the association order is fixed by the code
  }
}

TEST_F(KernelsNative, SoftmaxRowsMatchesDoubleReference) {
  for (const test::SoftmaxRowsCase& c : test::softmax_rows_cases()) {
    SCOPED_TRACE(std::to_string(c.rows) + "x" + std::to_string(c.cols));
    const DeviceVec<float> d_x(c.x), d_y(c.x.size());
    cuda::softmax_rows_device(d_x.get(), d_y.get(), c.rows, c.cols, stream());
    const std::vector<float> y = d_y.download();
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], c.ref[i], c.tol * c.ref[i]) << "element " << i;
    cuda::softmax_rows_device(d_x.get(), d_x.get(), c.rows, c.cols, stream());  // in place
    EXPECT_TRUE(identical(d_x.download(), y));
  }
}

#endif  // MMAN_WITH_CUDA

}  // namespace
}  // namespace mman
