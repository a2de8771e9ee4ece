// MmaDevice: the multi-modal attention layer (mman::Mma) on the GPU: cuBLAS standardisation, fused or unfused attention kernels.
#pragma once
#ifdef MMAN_WITH_CUDA
#include <cstdint>
#include <string>
#include <vector>

#include "mman/cuda/arena.h"
#include "mman/cuda/buffer.h"
#include "mman/cuda/context.h"
#include "mman/layers/dropout.h"
#include "mman/layers/mma.h"
#include "mman/layers/mode.h"

namespace mman::gpu {

// What forward() keeps for backward(), device memory reused across batches. Every per-modality
// quantity is one [rows x M d] matrix with modality m in columns [m d, (m + 1) d).
struct MmaDeviceContext {
  cuda::DeviceArray<float> xhat;     // dropout(ReLU(W_m x_m + b_m))
  cuda::DeviceArray<float> q, k, v;  // projections, kept for the backward
  cuda::DeviceArray<float> alpha;    // [rows x M M]
  cuda::DeviceArray<float> out;      // [rows x output_dim()]
  cuda::DeviceArray<float> dxhat, dq, dk, dv;  // backward scratch
  Mode mode = Mode::Eval;
  DropoutKey key;
  int64_t rows = -1;
};

// mman::Mma on device memory, the same parameters (prefix + std|q|k|v.<modality>.weight|bias)
// and dropout slots, the same function within float32 tolerance:
//   standardisation: per modality one cuBLAS Linear into its column block of xhat, then the
//     fused ReLU + dropout kernel (the CPU's mask: index r d + j of stream slot_base + m);
//   attention: for 3 modalities and d_model <= 160 the fused kernels (cuda/mma.cu: Q/K/V
//     projections, 3x3 softmax attention, z dropout and skip in one pass; weight gradients by a
//     deterministic reduction); otherwise the unfused path, cuBLAS projections and the
//     attention kernels of cuda/attention.cu (also the on-GPU reference of the fused one).
// Gradients accumulate (+=) into trainable tensors only; frozen ones cost no work.
class MmaDevice {
 public:
  MmaDevice() = default;
  // Throws mman::Error when `params` lacks a tensor or has it with another shape.
  MmaDevice(const cuda::DeviceParams& params, const std::string& prefix, const MmaConfig& config,
            uint64_t slot_base);

  int modalities() const { return static_cast<int>(config_.dims.size()); }
  int output_dim() const;
  bool fused() const;
  // Forces the unfused path (tests compare the two on a GPU).
  void set_fused(bool allowed) { fused_allowed_ = allowed; }

  // d_x[m]: [rows x dims[m]] for each modality -> ctx.out [rows x output_dim()], ctx.alpha.
  void forward(cuda::CudaContext& ctx, const cuda::DeviceParams& params, int64_t rows, const float* const* d_x,
               Mode mode, const DropoutKey& key, MmaDeviceContext& c) const;
  // d_dout [rows x output_dim()] -> parameter gradients (+=). The inputs are data: no dx.
  void backward(cuda::CudaContext& ctx, cuda::DeviceParams& params, int64_t rows, const float* const* d_x,
                const float* d_dout, MmaDeviceContext& c) const;

 private:
  MmaConfig config_;
  uint64_t slot_base_ = 0;
  bool fused_allowed_ = true;
  std::vector<int> std_w_, std_b_;       // [m]
  std::vector<int> proj_w_[3], proj_b_[3];  // [which: q, k, v][m]
  std::vector<Dropout> drop_x_;
};

}  // namespace mman::gpu
#endif  // MMAN_WITH_CUDA
