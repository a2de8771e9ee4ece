// Checking macros for CUDA runtime, cuBLAS and cuDNN calls: throw mman::Error naming the call, file and line.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstdio>

#include "mman/error.h"

namespace mman::cuda::detail {

// The one-line message every failed library call produces, e.g.
// "CUDA call `cudaMalloc(&p, bytes)` at cuda/arena.cu:41 failed: cudaErrorMemoryAllocation (out of memory)".
inline void throw_cuda(cudaError_t err, const char* expr, const char* file, int line) {
  // A failed call leaves a non-sticky error behind; clear it so the next check does not
  // report it again for an unrelated call (sticky errors stay, as they must).
  cudaGetLastError();
  ::mman::fail("CUDA call `{}` at {}:{} failed: {} ({})", expr, file, line, cudaGetErrorName(err),
               cudaGetErrorString(err));
}

inline void throw_cublas(cublasStatus_t status, const char* expr, const char* file, int line) {
  ::mman::fail("cuBLAS call `{}` at {}:{} failed: {} ({})", expr, file, line, cublasGetStatusName(status),
               cublasGetStatusString(status));
}

inline void throw_cudnn(cudnnStatus_t status, const char* expr, const char* file, int line) {
  // cuDNN 9 keeps a more specific explanation of the last failure per thread.
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  ::mman::fail("cuDNN call `{}` at {}:{} failed: {}{}{}", expr, file, line, cudnnGetErrorString(status),
               detail[0] != '\0' ? ": " : "", detail);
}

// For destructors, which must not throw: report on stderr and go on.
inline void log_cuda(cudaError_t err, const char* expr, const char* file, int line) {
  cudaGetLastError();
  std::fprintf(stderr, "mman: CUDA call `%s` at %s:%d failed in a destructor: %s (%s)\n", expr, file, line,
               cudaGetErrorName(err), cudaGetErrorString(err));
}
inline void log_cublas(cublasStatus_t status, const char* expr, const char* file, int line) {
  std::fprintf(stderr, "mman: cuBLAS call `%s` at %s:%d failed in a destructor: %s\n", expr, file, line,
               cublasGetStatusName(status));
}
inline void log_cudnn(cudnnStatus_t status, const char* expr, const char* file, int line) {
  std::fprintf(stderr, "mman: cuDNN call `%s` at %s:%d failed in a destructor: %s\n", expr, file, line,
               cudnnGetErrorString(status));
}

}  // namespace mman::cuda::detail

// Every CUDA runtime, cuBLAS and cuDNN call of the backend goes through one of these.
#define MMAN_CUDA_CHECK(expr)                                                           \
  do {                                                                                  \
    const cudaError_t mman_err_ = (expr);                                               \
    if (mman_err_ != cudaSuccess) ::mman::cuda::detail::throw_cuda(mman_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define MMAN_CUBLAS_CHECK(expr)                                                                 \
  do {                                                                                          \
    const cublasStatus_t mman_status_ = (expr);                                                 \
    if (mman_status_ != CUBLAS_STATUS_SUCCESS)                                                  \
      ::mman::cuda::detail::throw_cublas(mman_status_, #expr, __FILE__, __LINE__);              \
  } while (0)

#define MMAN_CUDNN_CHECK(expr)                                                                  \
  do {                                                                                          \
    const cudnnStatus_t mman_status_ = (expr);                                                  \
    if (mman_status_ != CUDNN_STATUS_SUCCESS)                                                   \
      ::mman::cuda::detail::throw_cudnn(mman_status_, #expr, __FILE__, __LINE__);               \
  } while (0)

// Destructor variants: log a failure instead of throwing.
#define MMAN_CUDA_LOG(expr)                                                                       \
  do {                                                                                            \
    const cudaError_t mman_err_ = (expr);                                                         \
    if (mman_err_ != cudaSuccess) ::mman::cuda::detail::log_cuda(mman_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define MMAN_CUBLAS_LOG(expr)                                                                     \
  do {                                                                                            \
    const cublasStatus_t mman_status_ = (expr);                                                   \
    if (mman_status_ != CUBLAS_STATUS_SUCCESS)                                                    \
      ::mman::cuda::detail::log_cublas(mman_status_, #expr, __FILE__, __LINE__);                  \
  } while (0)

#define MMAN_CUDNN_LOG(expr)                                                                      \
  do {                                                                                            \
    const cudnnStatus_t mman_status_ = (expr);                                                    \
    if (mman_status_ != CUDNN_STATUS_SUCCESS)                                                     \
      ::mman::cuda::detail::log_cudnn(mman_status_, #expr, __FILE__, __LINE__);                   \
  } while (0)
