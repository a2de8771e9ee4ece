// Lstm on the CPU: batched input GEMM, per-step recurrent GEMM over active rows, fused cell, BPTT.
#include "mman/layers/lstm.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <omp.h>

#include "mman/threads.h"

#include "mman/blas.h"
#include "mman/error.h"
#include "src/core/packed_gemm.h"
#include "src/core/parallel.h"
#include "src/layers/lstm_cell.h"

namespace mman {
namespace {

// Elementwise loops over whole layers (dropout masks) go parallel above this size only.
constexpr int64_t kParallelMinElements = 1 << 16;

// The shape contract of a layout, checked once per call (O(steps)): a malformed layout
// would otherwise index outside the buffers.
void check_layout(const PackedLayout& layout, const std::string& who) {
  const int steps = layout.steps();
  MMAN_CHECK(layout.step_offsets.size() == static_cast<size_t>(steps) + 1 ||
                 (steps == 0 && layout.step_offsets.empty()),
             "{}: packed layout has {} steps but {} step offsets", who, steps, layout.step_offsets.size());
  if (steps == 0) return;
  MMAN_CHECK(layout.step_offsets[0] == 0, "{}: packed layout's first step offset is not 0", who);
  MMAN_CHECK(layout.batch_sizes[0] == layout.convs(),
             "{}: packed layout has {} conversations but {} at step 0", who, layout.convs(),
             layout.batch_sizes[0]);
  for (int t = 0; t < steps; ++t) {
    const int n = layout.batch_sizes[static_cast<size_t>(t)];
    MMAN_CHECK(n > 0 && (t == 0 || n <= layout.batch_sizes[static_cast<size_t>(t) - 1]),
               "{}: packed layout's batch sizes must be positive and non-increasing (step {})", who, t);
    MMAN_CHECK(
        layout.step_offsets[static_cast<size_t>(t) + 1] == layout.step_offsets[static_cast<size_t>(t)] + n,
        "{}: packed layout's step offsets do not follow its batch sizes (step {})", who, t);
  }
}

// The order in which one direction visits the steps: forward 0..T-1, reverse T-1..0.
// pred(t) is the step whose state step t continues (-1: none); the rows of t that have a
// predecessor are its first min(bs[t], bs[pred]) rows, the predecessor's first rows.
struct Direction {
  bool reverse;
  int steps;
  int step(int s) const { return reverse ? steps - 1 - s : s; }
  int pred(int t) const { return reverse ? (t + 1 < steps ? t + 1 : -1) : t - 1; }
  int succ(int t) const { return reverse ? t - 1 : (t + 1 < steps ? t + 1 : -1); }
};

int rows_linked(const PackedLayout& layout, int t, int other) {
  if (other < 0) return 0;
  return std::min(layout.batch_sizes[static_cast<size_t>(t)], layout.batch_sizes[static_cast<size_t>(other)]);
}

// Splits the batch's conversations (longest first, as packed) into at most `parts`
// contiguous groups [bounds[i], bounds[i+1]) of about equal recurrence work, for one
// thread each. A group's work is modelled as its rows plus one row-equivalent per step
// it runs (the per-step overhead: its longest conversation's length); the split
// minimises the largest group's work (binary search on it, greedy packing).
void split_conversations(const PackedLayout& layout, int parts, std::vector<int>& bounds) {
  const int convs = layout.convs();
  parts = std::max(1, std::min(parts, convs));
  bounds.clear();
  bounds.push_back(0);
  if (parts == 1) {
    bounds.push_back(convs);
    return;
  }
  const std::vector<int>& len = layout.lengths;
  auto pack = [&](int64_t cap, std::vector<int>* out) {
    int used = 1;
    int64_t load = 0;
    for (int b = 0; b < convs; ++b) {
      const int64_t add = len[static_cast<size_t>(b)] + (load == 0 ? len[static_cast<size_t>(b)] : 0);
      if (load > 0 && load + add > cap) {
        ++used;
        if (out != nullptr) out->push_back(b);
        load = 2 * int64_t{len[static_cast<size_t>(b)]};
      } else {
        load += add;
      }
    }
    return used;
  };
  int64_t lo = 0, hi = 0;
  for (int b = 0; b < convs; ++b) hi += len[static_cast<size_t>(b)];
  hi += len[0];  // everything in one group always fits
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (pack(mid, nullptr) <= parts)
      hi = mid;
    else
      lo = mid + 1;
  }
  pack(hi, &bounds);
  bounds.push_back(convs);
}

// Inter-layer dropout of elements [begin, end): the mask and the masked output. Compiled
// for AVX-512 (64-bit multiplies vectorise the counter hash), AVX2 and baseline x86-64,
// chosen by the CPU at load time; integer hashing and one multiply, so the same bits.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void dropout_range(const float* out, float* mask, float* dropped, int64_t begin, int64_t end, float p, float keep,
                   uint64_t stream) {
  for (int64_t e = begin; e < end; ++e) {
    mask[e] = counter_uniform(stream, static_cast<uint64_t>(e)) < p ? 0.0f : keep;
    dropped[e] = out[e] * mask[e];
  }
}

std::string join_prefix(const std::string& prefix) {
  if (prefix.empty() || prefix.back() == '.') return prefix;
  return prefix + ".";
}

}  // namespace

Lstm::Lstm(ParamStore& params, const std::string& prefix, const LstmConfig& config)
    : config_(config), prefix_(join_prefix(prefix)) {
  const std::string who = "lstm '" + prefix_ + "'";
  MMAN_CHECK(config.input > 0, "{}: input size must be positive (got {})", who, config.input);
  MMAN_CHECK(config.hidden > 0, "{}: hidden size must be positive (got {})", who, config.hidden);
  MMAN_CHECK(config.layers > 0, "{}: number of layers must be positive (got {})", who, config.layers);
  MMAN_CHECK(config.dropout >= 0.0f && config.dropout < 1.0f, "{}: dropout {} is outside [0, 1)", who,
             config.dropout);
  const int64_t h = config.hidden, h4 = 4 * h;
  const int dirs = config.bidirectional ? 2 : 1;
  for (int k = 0; k < config.layers; ++k) {
    const int64_t in = k == 0 ? config.input : h * dirs;
    for (int d = 0; d < dirs; ++d) {
      const std::string suffix = "_l" + std::to_string(k) + (d == 1 ? "_reverse" : "");
      w_ih_.push_back(params.add(prefix_ + "weight_ih" + suffix, {h4, in}));
      w_hh_.push_back(params.add(prefix_ + "weight_hh" + suffix, {h4, h}));
      b_ih_.push_back(params.add(prefix_ + "bias_ih" + suffix, {h4}));
      b_hh_.push_back(params.add(prefix_ + "bias_hh" + suffix, {h4}));
    }
  }
}

void Lstm::check_params(const ParamStore& params) const {
  const int dirs = config_.bidirectional ? 2 : 1;
  MMAN_CHECK(!w_ih_.empty() && static_cast<int>(w_ih_.size()) == config_.layers * dirs,
             "lstm '{}': used before being constructed with its parameters", prefix_);
  const int64_t h4 = 4L * config_.hidden;
  for (size_t idx = 0; idx < w_ih_.size(); ++idx) {
    const int64_t in = idx < static_cast<size_t>(dirs) ? config_.input : int64_t{config_.hidden} * dirs;
    const int ids[4] = {w_ih_[idx], w_hh_[idx], b_ih_[idx], b_hh_[idx]};
    const std::vector<int64_t> shapes[4] = {{h4, in}, {h4, config_.hidden}, {h4}, {h4}};
    for (int j = 0; j < 4; ++j)
      MMAN_CHECK(ids[j] < params.count() && params.info(ids[j]).shape == shapes[j],
                 "lstm '{}': parameter store does not hold this layer's parameters", prefix_);
  }
}

void Lstm::init(ParamStore& params, Rng& rng) const {
  check_params(params);
  const double bound = 1.0 / std::sqrt(static_cast<double>(config_.hidden));
  for (size_t idx = 0; idx < w_ih_.size(); ++idx) {
    for (int id : {w_ih_[idx], w_hh_[idx], b_ih_[idx], b_hh_[idx]}) {
      float* v = params.value(id);
      const size_t n = params.info(id).size;
      for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(rng.uniform(-bound, bound));
    }
  }
}

void Lstm::forward(const ParamStore& params, const PackedLayout& layout, const float* x, Tensor& y, Mode mode,
                   const DropoutKey& key, uint64_t dropout_slot, LstmContext& ctx) const {
  check_params(params);
  check_layout(layout, "lstm '" + prefix_ + "'");
  const int64_t rows = layout.rows();
  MMAN_CHECK(rows == 0 || x != nullptr, "lstm '{}': forward given no input", prefix_);
  const int h = config_.hidden, h4 = 4 * h, dirs = config_.bidirectional ? 2 : 1, hd = h * dirs;
  const int layers = config_.layers, steps = layout.steps();
  const bool drop = mode == Mode::Train && config_.dropout > 0.0f && layers > 1;
  MMAN_CHECK(!drop || dropout_slot + static_cast<uint64_t>(layers - 1) <= kDropoutStreamsPerStep,
             "lstm '{}': dropout slots {}..{} exceed the {} streams per step", prefix_, dropout_slot,
             dropout_slot + layers - 2, kDropoutStreamsPerStep);

  const size_t units = static_cast<size_t>(layers * dirs);
  ctx.gates.resize(units);
  ctx.cells.resize(units);
  ctx.cell_tanh.resize(units);
  ctx.outputs.resize(static_cast<size_t>(layers));
  ctx.dropped.resize(static_cast<size_t>(layers));
  ctx.masks.resize(static_cast<size_t>(layers));
  ctx.mode = mode;
  ctx.dropout_applied = drop;
  ctx.rows = rows;
  ctx.batch_sizes = layout.batch_sizes;  // reuses its capacity
  y.resize(rows, hd);
  if (rows == 0) return;

  ctx.bias_sum.resize(static_cast<int64_t>(units), h4);
  split_conversations(layout, omp_in_parallel() ? 1 : num_threads(), ctx.groups);
  const int64_t* off = layout.step_offsets.data();
  const int* bs = layout.batch_sizes.data();

  for (int k = 0; k < layers; ++k) {
    const float* in = k == 0 ? x : (drop ? ctx.dropped[k - 1].data() : ctx.outputs[k - 1].data());
    const int in_dim = k == 0 ? config_.input : hd;
    Tensor& out = ctx.outputs[static_cast<size_t>(k)];
    out.resize(rows, hd);
    for (int d = 0; d < dirs; ++d) {
      const size_t idx = static_cast<size_t>(k * dirs + d);
      Tensor& gates = ctx.gates[idx];
      Tensor& cells = ctx.cells[idx];
      Tensor& tanh_c = ctx.cell_tanh[idx];
      gates.resize(rows, h4);
      cells.resize(rows, h);
      tanh_c.resize(rows, h);
      float* bias = ctx.bias_sum.row(static_cast<int64_t>(idx));
      const float* b_ih = params.value(b_ih_[idx]);
      const float* b_hh = params.value(b_hh_[idx]);
      for (int j = 0; j < h4; ++j) bias[j] = b_ih[j] + b_hh[j];
      // W_hh^T [h x 4h] packed into panels once per batch: the per-step products then
      // stream it from cache instead of re-packing it per step (src/core/packed_gemm.h).
      const detail::PackedMatrix w_hh_t =
          detail::pack_b(params.value(w_hh_[idx]), h, /*transposed=*/true, h, h4, ctx.w_hh_packed);

      // Input projection of every row at once; the biases are added inside the cell.
      gemm(false, true, static_cast<int>(rows), h4, in_dim, 1.0f, in, in_dim, params.value(w_ih_[idx]),
           in_dim, 0.0f, gates.data(), h4);

      // The recurrence, with the batch's conversations split into contiguous groups of
      // about equal work, one per thread: conversations are independent, so the groups
      // need no synchronisation at all between steps. A row's result does not depend on
      // the grouping (gemm_packed and the cell are row-wise), so the forward pass gives
      // the same bits for every thread count.
      const Direction dir{d == 1, steps};
      const std::vector<int>& groups = ctx.groups;
      const int group_count = static_cast<int>(groups.size()) - 1;
      detail::parallel_chunks(group_count, [&](int gi) {
        const int b0 = groups[static_cast<size_t>(gi)], b1 = groups[static_cast<size_t>(gi) + 1];
        for (int s = 0; s < steps; ++s) {
          const int t = dir.step(s), tp = dir.pred(t);
          const int n = std::min(bs[t], b1) - b0;
          if (n <= 0) continue;
          const int n_prev = std::clamp(std::min(rows_linked(layout, t, tp), b1) - b0, 0, n);
          float* g = gates.row(off[t] + b0);
          if (n_prev > 0) detail::gemm_packed(n_prev, out.row(off[tp] + b0) + d * h, hd, w_hh_t, g, h4, true);
          detail::lstm_cell_forward(n, n_prev, h, bias, g, n_prev > 0 ? cells.row(off[tp] + b0) : nullptr,
                                    cells.row(off[t] + b0), tanh_c.row(off[t] + b0), out.row(off[t] + b0) + d * h,
                                    hd);
        }
      });
    }

    if (drop && k < layers - 1) {
      Tensor& mask = ctx.masks[static_cast<size_t>(k)];
      Tensor& dropped = ctx.dropped[static_cast<size_t>(k)];
      mask.resize(rows, hd);
      dropped.resize(rows, hd);
      const uint64_t stream =
          rng_key(key.seed, key.step * kDropoutStreamsPerStep + dropout_slot + static_cast<uint64_t>(k));
      const float p = config_.dropout, keep = 1.0f / (1.0f - p);
      const int64_t n = rows * hd;
      const float* o = out.data();
      float* m = mask.data();
      float* dr = dropped.data();
      constexpr int64_t kChunk = 16384;
#pragma omp parallel for schedule(static) if (n >= kParallelMinElements)
      for (int64_t b = 0; b < n; b += kChunk) dropout_range(o, m, dr, b, std::min(n, b + kChunk), p, keep, stream);
    }
  }
  std::memcpy(y.data(), ctx.outputs[static_cast<size_t>(layers - 1)].data(),
              static_cast<size_t>(rows * hd) * sizeof(float));
}

void Lstm::backward(ParamStore& params, const PackedLayout& layout, const float* x, const float* dy,
                    float* dx, LstmContext& ctx) const {
  check_params(params);
  check_layout(layout, "lstm '" + prefix_ + "'");
  const int64_t rows = layout.rows();
  const int h = config_.hidden, h4 = 4 * h, dirs = config_.bidirectional ? 2 : 1, hd = h * dirs;
  const int layers = config_.layers, steps = layout.steps(), convs = layout.convs();
  MMAN_CHECK(ctx.rows == rows && ctx.batch_sizes == layout.batch_sizes &&
                 ctx.gates.size() == static_cast<size_t>(layers * dirs),
             "lstm '{}': backward called without a forward on the same batch", prefix_);
  if (rows == 0) return;
  MMAN_CHECK(x != nullptr && dy != nullptr, "lstm '{}': backward given no input or output gradient", prefix_);
  MMAN_CHECK(dx != x, "lstm '{}': dx must not alias x (x is still read while dx is written)", prefix_);
  const bool drop = ctx.dropout_applied;
  const int64_t* off = layout.step_offsets.data();
  const int* bs = layout.batch_sizes.data();

  ctx.dgates.resize(rows, h4);
  ctx.dh_rec.resize(convs, h);
  ctx.dc.resize(convs, h);
  ctx.h_prev.resize(rows, h);
  ctx.dbias.resize(1, h4);
  std::vector<int>& groups = ctx.groups;
  split_conversations(layout, omp_in_parallel() ? 1 : num_threads(), groups);

  const float* dout = dy;  // gradient w.r.t. the current layer's output, rows x hd
  for (int k = layers - 1; k >= 0; --k) {
    const float* in = k == 0 ? x : (drop ? ctx.dropped[k - 1].data() : ctx.outputs[k - 1].data());
    const int in_dim = k == 0 ? config_.input : hd;
    float* din = nullptr;  // gradient w.r.t. this layer's input
    if (k > 0) {
      Tensor& buf = ctx.dlayer[k % 2];  // the other buffer may hold dout
      buf.resize(rows, hd);
      din = buf.data();
    } else {
      din = dx;
    }
    const Tensor& out = ctx.outputs[static_cast<size_t>(k)];

    for (int d = 0; d < dirs; ++d) {
      const size_t idx = static_cast<size_t>(k * dirs + d);
      const Tensor& gates = ctx.gates[idx];
      const Tensor& cells = ctx.cells[idx];
      const Tensor& tanh_c = ctx.cell_tanh[idx];
      const float* w_hh = params.value(w_hh_[idx]);
      Tensor& dgates = ctx.dgates;
      float* dh_rec = ctx.dh_rec.data();
      float* dc = ctx.dc.data();

      // W_hh [4h x h] packed for the per-step dh products (dgates_t W_hh).
      const detail::PackedMatrix w_hh_packed =
          detail::pack_b(w_hh, h, /*transposed=*/false, h4, h, ctx.w_hh_packed);

      // Steps in reverse processing order, conversation groups in parallel as in the
      // forward pass (rows of dh_rec and dc belong to one conversation each). Rows of
      // step t with a successor (the group's first n_succ rows) receive dh and dc from
      // it; the others end a conversation here.
      const Direction dir{d == 1, steps};
      const int group_count = static_cast<int>(groups.size()) - 1;
      detail::parallel_chunks(group_count, [&](int gi) {
        const int b0 = groups[static_cast<size_t>(gi)], b1 = groups[static_cast<size_t>(gi) + 1];
        float* dh_g = dh_rec + static_cast<int64_t>(b0) * h;
        float* dc_g = dc + static_cast<int64_t>(b0) * h;
        for (int s = steps - 1; s >= 0; --s) {
          const int t = dir.step(s), tp = dir.pred(t);
          const int n = std::min(bs[t], b1) - b0;
          if (n <= 0) continue;
          const int n_prev = std::clamp(std::min(rows_linked(layout, t, tp), b1) - b0, 0, n);
          const int n_succ = std::clamp(std::min(rows_linked(layout, t, dir.succ(t)), b1) - b0, 0, n);
          if (n_succ < n) {
            std::fill(dh_g + static_cast<int64_t>(n_succ) * h, dh_g + static_cast<int64_t>(n) * h, 0.0f);
            std::fill(dc_g + static_cast<int64_t>(n_succ) * h, dc_g + static_cast<int64_t>(n) * h, 0.0f);
          }
          float* dg = dgates.row(off[t] + b0);
          detail::lstm_cell_backward(n, n_prev, h, gates.row(off[t] + b0),
                                     n_prev > 0 ? cells.row(off[tp] + b0) : nullptr, tanh_c.row(off[t] + b0),
                                     dout + (off[t] + b0) * hd + d * h, hd, dh_g, dc_g, dg);
          // dh of the predecessor's rows: dgates_t W_hh.
          if (n_prev > 0) detail::gemm_packed(n_prev, dg, h4, w_hh_packed, dh_g, h, false);
        }
      });

      // Weight gradients over the whole batch at once.
      if (params.info(w_ih_[idx]).trainable)
        gemm(true, false, h4, in_dim, static_cast<int>(rows), 1.0f, dgates.data(), h4, in, in_dim, 1.0f,
             params.grad(w_ih_[idx]), in_dim);
      if (params.info(w_hh_[idx]).trainable) {
        // Row r of h_prev holds h of r's predecessor row (0 where a conversation starts),
        // so dW_hh = sum_r dgates[r]^T h_prev[r] is one GEMM. In the forward direction the
        // rows without a predecessor are exactly step 0, which the GEMM skips.
        const int64_t first = d == 0 ? (steps > 1 ? off[1] : rows) : 0;
        for (int t = 0; t < steps; ++t) {
          const int tp = dir.pred(t);
          const int n = bs[t], n_prev = rows_linked(layout, t, tp);
          if (off[t] < first) continue;
          for (int b = 0; b < n_prev; ++b)
            std::memcpy(ctx.h_prev.row(off[t] + b), out.row(off[tp] + b) + d * h,
                        static_cast<size_t>(h) * sizeof(float));
          if (n_prev < n) std::fill(ctx.h_prev.row(off[t] + n_prev), ctx.h_prev.row(off[t] + n), 0.0f);
        }
        if (rows > first)
          gemm(true, false, h4, h, static_cast<int>(rows - first), 1.0f, dgates.row(first), h4,
               ctx.h_prev.row(first), h, 1.0f, params.grad(w_hh_[idx]), h);
      }
      const bool train_bih = params.info(b_ih_[idx]).trainable, train_bhh = params.info(b_hh_[idx]).trainable;
      if (train_bih || train_bhh) {
        // Column sums in a fixed row order: deterministic whatever the thread count.
        float* sum = ctx.dbias.data();
        std::fill(sum, sum + h4, 0.0f);
        for (int64_t r = 0; r < rows; ++r) {
          const float* dg = dgates.row(r);
          for (int j = 0; j < h4; ++j) sum[j] += dg[j];
        }
        if (train_bih) {
          float* gb = params.grad(b_ih_[idx]);
          for (int j = 0; j < h4; ++j) gb[j] += sum[j];
        }
        if (train_bhh) {
          float* gb = params.grad(b_hh_[idx]);
          for (int j = 0; j < h4; ++j) gb[j] += sum[j];
        }
      }
      // Gradient w.r.t. the layer input: sum over directions of dgates W_ih.
      if (din != nullptr)
        gemm(false, false, static_cast<int>(rows), in_dim, h4, 1.0f, dgates.data(), h4,
             params.value(w_ih_[idx]), in_dim, d == 0 ? 0.0f : 1.0f, din, in_dim);
    }

    if (k > 0) {
      if (drop) {  // through the dropout between layer k-1 and k
        const float* m = ctx.masks[static_cast<size_t>(k - 1)].data();
        const int64_t n = rows * hd;
#pragma omp parallel for schedule(static) if (n >= kParallelMinElements)
        for (int64_t e = 0; e < n; ++e) din[e] *= m[e];
      }
      dout = din;
    }
  }
}

}  // namespace mman
