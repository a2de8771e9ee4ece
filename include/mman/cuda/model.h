// make_cuda_model: a Model that computes, and trains, on a GPU (device-neutral declaration; CUDA builds only).
#pragma once
#include <memory>

#include "mman/cuda/context.h"
#include "mman/models/model.h"

namespace mman::cuda {

// A model of `config` (resolved here, as make_model does) whose forward, backward, loss and
// optimiser run on `ctx`'s device: the same parameter layout, initialisation, dropout masks and
// checkpoints as the CPU model of the same config, the same results within float32 tolerance.
// Its Model::forward/backward take and return host tensors (like a CPU model: evaluation,
// tests); the trainer drives it through Model::device_training(), which keeps parameters,
// gradients and Adam moments on the device while a phase trains (src/train/trainer.cpp).
// Throws mman::Error for a config the CPU factory rejects.
std::unique_ptr<Model> make_cuda_model(const ModelConfig& config, const DataShape& shape,
                                       std::shared_ptr<CudaContext> ctx);

// Whether a CUDA model's MMA layers may use the fused kernels (the default) or must take the
// unfused path (cuBLAS projections + attention kernels), for tests that compare the two.
// Throws mman::Error when `model` is not a CUDA model.
void set_fused_mma(Model& model, bool allowed);

// The process's context on device 0, created on first use and shared by every model made with
// make_model(config, shape, "cuda") while any of them lives. Throws mman::Error "no usable
// CUDA device: <the runtime's reason>" when none can be used.
std::shared_ptr<CudaContext> shared_context();

}  // namespace mman::cuda
