// Uploading a mini-batch to the GPU.
#ifdef MMAN_WITH_CUDA
#include "src/gpu/device_batch.h"

#include "mman/error.h"

namespace mman::gpu {

void DeviceBatch::upload(const cuda::CudaContext& ctx, const Batch& batch) {
  const int64_t n = batch.rows();
  MMAN_CHECK(static_cast<int64_t>(batch.targets.size()) == n, "GPU batch: {} targets for {} rows",
             batch.targets.size(), n);
  features.resize(batch.features.size());
  for (size_t m = 0; m < batch.features.size(); ++m) {
    const Tensor& f = batch.features[m];
    MMAN_CHECK(f.rows() == n, "GPU batch: modality {} has {} rows, the batch {}", m, f.rows(), n);
    features[m].resize(static_cast<size_t>(f.size()));
    ctx.upload(features[m].data(), f.data(), static_cast<size_t>(f.size()) * sizeof(float));
  }
  targets.resize(static_cast<size_t>(n));
  ctx.upload(targets.data(), batch.targets.data(), static_cast<size_t>(n) * sizeof(int32_t));
  rows = n;
}

}  // namespace mman::gpu
#endif  // MMAN_WITH_CUDA
