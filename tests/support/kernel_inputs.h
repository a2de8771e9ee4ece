// Inputs shared by the kernel tests on the SIMT layer (tests/test_kernels_*.cpp) and natively on a GPU
// (tests/test_kernels_native.cpp), so that both check the very same cases.
#pragma once
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "mman/layers/activation.h"
#include "mman/layers/dropout.h"
#include "mman/layers/mode.h"
#include "mman/params.h"
#include "mman/rng.h"
#include "mman/tensor.h"
#include "mman/train/optimizer.h"
#include "src/layers/lstm_cell.h"

namespace mman::test {

inline float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// n values uniform in [lo, hi).
inline std::vector<float> uniform_floats(size_t n, double lo, double hi, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.uniform(lo, hi));
  return v;
}

// ---- the SIMT layer's example kernels (sum, row softmax) ----

// n values in [-1, 1) and their exact sum and sum of magnitudes: |computed - exact| <= n eps
// sum|x| bounds float summation in any association order.
struct SumCase {
  std::vector<float> x;
  double sum = 0, abs_sum = 0;
};
inline SumCase sum_case(long long n, uint64_t seed) {
  SumCase c{uniform_floats(static_cast<size_t>(n), -1, 1, seed), 0, 0};
  for (float v : c.x) c.sum += v, c.abs_sum += std::fabs(v);
  return c;
}

// Rows of values in [-4, 4) and their softmax in double; tol is the relative error bound per
// element: the row's sum has at most cols float roundings, each exp and x - m add a few eps
// scaled by |x - m| <= 2 * 4, the division one more.
struct SoftmaxRowsCase {
  int rows = 0, cols = 0;
  std::vector<float> x;
  std::vector<double> ref;
  double tol = 0;
};
inline std::vector<SoftmaxRowsCase> softmax_rows_cases() {
  const std::vector<std::pair<int, int>> shapes = {{1, 1}, {3, 1}, {5, 7}, {4, 32}, {2, 33}, {3, 64},
                                                   {2, 65}, {2, 256}, {3, 1000}, {2, 1041}};
  std::vector<SoftmaxRowsCase> cases;
  for (const auto& [rows, cols] : shapes) {
    SoftmaxRowsCase c;
    c.rows = rows, c.cols = cols;
    c.x = uniform_floats(static_cast<size_t>(rows) * cols, -4, 4, static_cast<uint64_t>(17 + rows * 1000 + cols));
    c.ref.resize(c.x.size());
    for (int r = 0; r < rows; ++r) {
      const float* xr = &c.x[static_cast<size_t>(r) * cols];
      double m = -INFINITY, sum = 0;
      for (int k = 0; k < cols; ++k) m = std::max(m, static_cast<double>(xr[k]));
      for (int k = 0; k < cols; ++k) sum += std::exp(xr[k] - m);
      for (int k = 0; k < cols; ++k) c.ref[static_cast<size_t>(r) * cols + k] = std::exp(xr[k] - m) / sum;
    }
    c.tol = (cols + 3 * 8 + 2) * static_cast<double>(FLT_EPSILON);
    cases.push_back(std::move(c));
  }
  return cases;
}

// ---- elementwise ----

// Values at ReLU's edges: signed zeros, NaNs with a payload and either sign (the CPU keeps a
// NaN as it is, bits included), infinities, denormals of both signs, the largest floats.
inline std::vector<float> special_values() {
  const float inf = std::numeric_limits<float>::infinity();
  return {0.0f,  -0.0f, from_bits(0x7FC01234u), from_bits(0xFFC00042u), std::numeric_limits<float>::quiet_NaN(),
          inf,   -inf,  1e-40f, -1e-40f, std::numeric_limits<float>::denorm_min(), -FLT_MAX, FLT_MAX, 1e-30f, -1e30f};
}

// Random values in [-3, 3) with the special ones mixed in at a spacing prime to the block size.
inline std::vector<float> relu_inputs(size_t n, uint64_t seed) {
  Rng rng(seed);
  const std::vector<float> special = special_values();
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = i % 5 == 3 ? special[(i / 5 + seed) % special.size()] : static_cast<float>(rng.uniform(-3, 3));
  return v;
}

// ReLU's inputs and what the CPU's relu_forward / relu_backward (act = x) make of them.
struct ReluCase {
  std::vector<float> x, dy, want_y, want_back;
  long long n() const { return static_cast<long long>(x.size()); }
};

inline ReluCase relu_case(std::vector<float> x, std::vector<float> dy) {
  ReluCase c{std::move(x), std::move(dy), {}, {}};
  c.want_y.resize(c.x.size());
  c.want_back.resize(c.x.size());
  relu_forward(c.x.data(), c.want_y.data(), c.n());
  relu_backward(c.x.data(), c.dy.data(), c.want_back.data(), c.n());
  return c;
}

// n random values with the special ones mixed in, for x and dy (seeds 1 + n and 2 + n).
inline ReluCase relu_random_case(long long n) {
  return relu_case(relu_inputs(static_cast<size_t>(n), 1 + static_cast<uint64_t>(n)),
                   relu_inputs(static_cast<size_t>(n), 2 + static_cast<uint64_t>(n)));
}

// Every special value as the input and as the incoming gradient of every other (x[i *
// special.size() + j] = special[i], dy = special[j]).
inline ReluCase relu_special_case() {
  const std::vector<float> special = special_values();
  std::vector<float> x, dy;
  for (float a : special)
    for (float b : special) x.push_back(a), dy.push_back(b);
  return relu_case(std::move(x), std::move(dy));
}

// ---- LSTM cell ----

// One step of the cell: n rows, the first n_prev continuing a conversation, hidden h, h_out
// rows ldh apart, dy rows ldy apart.
struct LstmCellStep {
  int n, n_prev, h, ldh, ldy;
};


// Ragged batches (rows that start a conversation), strided h and dy, the paper's width.
inline std::vector<LstmCellStep> lstm_cell_steps() {
  return {{1, 1, 1, 1, 1}, {1, 0, 37, 37, 37}, {7, 4, 5, 5, 5}, {33, 33, 37, 74, 40}, {10, 6, 300, 600, 300}};
}
inline std::vector<float> lstm_cell_random_gates(const LstmCellStep& s) {
  return uniform_floats(static_cast<size_t>(s.n) * 4 * s.h, -4.0, 4.0, 10 + static_cast<uint64_t>(s.h));
}

// Pre-activations across every branch of the activations (the polynomial/exponential switch
// of tanh at 0.625, the +-80 clamp of exp, infinities, signed zeros, denormals and NaN) for
// the step lstm_cell_extreme_step().
inline LstmCellStep lstm_cell_extreme_step() { return {9, 5, 23, 23, 23}; }
inline std::vector<float> lstm_cell_extreme_gates() {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> special = {0.0f,   -0.0f,  0.624f, 0.625f, -0.626f, 79.9f, 80.0f, 81.0f, -85.0f, 1e30f,
                                      -1e30f, inf,    -inf,   1e-40f, -1e-40f, 3.0f,  -3.0f, 40.0f, -40.0f, nan};
  const LstmCellStep s = lstm_cell_extreme_step();
  std::vector<float> gates(static_cast<size_t>(s.n) * 4 * s.h);
  for (size_t i = 0; i < gates.size(); ++i) gates[i] = special[(i * 7) % special.size()];
  return gates;
}

// A step's other inputs and what the CPU cell (src/layers/lstm_cell.h) makes of them: forward
// (activated gates in place, c, tanh(c), h_out with its padding left at -7) and backward (dc
// updated in place, dgates).
struct LstmCellCase {
  LstmCellStep s{};
  std::vector<float> gates_in, bias, c_prev, dy, dh_rec, dc_in;
  std::vector<float> gates, c, tanh_c, h_out, dc, dgates;
};

inline LstmCellCase lstm_cell_case(const LstmCellStep& s, std::vector<float> gates_in) {
  LstmCellCase k;
  k.s = s;
  const size_t nh = static_cast<size_t>(s.n) * s.h;
  k.gates_in = std::move(gates_in);
  k.bias = uniform_floats(4 * static_cast<size_t>(s.h), -0.5, 0.5, 1);
  k.c_prev = uniform_floats(static_cast<size_t>(s.n_prev) * s.h, -2.0, 2.0, 2);
  k.dy = uniform_floats(static_cast<size_t>(s.n) * s.ldy, -1.0, 1.0, 3);
  k.dh_rec = uniform_floats(nh, -1.0, 1.0, 4);
  k.dc_in = uniform_floats(nh, -1.0, 1.0, 5);
  k.gates = k.gates_in;
  k.c.resize(nh);
  k.tanh_c.resize(nh);
  k.h_out.assign(static_cast<size_t>(s.n) * s.ldh, -7.0f);
  detail::lstm_cell_forward(s.n, s.n_prev, s.h, k.bias.data(), k.gates.data(), k.c_prev.data(), k.c.data(),
                            k.tanh_c.data(), k.h_out.data(), s.ldh);
  k.dc = k.dc_in;
  k.dgates.resize(k.gates.size());
  detail::lstm_cell_backward(s.n, s.n_prev, s.h, k.gates.data(), k.c_prev.data(), k.tanh_c.data(), k.dy.data(), s.ldy,
                             k.dh_rec.data(), k.dc.data(), k.dgates.data());
  return k;
}

inline std::string describe(const LstmCellStep& s) {
  return "n " + std::to_string(s.n) + ", n_prev " + std::to_string(s.n_prev) + ", h " + std::to_string(s.h) +
         ", ldh " + std::to_string(s.ldh);
}

// ReLU then dropout on one column block of wider matrices (modality 1 of [rows x 3d]), the way
// the attention kernels' standardisation runs: x and dy, and what the CPU's relu_forward,
// Dropout::forward / backward and relu_backward make of them in the block's columns, the other
// columns unchanged (the kernels must not touch them).
struct ReluDropoutBlockCase {
  long long rows = 23, d = 37, ld = 3 * 37, col0 = 37;
  std::vector<float> x, dy, want_y, want_back;
};

inline ReluDropoutBlockCase relu_dropout_block_case(const Dropout& layer, Mode mode, const DropoutKey& key) {
  ReluDropoutBlockCase c;
  const long long rows = c.rows, d = c.d, ld = c.ld, col0 = c.col0;
  c.x = relu_inputs(static_cast<size_t>(rows * ld), 4);
  c.dy = relu_inputs(static_cast<size_t>(rows * ld), 5);
  std::vector<float> block(static_cast<size_t>(rows * d)), dblock(block.size());
  for (long long r = 0; r < rows; ++r)
    for (long long col = 0; col < d; ++col) {
      block[static_cast<size_t>(r * d + col)] = c.x[static_cast<size_t>(r * ld + col0 + col)];
      dblock[static_cast<size_t>(r * d + col)] = c.dy[static_cast<size_t>(r * ld + col0 + col)];
    }
  std::vector<float> ref(block.size()), ref_back(block.size());
  DropoutContext ctx;
  relu_forward(block.data(), ref.data(), rows * d);
  layer.forward(ref.data(), ref.data(), rows * d, mode, key, ctx);
  layer.backward(dblock.data(), ref_back.data(), rows * d, ctx);
  relu_backward(ref.data(), ref_back.data(), ref_back.data(), rows * d);
  c.want_y = c.x;
  c.want_back = c.dy;
  for (long long r = 0; r < rows; ++r)
    for (long long col = 0; col < d; ++col) {
      c.want_y[static_cast<size_t>(r * ld + col0 + col)] = ref[static_cast<size_t>(r * d + col)];
      c.want_back[static_cast<size_t>(r * ld + col0 + col)] = ref_back[static_cast<size_t>(r * d + col)];
    }
  return c;
}

// ---- masked cross-entropy ----

inline Tensor random_logits(int64_t rows, int cols, double scale, uint64_t seed) {
  Tensor t(rows, cols);
  Rng rng(seed);
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(rng.uniform(-scale, scale));
  return t;
}

// Targets in [0, classes), each masked (-1) with probability `masked`.
inline std::vector<int32_t> random_targets(int64_t rows, int classes, double masked, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(rows));
  for (int32_t& x : t) x = rng.uniform() < masked ? -1 : static_cast<int32_t>(rng.below(static_cast<uint64_t>(classes)));
  return t;
}

// The cases both cross-entropy tests run through their check(logits, targets, heads, what).
struct CrossEntropyCase {
  Tensor logits;
  std::vector<int32_t> targets;
  int heads = 1;
  std::string what;
};

// One head, row counts around the kernel's 256-row blocks; binary4 heads.
inline std::vector<CrossEntropyCase> cross_entropy_shape_cases() {
  std::vector<CrossEntropyCase> cases;
  for (int64_t rows : {1, 255, 256, 257, 600})
    for (int cols : {4, 6})
      cases.push_back({random_logits(rows, cols, 3.0, 10 + static_cast<uint64_t>(rows)),
                       random_targets(rows, cols, 0.2, 20 + static_cast<uint64_t>(rows)), 1,
                       std::to_string(rows) + " rows, " + std::to_string(cols) + " classes"});
  for (int64_t rows : {1, 37, 300})
    cases.push_back({random_logits(rows, 8, 2.0, 30 + static_cast<uint64_t>(rows)),
                     random_targets(rows, 4, 0.3, 40 + static_cast<uint64_t>(rows)), 4,
                     "binary4, " + std::to_string(rows) + " rows"});
  return cases;
}

// Nothing labelled: loss 0 and a zero gradient.
inline CrossEntropyCase cross_entropy_all_masked_case() {
  return {random_logits(20, 4, 1.0, 7), std::vector<int32_t>(20, -1), 1, "all masked"};
}

// Ties (they go to the lower column), logits of any finite size, nothing labelled.
inline std::vector<CrossEntropyCase> cross_entropy_tie_cases() {
  Tensor ties(3, 4), ties8(5, 8);
  for (int64_t i = 0; i < ties.size(); ++i) ties.data()[i] = 1.5f;
  for (int64_t i = 0; i < ties8.size(); ++i) ties8.data()[i] = -0.5f;
  std::vector<CrossEntropyCase> cases;
  cases.push_back({ties, {0, 1, 3}, 1, "ties"});
  cases.push_back({ties8, {2, 2, 0, 1, 3}, 4, "binary4 ties"});
  cases.push_back({random_logits(40, 5, 3e4, 5), random_targets(40, 5, 0.1, 6), 1, "huge logits"});
  cases.push_back(cross_entropy_all_masked_case());
  return cases;
}

// Logits so large that a double's ulp at the maximum exceeds log(sum) (|z| > ~1e16): every
// row a tie of k maxima with the target among them, so the loss is the mean of log(k)
// (cross_entropy_huge_tie_loss()) and the tied target of row 1 (four ways) has gradient
// (1/4 - 1) / 8 at element 4 + 2.
inline CrossEntropyCase cross_entropy_huge_tie_case() {
  const std::vector<std::vector<float>> rows = {
      {1e20f, 1e20f, -1e20f, 5.0f},  {-1e30f, -1e30f, -1e30f, -1e30f}, {1e30f, -1e30f, 1e30f, 1e30f},
      {-1e20f, 1e20f, 1e20f, 1e20f}, {1e30f, 1e20f, -1e20f, 1e30f},    {-1e20f, -1e20f, -1e30f, -1e30f},
      {3e20f, 3e20f, 3e20f, 0.0f},   {2.0f, -1e30f, -1e30f, 2.0f}};
  Tensor logits(static_cast<int64_t>(rows.size()), 4);
  for (size_t r = 0; r < rows.size(); ++r) std::memcpy(logits.row(static_cast<int64_t>(r)), rows[r].data(), 16);
  return {logits, {0, 2, 3, 1, 3, 1, 2, 0}, 1, "ties at huge magnitudes"};
}
inline double cross_entropy_huge_tie_loss() {
  return (4 * std::log(2.0) + std::log(4.0) + 3 * std::log(3.0)) / 8.0;  // log(k) per tie of k
}

// Random logits of 1e20 and 1e30 with both signs, and binary heads tied at +-1e30.
inline std::vector<CrossEntropyCase> cross_entropy_huge_mixed_cases() {
  Tensor mixed = random_logits(300, 5, 1.0, 11);
  Rng rng(12);
  for (int64_t i = 0; i < mixed.size(); ++i) {
    const double u = rng.uniform();
    mixed.data()[i] = u < 0.3 ? 1e30f : u < 0.5 ? -1e30f : u < 0.7 ? 1e20f : u < 0.8 ? -1e20f : mixed.data()[i];
  }
  Tensor heads(4, 8);
  const float pattern[8] = {1e30f, 1e30f, -1e30f, -1e30f, 1e20f, -1e20f, 1e30f, 1e30f};
  for (int64_t r = 0; r < heads.rows(); ++r) std::memcpy(heads.row(r), pattern, sizeof pattern);
  std::vector<CrossEntropyCase> cases;
  cases.push_back({mixed, random_targets(300, 5, 0.1, 13), 1, "mixed 1e20 / 1e30 logits"});
  cases.push_back({heads, {0, 1, 2, 3}, 4, "binary4 heads tied at 1e30"});
  return cases;
}

// A NaN logit poisons its row's loss and gradient; a masked row's NaN counts for nothing.
inline std::vector<CrossEntropyCase> cross_entropy_nan_cases() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor logits = random_logits(40, 4, 2.0, 14);
  logits.row(3)[0] = nan;   // NaN as the first column: the argmax's start
  logits.row(17)[2] = nan;  // NaN elsewhere
  logits.row(30)[1] = -nan;
  std::vector<int32_t> targets = random_targets(40, 4, 0.0, 15);
  Tensor binary = random_logits(9, 8, 2.0, 16);
  binary.row(4)[5] = nan;
  std::vector<CrossEntropyCase> cases;
  cases.push_back({logits, targets, 1, "NaN logits"});
  cases.push_back({binary, random_targets(9, 4, 0.0, 17), 4, "binary4 NaN logit"});
  targets[3] = targets[17] = targets[30] = -1;
  cases.push_back({logits, targets, 1, "NaN logits on masked rows"});
  return cases;
}

// Invalid targets at rows 270 (a class past the end) and 281 (below -1): the first is reported.
inline CrossEntropyCase cross_entropy_invalid_target_case() {
  std::vector<int32_t> targets = random_targets(300, 4, 0.1, 9);
  targets[270] = 4;
  targets[281] = -2;
  return {random_logits(300, 4, 1.0, 8), targets, 1, "invalid targets"};
}

// ---- arena kernels (Adam, gradient clipping) ----

// Adam's state as a resumed run brings it (step 999: bias corrections near 1; moments random)
// for `ps`, whose gradients are set to random values too.
inline AdamState restored_adam_state(ParamStore& ps, uint64_t seed) {
  Rng rng(seed);
  AdamState state;
  state.step = 999;
  for (size_t i = 0; i < ps.values().size(); ++i) {
    state.m.push_back(static_cast<float>(0.1 * rng.normal()));
    state.v.push_back(static_cast<float>(0.01 * rng.uniform()));
  }
  for (float& g : ps.grads()) g = static_cast<float>(rng.normal());
  return state;
}

// Tensors of awkward sizes (padding between them), one frozen in the middle and one at the end,
// so the arena has several trainable spans; values standard normal.
inline ParamStore adam_store(uint64_t seed) {
  ParamStore ps;
  ps.add("a.weight", {13, 21});
  ps.add("a.bias", {13});
  ps.add("frozen.weight", {5, 7});
  ps.add("b.weight", {40, 31});
  ps.add("b.bias", {1});
  ps.add("tail.frozen", {9});
  ps.set_trainable("frozen.", false);
  ps.set_trainable("tail.", false);
  Rng rng(seed);
  for (const ParamInfo& p : ps.infos())
    for (size_t i = 0; i < p.size; ++i) ps.values()[p.offset + i] = static_cast<float>(rng.normal());
  return ps;
}

// A frozen tensor between trainable ones; `big` makes one span longer than a block's share.
// Gradients scale * N(0, 1), padding zero.
inline ParamStore clip_store(int64_t big, double scale, uint64_t seed) {
  ParamStore ps;
  ps.add("a.weight", {17, 3});
  ps.add("frozen.weight", {4, 4});
  ps.add("b.weight", {big});
  ps.add("c.bias", {5});
  ps.set_trainable("frozen.", false);
  Rng rng(seed);
  for (float& g : ps.grads()) g = 0.0f;
  for (const ParamInfo& p : ps.infos())
    for (size_t i = 0; i < p.size; ++i) ps.grads()[p.offset + i] = static_cast<float>(scale * rng.normal());
  return ps;
}

}  // namespace mman::test
