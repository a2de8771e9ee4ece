// ClstmBlock: the contextual LSTM block (Poria et al. 2017) that ends every mman network.
#pragma once
#include <cstdint>
#include <string>

#include "mman/layers/dropout.h"
#include "mman/layers/linear.h"
#include "mman/layers/lstm.h"
#include "mman/layers/mode.h"
#include "mman/packed.h"
#include "mman/params.h"
#include "mman/rng.h"
#include "mman/tensor.h"

namespace mman {

struct ClstmBlockConfig {
  int input = 0;              // feature width of each packed row
  int hidden = 300;           // LSTM hidden size (per direction)
  int layers = 1;             // stacked LSTM layers
  float lstm_dropout = 0.5f;  // between stacked LSTM layers
  bool bidirectional = false;
  int fc = 200;               // width of the dense layer
  float dropout = 0.5f;       // after ReLU(LSTM) and after ReLU(fc)
  int outputs = 0;            // logits per utterance
};

// What forward() keeps for backward(), owned by the caller and reused across batches.
struct ClstmBlockContext {
  LstmContext lstm;
  Tensor h;   // [rows x H] LSTM output (H = hidden * directions)
  Tensor a;   // [rows x H] dropout(ReLU(h)): input of fc
  Tensor g;   // [rows x fc] dropout(ReLU(fc(a))): input of out
  Mode mode = Mode::Eval;
  DropoutKey key;
  Tensor dg, da;  // backward scratch
};

// LSTM (hidden, layers, dropout between layers) -> ReLU -> dropout -> Linear(H -> fc)
// `fc` -> ReLU -> dropout -> Linear(fc -> outputs) `out`: logits at every utterance.
// Parameters (prefix + ...): lstm.weight_ih_l0, ... (nn.LSTM), fc.weight, fc.bias,
// out.weight, out.bias, registered in that order (the PyTorch module's state_dict).
//
// Dropout slots relative to `slot_base`: slot_base + 0 after ReLU(LSTM), slot_base + 1
// after ReLU(fc), slot_base + 2 .. slot_base + layers the LSTM's own (between layers).
// A block occupies kClstmBlockSlots slots, which bounds layers to kClstmMaxLayers.
inline constexpr uint64_t kClstmBlockSlots = 16;
inline constexpr int kClstmMaxLayers = static_cast<int>(kClstmBlockSlots) - 2;

class ClstmBlock {
 public:
  ClstmBlock() = default;
  ClstmBlock(ParamStore& params, const std::string& prefix, const ClstmBlockConfig& config, uint64_t slot_base);

  const ClstmBlockConfig& config() const { return config_; }

  // PyTorch defaults: LSTM U(-1/sqrt(hidden), +), Linear U(-1/sqrt(fan_in), +), drawn in
  // registration order.
  void init(ParamStore& params, Rng& rng) const;

  // x: [layout.rows() x input]; logits resized to [rows x outputs].
  void forward(const ParamStore& params, const PackedLayout& layout, const float* x, Tensor& logits, Mode mode,
               const DropoutKey& key, ClstmBlockContext& ctx) const;
  // dlogits: [rows x outputs]. Parameter gradients accumulate (+=); dx, when not null,
  // is overwritten with [rows x input].
  void backward(ParamStore& params, const PackedLayout& layout, const float* x, const Tensor& dlogits, float* dx,
                ClstmBlockContext& ctx) const;

 private:
  ClstmBlockConfig config_;
  Lstm lstm_;
  Linear fc_, out_;
  Dropout drop_h_, drop_fc_;
  uint64_t lstm_slot_ = 0;
};

}  // namespace mman
