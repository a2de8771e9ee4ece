// Launcher of the fused Adam kernel (cuda/adam.cu): one launch updates every trainable span of
// the device parameter arena, bit-identical to mman::Adam on the CPU.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernels/adam.cuh"  // ArenaSpans, arena_span_bounds()
#include "mman/train/optimizer.h"

namespace mman::cuda {

// Adam step t (>= 1) over d_p, d_grad, d_m, d_v (the arenas, same layout) restricted to spans
// (its bounds table in device memory).
void adam_step_device(float* d_p, const float* d_grad, float* d_m, float* d_v, const kernels::ArenaSpans& spans,
                      const AdamConfig& config, int64_t t, cudaStream_t stream);

}  // namespace mman::cuda
