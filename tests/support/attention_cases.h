// The unfused MMA attention kernels' test cases and their CPU side, shared by the SIMT test
// (tests/test_kernels_attention.cpp) and the native one (tests/test_kernels_native.cpp): both build the
// same reference and compare the kernels' outputs with it by the same checks.
#pragma once
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cuda/kernels/attention.cuh"
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

struct AttentionCase {
  int modalities;
  MmaScore score;
  MmaSkip skip;
  Mode mode;
  int64_t rows;
  int d;
  float qk_scale = 1.0f;  // Q and K weights and biases multiplied by this (huge queries and keys)
};

inline std::string describe(const AttentionCase& c) {
  return std::to_string(c.modalities) + " modalities, " + (c.score == MmaScore::Cosine ? "cosine" : "scaled_dot") +
         "/" + (c.skip == MmaSkip::Concat ? "concat" : "residual") + "/" + (c.mode == Mode::Train ? "train" : "eval") +
         ", rows " + std::to_string(c.rows) + ", d " + std::to_string(c.d) +
         (c.qk_scale != 1.0f ? ", q and k scaled by " + std::to_string(c.qk_scale) : std::string());
}

// Three modalities, every score, skip and mode.
inline std::vector<AttentionCase> attention_main_cases() {
  std::vector<AttentionCase> cases;
  for (MmaScore score : {MmaScore::ScaledDot, MmaScore::Cosine})
    for (MmaSkip skip : {MmaSkip::Residual, MmaSkip::Concat})
      for (Mode mode : {Mode::Eval, Mode::Train}) cases.push_back({3, score, skip, mode, 21, 45});
  return cases;
}

// Any modality count and widths the fused kernels do not take (d > 160); one row; 8 rows per
// block, so 9 and 17 rows leave ragged blocks.
inline std::vector<AttentionCase> attention_other_shape_cases() {
  return {{1, MmaScore::Cosine, MmaSkip::Residual, Mode::Train, 9, 20},
          {2, MmaScore::ScaledDot, MmaSkip::Concat, Mode::Train, 17, 33},
          {5, MmaScore::Cosine, MmaSkip::Concat, Mode::Train, 9, 31},
          {3, MmaScore::ScaledDot, MmaSkip::Residual, Mode::Train, 1, 150},
          {3, MmaScore::Cosine, MmaSkip::Residual, Mode::Train, 9, 200}};
}

// Queries and keys with elements of ~1e19: q.k and |q|^2 overflow float (1e38 per term) but not
// the double in which mman::Mma forms scores and norms (and the cosine backward).
inline std::vector<AttentionCase> attention_huge_cases() {
  std::vector<AttentionCase> cases;
  for (MmaScore score : {MmaScore::ScaledDot, MmaScore::Cosine}) {
    cases.push_back({3, score, MmaSkip::Residual, Mode::Train, 9, 45, 2e19f});
    cases.push_back({2, score, MmaSkip::Concat, Mode::Train, 9, 150, 2e19f});
  }
  return cases;
}

// The CPU side of a case: an MMA layer's forward and backward, and the unfused path's Q, K, V
// projections by our CPU GEMM (cuBLAS on the GPU), the kernels' inputs.
struct AttentionReference {
  static constexpr uint64_t kSlotBase = 100;
  AttentionCase c{};
  MmaConfig cfg;
  ParamStore ps;
  MmaContext ctx;
  DropoutKey key{77, 3};
  Tensor out, dout;
  std::vector<float> xhat;     // [rows x M d]
  std::vector<float> proj[3];  // q, k, v [rows x M d]
  kernels::MmaShape shape{};
  double fwd = 0, bwd = 0;  // reduction lengths of the forward and backward paths

  size_t elements() const { return static_cast<size_t>(c.rows) * static_cast<size_t>(c.modalities * c.d); }
  const float* weight(int which, int m) const { return ps.value(ps.find(name(which, m) + ".weight")); }
  std::string name(int which, int m) const {
    static const char* kWhich[3] = {"q.", "k.", "v."};
    return "m." + std::string(kWhich[which]) + cfg.modalities[static_cast<size_t>(m)];
  }
};

inline void build_attention_reference(const AttentionCase& c, AttentionReference& r) {
  r.c = c;
  const int mc = c.modalities, d = c.d;
  const int64_t rows = c.rows;
  const std::vector<std::string> all_names = {"audio", "visual", "text", "face", "gesture"};
  for (int m = 0; m < mc; ++m) r.cfg.modalities.push_back(all_names[static_cast<size_t>(m)]), r.cfg.dims.push_back(3 + 4 * m);
  r.cfg.d_model = d;
  r.cfg.dropout = 0.3f;
  r.cfg.score = c.score;
  r.cfg.skip = c.skip;
  Mma mma(r.ps, "m.", r.cfg, AttentionReference::kSlotBase);
  Rng rng(31 + static_cast<uint64_t>(rows) + static_cast<uint64_t>(mc) * 1000);
  mma.init(r.ps, rng);
  if (c.qk_scale != 1.0f)
    for (const ParamInfo& info : r.ps.infos())
      if (info.name.rfind("m.q.", 0) == 0 || info.name.rfind("m.k.", 0) == 0)
        for (size_t i = 0; i < info.size; ++i) r.ps.values()[info.offset + i] *= c.qk_scale;
  std::vector<Tensor> x;
  std::vector<const float*> ptrs;
  for (int dim : r.cfg.dims) {
    Tensor t(rows, dim);
    for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(rng.uniform(-2, 2));
    x.push_back(std::move(t));
  }
  for (const Tensor& t : x) ptrs.push_back(t.data());
  mma.forward(r.ps, rows, ptrs.data(), r.out, c.mode, r.key, r.ctx);
  r.dout.resize(rows, mma.output_dim());
  for (int64_t i = 0; i < r.dout.size(); ++i) r.dout.data()[i] = static_cast<float>(rng.uniform(-1, 1));
  r.ps.zero_grads();
  mma.backward(r.ps, rows, ptrs.data(), r.dout, nullptr, r.ctx);

  r.xhat = concat_modalities(r.ctx.xhat, rows, d);
  const size_t n = r.elements();
  for (int i = 0; i < 3; ++i) {
    r.proj[i].assign(n, 0.0f);
    for (int m = 0; m < mc; ++m) {
      const float* bias = r.ps.value(r.ps.find(r.name(i, m) + ".bias"));
      for (int64_t row = 0; row < rows; ++row)
        std::memcpy(&r.proj[i][static_cast<size_t>((row * mc + m) * d)], bias, static_cast<size_t>(d) * sizeof(float));
      gemm(false, true, static_cast<int>(rows), d, d, 1.0f, r.xhat.data() + m * d, mc * d, r.weight(i, m), d, 1.0f,
           r.proj[i].data() + m * d, mc * d);
    }
  }
  r.shape = kernels::mma_shape(rows, mc, d, c.score, c.skip, r.cfg.dropout, c.mode, r.key, AttentionReference::kSlotBase);
  r.fwd = 2.0 * d + mc;
  r.bwd = r.fwd + 2.0 * d + 2 * mc;
}

// What the two kernels wrote: the forward's output and attention weights, the backward's dq, dk,
// dv and its dxhat (the skip's share only).
struct AttentionOutputs {
  std::vector<float> out, alpha, dq, dk, dv, dxhat;
};

// The kernels' outputs against the CPU layer: forward, dq/dk/dv, then the rest of the unfused
// backward by GEMM (dxhat += dY W, dW = dY^T xhat, db = column sums) against the layer's weight
// gradients, and dxhat through the standardisation's dropout and ReLU (the layer's own functions).
inline void check_attention_outputs(const AttentionReference& r, AttentionOutputs k) {
  const int mc = r.c.modalities, d = r.c.d;
  const int64_t rows = r.c.rows;
  expect_mma_close(k.out, r.out.data(), static_cast<size_t>(r.out.size()), r.fwd, "out");
  expect_mma_close(k.alpha, r.ctx.alpha.data(), static_cast<size_t>(r.ctx.alpha.size()), r.fwd, "alpha");
  expect_mma_close(k.dq, concat_modalities(r.ctx.dq, rows, d), r.bwd, "dq");
  expect_mma_close(k.dk, concat_modalities(r.ctx.dk, rows, d), r.bwd, "dk");
  expect_mma_close(k.dv, concat_modalities(r.ctx.dv, rows, d), r.bwd, "dv");
  const std::vector<float>* dys[3] = {&k.dq, &k.dk, &k.dv};
  std::vector<float> grads(r.ps.grads().size(), 0.0f);
  for (int i = 0; i < 3; ++i)
    for (int m = 0; m < mc; ++m) {
      gemm(false, false, static_cast<int>(rows), d, d, 1.0f, dys[i]->data() + m * d, mc * d, r.weight(i, m), d, 1.0f,
           k.dxhat.data() + m * d, mc * d);
      const int wid = r.ps.find(r.name(i, m) + ".weight");
      const int bid = r.ps.find(r.name(i, m) + ".bias");
      gemm(true, false, d, d, static_cast<int>(rows), 1.0f, dys[i]->data() + m * d, mc * d, r.xhat.data() + m * d,
           mc * d, 0.0f, grads.data() + r.ps.info(wid).offset, d);
      for (int64_t row = 0; row < rows; ++row)
        for (int j = 0; j < d; ++j)
          grads[r.ps.info(bid).offset + static_cast<size_t>(j)] += (*dys[i])[static_cast<size_t>((row * mc + m) * d + j)];
      for (int id : {wid, bid}) {
        const ParamInfo& info = r.ps.info(id);
        expect_mma_close(std::vector<float>(grads.begin() + static_cast<std::ptrdiff_t>(info.offset),
                                            grads.begin() + static_cast<std::ptrdiff_t>(info.offset + info.size)),
                         r.ps.grad(id), info.size, r.bwd + static_cast<double>(rows), info.name);
      }
    }
  std::vector<Tensor> masked(static_cast<size_t>(mc));
  for (int m = 0; m < mc; ++m) {
    Tensor& t = masked[static_cast<size_t>(m)];
    t.resize(rows, d);
    for (int64_t row = 0; row < rows; ++row)
      std::memcpy(t.row(row), &k.dxhat[static_cast<size_t>((row * mc + m) * d)], static_cast<size_t>(d) * sizeof(float));
    Dropout(r.cfg.dropout, AttentionReference::kSlotBase + static_cast<uint64_t>(m))
        .backward(t.data(), t.data(), t.size(), {r.c.mode, r.key});
    relu_backward(r.ctx.xhat[static_cast<size_t>(m)].data(), t.data(), t.data(), t.size());
  }
  expect_mma_close(concat_modalities(masked, rows, d), concat_modalities(r.ctx.dxhat, rows, d), r.bwd + mc * d,
                   "dxhat");
}

}  // namespace mman::test
