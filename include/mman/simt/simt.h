// Portability macros for kernel source written once: native CUDA under nvcc, the host SIMT
// emulation (mman/simt/host.h) in CPU builds and tests. See docs/simt.md.
//
// Kernel headers (cuda/kernels/*.cuh) put their code in namespace mman::kernels and use:
//   MMAN_KERNEL void k(...)             a __global__ function (internal linkage: headers are
//                                       included by several translation units)
//   MMAN_DEVICE float f(...)            a __device__ function;  MMAN_HOST_DEVICE for both
//   MMAN_SHARED(float, buf, 256);       __shared__ float buf[256] (one region per block)
//   MMAN_SHARED_DYNAMIC(float, buf);    extern __shared__ memory, sized by the launch
//   MMAN_SHARED_PTR(float)              the type to pass shared memory to device functions
//   threadIdx, blockIdx, blockDim, gridDim, __syncthreads(), __shfl_{,up_,down_,xor_}sync,
//   atomicAdd/atomicMax, __expf, __logf, __fdividef, rsqrtf under their CUDA names
//   MMAN_LAUNCH(config, kernel, args...) kernel<<<grid, block, shared_bytes, stream>>>(args...)
//                                       plus a cudaGetLastError() check that throws mman::Error
// Under the emulation shared memory is reached only through [] and +/- on the names the
// macros declare (no sizeof, no casts to plain pointers): that is what lets it check races.
#pragma once

#include "mman/error.h"

#if defined(__CUDACC__)

#include <cuda_runtime.h>

#include <utility>

#define MMAN_KERNEL [[maybe_unused]] static __global__
#define MMAN_DEVICE __device__ inline
#define MMAN_HOST_DEVICE __host__ __device__ inline
#define MMAN_SHARED(T, name, count) __shared__ T name[count]
#define MMAN_SHARED_DYNAMIC(T, name)                                   \
  extern __shared__ __align__(16) unsigned char name##_mman_dynamic[]; \
  T* name = reinterpret_cast<T*>(name##_mman_dynamic)
#define MMAN_SHARED_PTR(T) T*

namespace mman::simt {

using Stream = cudaStream_t;

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t shared_bytes = 0;
  Stream stream = nullptr;
};

struct LaunchSite {
  const char* expression;
  const char* file;
  int line;
};

template <class... P, class... A>
void launch(const LaunchSite& site, const LaunchConfig& config, void (*kernel)(P...), A&&... args) {
  kernel<<<config.grid, config.block, config.shared_bytes, config.stream>>>(std::forward<A>(args)...);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    ::mman::fail("CUDA launch `{}` at {}:{} failed: {} ({})", site.expression, site.file, site.line,
                 cudaGetErrorName(err), cudaGetErrorString(err));
}

}  // namespace mman::simt

#else  // host emulation

#include "mman/simt/host.h"

#define MMAN_KERNEL [[maybe_unused]] static
#define MMAN_DEVICE inline
#define MMAN_HOST_DEVICE inline
// A function-local tag gives each declaration (and each template instantiation) its own
// allocation in the block's one shared region, whichever thread executes it first.
#define MMAN_SHARED(T, name, count)                                                       \
  static constexpr char name##_mman_tag = 0;                                              \
  const ::mman::simt::SharedPtr<T> name(                                                  \
      &::mman::simt::detail::shared_static(&name##_mman_tag, #name, sizeof(T) * (count), alignof(T)), 0)
#define MMAN_SHARED_DYNAMIC(T, name) \
  ::mman::simt::SharedPtr<T> name(&::mman::simt::detail::shared_dynamic(#name), 0)
#define MMAN_SHARED_PTR(T) ::mman::simt::SharedPtr<T>

namespace mman::kernels {
using namespace ::mman::simt::device;  // threadIdx, __syncthreads, ... for kernel source
}  // namespace mman::kernels

#endif

// Launches `kernel` with `config` (an mman::simt::LaunchConfig) and the given arguments.
#define MMAN_LAUNCH(config, ...) \
  ::mman::simt::launch(::mman::simt::LaunchSite{#__VA_ARGS__, __FILE__, __LINE__}, (config), __VA_ARGS__)
