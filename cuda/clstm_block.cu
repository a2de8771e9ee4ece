// The cLSTM block on the GPU: cuDNN LSTM, fused ReLU + dropout kernels and cuBLAS Linear layers, forward and backward.
#include <string>
#include <utility>
#include <vector>

#include "cuda/clstm_block.cuh"
#include "cuda/elementwise.cuh"
#include "cuda/linear.cuh"
#include "mman/error.h"
#include "mman/nvtx.h"

namespace mman::cuda {
namespace {

LstmConfig lstm_config(const ClstmBlockConfig& c) {
  LstmConfig l;
  l.input = c.input;
  l.hidden = c.hidden;
  l.layers = c.layers;
  l.dropout = c.layers > 1 ? c.lstm_dropout : 0.0f;  // as the CPU block: nn.LSTM drops only between layers
  l.bidirectional = c.bidirectional;
  return l;
}

const ClstmBlockConfig& checked(const ClstmBlockConfig& c, const std::string& prefix) {
  MMAN_CHECK(c.layers >= 1 && c.layers <= kClstmMaxLayers, "GPU cLSTM block '{}': {} LSTM layers, expected 1 to {}",
             prefix, c.layers, kClstmMaxLayers);
  MMAN_CHECK(c.input > 0 && c.hidden > 0 && c.fc > 0 && c.outputs > 0,
             "GPU cLSTM block '{}': sizes must be positive (input {}, hidden {}, fc {}, outputs {})", prefix, c.input,
             c.hidden, c.fc, c.outputs);
  return c;
}

int find_param(const DeviceParams& params, const std::string& name, const std::vector<int64_t>& shape) {
  const int id = params.find(name);
  MMAN_CHECK(id >= 0, "GPU cLSTM block: the device parameters have no '{}'", name);
  MMAN_CHECK(params.info(id).shape == shape, "GPU cLSTM block: parameter '{}' has the wrong shape", name);
  return id;
}

}  // namespace

ClstmBlockDevice::ClstmBlockDevice(CudaContext& ctx, const DeviceParams& params, const std::string& prefix,
                                   const ClstmBlockConfig& config, Dropout drop_h, Dropout drop_fc,
                                   std::vector<Dropout> lstm_between)
    : ctx_(&ctx),
      config_(checked(config, prefix)),
      prefix_(prefix),
      lstm_(ctx, params, prefix + "lstm.", lstm_config(config)),
      drop_h_(drop_h),
      drop_fc_(drop_fc),
      lstm_between_(std::move(lstm_between)) {
  const int64_t hd = lstm_.output_dim();
  fc_w_ = find_param(params, prefix + "fc.weight", {config.fc, hd});
  fc_b_ = find_param(params, prefix + "fc.bias", {config.fc});
  out_w_ = find_param(params, prefix + "out.weight", {config.outputs, config.fc});
  out_b_ = find_param(params, prefix + "out.bias", {config.outputs});
}

void ClstmBlockDevice::forward(const DeviceParams& params, const PackedLayout& layout, const float* d_x,
                               float* d_logits, Mode mode, const DropoutKey& key, ClstmBlockDeviceContext& ctx) {
  MMAN_NVTX_RANGE("clstm.forward");
  const int64_t rows = layout.rows();
  const int hd = lstm_.output_dim(), fc = config_.fc, outputs = config_.outputs;
  ctx.mode = mode;
  ctx.key = key;
  ctx.rows = rows;
  ctx.h.resize(static_cast<size_t>(rows) * hd);
  ctx.a.resize(static_cast<size_t>(rows) * hd);
  ctx.g.resize(static_cast<size_t>(rows) * fc);
  static const std::vector<Dropout> kNone;
  lstm_.forward(params, layout, d_x, ctx.h.data(), mode, key, mode == Mode::Train ? lstm_between_ : kNone, ctx.lstm);
  if (rows == 0) return;
  cudaStream_t stream = ctx_->stream();
  // Element (r, c) of a contiguous [rows x width] matrix has dropout index r * width + c, as
  // the CPU block's dropout over the whole matrix.
  relu_dropout_forward_device(drop_h_, ctx.h.data(), ctx.a.data(), kernels::dropout_view(rows, hd, hd, hd, "clstm"),
                              mode, key, stream);
  linear_forward_device(*ctx_, params.value(fc_w_), params.value(fc_b_), hd, fc, ctx.a.data(), hd, rows,
                        ctx.g.data(), fc);
  relu_dropout_forward_device(drop_fc_, ctx.g.data(), ctx.g.data(), kernels::dropout_view(rows, fc, fc, fc, "clstm"),
                              mode, key, stream);
  linear_forward_device(*ctx_, params.value(out_w_), params.value(out_b_), fc, outputs, ctx.g.data(), fc, rows,
                        d_logits, outputs);
}

void ClstmBlockDevice::backward(DeviceParams& params, const PackedLayout& layout, const float* d_x,
                                const float* d_dlogits, float* d_dx, ClstmBlockDeviceContext& ctx) {
  MMAN_NVTX_RANGE("clstm.backward");
  const int64_t rows = layout.rows();
  MMAN_CHECK(ctx.rows == rows, "GPU cLSTM block '{}': backward on {} rows after a forward of {}", prefix_, rows,
             ctx.rows);
  if (rows == 0) return;
  const int hd = lstm_.output_dim(), fc = config_.fc, outputs = config_.outputs;
  cudaStream_t stream = ctx_->stream();
  auto grad_of = [&](int id) { return params.info(id).trainable ? params.grad(id) : nullptr; };
  ctx.dg.resize(static_cast<size_t>(rows) * fc);
  ctx.da.resize(static_cast<size_t>(rows) * hd);
  linear_backward_device(*ctx_, params.value(out_w_), grad_of(out_w_), grad_of(out_b_), fc, outputs, ctx.g.data(), fc,
                         rows, d_dlogits, outputs, ctx.dg.data(), fc);
  relu_dropout_backward_device(drop_fc_, ctx.g.data(), ctx.dg.data(), ctx.dg.data(),
                               kernels::dropout_view(rows, fc, fc, fc, "clstm"), ctx.mode, stream);
  linear_backward_device(*ctx_, params.value(fc_w_), grad_of(fc_w_), grad_of(fc_b_), hd, fc, ctx.a.data(), hd, rows,
                         ctx.dg.data(), fc, ctx.da.data(), hd);
  relu_dropout_backward_device(drop_h_, ctx.a.data(), ctx.da.data(), ctx.da.data(),
                               kernels::dropout_view(rows, hd, hd, hd, "clstm"), ctx.mode, stream);
  lstm_.backward(params, layout, d_x, ctx.da.data(), d_dx, ctx.lstm);
}

}  // namespace mman::cuda
