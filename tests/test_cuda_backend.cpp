// GPU tests of the CUDA backend's foundation against the CPU backend: device arenas, cuBLAS GEMM, cuDNN LSTM.
// They need a usable device; elsewhere every test skips with the CUDA runtime's reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "mman/cuda_info.h"
#include "support/cuda_test.h"
#include "mman/error.h"
#include "mman/layers/lstm.h"
#include "mman/packed.h"
#include "mman/params.h"
#include "mman/rng.h"
#include "mman/train/optimizer.h"

#ifdef MMAN_WITH_CUDA
#include <cublas_v2.h>

#include "cuda/clstm_block.cuh"
#include "cuda/gemm.cuh"
#include "cuda/linear.cuh"
#include "cuda/lstm_cudnn.cuh"
#include "mman/blas.h"
#include "mman/data/batch.h"
#include "mman/layers/linear.h"
#include "mman/models/model.h"
#include "mman/cuda/arena.h"
#include "mman/cuda/buffer.h"
#include "mman/cuda/context.h"
#endif

namespace mman {
namespace {

using test::cuda_unusable_reason;

#ifndef MMAN_WITH_CUDA

TEST(CudaBackend, NeedsTheCudaBackend) { MMAN_REQUIRE_CUDA(); }

#else

constexpr double kEps = std::numeric_limits<float>::epsilon();  // 2^-23: one ulp at 1

// One context for the whole executable (creating cuDNN and cuBLAS handles takes a while).
cuda::CudaContext& context() {
  static cuda::CudaContext ctx(0);
  return ctx;
}

std::vector<float> random_vector(size_t n, Rng& rng, double lo = -1.0, double hi = 1.0) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.uniform(lo, hi));
  return v;
}

// A host vector on the device and back.
cuda::DeviceArray<float> to_device(const std::vector<float>& h) {
  cuda::DeviceArray<float> d(h.size());
  context().upload(d.data(), h.data(), h.size() * sizeof(float));
  return d;
}
std::vector<float> to_host(const float* d, size_t n) {
  std::vector<float> h(n);
  context().download(h.data(), d, n * sizeof(float));
  return h;
}

// max |a - b| / max |b|: the error of a normalised by the reference's scale (ggml's
// test-backend-ops compares backends the same way).
double normalised_error(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
    if (std::isnan(a[i]) != std::isnan(b[i])) return std::numeric_limits<double>::infinity();
  }
  return diff / std::max(scale, 1e-30);
}

// ---- context and device memory ----

// These two run on every machine: without a device they check the failure path instead.
TEST(CudaBackend, ContextOpensTheDeviceOrSaysWhyNot) {
  const std::string reason = cuda_unusable_reason();
  if (reason.empty()) {
    cuda::CudaContext ctx(0);
    EXPECT_NE(ctx.stream(), nullptr);
    EXPECT_NE(ctx.cublas(), nullptr);
    EXPECT_NE(ctx.cudnn(), nullptr);
    ctx.synchronize();
    EXPECT_THROW({ cuda::CudaContext other(1 << 20); }, Error);  // no such device
    return;
  }
  try {
    cuda::CudaContext ctx(0);
    // A device the probe kernel could not use may still open (e.g. a wrong architecture).
    SUCCEED() << "context opened although the probe failed: " << reason;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("no usable CUDA device"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
  }
}

// cuBLAS is loaded on first use (cuda/cublas_lazy.cu), not linked: this loads the real library
// through that path and asks its version, which needs no device, so it runs in every CUDA build
// (in the device emulation the fake's answer is checked instead).
TEST(CudaBackend, CublasLoadsOnFirstUseAndAnswers) {
  int major = -1, minor = -1;
  ASSERT_EQ(cublasGetProperty(MAJOR_VERSION, &major), CUBLAS_STATUS_SUCCESS)
      << cublasGetStatusString(CUBLAS_STATUS_NOT_INITIALIZED);
  ASSERT_EQ(cublasGetProperty(MINOR_VERSION, &minor), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(major, CUBLAS_VER_MAJOR);  // the library the headers describe
  EXPECT_GE(minor, 0);
  EXPECT_STREQ(cublasGetStatusName(CUBLAS_STATUS_SUCCESS), "CUBLAS_STATUS_SUCCESS");
}

TEST(CudaBackend, FailedDeviceAllocationsThrowWithTheSize) {
  // 2^50 bytes exceeds every GPU's memory; without a device the runtime fails first.
  cuda::DeviceBuffer buf;
  try {
    buf.reserve(size_t{1} << 50);
    FAIL() << "a 1 PiB device allocation succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot allocate"), std::string::npos) << e.what();
  }
  EXPECT_EQ(buf.data(), nullptr);
  EXPECT_EQ(buf.capacity(), 0u);
}

TEST(CudaBackend, CopiesRoundTripAndBuffersOnlyGrow) {
  MMAN_REQUIRE_CUDA();
  Rng rng(1);
  const std::vector<float> h = random_vector(1000, rng);
  cuda::DeviceArray<float> a = to_device(h);
  cuda::DeviceArray<float> b(h.size());
  context().copy(b.data(), a.data(), a.bytes());
  EXPECT_EQ(to_host(b.data(), h.size()), h);

  context().zero(b.data(), b.bytes());
  EXPECT_EQ(to_host(b.data(), h.size()), std::vector<float>(h.size(), 0.0f));

  // Shrinking keeps the block; growing beyond the capacity replaces it.
  float* before = a.data();
  a.resize(10);
  EXPECT_EQ(a.data(), before);
  cuda::DeviceBuffer buf(100);
  const size_t cap = buf.capacity();
  EXPECT_GE(cap, 100u);
  buf.reserve(cap);
  EXPECT_EQ(buf.capacity(), cap);
  buf.reserve(cap + 1);
  EXPECT_GT(buf.capacity(), cap);
}

// ---- DeviceParams ----

ParamStore make_store(Rng& rng) {
  ParamStore p;
  // Odd sizes so that the arena has padding between tensors.
  for (auto [name, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"a.weight", {7, 5}}, {"a.bias", {7}}, {"b.weight", {3, 11}}, {"b.bias", {3}}, {"c", {33}}}) {
    const int id = p.add(name, shape);
    for (size_t i = 0; i < p.info(id).size; ++i) {
      p.value(id)[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
      p.grad(id)[i] = static_cast<float>(rng.uniform(-2.0, 2.0));
    }
  }
  return p;
}

TEST(CudaBackend, DeviceParamsRoundTripTheArenasBitForBit) {
  MMAN_REQUIRE_CUDA();
  Rng rng(2);
  ParamStore host = make_store(rng);
  cuda::DeviceParams dev(context(), host);
  EXPECT_EQ(dev.size(), host.values().size());
  EXPECT_EQ(dev.find("b.bias"), host.find("b.bias"));
  EXPECT_EQ(dev.find("nope"), -1);
  dev.upload_grads(host);

  ParamStore back = host;
  std::fill(back.values().begin(), back.values().end(), 9.0f);  // padding too: it must come back zero
  std::fill(back.grads().begin(), back.grads().end(), 9.0f);
  dev.download_values(back);
  dev.download_grads(back);
  EXPECT_EQ(back.values(), host.values());
  EXPECT_EQ(back.grads(), host.grads());

  // One tensor's device pointer is the arena at the store's offset.
  const int id = host.find("b.weight");
  EXPECT_EQ(to_host(dev.value(id), host.info(id).size),
            std::vector<float>(host.value(id), host.value(id) + host.info(id).size));

  dev.zero_grads();
  dev.download_grads(back);
  EXPECT_EQ(back.grads(), std::vector<float>(host.grads().size(), 0.0f));
}

TEST(CudaBackend, DeviceParamsRejectAStoreOfAnotherLayout) {
  MMAN_REQUIRE_CUDA();
  Rng rng(3);
  ParamStore host = make_store(rng);
  cuda::DeviceParams dev(context(), host);
  ParamStore other;
  other.add("a.weight", {7, 5});
  EXPECT_THROW(dev.download_values(other), Error);
  ParamStore renamed;
  for (const ParamInfo& p : host.infos()) renamed.add(p.name == "c" ? "d" : p.name, p.shape);
  try {
    dev.upload_values(renamed);
    FAIL() << "a renamed tensor was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'d'"), std::string::npos) << e.what();
  }
}

// Adam and gradient clipping on the device against mman::Adam / clip_grad_norm: the kernels
// promise the CPU's float operations (bit-identical Adam); the norm is a double reduction in
// another order, so the clip factor may differ in its last float bit.
TEST(CudaBackend, DeviceAdamAndClippingFollowTheCpuOptimiser) {
  MMAN_REQUIRE_CUDA();
  Rng rng(4);
  ParamStore cpu = make_store(rng);
  cpu.set_trainable("b.", false);  // a frozen tensor keeps its value on both sides
  cuda::DeviceParams dev(context(), cpu);
  AdamConfig config;
  config.lr = 1e-2;
  Adam adam(cpu, config);
  for (int step = 0; step < 3; ++step) {
    for (int id = 0; id < cpu.count(); ++id)  // tensors only: the padding between them stays zero
      for (size_t i = 0; i < cpu.info(id).size; ++i) cpu.grad(id)[i] = static_cast<float>(rng.uniform(-3.0, 3.0));
    dev.upload_grads(cpu);
    const double norm_cpu = clip_grad_norm(cpu, 1.0);
    const double norm_gpu = dev.clip_grad_norm(1.0);
    EXPECT_NEAR(norm_gpu, norm_cpu, 1e-12 * norm_cpu);
    adam.step(cpu);
    dev.adam_step(config);
  }
  EXPECT_EQ(dev.adam_steps(), 3);
  ParamStore back = cpu;
  dev.download_values(back);
  // Three steps of size about lr each; a last-bit difference of the clip factor changes a step
  // by a few eps relative, which may flip the rounding of the value (|p| < 2: 2 eps) per step.
  double max_diff = 0.0;
  for (size_t i = 0; i < back.values().size(); ++i)
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(back.values()[i]) - cpu.values()[i]));
  EXPECT_LE(max_diff, 3 * (config.lr * 16 * kEps + 2 * kEps));
  const int frozen = cpu.find("b.weight");
  EXPECT_TRUE(std::equal(back.value(frozen), back.value(frozen) + back.info(frozen).size, cpu.value(frozen)));
  const AdamState state = dev.download_adam();
  EXPECT_EQ(state.step, adam.state().step);
  EXPECT_LE(normalised_error(state.m, adam.state().m), 8 * kEps);
  EXPECT_LE(normalised_error(state.v, adam.state().v), 8 * kEps);
}

// ---- GEMM ----

// C = alpha op(A) op(B) + beta C on both backends, compared element by element against the
// classical dot-product error bound: whatever the summation order (cuBLAS may split K), each
// backend is within gamma_{K+2} (|alpha| sum_k |a||b| + |beta c|) of the exact value
// (gamma_n = n u / (1 - n u), u = eps / 2), so the two are within twice that of each other.
void check_gemm(bool ta, bool tb, int m, int n, int k, float alpha, float beta, int pad, uint64_t seed) {
  Rng rng(seed);
  const int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
  const int a_rows = ta ? k : m, b_rows = tb ? n : k;
  const std::vector<float> a = random_vector(static_cast<size_t>(std::max(a_rows, 1)) * lda, rng);
  const std::vector<float> b = random_vector(static_cast<size_t>(std::max(b_rows, 1)) * ldb, rng);
  std::vector<float> c = random_vector(static_cast<size_t>(m) * ldc, rng);
  if (beta == 0.0f) std::fill(c.begin(), c.end(), std::numeric_limits<float>::quiet_NaN());  // must not be read
  std::vector<float> c_cpu = c;
  gemm(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c_cpu.data(), ldc);
  cuda::DeviceArray<float> da = to_device(a), db = to_device(b), dc = to_device(c);
  cuda::gemm_device(context(), ta, tb, m, n, k, alpha, da.data(), lda, db.data(), ldb, beta, dc.data(), ldc);
  const std::vector<float> c_gpu = to_host(dc.data(), c.size());
  // K products and sums in any order, then alpha *, beta * and the final addition.
  const double u = kEps / 2, gamma = (k + 2) * u / (1.0 - (k + 2) * u);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double mag = beta == 0.0f ? 0.0 : std::fabs(beta * c[static_cast<size_t>(i) * ldc + j]);
      for (int p = 0; p < k; ++p) {
        const float av = ta ? a[static_cast<size_t>(p) * lda + i] : a[static_cast<size_t>(i) * lda + p];
        const float bv = tb ? b[static_cast<size_t>(j) * ldb + p] : b[static_cast<size_t>(p) * ldb + j];
        mag += std::fabs(static_cast<double>(alpha) * av * bv);
      }
      const size_t e = static_cast<size_t>(i) * ldc + j;
      ASSERT_FALSE(std::isnan(c_gpu[e])) << "C(" << i << "," << j << ") NaN: C was read although beta == 0";
      ASSERT_LE(std::fabs(static_cast<double>(c_gpu[e]) - c_cpu[e]), 2 * gamma * mag + 1e-30)
          << "ta=" << ta << " tb=" << tb << " M=" << m << " N=" << n << " K=" << k << " at (" << i << "," << j << ")";
    }
    // The padding columns of C are not touched (with beta == 0 they hold NaN, which != itself).
    if (beta != 0.0f) {
      for (int j = n; j < ldc; ++j) EXPECT_EQ(c_gpu[static_cast<size_t>(i) * ldc + j], c[static_cast<size_t>(i) * ldc + j]);
    }
  }
}

TEST(CudaBackend, GemmMatchesTheCpuGemmInEveryTransposition) {
  MMAN_REQUIRE_CUDA();
  uint64_t seed = 10;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check_gemm(ta, tb, 37, 23, 300, 1.0f, 0.0f, 0, ++seed);   // an LSTM-like product
      check_gemm(ta, tb, 5, 129, 17, -0.5f, 1.0f, 3, ++seed);   // accumulate into C, padded leading dims
      check_gemm(ta, tb, 1, 1, 1, 2.0f, 0.25f, 0, ++seed);
    }
}

TEST(CudaBackend, GemmEdgeCasesFollowTheCpuContract) {
  MMAN_REQUIRE_CUDA();
  check_gemm(false, true, 6, 4, 0, 1.0f, 0.0f, 2, 40);  // K == 0: C = 0, NaNs never read
  check_gemm(false, true, 6, 4, 0, 1.0f, 3.0f, 2, 41);  // K == 0: C = beta C
  check_gemm(false, false, 0, 4, 5, 1.0f, 1.0f, 0, 42);  // M == 0: nothing
  float dummy = 0.0f;
  EXPECT_THROW(cuda::gemm_device(context(), false, false, 2, 3, 4, 1.0f, &dummy, 3, &dummy, 3, 0.0f, &dummy, 3), Error);
  EXPECT_THROW(cuda::gemm_device(context(), false, false, -1, 3, 4, 1.0f, &dummy, 4, &dummy, 3, 0.0f, &dummy, 3),
               Error);
}

// ---- Linear on cuBLAS ----

// got within 2 gamma_{K+2} * mag of ref element by element (the GEMM bound above, with mag the
// sum of |products| plus |initial value| per element, computed by the caller).
void expect_within_gemm_bound(const std::string& what, const std::vector<float>& got, const std::vector<float>& ref,
                              const std::vector<double>& mag, int k) {
  ASSERT_EQ(got.size(), ref.size());
  ASSERT_EQ(mag.size(), ref.size());
  const double u = kEps / 2, gamma = (k + 2) * u / (1.0 - (k + 2) * u);
  for (size_t e = 0; e < ref.size(); ++e)
    ASSERT_LE(std::fabs(static_cast<double>(got[e]) - ref[e]), 2 * gamma * mag[e] + 1e-30)
        << what << " element " << e << ": GPU " << got[e] << ", CPU " << ref[e];
}

TEST(CudaBackend, LinearMatchesTheCpuLinearWithStridesAndFrozenBias) {
  MMAN_REQUIRE_CUDA();
  const int in = 37, out = 11, rows = 29, ldx = in + 3, ldy = out + 2, lddx = in + 1;
  ParamStore params;
  Linear lin(params, "fc.", in, out);
  Rng rng(150);
  lin.init(params, rng);
  for (float& g : params.grads()) g = 0.25f;
  const std::vector<float> x = random_vector(static_cast<size_t>(rows) * ldx, rng);
  const std::vector<float> dy = random_vector(static_cast<size_t>(rows) * ldy, rng);
  std::vector<float> y_cpu(static_cast<size_t>(rows) * ldy, 7.0f), dx_cpu = random_vector(static_cast<size_t>(rows) * lddx, rng);
  const std::vector<float> dx0 = dx_cpu;

  for (bool frozen_bias : {false, true}) {
    SCOPED_TRACE(frozen_bias ? "frozen bias, dx accumulated" : "trainable bias, dx overwritten");
    ParamStore p = params;
    if (frozen_bias) p.set_trainable("fc.bias", false);
    cuda::DeviceParams dev(context(), p);
    dev.upload_grads(p);
    cuda::DeviceArray<float> d_x = to_device(x), d_dy = to_device(dy), d_y = to_device(y_cpu), d_dx = to_device(dx0);

    std::vector<float> y = y_cpu, dx = dx0;
    lin.forward(p, x.data(), ldx, rows, y.data(), ldy);
    lin.backward(p, x.data(), ldx, rows, dy.data(), ldy, dx.data(), lddx, frozen_bias);
    const int w = p.find("fc.weight"), b = p.find("fc.bias");
    cuda::linear_forward_device(context(), dev.value(w), dev.value(b), in, out, d_x.data(), ldx, rows, d_y.data(), ldy);
    cuda::linear_backward_device(context(), dev.value(w), dev.grad(w), frozen_bias ? nullptr : dev.grad(b), in, out,
                                 d_x.data(), ldx, rows, d_dy.data(), ldy, d_dx.data(), lddx, frozen_bias);

    // Magnitudes of every element's sum, for the bound.
    std::vector<double> y_mag(y.size(), 0.0), dx_mag(dx.size(), 0.0), dw_mag(static_cast<size_t>(out) * in),
        db_mag(static_cast<size_t>(out));
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < out; ++j) {
        double m = std::fabs(params.value(b)[j]);
        for (int c = 0; c < in; ++c) m += std::fabs(static_cast<double>(x[r * ldx + c]) * params.value(w)[j * in + c]);
        y_mag[static_cast<size_t>(r) * ldy + j] = m;
      }
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < in; ++c) {
        double m = frozen_bias ? std::fabs(dx0[static_cast<size_t>(r) * lddx + c]) : 0.0;
        for (int j = 0; j < out; ++j) m += std::fabs(static_cast<double>(dy[r * ldy + j]) * params.value(w)[j * in + c]);
        dx_mag[static_cast<size_t>(r) * lddx + c] = m;
      }
    for (int j = 0; j < out; ++j) {
      double mb = 0.25;
      for (int r = 0; r < rows; ++r) mb += std::fabs(dy[r * ldy + j]);
      db_mag[static_cast<size_t>(j)] = mb;
      for (int c = 0; c < in; ++c) {
        double m = 0.25;
        for (int r = 0; r < rows; ++r) m += std::fabs(static_cast<double>(dy[r * ldy + j]) * x[r * ldx + c]);
        dw_mag[static_cast<size_t>(j) * in + c] = m;
      }
    }
    // Padding columns of y and dx are not part of the result (the GPU leaves them as they were).
    std::vector<float> y_gpu = to_host(d_y.data(), y.size()), dx_gpu = to_host(d_dx.data(), dx.size());
    for (int r = 0; r < rows; ++r) {
      for (int j = out; j < ldy; ++j) EXPECT_EQ(y_gpu[static_cast<size_t>(r) * ldy + j], 7.0f);
      for (int j = out; j < ldy; ++j) y_gpu[static_cast<size_t>(r) * ldy + j] = y[static_cast<size_t>(r) * ldy + j];
      for (int c = in; c < lddx; ++c) dx_gpu[static_cast<size_t>(r) * lddx + c] = dx[static_cast<size_t>(r) * lddx + c];
    }
    expect_within_gemm_bound("y", y_gpu, y, y_mag, in);
    expect_within_gemm_bound("dx", dx_gpu, dx, dx_mag, out);
    ParamStore back = p;
    dev.download_grads(back);
    const std::vector<float> dw_gpu(back.grad(w), back.grad(w) + out * in), dw_cpu(p.grad(w), p.grad(w) + out * in);
    const std::vector<float> db_gpu(back.grad(b), back.grad(b) + out), db_cpu(p.grad(b), p.grad(b) + out);
    expect_within_gemm_bound("dW", dw_gpu, dw_cpu, dw_mag, rows);
    expect_within_gemm_bound("db", db_gpu, db_cpu, db_mag, rows);
    if (frozen_bias) {
      EXPECT_EQ(db_gpu, std::vector<float>(static_cast<size_t>(out), 0.25f)) << "a frozen bias got a gradient";
    }
  }
}

// ---- cuDNN LSTM against the CPU Lstm ----

struct LstmCase {
  int input, hidden, layers;
  bool bidirectional;
  float dropout;
  Mode mode;
  std::vector<int> lengths;
};

std::string describe(const LstmCase& c) {
  std::string s = "input " + std::to_string(c.input) + ", hidden " + std::to_string(c.hidden) + ", " +
                  std::to_string(c.layers) + (c.bidirectional ? " bidirectional" : " unidirectional") +
                  " layers, dropout " + std::to_string(c.dropout) + (c.mode == Mode::Train ? ", train" : ", eval") +
                  ", lengths";
  for (int l : c.lengths) s += " " + std::to_string(l);
  return s;
}

// Tolerance of a normalised comparison, derived rather than tuned: a gate pre-activation is a
// dot product of length K = input + hidden (error <= K u relative to its magnitude on either
// backend); cell nonlinearities add a few ulps; errors of one step reach the next through the
// recurrence, so they may add up over the T steps of the longest conversation. Gradients also
// sum over every row (the weight gradients' reduction length). A factor 8 covers both
// backends and the nonlinearities. Layout or mask mistakes give errors of order 1.
double lstm_tolerance(const LstmCase& c, int64_t rows, bool gradients) {
  const int dirs = c.bidirectional ? 2 : 1;
  const double k = c.input + c.hidden * dirs + (gradients ? static_cast<double>(rows) : 0.0);
  return 8.0 * (kEps / 2) * k * c.lengths.front() * c.layers;
}

void check_lstm(const LstmCase& c, uint64_t seed) {
  SCOPED_TRACE(describe(c));
  LstmConfig cfg;
  cfg.input = c.input;
  cfg.hidden = c.hidden;
  cfg.layers = c.layers;
  cfg.bidirectional = c.bidirectional;
  cfg.dropout = c.dropout;
  ParamStore params;
  Lstm lstm(params, "clstm.lstm", cfg);
  Rng rng(seed);
  lstm.init(params, rng);
  const PackedLayout layout = PackedLayout::from_lengths(c.lengths);
  const int64_t rows = layout.rows();
  const int out = lstm.output_dim();
  const std::vector<float> x = random_vector(static_cast<size_t>(rows) * c.input, rng);
  const std::vector<float> dy = random_vector(static_cast<size_t>(rows) * out, rng);
  // Non-zero starting gradients: both backends must accumulate (+=).
  for (float& g : params.grads()) g = static_cast<float>(rng.uniform(-0.1, 0.1));
  const DropoutKey key{seed, 17};
  const uint64_t slot = 3;

  cuda::DeviceParams dev(context(), params);
  dev.upload_grads(params);

  // CPU
  LstmContext cpu_ctx;
  Tensor y_cpu;
  lstm.forward(params, layout, x.data(), y_cpu, c.mode, key, slot, cpu_ctx);
  std::vector<float> dx_cpu(x.size());
  lstm.backward(params, layout, x.data(), dy.data(), dx_cpu.data(), cpu_ctx);

  // GPU
  cuda::CudnnLstm gpu(context(), dev, "clstm.lstm", cfg);
  cuda::CudnnLstmContext gpu_ctx;
  cuda::DeviceArray<float> d_x = to_device(x), d_dy = to_device(dy);
  cuda::DeviceArray<float> d_y(static_cast<size_t>(rows) * out), d_dx(x.size());
  gpu.forward(dev, layout, d_x.data(), d_y.data(), c.mode, key, slot, gpu_ctx);
  gpu.backward(dev, layout, d_x.data(), d_dy.data(), d_dx.data(), gpu_ctx);
  const std::vector<float> y_gpu = to_host(d_y.data(), static_cast<size_t>(rows) * out);
  const std::vector<float> dx_gpu = to_host(d_dx.data(), x.size());
  ParamStore grads_gpu = params;
  dev.download_grads(grads_gpu);

  const std::vector<float> y_ref(y_cpu.data(), y_cpu.data() + y_cpu.size());
  EXPECT_LE(normalised_error(y_gpu, y_ref), lstm_tolerance(c, rows, false)) << "forward output";
  EXPECT_LE(normalised_error(dx_gpu, dx_cpu), lstm_tolerance(c, rows, true)) << "input gradient";
  for (const ParamInfo& p : params.infos()) {
    const std::vector<float> g_cpu(params.grads().begin() + static_cast<int64_t>(p.offset),
                                   params.grads().begin() + static_cast<int64_t>(p.offset + p.size));
    const std::vector<float> g_gpu(grads_gpu.grads().begin() + static_cast<int64_t>(p.offset),
                                   grads_gpu.grads().begin() + static_cast<int64_t>(p.offset + p.size));
    EXPECT_LE(normalised_error(g_gpu, g_cpu), lstm_tolerance(c, rows, true)) << "gradient of " << p.name;
  }
}

TEST(CudaBackend, CudnnLstmMatchesTheCpuLstmUnidirectional) {
  MMAN_REQUIRE_CUDA();
  check_lstm({12, 16, 1, false, 0.0f, Mode::Eval, {7, 5, 5, 2, 1}}, 100);
  check_lstm({12, 16, 2, false, 0.0f, Mode::Train, {9, 9, 4, 1}}, 101);
  check_lstm({12, 16, 2, false, 0.4f, Mode::Train, {7, 6, 3, 3, 1}}, 102);  // our masks between layers
  check_lstm({12, 16, 2, false, 0.4f, Mode::Eval, {7, 6, 3, 3, 1}}, 103);   // no dropout in evaluation
  check_lstm({5, 8, 1, false, 0.0f, Mode::Eval, {1}}, 104);                 // one utterance
}

TEST(CudaBackend, CudnnLstmMatchesTheCpuLstmBidirectional) {
  MMAN_REQUIRE_CUDA();
  check_lstm({12, 16, 1, true, 0.0f, Mode::Eval, {7, 5, 5, 2, 1}}, 110);
  check_lstm({12, 16, 2, true, 0.5f, Mode::Train, {8, 8, 6, 2}}, 111);
  check_lstm({20, 10, 2, true, 0.0f, Mode::Train, {11, 3, 1}}, 112);
}

TEST(CudaBackend, CudnnLstmAtTheModelsSize) {
  MMAN_REQUIRE_CUDA();
  // clstm_speech's LSTM: 100 -> 300, two layers, dropout 0.5, ten conversations of IEMOCAP-like lengths.
  check_lstm({100, 300, 2, false, 0.5f, Mode::Train, {60, 52, 47, 44, 40, 33, 30, 21, 18, 12}}, 120);
}

TEST(CudaBackend, CudnnLstmSkipsFrozenTensorsAndCanOmitDx) {
  MMAN_REQUIRE_CUDA();
  LstmConfig cfg;
  cfg.input = 6;
  cfg.hidden = 5;
  cfg.layers = 2;
  ParamStore params;
  Lstm lstm(params, "lstm", cfg);
  Rng rng(130);
  lstm.init(params, rng);
  params.set_trainable("lstm.weight_ih_l0", false);
  params.set_trainable("lstm.bias_hh_l1", false);
  for (float& g : params.grads()) g = 0.5f;
  const PackedLayout layout = PackedLayout::from_lengths({4, 3, 1});
  const std::vector<float> x = random_vector(static_cast<size_t>(layout.rows()) * cfg.input, rng);
  const std::vector<float> dy = random_vector(static_cast<size_t>(layout.rows()) * cfg.hidden, rng);

  cuda::DeviceParams dev(context(), params);
  dev.upload_grads(params);
  cuda::CudnnLstm gpu(context(), dev, "lstm", cfg);
  cuda::CudnnLstmContext gpu_ctx;
  cuda::DeviceArray<float> d_x = to_device(x), d_dy = to_device(dy), d_y(dy.size());
  gpu.forward(dev, layout, d_x.data(), d_y.data(), Mode::Train, DropoutKey{1, 2}, 0, gpu_ctx);
  gpu.backward(dev, layout, d_x.data(), d_dy.data(), nullptr, gpu_ctx);
  ParamStore back = params;
  dev.download_grads(back);

  LstmContext cpu_ctx;
  Tensor y;
  lstm.forward(params, layout, x.data(), y, Mode::Train, DropoutKey{1, 2}, 0, cpu_ctx);
  lstm.backward(params, layout, x.data(), dy.data(), nullptr, cpu_ctx);
  const double tol = lstm_tolerance({cfg.input, cfg.hidden, cfg.layers, false, 0.0f, Mode::Train, layout.lengths},
                                    layout.rows(), true);
  for (const ParamInfo& p : params.infos()) {
    const float* g_gpu = back.grads().data() + p.offset;
    const float* g_cpu = params.grads().data() + p.offset;
    if (!p.trainable) {
      for (size_t i = 0; i < p.size; ++i) ASSERT_EQ(g_gpu[i], 0.5f) << p.name << " is frozen";
    } else {
      EXPECT_LE(normalised_error(std::vector<float>(g_gpu, g_gpu + p.size), std::vector<float>(g_cpu, g_cpu + p.size)),
                tol)
          << p.name;
    }
  }
}

// Values -> cuDNN weight space (forward) -> values (the inverse map) is the identity: every
// parameter element has exactly one place in cuDNN's layout, so gradients and checkpoints
// mean the same on both backends.
TEST(CudaBackend, CudnnWeightMapRoundTripsTheArena) {
  MMAN_REQUIRE_CUDA();
#ifdef MMAN_DEVICE_EMULATION
  GTEST_SKIP() << "cuDNN's weight space exists only on a real device (the emulation computes the LSTM on the CPU)";
#endif
  for (bool bidirectional : {false, true}) {
    LstmConfig cfg;
    cfg.input = 9;
    cfg.hidden = 7;
    cfg.layers = 2;
    cfg.bidirectional = bidirectional;
    ParamStore params;
    Lstm lstm(params, "", cfg);
    Rng rng(140);
    lstm.init(params, rng);
    cuda::DeviceParams dev(context(), params);
    cuda::CudnnLstm gpu(context(), dev, "", cfg);
    const PackedLayout layout = PackedLayout::from_lengths({3, 2});
    cuda::DeviceArray<float> d_x = to_device(random_vector(static_cast<size_t>(layout.rows()) * cfg.input, rng));
    cuda::DeviceArray<float> d_y(static_cast<size_t>(layout.rows()) * lstm.output_dim());
    cuda::CudnnLstmContext gpu_ctx;
    gpu.forward(dev, layout, d_x.data(), d_y.data(), Mode::Eval, DropoutKey{}, 0, gpu_ctx, false);
    context().zero(dev.values(), dev.size() * sizeof(float));
    const int dirs = bidirectional ? 2 : 1, h = cfg.hidden;
    for (int k = 0; k < cfg.layers; ++k) {
      gpu.weight_space_to_values(k, dev);
      const int in = k == 0 ? cfg.input : h * dirs;
      EXPECT_GE(gpu.weight_space_floats(k), static_cast<size_t>(dirs) * (4 * h * in + 4 * h * h + 8 * h))
          << "layer " << k << ": cuDNN's weight space cannot hold the layer's parameters";
    }
    ParamStore back = params;
    dev.download_values(back);
    EXPECT_EQ(back.values(), params.values()) << (bidirectional ? "bidirectional" : "unidirectional");
  }
}

TEST(CudaBackend, CudnnLstmRejectsMisuse) {
  MMAN_REQUIRE_CUDA();
  LstmConfig cfg;
  cfg.input = 4;
  cfg.hidden = 3;
  ParamStore params;
  Lstm lstm(params, "lstm", cfg);
  cuda::DeviceParams dev(context(), params);
  LstmConfig wrong = cfg;
  wrong.input = 5;
  EXPECT_THROW({ cuda::CudnnLstm bad(context(), dev, "lstm", wrong); }, Error);  // shapes differ
  EXPECT_THROW({ cuda::CudnnLstm bad(context(), dev, "other", cfg); }, Error);   // no such parameters
  cuda::CudnnLstm gpu(context(), dev, "lstm", cfg);
  const PackedLayout layout = PackedLayout::from_lengths({2, 1});
  cuda::DeviceArray<float> d_x(12), d_y(9), d_dy(9), d_dx(12);
  cuda::CudnnLstmContext gpu_ctx;
  EXPECT_THROW(gpu.backward(dev, layout, d_x.data(), d_dy.data(), d_dx.data(), gpu_ctx), Error);  // no forward
  gpu.forward(dev, layout, d_x.data(), d_y.data(), Mode::Eval, DropoutKey{}, 0, gpu_ctx, false);
  EXPECT_THROW(gpu.backward(dev, layout, d_x.data(), d_dy.data(), d_dx.data(), gpu_ctx), Error);  // nothing kept
  gpu.forward(dev, layout, d_x.data(), d_y.data(), Mode::Eval, DropoutKey{}, 0, gpu_ctx);
  EXPECT_THROW(gpu.backward(dev, layout, d_x.data(), d_dy.data(), d_x.data(), gpu_ctx), Error);  // dx aliases x
  const PackedLayout other = PackedLayout::from_lengths({2, 2});
  EXPECT_THROW(gpu.backward(dev, other, d_x.data(), d_dy.data(), d_dx.data(), gpu_ctx), Error);  // another batch
  PackedLayout broken = layout;
  broken.lengths = {1, 2};
  EXPECT_THROW(gpu.forward(dev, broken, d_x.data(), d_y.data(), Mode::Eval, DropoutKey{}, 0, gpu_ctx), Error);
}

// ---- the cLSTM block (clstm_speech) on the GPU against the CPU model ----

void check_clstm_speech(Mode mode, bool bidirectional, uint64_t seed) {
  SCOPED_TRACE(std::string(mode == Mode::Train ? "train" : "eval") + (bidirectional ? ", bidirectional" : ""));
  ModelConfig mc;
  mc.type = "clstm_speech";
  mc.hidden = 16;
  mc.fc = 8;
  mc.bidirectional = bidirectional;
  DataShape shape;
  shape.modalities = {"audio", "visual", "text"};
  shape.dims = {10, 12, 6};
  shape.num_outputs = 4;
  std::unique_ptr<Model> model = make_model(mc, shape);
  Rng rng(seed);
  model->init(rng);
  const ModelConfig& rc = model->config();  // resolved: two LSTM layers, dropouts 0.5
  ClstmBlockConfig bc;
  bc.input = 10;
  bc.hidden = rc.hidden;
  bc.layers = rc.lstm_layers;
  bc.lstm_dropout = rc.lstm_dropout;
  bc.bidirectional = rc.bidirectional;
  bc.fc = rc.fc;
  bc.dropout = rc.dropout;
  bc.outputs = shape.num_outputs;

  Batch batch;
  batch.layout = PackedLayout::from_lengths({9, 7, 7, 4, 2});
  const int64_t rows = batch.rows();
  for (int64_t d : shape.dims) {
    Tensor f(rows, d);
    for (int64_t i = 0; i < f.size(); ++i) f.data()[i] = static_cast<float>(rng.uniform(-2.0, 2.0));
    batch.features.push_back(f);
  }
  batch.targets.assign(static_cast<size_t>(rows), 0);
  Tensor dlogits(rows, shape.num_outputs);
  for (int64_t i = 0; i < dlogits.size(); ++i) dlogits.data()[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  const DropoutKey key{seed, 5};

  ParamStore& params = model->params();
  params.zero_grads();
  cuda::DeviceParams dev(context(), params);
  const Tensor logits_cpu = model->forward(batch, mode, key);
  model->backward(batch, dlogits);

  cuda::ClstmBlockDevice block(context(), dev, "", bc, 0);  // a standalone model's block: no prefix, slot 0
  cuda::ClstmBlockDeviceContext bctx;
  const Tensor& audio = batch.features[0];
  cuda::DeviceArray<float> d_x = to_device(std::vector<float>(audio.data(), audio.data() + audio.size()));
  cuda::DeviceArray<float> d_dlogits = to_device(std::vector<float>(dlogits.data(), dlogits.data() + dlogits.size()));
  cuda::DeviceArray<float> d_logits(static_cast<size_t>(rows) * shape.num_outputs);
  block.forward(dev, batch.layout, d_x.data(), d_logits.data(), mode, key, bctx);
  block.backward(dev, batch.layout, d_x.data(), d_dlogits.data(), nullptr, bctx);
  ParamStore back = params;
  dev.download_grads(back);

  // The LSTM bound of check_lstm, with the two dense layers' dot products added to K.
  const int hd = bc.hidden * (bidirectional ? 2 : 1);
  const double k_fwd = bc.input + hd + hd + bc.fc;
  const double tol_fwd = 8.0 * (kEps / 2) * k_fwd * batch.layout.lengths.front() * bc.layers;
  const double tol_grad = 8.0 * (kEps / 2) * (k_fwd + static_cast<double>(rows)) * batch.layout.lengths.front() * bc.layers;
  EXPECT_LE(normalised_error(to_host(d_logits.data(), static_cast<size_t>(logits_cpu.size())),
                             std::vector<float>(logits_cpu.data(), logits_cpu.data() + logits_cpu.size())),
            tol_fwd)
      << "logits";
  for (const ParamInfo& p : params.infos()) {
    const std::vector<float> g_cpu(params.grad(params.find(p.name)), params.grad(params.find(p.name)) + p.size);
    const std::vector<float> g_gpu(back.grad(back.find(p.name)), back.grad(back.find(p.name)) + p.size);
    EXPECT_LE(normalised_error(g_gpu, g_cpu), tol_grad) << "gradient of " << p.name;
  }
}

TEST(CudaBackend, ClstmSpeechBlockMatchesTheCpuModel) {
  MMAN_REQUIRE_CUDA();
  check_clstm_speech(Mode::Train, false, 160);  // all four dropouts (two in the LSTM stack, two in the head)
  check_clstm_speech(Mode::Eval, false, 161);
  check_clstm_speech(Mode::Train, true, 162);
}

#endif  // MMAN_WITH_CUDA

}  // namespace
}  // namespace mman
