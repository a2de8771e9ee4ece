// Launcher of the masked cross-entropy kernels (cuda/cross_entropy.cu): loss, counts and the
// gradient of the logits on a CUDA stream, without a host round trip.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernels/cross_entropy.cuh"  // CrossEntropyResult, cross_entropy_partial_count()

namespace mman::cuda {

// mman::masked_cross_entropy on device data: *d_result the loss and counts, d_dlogits (when not
// null) the gradient; d_partial: cross_entropy_partial_count(rows) elements. Check the result
// with kernels::check_cross_entropy_result once it is on the host.
void cross_entropy_device(const float* d_logits, const int32_t* d_targets, long long rows, int cols, int heads,
                          float* d_dlogits, kernels::CrossEntropyPartial* d_partial,
                          kernels::CrossEntropyResult* d_result, cudaStream_t stream);

}  // namespace mman::cuda
