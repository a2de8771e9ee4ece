// CudaContext: device selection, the stream, cuBLAS and cuDNN handles, and stream-ordered copies.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <algorithm>
#include <vector>

#include "cuda/check.cuh"
#include "mman/cuda/context.h"
#include "mman/error.h"

namespace mman::cuda {

CudaContext::CudaContext(int device) : device_(device) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    fail("no usable CUDA device: {}", cudaGetErrorString(err));
  }
  MMAN_CHECK(count > 0, "no usable CUDA device: the CUDA runtime reports no device");
  MMAN_CHECK(device >= 0 && device < count, "no usable CUDA device: device {} requested but the runtime reports {}",
             device, count);
  MMAN_CUDA_CHECK(cudaSetDevice(device));
  try {
    cudaStream_t stream = nullptr;
    MMAN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    stream_ = stream;
    cublasHandle_t blas = nullptr;
    MMAN_CUBLAS_CHECK(cublasCreate(&blas));
    cublas_ = blas;
    MMAN_CUBLAS_CHECK(cublasSetStream(blas, stream));
    // Float GEMMs in full float32 (no TF32 tensor cores), scalars passed from the host.
    MMAN_CUBLAS_CHECK(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH));
    MMAN_CUBLAS_CHECK(cublasSetPointerMode(blas, CUBLAS_POINTER_MODE_HOST));
    cudnnHandle_t dnn = nullptr;
    MMAN_CUDNN_CHECK(cudnnCreate(&dnn));
    cudnn_ = dnn;
    MMAN_CUDNN_CHECK(cudnnSetStream(dnn, stream));
  } catch (...) {
    // The destructor does not run for a half-built object: release what exists.
    if (cudnn_ != nullptr) MMAN_CUDNN_LOG(cudnnDestroy(cudnn_));
    if (cublas_ != nullptr) MMAN_CUBLAS_LOG(cublasDestroy(cublas_));
    if (stream_ != nullptr) MMAN_CUDA_LOG(cudaStreamDestroy(stream_));
    throw;
  }
}

CudaContext::~CudaContext() {
  if (stream_ != nullptr) MMAN_CUDA_LOG(cudaStreamSynchronize(stream_));
  if (cudnn_ != nullptr) MMAN_CUDNN_LOG(cudnnDestroy(cudnn_));
  if (cublas_ != nullptr) MMAN_CUBLAS_LOG(cublasDestroy(cublas_));
  if (stream_ != nullptr) MMAN_CUDA_LOG(cudaStreamDestroy(stream_));
}

void CudaContext::synchronize() const { MMAN_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

void CudaContext::upload(void* d_dst, const void* src, size_t bytes) const {
  if (bytes == 0) return;
  MMAN_CUDA_CHECK(cudaMemcpyAsync(d_dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  // The contract lets the caller reuse or free `src` at once (ones() and set_trainable free
  // theirs on return). The runtime does not promise that for an asynchronous copy from
  // pageable memory: it "might be synchronous with respect to host", and CUDA 11 documented
  // the staging as done "asynchronously with a worker thread" (CUDA Runtime API, "API
  // synchronization behavior"). So wait until the stream has done the copy. This costs a
  // synchronisation per upload; a pinned staging ring with events would avoid it.
  MMAN_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaContext::download(void* dst, const void* d_src, size_t bytes) const {
  if (bytes == 0) return;
  MMAN_CUDA_CHECK(cudaMemcpyAsync(dst, d_src, bytes, cudaMemcpyDeviceToHost, stream_));
  MMAN_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaContext::copy(void* d_dst, const void* d_src, size_t bytes) const {
  if (bytes == 0) return;
  MMAN_CUDA_CHECK(cudaMemcpyAsync(d_dst, d_src, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaContext::copy_rows(void* d_dst, size_t dst_pitch, const void* d_src, size_t src_pitch, size_t row_bytes,
                            size_t rows) const {
  if (rows == 0 || row_bytes == 0) return;
  MMAN_CHECK(dst_pitch >= row_bytes && src_pitch >= row_bytes,
             "copy_rows: rows of {} bytes do not fit pitches {} (destination) and {} (source)", row_bytes, dst_pitch,
             src_pitch);
  MMAN_CUDA_CHECK(
      cudaMemcpy2DAsync(d_dst, dst_pitch, d_src, src_pitch, row_bytes, rows, cudaMemcpyDeviceToDevice, stream_));
}

void CudaContext::zero(void* d_dst, size_t bytes) const {
  if (bytes == 0) return;
  MMAN_CUDA_CHECK(cudaMemsetAsync(d_dst, 0, bytes, stream_));
}

const float* CudaContext::ones(size_t n) const {
  if (n > ones_count_) {
    const size_t count = std::max<size_t>(n, 4096);
    ones_.reserve(count * sizeof(float));
    const std::vector<float> host(count, 1.0f);
    upload(ones_.data(), host.data(), count * sizeof(float));
    ones_count_ = count;
  }
  return static_cast<const float*>(ones_.data());
}

}  // namespace mman::cuda
