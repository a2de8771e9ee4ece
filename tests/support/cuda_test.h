// Whether the GPU tests can run here, and the macro that skips them with the runtime's reason.
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "mman/cuda_info.h"

namespace mman::test {

// Why no CUDA device can run the GPU tests, or empty when one can (queried once: the query
// runs a probe kernel). In the device-emulation builds (test_*_emulated, MMAN_DEVICE_EMULATION)
// the emulated device is always there.
inline std::string cuda_unusable_reason() {
#ifdef MMAN_DEVICE_EMULATION
  return std::string();
#else
  static const std::string reason = [] {
    const CudaState s = query_cuda();
    if (!s.compiled) return std::string("this build has no CUDA backend (MMAN_CUDA=OFF or no nvcc/cuDNN)");
    if (!s.usable()) return s.unusable_reason.empty() ? std::string("the CUDA runtime reports none") : s.unusable_reason;
    return std::string();
  }();
  return reason;
#endif
}

}  // namespace mman::test

// First statement of a GPU test: skips it, printing the reason, where no device is usable.
#define MMAN_REQUIRE_CUDA()                                                                     \
  do {                                                                                          \
    const std::string mman_reason_ = ::mman::test::cuda_unusable_reason();                     \
    if (!mman_reason_.empty()) GTEST_SKIP() << "no usable CUDA device: " << mman_reason_;      \
  } while (0)
