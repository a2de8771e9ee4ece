// cuBLAS loaded on first use: our definitions of the cuBLAS entry points we call, forwarding to libcublas by dlopen.
//
// Why: linking libcublas makes the dynamic loader map and relocate it, and with it libcublasLt,
// at every program start: about 210 MB of resident memory (measured: an empty program linked
// with -lcublas peaks at 215 MB, with -lcudart alone at 1.5 MB), paid by every `mman_exp`
// process of a CUDA build, CPU runs included. So the CUDA build does not link cuBLAS; the first
// cuBLAS call of the process (cublasCreate in a CudaContext, or the version query of `mman_exp
// info`) loads it. The definitions below have the real headers' declarations, so callers
// (cuda/*.cu) are unchanged. The device emulation (tests/emulation) defines the same functions
// itself and does not build this file.
#include <cublas_v2.h>
#include <dlfcn.h>

#include <mutex>
#include <string>

namespace {

struct Library {
  void* handle = nullptr;
  std::string error;  // why it could not be loaded (empty when loaded)
};

// The library's file name from the toolkit's major version; the CMake-known directory second, for
// binaries run without the toolkit's directory on their runpath.
const Library& library() {
  static Library lib;
  static std::once_flag once;
  std::call_once(once, [] {
    const std::string name = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
    for (const std::string& candidate : {name, std::string(MMAN_CUBLAS_DIR) + "/" + name}) {
      lib.handle = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (lib.handle != nullptr) break;
      const char* e = dlerror();
      lib.error += (lib.error.empty() ? "" : "; ") + std::string(e != nullptr ? e : candidate + ": cannot be loaded");
    }
    if (lib.handle != nullptr) lib.error.clear();
  });
  return lib;
}

// The entry point `name` of libcublas as a pointer of F's type (nullptr when unavailable).
template <class F>
F entry(const char* name) {
  const Library& lib = library();
  return lib.handle != nullptr ? reinterpret_cast<F>(dlsym(lib.handle, name)) : nullptr;
}

// Forwards to the library's function of the same name, or returns CUBLAS_STATUS_NOT_INITIALIZED
// when it cannot be loaded (cublasGetStatusString then gives the loader's reason).
#define MMAN_CUBLAS_FORWARD(name, params, args)                                  \
  cublasStatus_t CUBLASWINAPI name params {                                     \
    static const auto fn = entry<cublasStatus_t(CUBLASWINAPI*) params>(#name);  \
    return fn != nullptr ? fn args : CUBLAS_STATUS_NOT_INITIALIZED;             \
  }

}  // namespace

extern "C" {

MMAN_CUBLAS_FORWARD(cublasCreate_v2, (cublasHandle_t* handle), (handle))
MMAN_CUBLAS_FORWARD(cublasDestroy_v2, (cublasHandle_t handle), (handle))
MMAN_CUBLAS_FORWARD(cublasSetStream_v2, (cublasHandle_t handle, cudaStream_t stream), (handle, stream))
MMAN_CUBLAS_FORWARD(cublasSetMathMode, (cublasHandle_t handle, cublasMath_t mode), (handle, mode))
MMAN_CUBLAS_FORWARD(cublasSetPointerMode_v2, (cublasHandle_t handle, cublasPointerMode_t mode), (handle, mode))
MMAN_CUBLAS_FORWARD(cublasGetProperty, (libraryPropertyType type, int* value), (type, value))
MMAN_CUBLAS_FORWARD(cublasSgemm_v2,
                    (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                     const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta, float* C,
                     int ldc),
                    (handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc))
MMAN_CUBLAS_FORWARD(cublasSgeam,
                    (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                     const float* alpha, const float* A, int lda, const float* beta, const float* B, int ldb, float* C,
                     int ldc),
                    (handle, transa, transb, m, n, alpha, A, lda, beta, B, ldb, C, ldc))
MMAN_CUBLAS_FORWARD(cublasSaxpy_v2,
                    (cublasHandle_t handle, int n, const float* alpha, const float* x, int incx, float* y, int incy),
                    (handle, n, alpha, x, incx, y, incy))

const char* CUBLASWINAPI cublasGetStatusName(cublasStatus_t status) {
  static const auto fn = entry<const char*(CUBLASWINAPI*)(cublasStatus_t)>("cublasGetStatusName");
  return fn != nullptr ? fn(status) : "CUBLAS_STATUS_NOT_INITIALIZED";
}

const char* CUBLASWINAPI cublasGetStatusString(cublasStatus_t status) {
  static const auto fn = entry<const char*(CUBLASWINAPI*)(cublasStatus_t)>("cublasGetStatusString");
  if (fn != nullptr) return fn(status);
  static const std::string why = "cuBLAS could not be loaded: " + library().error;
  return why.c_str();
}

}  // extern "C"
