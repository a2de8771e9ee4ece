// query_cuda() and its one-line description; dispatches to cuda/ when compiled in.
#include "mman/cuda_info.h"

#include <fmt/format.h>

#ifdef MMAN_WITH_CUDA
#include "cuda/device_info.cuh"
#endif

namespace mman {

CudaState query_cuda() {
#ifdef MMAN_WITH_CUDA
  return cuda::query_device_state();
#else
  return CudaState{};
#endif
}

std::string describe_cuda(const CudaState& s) {
  if (!s.compiled) return "not compiled (configure with MMAN_CUDA=ON and nvcc on PATH)";
  std::string line = fmt::format("compiled (CUDA {}, cuDNN {}, cuBLAS {})", s.runtime_version,
                                 s.cudnn_version, s.cublas_version);
  if (!s.usable()) return line + ", no usable device: " + s.unusable_reason;
  for (const CudaDevice& d : s.devices)
    line += fmt::format(", device {}: {} (sm_{}{}, {:.1f} GiB)", d.index, d.name, d.cc_major, d.cc_minor,
                        static_cast<double>(d.memory_bytes) / (1024.0 * 1024.0 * 1024.0));
  return line;
}

}  // namespace mman
