// Device query for `mman_exp info` and a probe kernel that proves a device executes our code.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <string>
#include <vector>

#include "cuda/device_info.cuh"

namespace mman::cuda {
namespace {

// Writes a known pattern: the host checks every element, so a device that accepts the
// launch but computes nothing (or the wrong architecture) is caught.
__global__ void probe_kernel(int* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = 3 * i + 1;
}

std::string version_string(int v, int major_div, int minor_div) {
  return std::to_string(v / major_div) + "." + std::to_string((v % major_div) / minor_div);
}

// Runs the probe on the current device; returns an empty string on success, else why not.
std::string run_probe() {
  constexpr int n = 1000;
  int* d = nullptr;
  cudaError_t err = cudaMalloc(&d, n * sizeof(int));
  if (err != cudaSuccess) return std::string("cudaMalloc: ") + cudaGetErrorString(err);
  probe_kernel<<<(n + 255) / 256, 256>>>(d, n);
  err = cudaGetLastError();
  std::vector<int> h(n, 0);
  if (err == cudaSuccess) err = cudaMemcpy(h.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(d);
  if (err != cudaSuccess) return std::string("probe kernel: ") + cudaGetErrorString(err);
  for (int i = 0; i < n; ++i)
    if (h[i] != 3 * i + 1) return "probe kernel returned wrong values";
  return {};
}

}  // namespace

CudaState query_device_state() {
  CudaState s;
  s.compiled = true;
  s.runtime_version = version_string(CUDART_VERSION, 1000, 10);
  const size_t cudnn = cudnnGetVersion();  // library call: needs no device
  s.cudnn_version = std::to_string(cudnn / 10000) + "." + std::to_string((cudnn % 10000) / 100) + "." +
                    std::to_string(cudnn % 100);
  // The version built against (cuBLAS is loaded on first use, cuda/cublas_lazy.cu, and asking
  // the library would load it, ~210 MB, into every process); replaced by the loaded library's
  // own below when a device is usable, since the GPU path then loads it anyway.
  s.cublas_version = std::to_string(CUBLAS_VER_MAJOR) + "." + std::to_string(CUBLAS_VER_MINOR) + "." +
                     std::to_string(CUBLAS_VER_PATCH);

  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    s.unusable_reason = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error so later queries start clean
    return s;
  }
  if (count == 0) {
    s.unusable_reason = "the CUDA runtime reports no device";
    return s;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    s.devices.push_back({i, prop.name, prop.major, prop.minor, prop.totalGlobalMem});
  }
  if (cudaSetDevice(0) != cudaSuccess) {
    s.unusable_reason = "cannot select device 0";
    return s;
  }
  const std::string probe = run_probe();
  s.probe_ok = probe.empty();
  if (!s.probe_ok) {
    s.unusable_reason = probe;
    return s;
  }
  int cb_major = 0, cb_minor = 0, cb_patch = 0;
  if (cublasGetProperty(MAJOR_VERSION, &cb_major) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(MINOR_VERSION, &cb_minor) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(PATCH_LEVEL, &cb_patch) == CUBLAS_STATUS_SUCCESS) {
    s.cublas_version = std::to_string(cb_major) + "." + std::to_string(cb_minor) + "." + std::to_string(cb_patch);
  } else {
    s.probe_ok = false;  // a device without cuBLAS cannot train
    s.unusable_reason = cublasGetStatusString(CUBLAS_STATUS_NOT_INITIALIZED);
  }
  return s;
}

}  // namespace mman::cuda
