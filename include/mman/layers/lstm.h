// Lstm: stacked (optionally bidirectional) LSTM over packed conversations, PyTorch layout.
#pragma once
#include <string>
#include <vector>

#include "mman/layers/mode.h"
#include "mman/packed.h"
#include "mman/params.h"
#include "mman/rng.h"
#include "mman/tensor.h"

namespace mman {

struct LstmConfig {
  int input = 0;            // feature width of the first layer's input
  int hidden = 300;
  int layers = 1;
  float dropout = 0.0f;     // on the outputs of every layer but the last (training only)
  bool bidirectional = false;
};

// Everything forward() keeps for backward(): per layer (and direction) the gate
// activations, cell states and outputs for every packed row, plus dropout masks.
// Owned by the caller; buffers are reused across batches (no steady-state allocation).
struct LstmContext {
  std::vector<Tensor> gates;     // [layer*dirs + dir] rows x 4h: i, f, g, o after their nonlinearity
  std::vector<Tensor> cells;     // [layer*dirs + dir] rows x h: c_t
  std::vector<Tensor> outputs;   // [layer] rows x (h*dirs): h_t of both directions, before dropout
  std::vector<Tensor> dropped;   // [layer] rows x (h*dirs): input of layer+1 after dropout (train only)
  std::vector<Tensor> masks;     // [layer] dropout scale per element (0 or 1/(1-p)), train only
  Mode mode = Mode::Eval;
};

// Parameters (PyTorch nn.LSTM names, prefixed): weight_ih_l{k}[_reverse] [4h x in_k],
// weight_hh_l{k}[_reverse] [4h x h], bias_ih_l{k}[_reverse] [4h], bias_hh_l{k}[_reverse]
// [4h]; gate order i, f, g, o. h_0 = c_0 = 0 for every conversation. Unidirectional by
// default: an utterance sees itself and the past. The input projection of all time steps
// of a layer is one GEMM; each step then runs one recurrent GEMM over the
// conversations still active at that step, so padding costs nothing.
class Lstm {
 public:
  Lstm() = default;
  Lstm(ParamStore& params, const std::string& prefix, const LstmConfig& config);

  const LstmConfig& config() const { return config_; }
  int output_dim() const { return config_.hidden * (config_.bidirectional ? 2 : 1); }

  // U(-1/sqrt(h), 1/sqrt(h)) for every weight and bias, like PyTorch.
  void init(ParamStore& params, Rng& rng) const;

  // x: [layout.rows() x input] packed rows; y: resized to [rows x output_dim()].
  // `dropout_slot` selects this layer's dropout streams (see DropoutKey).
  void forward(const ParamStore& params, const PackedLayout& layout, const float* x, Tensor& y, Mode mode,
               const DropoutKey& key, uint64_t dropout_slot, LstmContext& ctx) const;

  // dy: [rows x output_dim()]. Parameter gradients are accumulated (+=) into
  // params.grads(); dx, when not null, is overwritten with [rows x input].
  void backward(ParamStore& params, const PackedLayout& layout, const float* x, const float* dy, float* dx,
                LstmContext& ctx) const;

 private:
  LstmConfig config_;
  // Parameter ids per (layer*dirs + dir): weight_ih, weight_hh, bias_ih, bias_hh.
  std::vector<int> w_ih_, w_hh_, b_ih_, b_hh_;
};

}  // namespace mman
