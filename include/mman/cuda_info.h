// What the CUDA backend is: compiled or not, library versions, usable devices.
#pragma once
#include <string>
#include <vector>

namespace mman {

struct CudaDevice {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  size_t memory_bytes = 0;
};

struct CudaState {
  bool compiled = false;        // the CUDA backend is part of this build
  std::string runtime_version;  // e.g. "13.0"
  std::string cudnn_version;    // e.g. "9.13.0"
  std::string cublas_version;
  std::vector<CudaDevice> devices;
  std::string unusable_reason;  // why no device can be used (empty when one can)
  bool probe_ok = false;        // a trivial kernel ran and returned the right values

  bool usable() const { return compiled && !devices.empty() && probe_ok; }
};

// Queries the runtime. Never throws: a missing driver or device is reported in
// unusable_reason with the runtime's own words.
CudaState query_cuda();
// One line for `mman_exp info`, e.g. "compiled (CUDA 13.0, cuDNN 9.13.0), no usable
// device: CUDA driver version is insufficient for CUDA runtime version".
std::string describe_cuda(const CudaState& state);

}  // namespace mman
