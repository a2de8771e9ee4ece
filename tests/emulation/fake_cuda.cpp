// The device emulation's CUDA runtime, cuBLAS and cuDNN handle functions: host memory, synchronous, for tests of the GPU code path.
//
// docs/cuda_backend.md, "Device emulation". In builds without the CUDA backend the GPU models
// and training loop (src/gpu, cuda/*.cu compiled as C++) are linked against these definitions
// instead of libcudart, libcublas and libcudnn: "device memory" is host memory, every call runs
// synchronously, kernels run through the SIMT layer. Only the calls our code makes exist, each
// with the library's documented semantics (checked against the real headers' declarations).
// New device memory is filled with 0xFF bytes (NaN floats), so a read of memory the code never
// wrote shows up as NaN in the results, as the SIMT layer poisons shared memory.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace {

cudaError_t last_error = cudaSuccess;

cudaError_t fail_with(cudaError_t e) {
  last_error = e;
  return e;
}

// Distinct non-null handles; nothing is behind them.
CUstream_st* const kStream = reinterpret_cast<CUstream_st*>(uintptr_t{0x57}) ;
cublasContext* const kCublas = reinterpret_cast<cublasContext*>(uintptr_t{0xb1a5});
cudnnContext* const kCudnn = reinterpret_cast<cudnnContext*>(uintptr_t{0xd11});

bool transposed(cublasOperation_t op) { return op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

// Element (i, j) of op(X) for a column-major X with leading dimension ld.
float at(const float* x, int ld, bool trans, int i, int j) {
  return trans ? x[static_cast<int64_t>(i) * ld + j] : x[static_cast<int64_t>(j) * ld + i];
}

}  // namespace

extern "C" {

// ---- CUDA runtime ----

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
const char* cudaGetErrorName(cudaError_t error) { return error == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated"; }
const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : "error in the device emulation (tests/emulation)";
}
cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : fail_with(cudaErrorInvalidDevice); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  *stream = kStream;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

// The emulated device's memory: requests beyond it fail as cudaMalloc does (and never reach
// malloc, which a sanitizer would abort on for absurd sizes).
constexpr size_t kDeviceMemory = size_t{16} << 30;

cudaError_t cudaMalloc(void** ptr, size_t size) {
  *ptr = nullptr;
  if (size > kDeviceMemory) return fail_with(cudaErrorMemoryAllocation);
  *ptr = std::malloc(size == 0 ? 1 : size);
  if (*ptr == nullptr) return fail_with(cudaErrorMemoryAllocation);
  std::memset(*ptr, 0xFF, size);
  return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind, cudaStream_t) {
  if (count > 0) std::memmove(dst, src, count);
  return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              enum cudaMemcpyKind, cudaStream_t) {
  if (width > dpitch || width > spitch) return fail_with(cudaErrorInvalidPitchValue);
  for (size_t r = 0; r < height; ++r)
    std::memmove(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  if (count > 0) std::memset(ptr, value, count);
  return cudaSuccess;
}
cudaError_t cudaMemset2DAsync(void* ptr, size_t pitch, int value, size_t width, size_t height, cudaStream_t) {
  if (width > pitch) return fail_with(cudaErrorInvalidPitchValue);
  for (size_t r = 0; r < height; ++r) std::memset(static_cast<char*>(ptr) + r * pitch, value, width);
  return cudaSuccess;
}

// ---- cuBLAS (column-major, host pointer mode) ----

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  *handle = kCublas;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream_v2(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t, cublasPointerMode_t mode) {
  return mode == CUBLAS_POINTER_MODE_HOST ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasGetProperty(libraryPropertyType type, int* value) {
  *value = type == MAJOR_VERSION ? CUBLAS_VER_MAJOR : type == MINOR_VERSION ? CUBLAS_VER_MINOR : CUBLAS_VER_PATCH;
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusName(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_INVALID_VALUE";
}
const char* cublasGetStatusString(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "success" : "an invalid value was used as an argument (device emulation)";
}

// C = alpha op(A) op(B) + beta C, C [m x n]; with beta == 0 C is not read (BLAS semantics).
// Each element is a double-precision dot product: more accurate than cuBLAS, which is what
// the comparisons against the CPU backend's tolerances need.
cublasStatus_t cublasSgemm_v2(cublasHandle_t, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                              const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
                              float* C, int ldc) {
  const bool ta = transposed(transa), tb = transposed(transb);
  if (m < 0 || n < 0 || k < 0 || ldc < (m > 1 ? m : 1) || lda < ((ta ? k : m) > 1 ? (ta ? k : m) : 1) ||
      ldb < ((tb ? n : k) > 1 ? (tb ? n : k) : 1))
    return CUBLAS_STATUS_INVALID_VALUE;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double s = 0.0;
      for (int p = 0; p < k; ++p) s += static_cast<double>(at(A, lda, ta, i, p)) * at(B, ldb, tb, p, j);
      float& c = C[static_cast<int64_t>(j) * ldc + i];
      c = static_cast<float>(*alpha * s + (*beta == 0.0f ? 0.0 : static_cast<double>(*beta) * c));
    }
  return CUBLAS_STATUS_SUCCESS;
}

// C = alpha op(A) + beta op(B), C [m x n]; in place when C is A or B (untransposed).
cublasStatus_t cublasSgeam(cublasHandle_t, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                           const float* alpha, const float* A, int lda, const float* beta, const float* B, int ldb,
                           float* C, int ldc) {
  if (m < 0 || n < 0 || ldc < (m > 1 ? m : 1)) return CUBLAS_STATUS_INVALID_VALUE;
  const bool ta = transposed(transa), tb = transposed(transb);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      const float a = *alpha == 0.0f ? 0.0f : *alpha * at(A, lda, ta, i, j);
      const float b = *beta == 0.0f ? 0.0f : *beta * at(B, ldb, tb, i, j);
      C[static_cast<int64_t>(j) * ldc + i] = a + b;
    }
  return CUBLAS_STATUS_SUCCESS;
}

// ---- cuDNN: the handle only (the LSTM is emulated a level up: lstm_emulated.cpp) ----

cudnnStatus_t cudnnCreate(cudnnHandle_t* handle) {
  *handle = kCudnn;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t) { return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnSetStream(cudnnHandle_t, cudaStream_t) { return CUDNN_STATUS_SUCCESS; }
const char* cudnnGetErrorString(cudnnStatus_t s) {
  return s == CUDNN_STATUS_SUCCESS ? "CUDNN_STATUS_SUCCESS" : "CUDNN_STATUS_EMULATED_ERROR";
}
void cudnnGetLastErrorString(char* message, size_t max_size) {
  if (max_size > 0) message[0] = '\0';
}

}  // extern "C"
