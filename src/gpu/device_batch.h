// DeviceBatch: one mini-batch's feature matrices and targets in device memory, reused across batches.
#pragma once
#ifdef MMAN_WITH_CUDA
#include <cstdint>
#include <vector>

#include "mman/cuda/buffer.h"
#include "mman/cuda/context.h"
#include "mman/data/batch.h"

namespace mman::gpu {

// The device copy of a Batch (mman/data/batch.h): every modality's [rows x d_m] matrix and the
// targets, in the batch's packed row order. The buffers only grow, so once the largest batch
// has been seen uploading allocates nothing. The layout (lengths, offsets) stays on the host:
// cuDNN and the launchers take it from the Batch itself.
struct DeviceBatch {
  std::vector<cuda::DeviceArray<float>> features;  // [modality] -> [rows x d_m]
  cuda::DeviceArray<int32_t> targets;              // [rows]
  int64_t rows = -1;                               // of the last upload

  // Queues the copies on the context's stream; `batch` may be reused as soon as this returns.
  void upload(const cuda::CudaContext& ctx, const Batch& batch);
};

}  // namespace mman::gpu
#endif  // MMAN_WITH_CUDA
