// Launcher declarations for the device query and the probe kernel (cuda/device_info.cu).
#pragma once
#include "mman/cuda_info.h"

namespace mman::cuda {

// Fills everything in CudaState from the CUDA runtime, cuDNN and cuBLAS, and runs the
// probe kernel on device 0 when there is one.
CudaState query_device_state();

}  // namespace mman::cuda
