// Launcher of the cLSTM block on the GPU (cuda/clstm_block.cu): mman::ClstmBlock with cuDNN, cuBLAS and our kernels.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/lstm_cudnn.cuh"
#include "mman/cuda/arena.h"
#include "mman/cuda/buffer.h"
#include "mman/cuda/context.h"
#include "mman/layers/dropout.h"
#include "mman/layers/mode.h"
#include "mman/models/clstm.h"
#include "mman/packed.h"

namespace mman::cuda {

// What forward() keeps for backward() (device memory, reused across batches).
struct ClstmBlockDeviceContext {
  CudnnLstmContext lstm;
  DeviceArray<float> h;   // [rows x H] LSTM output
  DeviceArray<float> a;   // [rows x H] dropout(ReLU(h)): input of fc
  DeviceArray<float> g;   // [rows x fc] dropout(ReLU(fc(a))): input of out
  DeviceArray<float> dg, da;  // backward scratch
  Mode mode = Mode::Eval;
  DropoutKey key;
  int64_t rows = -1;  // of the last forward
};

// mman::ClstmBlock (include/mman/models/clstm.h) on the GPU: the same parameters (prefix +
// lstm.*, fc.weight, fc.bias, out.weight, out.bias in the DeviceParams arena), the same dropout
// slots (slot_base + 0 after ReLU(LSTM), + 1 after ReLU(fc), + 2 .. the LSTM's), the same
// function within float32 tolerance:
//   LSTM (CudnnLstm) -> ReLU + dropout (one fused kernel) -> Linear (cuBLAS) -> ReLU + dropout
//   -> Linear (cuBLAS): logits at every packed row.
// The backward pass mirrors the CPU block's: Linear backward (cuBLAS), the fused ReLU + dropout
// backward from the stored activations (no mask redrawn), the LSTM's backward.
class ClstmBlockDevice {
 public:
  // The dropouts are built here, in the caller's translation unit (mman::Dropout's constructor
  // is mman_core's: docs/cuda_backend.md); the rest is cuda/clstm_block.cu. Throws mman::Error
  // for bad sizes or parameters missing from `params`.
  ClstmBlockDevice(CudaContext& ctx, const DeviceParams& params, const std::string& prefix,
                   const ClstmBlockConfig& config, uint64_t slot_base)
      : ClstmBlockDevice(ctx, params, prefix, config, Dropout(config.dropout, slot_base),
                         Dropout(config.dropout, slot_base + 1), lstm_dropouts(config, slot_base + 2)) {}

  const ClstmBlockConfig& config() const { return config_; }

  // d_x [layout.rows() x input] -> d_logits [rows x outputs] (overwritten).
  void forward(const DeviceParams& params, const PackedLayout& layout, const float* d_x, float* d_logits, Mode mode,
               const DropoutKey& key, ClstmBlockDeviceContext& ctx);
  // d_dlogits [rows x outputs] -> parameter gradients accumulated (+=) into params.grads()
  // (frozen tensors skipped); d_dx, when not null, overwritten with [rows x input].
  void backward(DeviceParams& params, const PackedLayout& layout, const float* d_x, const float* d_dlogits,
                float* d_dx, ClstmBlockDeviceContext& ctx);

 private:
  static std::vector<Dropout> lstm_dropouts(const ClstmBlockConfig& c, uint64_t slot) {
    std::vector<Dropout> d;  // nn.LSTM drops only between stacked layers
    if (c.layers > 1 && c.lstm_dropout > 0.0f)
      for (int k = 0; k + 1 < c.layers; ++k) d.emplace_back(c.lstm_dropout, slot + static_cast<uint64_t>(k));
    return d;
  }
  ClstmBlockDevice(CudaContext& ctx, const DeviceParams& params, const std::string& prefix,
                   const ClstmBlockConfig& config, Dropout drop_h, Dropout drop_fc, std::vector<Dropout> lstm_between);

  CudaContext* ctx_;
  ClstmBlockConfig config_;
  std::string prefix_;
  CudnnLstm lstm_;
  Dropout drop_h_, drop_fc_;
  std::vector<Dropout> lstm_between_;
  int fc_w_ = -1, fc_b_ = -1, out_w_ = -1, out_b_ = -1;
};

}  // namespace mman::cuda
