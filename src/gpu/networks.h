// DeviceNetwork: the networks of every model type (mman::Network) on the GPU, and their factory.
#pragma once
#ifdef MMAN_WITH_CUDA
#include <cstdint>
#include <memory>
#include <string>

#include "mman/cuda/arena.h"
#include "mman/cuda/context.h"
#include "mman/data/batch.h"
#include "mman/layers/mode.h"
#include "mman/models/model.h"
#include "src/gpu/device_batch.h"

namespace mman::gpu {

// mman::Network (mman/models/network.h) on device memory: the same parameters under the same
// prefix, the same dropout slots, the same function within float32 tolerance. The host Batch
// supplies the packed layout, the DeviceBatch its features on the device; both describe the
// same batch. One forward/backward in flight per network.
class DeviceNetwork {
 public:
  virtual ~DeviceNetwork() = default;
  // d_logits [rows x outputs], overwritten.
  virtual void forward(const cuda::DeviceParams& params, const Batch& batch, const DeviceBatch& dbatch, Mode mode,
                       const DropoutKey& key, float* d_logits) = 0;
  // After forward() on the same batch: parameter gradients accumulate (+=) into trainable tensors.
  virtual void backward(cuda::DeviceParams& params, const Batch& batch, const DeviceBatch& dbatch,
                        const float* d_dlogits) = 0;
  // The last forward's MMA weights on the device ([rows x *cols]), or the first MMA
  // sub-network's; nullptr for networks without attention.
  virtual const float* attention(int* cols) const { return nullptr; }
  // Forces the unfused MMA path in this network and its sub-networks (GPU tests).
  virtual void set_fused_mma(bool allowed) {}
  // True when none of this network's parameters is trainable (a frozen sub-network).
  bool frozen(const cuda::DeviceParams& params) const;

 protected:
  std::string prefix_;
};

// The device network of a resolved config (resolved_config()), built at `prefix` and
// `slot_base` exactly as make_network() builds the CPU one; the CPU network must have been
// built on the same parameter layout first (it validates the config against the data).
std::unique_ptr<DeviceNetwork> make_device_network(cuda::CudaContext& ctx, const cuda::DeviceParams& params,
                                                   const ModelConfig& resolved, const DataShape& shape,
                                                   const std::string& prefix, uint64_t slot_base);

}  // namespace mman::gpu
#endif  // MMAN_WITH_CUDA
