// The cLSTM block: LSTM, ReLU, dropout, dense, ReLU, dropout, output layer; and its backward.
#include "mman/models/clstm.h"

#include "mman/error.h"
#include "mman/layers/activation.h"

namespace mman {

namespace {
LstmConfig lstm_config(const ClstmBlockConfig& c) {
  LstmConfig l;
  l.input = c.input;
  l.hidden = c.hidden;
  l.layers = c.layers;
  l.dropout = c.layers > 1 ? c.lstm_dropout : 0.0f;  // nn.LSTM drops only between layers
  l.bidirectional = c.bidirectional;
  return l;
}
}  // namespace

ClstmBlock::ClstmBlock(ParamStore& params, const std::string& prefix, const ClstmBlockConfig& config,
                       uint64_t slot_base)
    : config_(config), lstm_slot_(slot_base + 2) {
  MMAN_CHECK(config.layers >= 1 && config.layers <= kClstmMaxLayers, "cLSTM block '{}': {} LSTM layers, expected 1 to {}",
             prefix, config.layers, kClstmMaxLayers);
  MMAN_CHECK(config.input > 0 && config.hidden > 0 && config.fc > 0 && config.outputs > 0,
             "cLSTM block '{}': sizes must be positive (input {}, hidden {}, fc {}, outputs {})", prefix, config.input,
             config.hidden, config.fc, config.outputs);
  lstm_ = Lstm(params, prefix + "lstm.", lstm_config(config));
  fc_ = Linear(params, prefix + "fc.", lstm_.output_dim(), config.fc);
  out_ = Linear(params, prefix + "out.", config.fc, config.outputs);
  drop_h_ = Dropout(config.dropout, slot_base);
  drop_fc_ = Dropout(config.dropout, slot_base + 1);
}

void ClstmBlock::init(ParamStore& params, Rng& rng) const {
  lstm_.init(params, rng);
  fc_.init(params, rng);
  out_.init(params, rng);
}

void ClstmBlock::forward(const ParamStore& params, const PackedLayout& layout, const float* x, Tensor& logits,
                         Mode mode, const DropoutKey& key, ClstmBlockContext& ctx) const {
  ctx.mode = mode;
  ctx.key = key;
  DropoutContext unused;
  lstm_.forward(params, layout, x, ctx.h, mode, key, lstm_slot_, ctx.lstm);
  ctx.a.resize(ctx.h.rows(), ctx.h.cols());
  relu_forward(ctx.h.data(), ctx.a.data(), ctx.a.size());
  drop_h_.forward(ctx.a.data(), ctx.a.data(), ctx.a.size(), mode, key, unused);
  fc_.forward(params, ctx.a, ctx.g);
  relu_forward(ctx.g.data(), ctx.g.data(), ctx.g.size());
  drop_fc_.forward(ctx.g.data(), ctx.g.data(), ctx.g.size(), mode, key, unused);
  out_.forward(params, ctx.g, logits);
}

void ClstmBlock::backward(ParamStore& params, const PackedLayout& layout, const float* x, const Tensor& dlogits,
                          float* dx, ClstmBlockContext& ctx) const {
  MMAN_CHECK(dlogits.rows() == ctx.g.rows() && dlogits.cols() == config_.outputs,
             "cLSTM block backward: dlogits [{} x {}] do not match the forward's [{} x {}]", dlogits.rows(),
             dlogits.cols(), ctx.g.rows(), config_.outputs);
  const DropoutContext dctx{ctx.mode, ctx.key};
  out_.backward(params, ctx.g, dlogits, &ctx.dg);
  drop_fc_.backward(ctx.dg.data(), ctx.dg.data(), ctx.dg.size(), dctx);
  // g > 0 exactly where ReLU(fc) was active and kept; dropped elements already carry a
  // zero gradient, so the stored output doubles as the ReLU's sign pattern.
  relu_backward(ctx.g.data(), ctx.dg.data(), ctx.dg.data(), ctx.dg.size());
  fc_.backward(params, ctx.a, ctx.dg, &ctx.da);
  drop_h_.backward(ctx.da.data(), ctx.da.data(), ctx.da.size(), dctx);
  relu_backward(ctx.h.data(), ctx.da.data(), ctx.da.data(), ctx.da.size());
  lstm_.backward(params, layout, x, ctx.da.data(), dx, ctx.lstm);
}

}  // namespace mman
