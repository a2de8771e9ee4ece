// Lstm: stacked (optionally bidirectional) LSTM over packed conversations, PyTorch layout.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mman/layers/mode.h"
#include "mman/packed.h"
#include "mman/params.h"
#include "mman/rng.h"
#include "mman/tensor.h"

namespace mman {

struct LstmConfig {
  int input = 0;  // feature width of the first layer's input
  int hidden = 300;
  int layers = 1;
  float dropout = 0.0f;  // on the outputs of every layer but the last (training only), in [0, 1)
  bool bidirectional = false;
};

// Everything forward() keeps for backward(): per layer (and direction) the gate
// activations, cell states and outputs for every packed row, plus dropout masks.
// Owned by the caller; buffers are reused across batches (no steady-state allocation).
// Kept in both modes, so backward() after an Eval forward gives the gradient of the
// evaluation-mode function (no dropout).
struct LstmContext {
  std::vector<Tensor> gates;      // [layer*dirs + dir] rows x 4h: i, f, g, o after their nonlinearity
  std::vector<Tensor> cells;      // [layer*dirs + dir] rows x h: c_t
  std::vector<Tensor> cell_tanh;  // [layer*dirs + dir] rows x h: tanh(c_t)
  std::vector<Tensor> outputs;    // [layer] rows x (h*dirs): h_t of both directions, before dropout
  std::vector<Tensor> dropped;    // [layer] rows x (h*dirs): input of layer+1 after dropout (train only)
  std::vector<Tensor> masks;      // [layer] dropout scale per element (0 or 1/(1-p)), train only
  Mode mode = Mode::Eval;
  bool dropout_applied = false;  // whether dropped/masks of this forward are in use
  int64_t rows = -1;             // layout.rows() of the forward pass (-1: none yet)
  std::vector<int> batch_sizes;  // layout.batch_sizes of the forward pass

  // Scratch of forward/backward, meaningless between calls (kept to avoid reallocation).
  Tensor bias_sum;    // [layer*dirs + dir] x 4h: b_ih + b_hh
  // W_hh^T (forward) or W_hh (backward) of one layer and direction, packed in panels
  // for the per-step products (src/core/packed_gemm.h).
  std::vector<float> w_hh_packed;
  // The batch's conversations in contiguous groups [groups[i], groups[i+1]), one per
  // thread: the recurrence of a group needs no synchronisation with the others.
  std::vector<int> groups;
  Tensor dgates;      // rows x 4h: gradient w.r.t. gate pre-activations, one direction
  Tensor dh_rec, dc;  // convs x h: recurrent gradients w.r.t. h and c of the next step
  Tensor h_prev;      // rows x h: h of each row's previous step (0 at a conversation start)
  Tensor dlayer[2];   // rows x (h*dirs): gradient w.r.t. a lower layer's output (ping-pong)
  Tensor dbias;       // 1 x 4h: column sums of dgates
};

// Parameters (PyTorch nn.LSTM names, prefixed): weight_ih_l{k}[_reverse] [4h x in_k],
// weight_hh_l{k}[_reverse] [4h x h], bias_ih_l{k}[_reverse] [4h], bias_hh_l{k}[_reverse]
// [4h]; gate order i, f, g, o; registered in that order, layer by layer, forward
// direction before reverse (PyTorch's parameter order). The prefix is joined with a dot:
// "lstm" and "lstm." both give "lstm.weight_ih_l0"; an empty prefix gives the bare names.
// h_0 = c_0 = 0 for every conversation. Unidirectional by default: an utterance sees
// itself and the past. The reverse direction runs each conversation from its own last
// utterance back to its first (PyTorch on a PackedSequence); a layer's output row is
// [h_forward, h_reverse].
//
// Computation (CPU): per layer and direction, the input projection of all packed rows is
// one GEMM; each step then runs one recurrent GEMM over the conversations active at that
// step (rows 0..batch_sizes[t]-1 of the step, whose predecessors are the first rows of
// the previous step: contiguous, no gather) and one fused elementwise cell, so padding
// costs nothing. The recurrent GEMMs use W_hh packed once per batch (src/core/
// packed_gemm.h), and the batch's conversations are split into contiguous groups of
// about equal work, one per thread, that run their steps without synchronising. Backward
// runs the steps in reverse (same groups) with one GEMM per step for the recurrent
// gradient and computes the weight gradients as whole-batch GEMMs afterwards. The
// forward result of a conversation does not depend on the thread count or on the other
// conversations of its batch (bit for bit, on CPUs with AVX2+FMA).
// The cell's sigmoid and tanh are branch-free (vectorised) exp-based forms accurate to a
// few float ulps, finite for every input (|x| of 1e4 and beyond saturate cleanly), NaN
// propagating. Results are deterministic for a fixed thread count.
//
// Dropout (Mode::Train, dropout > 0, layers > 1): the output of layer k < layers-1, as a
// packed [rows x h*dirs] matrix, is multiplied elementwise by a mask whose element
// e = row * (h*dirs) + col is 0 if counter_uniform(rng_key(key.seed, key.step *
// kDropoutStreamsPerStep + dropout_slot + k), e) < dropout and 1/(1-dropout) otherwise.
// The layer thus uses the streams dropout_slot .. dropout_slot + layers - 2.
class Lstm {
 public:
  Lstm() = default;
  // Registers the parameters in `params` (zero-initialised). Throws mman::Error for a
  // non-positive size or a dropout outside [0, 1).
  Lstm(ParamStore& params, const std::string& prefix, const LstmConfig& config);

  const LstmConfig& config() const { return config_; }
  int output_dim() const { return config_.hidden * (config_.bidirectional ? 2 : 1); }
  // Dropout streams this layer uses from its slot on (layers - 1).
  int dropout_slots() const { return config_.layers - 1; }

  // U(-1/sqrt(h), 1/sqrt(h)) for every weight and bias, like PyTorch, drawn from rng in
  // parameter registration order, row-major within each tensor.
  void init(ParamStore& params, Rng& rng) const;

  // x: [layout.rows() x input] packed rows; y: resized to [rows x output_dim()].
  // `dropout_slot` selects this layer's dropout streams (see above and DropoutKey).
  void forward(const ParamStore& params, const PackedLayout& layout, const float* x, Tensor& y, Mode mode,
               const DropoutKey& key, uint64_t dropout_slot, LstmContext& ctx) const;

  // dy: [rows x output_dim()]; x: the forward's input; ctx: the forward's context (what
  // it recorded is left unchanged, so backward may run again). Parameter gradients are accumulated (+=)
  // into params.grads() (frozen parameters, ParamInfo::trainable == false, are skipped
  // with their GEMMs); dx, when not null, is overwritten with [rows x input] and must not
  // alias x.
  void backward(ParamStore& params, const PackedLayout& layout, const float* x, const float* dy, float* dx,
                LstmContext& ctx) const;

 private:
  void check_params(const ParamStore& params) const;

  LstmConfig config_;
  std::string prefix_;  // for messages
  // Parameter ids per (layer*dirs + dir): weight_ih, weight_hh, bias_ih, bias_hh.
  std::vector<int> w_ih_, w_hh_, b_ih_, b_hh_;
};

}  // namespace mman
