// The fused MMA kernels' CPU side and comparison, shared by the SIMT test (tests/test_kernels_mma.cpp)
// and the native one (tests/test_kernels_native.cpp): both build the same reference and check the
// kernels' outputs against it the same way.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "cuda/kernels/mma.cuh"
#include "mman/blas.h"
#include "mman/layers/activation.h"
#include "mman/layers/dropout.h"
#include "mman/layers/mma.h"
#include "mman/params.h"
#include "mman/rng.h"
#include "mman/tensor.h"
#include "support/mma_tolerance.h"
#include "support/modalities.h"

namespace mman::test {

struct MmaCase {
  MmaScore score;
  MmaSkip skip;
  Mode mode;
  int64_t rows;
  int d;
};

inline std::string describe(const MmaCase& s) {
  return std::string(s.score == MmaScore::Cosine ? "cosine" : "scaled_dot") + "/" +
         (s.skip == MmaSkip::Concat ? "concat" : "residual") + "/" + (s.mode == Mode::Train ? "train" : "eval") +
         ", rows " + std::to_string(s.rows) + ", d " + std::to_string(s.d);
}

// The CPU layer's forward and backward on random inputs, and what the kernels need.
struct MmaReference {
  static constexpr uint64_t kSlotBase = 40;
  MmaConfig cfg;
  ParamStore ps;
  Mma mma;
  MmaContext ctx;
  Tensor out, dout;
  std::vector<float> xhat;        // ctx.xhat concatenated, [rows x 3d]
  std::vector<float> grad_start;  // the gradient arena before backward (random: += is tested)
  kernels::MmaShape shape{};
  DropoutKey key{1234, 17};

  // `tweak` may change the initialised parameters before the forward pass.
  MmaReference(const MmaCase& s, uint64_t seed, const std::function<void(ParamStore&)>& tweak = {}) {
    cfg.modalities = {"audio", "visual", "text"};
    cfg.dims = {7, 12, 5};
    cfg.d_model = s.d;
    cfg.dropout = 0.25f;  // larger than the paper's 0.1, so masks drop plenty of elements
    cfg.score = s.score;
    cfg.skip = s.skip;
    mma = Mma(ps, "mma.", cfg, kSlotBase);
    Rng rng(seed);
    mma.init(ps, rng);
    if (tweak) tweak(ps);
    std::vector<Tensor> x;
    std::vector<const float*> ptrs;
    for (int dim : cfg.dims) {
      Tensor t(s.rows, dim);
      for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(rng.uniform(-2, 2));
      x.push_back(std::move(t));
    }
    for (const Tensor& t : x) ptrs.push_back(t.data());
    mma.forward(ps, s.rows, ptrs.data(), out, s.mode, key, ctx);
    xhat = concat_modalities(ctx.xhat, s.rows, s.d);
    dout.resize(s.rows, mma.output_dim());
    for (int64_t i = 0; i < dout.size(); ++i) dout.data()[i] = static_cast<float>(rng.uniform(-1, 1));
    for (float& g : ps.grads()) g = static_cast<float>(rng.uniform(-0.5, 0.5));
    grad_start = ps.grads();
    if (s.mode == Mode::Train) mma.backward(ps, s.rows, ptrs.data(), dout, nullptr, ctx);
    shape = kernels::mma_shape(s.rows, 3, s.d, s.score, s.skip, cfg.dropout, s.mode, key, kSlotBase);
  }
};

// What the kernels wrote; backward's fields stay empty for an evaluation-mode run.
struct MmaOutputs {
  std::vector<float> q, k, v, alpha, out;  // forward
  std::vector<float> dq, dk, dv, dxhat;    // backward
  std::vector<float> grads;                // the gradient arena after mma_weight_grad
  bool operator==(const MmaOutputs& o) const {
    const auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    };
    return same(q, o.q) && same(k, o.k) && same(v, o.v) && same(alpha, o.alpha) && same(out, o.out) &&
           same(dq, o.dq) && same(dk, o.dk) && same(dv, o.dv) && same(dxhat, o.dxhat) && same(grads, o.grads);
  }
};

// Every output finite.
inline void expect_mma_finite(const MmaOutputs& k) {
  for (const auto* v : {&k.out, &k.alpha, &k.dq, &k.dk, &k.dv, &k.dxhat})
    for (size_t e = 0; e < v->size(); ++e) ASSERT_TRUE(std::isfinite((*v)[e])) << "element " << e;
}

// One kernel run against the CPU layer: forward (projections, scores, softmax), backward, dxhat
// against the CPU's dq, dk, dv times the weights plus the skip share and through the
// standardisation's dropout and ReLU, the Q/K/V weight gradients, and nothing else touched.
inline void check_mma_outputs(const MmaCase& setup, const MmaReference& cpu, const MmaOutputs& k) {
  const int d = setup.d;
  const int64_t rows = setup.rows;
  const size_t n = static_cast<size_t>(rows) * 3 * static_cast<size_t>(d);
  // Forward: projections (length d), scores (d), softmax and z (3).
  const double fwd = 2.0 * d + 3;
  expect_mma_close(k.out, cpu.out.data(), static_cast<size_t>(cpu.out.size()), fwd, "out");
  expect_mma_close(k.alpha, cpu.ctx.alpha.data(), static_cast<size_t>(cpu.ctx.alpha.size()), fwd, "alpha");
  if (setup.mode == Mode::Eval) return;
  expect_mma_close(k.q, concat_modalities(cpu.ctx.q, rows, d).data(), n, d, "q");
  expect_mma_close(k.k, concat_modalities(cpu.ctx.k, rows, d).data(), n, d, "k");
  expect_mma_close(k.v, concat_modalities(cpu.ctx.v, rows, d).data(), n, d, "v");
  // Backward: dalpha (d) and the score gradients (d) on top of the forward's path.
  const double bwd = fwd + 2.0 * d + 6;
  expect_mma_close(k.dq, concat_modalities(cpu.ctx.dq, rows, d).data(), n, bwd, "dq");
  expect_mma_close(k.dk, concat_modalities(cpu.ctx.dk, rows, d).data(), n, bwd, "dk");
  expect_mma_close(k.dv, concat_modalities(cpu.ctx.dv, rows, d).data(), n, bwd, "dv");

  const int width = cpu.mma.output_dim() / 3;
  std::vector<Tensor> ref(3);
  for (int m = 0; m < 3; ++m) {
    Tensor& t = ref[static_cast<size_t>(m)];
    t.resize(rows, d);
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(t.row(r), cpu.dout.row(r) + m * width, static_cast<size_t>(d) * sizeof(float));
    const char* which[3] = {"q.", "k.", "v."};
    const std::vector<Tensor>* dys[3] = {&cpu.ctx.dq, &cpu.ctx.dk, &cpu.ctx.dv};
    for (int i = 0; i < 3; ++i) {
      const float* w =
          cpu.ps.value(cpu.ps.find("mma." + std::string(which[i]) + cpu.cfg.modalities[static_cast<size_t>(m)] +
                                   ".weight"));
      gemm(false, false, static_cast<int>(rows), d, d, 1.0f, (*dys[i])[static_cast<size_t>(m)].data(), d, w, d, 1.0f,
           t.data(), d);
    }
  }
  expect_mma_close(k.dxhat, concat_modalities(ref, rows, d).data(), n, bwd + 3.0 * d, "dxhat");
  std::vector<Tensor> masked(3);
  for (int m = 0; m < 3; ++m) {
    Tensor& t = masked[static_cast<size_t>(m)];
    t.resize(rows, d);
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(t.row(r), &k.dxhat[static_cast<size_t>((r * 3 + m) * d)], static_cast<size_t>(d) * sizeof(float));
    const Dropout drop(cpu.cfg.dropout, MmaReference::kSlotBase + static_cast<uint64_t>(m));
    drop.backward(t.data(), t.data(), t.size(), DropoutContext{setup.mode, cpu.key});
    relu_backward(cpu.ctx.xhat[static_cast<size_t>(m)].data(), t.data(), t.data(), t.size());
  }
  expect_mma_close(concat_modalities(masked, rows, d), concat_modalities(cpu.ctx.dxhat, rows, d).data(), n,
                   bwd + 3.0 * d, "masked dxhat");

  // Weight gradients: a sum over the rows of the backward's values.
  for (const char* which : {"q.", "k.", "v."})
    for (const std::string& mod : cpu.cfg.modalities)
      for (const char* part : {"weight", "bias"}) {
        const std::string name = "mma." + std::string(which) + mod + "." + part;
        const ParamInfo& info = cpu.ps.info(cpu.ps.find(name));
        const std::vector<float> got(k.grads.begin() + static_cast<std::ptrdiff_t>(info.offset),
                                     k.grads.begin() + static_cast<std::ptrdiff_t>(info.offset + info.size));
        expect_mma_close(got, cpu.ps.grads().data() + info.offset, info.size, bwd + static_cast<double>(rows), name);
      }
  // Nothing outside the Q/K/V gradients was touched.
  for (const ParamInfo& info : cpu.ps.infos()) {
    if (info.name.rfind("mma.std.", 0) != 0) continue;
    for (size_t i = info.offset; i < info.offset + info.size; ++i) ASSERT_EQ(k.grads[i], cpu.grad_start[i]) << info.name;
  }
}

// Parameter tweaks of the edge-case tests.
// An all-zero text query (cosine: max(|q|, eps) keeps the score finite and picks the gradient's branch).
inline void zero_text_query(ParamStore& ps) {
  for (const char* part : {"weight", "bias"}) {
    const int id = ps.find(std::string("mma.q.text.") + part);
    std::fill_n(ps.value(id), ps.info(id).size, 0.0f);
  }
}
// Queries and keys with elements of ~1e19 (q.k and |q|^2 overflow float, not double).
inline void scale_queries_and_keys(ParamStore& ps) {
  for (const ParamInfo& info : ps.infos())
    if (info.name.rfind("mma.q.", 0) == 0 || info.name.rfind("mma.k.", 0) == 0)
      for (size_t i = 0; i < info.size; ++i) ps.values()[info.offset + i] *= 2e19f;
}

// The seed a case's reference is built from.
inline uint64_t mma_seed(const MmaCase& s) {
  return 1000 + static_cast<uint64_t>(s.rows) * 7 + static_cast<uint64_t>(s.d);
}

}  // namespace mman::test
