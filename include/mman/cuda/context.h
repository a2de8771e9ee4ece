// CudaContext: one device, one stream and the cuBLAS and cuDNN handles bound to it (device-neutral declaration).
#pragma once
#include <cstddef>

#include "mman/cuda/buffer.h"

// The library handle types, forward-declared so that host code can hold a context without
// including any CUDA header (cudaStream_t is CUstream_st*, cublasHandle_t cublasContext*,
// cudnnHandle_t cudnnContext*).
struct CUstream_st;
struct cublasContext;
struct cudnnContext;

namespace mman::cuda {

// Everything the backend runs goes onto one non-blocking stream per context (one per
// trainer): kernels, cuBLAS and cuDNN calls and asynchronous copies are then ordered without
// any event, and the host waits only where it needs a value (synchronize(), download()).
//
// cuBLAS runs in CUBLAS_DEFAULT_MATH (no TF32 for float GEMMs) and cuDNN's RNNs in
// CUDNN_FMA_MATH (no tensor-core TF32 either), so float32 results stay within float32
// tolerance of the CPU backend.
//
// Implemented in cuda/context.cu; exists only in builds with the CUDA backend
// (MMAN_WITH_CUDA). Not copyable or movable: kernels and handles keep its stream.
class CudaContext {
 public:
  // Selects `device` and creates the stream and handles. Throws mman::Error
  // "no usable CUDA device: <the runtime's reason>" when the device cannot be used.
  explicit CudaContext(int device = 0);
  ~CudaContext();  // waits for the stream, then destroys; failures are logged, not thrown
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device() const { return device_; }
  CUstream_st* stream() const { return stream_; }
  cublasContext* cublas() const { return cublas_; }
  cudnnContext* cudnn() const { return cudnn_; }

  // Blocks until all work queued on the stream has finished; throws on a failed kernel.
  void synchronize() const;
  // Host -> device copy. `src` may be reused or freed as soon as this returns: it waits for
  // the stream, because the runtime does not promise that a cudaMemcpyAsync from pageable
  // memory has read its source when it returns (CUDA "API synchronization behavior").
  void upload(void* d_dst, const void* src, size_t bytes) const;
  // Device -> host copy: returns once the data is on the host (synchronises the stream).
  void download(void* dst, const void* d_src, size_t bytes) const;
  // Device -> device copy queued on the stream.
  void copy(void* d_dst, const void* d_src, size_t bytes) const;
  // Device -> device copy of `rows` rows of `row_bytes` bytes each, with row pitches (in
  // bytes) `dst_pitch` and `src_pitch`: a column block of one matrix into another (early
  // fusion's concatenation, the late-fusion probabilities). Queued on the stream.
  void copy_rows(void* d_dst, size_t dst_pitch, const void* d_src, size_t src_pitch, size_t row_bytes,
                 size_t rows) const;
  // Sets `bytes` bytes to zero, queued on the stream.
  void zero(void* d_dst, size_t bytes) const;

  // At least n device floats equal to 1, kept and grown by the context: the vector with which
  // cuBLAS broadcasts a bias (ones * b^T) and sums columns (dy^T * ones) without a kernel.
  const float* ones(size_t n) const;

 private:
  int device_ = 0;
  CUstream_st* stream_ = nullptr;
  cublasContext* cublas_ = nullptr;
  cudnnContext* cudnn_ = nullptr;
  mutable DeviceBuffer ones_;
  mutable size_t ones_count_ = 0;
};

}  // namespace mman::cuda
