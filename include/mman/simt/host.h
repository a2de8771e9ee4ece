// Host emulation of the CUDA execution model, so kernel source runs in CPU tests (docs/simt.md).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

struct CUstream_st;  // the CUDA runtime's stream type (cudaStream_t is CUstream_st*)

namespace mman::simt {

// The CUDA built-in types, variables and device functions under their CUDA names. Kernel
// source (namespace mman::kernels) sees them through a using-directive in simt.h, so host
// code that also includes the CUDA runtime headers gets no clash with their declarations.
namespace device {

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
constexpr int warpSize = 32;

// The scheduler sets these each time it switches to a thread's fiber. thread_local: launches
// on different OS threads are independent; the fibers of one launch share one OS thread.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

// Waits until every thread of the block has reached this same call (docs/simt.md). The
// defaulted arguments record the call site, for divergence and race reports.
void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE());

}  // namespace device

// ---- launching ----

// cudaStream_t's own type (CUstream_st*, only declared here), so the launchers of cuda/*.cu
// also compile for the host (the device emulation, docs/cuda_backend.md). The emulation runs
// synchronously and ignores it.
using Stream = ::CUstream_st*;

struct LaunchConfig {
  device::dim3 grid;
  device::dim3 block;
  size_t shared_bytes = 0;  // dynamic shared memory per block (extern __shared__)
  Stream stream = nullptr;
};

// Where a launch is written, for error messages: the launch arguments as text, file, line.
struct LaunchSite {
  const char* expression;
  const char* file;
  int line;
};

// The order in which runnable threads (and blocks) are run. Shuffled draws a new permutation
// at every barrier release, every warp-shuffle release and for the blocks of each launch.
enum class ThreadOrder { Forward, Reverse, Shuffled };

struct EmulationOptions {
  ThreadOrder order = ThreadOrder::Shuffled;
  uint64_t seed = 0x5EED;
  // Shadow state for every shared-memory byte: reports races between barriers, reads of
  // never-written bytes. Poisoning and bounds checks are always on.
  bool check_shared = true;
  size_t stack_bytes = 0;  // per thread; 0: 64 KiB (256 KiB under AddressSanitizer)
};

// The options the next launch on this OS thread uses.
const EmulationOptions& emulation_options();

// Sets the emulation options for launches on this OS thread while it lives.
class ScopedEmulation {
 public:
  explicit ScopedEmulation(const EmulationOptions& options);
  ~ScopedEmulation();
  ScopedEmulation(const ScopedEmulation&) = delete;
  ScopedEmulation& operator=(const ScopedEmulation&) = delete;

 private:
  EmulationOptions saved_;
};

// The schedules a kernel test should pass under: forward, reverse and three shuffled
// orders, all with shared-memory checking on.
std::vector<EmulationOptions> test_schedules();
// e.g. "shuffled(seed 2)", for SCOPED_TRACE.
std::string describe(const EmulationOptions& options);

namespace detail {

struct KernelBody {
  void (*invoke)(void* closure);
  void* closure;
};
// Runs every block of the grid, each as one fiber per thread; throws mman::Error with the
// kernel, block and thread on the first fault (race, divergent barrier, bad index, ...).
void run_launch(const LaunchSite& site, const LaunchConfig& config, KernelBody body);

}  // namespace detail

// Runs `kernel` over the grid on the host. The same call compiles to kernel<<<...>>> under
// nvcc (simt.h); use it through MMAN_LAUNCH.
template <class... P, class... A>
void launch(const LaunchSite& site, const LaunchConfig& config, void (*kernel)(P...), A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  static_assert((!std::is_reference_v<P> && ...), "kernel parameters are passed by value");
  // CUDA copies the arguments into parameter space once; every thread starts from that copy.
  const std::tuple<std::remove_cv_t<P>...> params(std::forward<A>(args)...);
  auto call = [&] { std::apply(kernel, params); };
  detail::run_launch(site, config, {[](void* c) { (*static_cast<decltype(call)*>(c))(); }, &call});
}

// ---- shared memory ----

namespace detail {

// One __shared__ declaration's bytes inside the current block's shared region.
struct SharedAllocation {
  const char* name;
  unsigned char* data;
  size_t bytes;
};
enum class Access { Read, Write, Atomic };

const SharedAllocation& shared_static(const void* tag, const char* name, size_t bytes, size_t align);
const SharedAllocation& shared_dynamic(const char* name);
// Feeds the race detector; throws on a race or a read of a never-written byte.
void shared_access(const SharedAllocation& a, size_t index, size_t element_bytes, Access kind);
[[noreturn]] void shared_out_of_bounds(const SharedAllocation& a, long long index, size_t element_bytes);

template <class T>
struct Identity {
  using type = T;
};

}  // namespace detail

template <class T>
class SharedPtr;

// One element of shared memory. Every read and write goes through here, so the race
// detector sees it; kernel source reads it as a T and assigns to it as usual.
template <class T>
class SharedRef {
  static_assert(std::is_trivially_copyable_v<T>, "shared memory holds trivially copyable types");

 public:
  SharedRef(const detail::SharedAllocation* a, size_t index) : a_(a), index_(index) {}
  SharedRef(const SharedRef&) = default;
  operator T() const { return load(); }
  SharedRef& operator=(const SharedRef& other) { return *this = other.load(); }
  SharedRef& operator=(T v) {
    detail::shared_access(*a_, index_, sizeof(T), detail::Access::Write);
    std::memcpy(address(), &v, sizeof(T));
    return *this;
  }
  SharedRef& operator+=(T v) { return *this = static_cast<T>(load() + v); }
  SharedRef& operator-=(T v) { return *this = static_cast<T>(load() - v); }
  SharedRef& operator*=(T v) { return *this = static_cast<T>(load() * v); }
  SharedRef& operator/=(T v) { return *this = static_cast<T>(load() / v); }
  SharedPtr<T> operator&() const { return SharedPtr<T>(a_, static_cast<long long>(index_)); }

  // An atomic read-modify-write: other threads' atomics in the same interval are no race.
  template <class F>
  T atomic_update(F f) {
    detail::shared_access(*a_, index_, sizeof(T), detail::Access::Atomic);
    T old;
    std::memcpy(&old, address(), sizeof(T));
    const T v = f(old);
    std::memcpy(address(), &v, sizeof(T));
    return old;
  }

 private:
  T load() const {
    detail::shared_access(*a_, index_, sizeof(T), detail::Access::Read);
    T v;
    std::memcpy(&v, address(), sizeof(T));
    return v;
  }
  unsigned char* address() const { return a_->data + index_ * sizeof(T); }

  const detail::SharedAllocation* a_;
  size_t index_;
};

// A pointer into shared memory with the bounds of its declaration: what a __shared__
// array or an extern __shared__ pointer is under the emulation (MMAN_SHARED_PTR(T)).
template <class T>
class SharedPtr {
 public:
  SharedPtr() = default;
  SharedPtr(const detail::SharedAllocation* a, long long offset) : a_(a), offset_(offset) {}
  SharedRef<T> operator[](long long i) const { return at(offset_ + i); }
  SharedRef<T> operator*() const { return at(offset_); }
  SharedPtr operator+(long long n) const { return SharedPtr(a_, offset_ + n); }
  SharedPtr operator-(long long n) const { return SharedPtr(a_, offset_ - n); }
  SharedPtr& operator+=(long long n) { offset_ += n; return *this; }
  SharedPtr& operator-=(long long n) { offset_ -= n; return *this; }

 private:
  SharedRef<T> at(long long i) const {
    if (i < 0 || static_cast<size_t>(i) >= a_->bytes / sizeof(T)) detail::shared_out_of_bounds(*a_, i, sizeof(T));
    return SharedRef<T>(a_, static_cast<size_t>(i));
  }

  const detail::SharedAllocation* a_ = nullptr;
  long long offset_ = 0;
};

// ---- warp shuffles ----

namespace detail {

enum class ShuffleMode { Idx, Up, Down, Xor };
// Exchanges one 64-bit payload among the 32 lanes of the calling thread's warp; returns the
// payload of the lane PTX's shfl.sync selects for this lane (or its own).
uint64_t shuffle(ShuffleMode mode, unsigned mask, uint64_t bits, int b, int width, const char* file, int line);

template <class T>
T shuffle_as(ShuffleMode mode, unsigned mask, T v, int b, int width, const char* file, int line) {
  static_assert(std::is_arithmetic_v<T> && (sizeof(T) == 4 || sizeof(T) == 8),
                "warp shuffles move 32- or 64-bit arithmetic values");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = shuffle(mode, mask, bits, b, width, file, line);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// A shared-memory element shuffles as its value.
template <class T>
struct ValueOf {
  using type = T;
};
template <class T>
struct ValueOf<SharedRef<T>> {
  using type = T;
};
template <class T>
using value_of_t = typename ValueOf<T>::type;

}  // namespace detail

namespace device {

template <class T>
detail::value_of_t<T> __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
                                  const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return detail::shuffle_as<detail::value_of_t<T>>(detail::ShuffleMode::Idx, mask, var, src_lane, width, file, line);
}
template <class T>
detail::value_of_t<T> __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                                     const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return detail::shuffle_as<detail::value_of_t<T>>(detail::ShuffleMode::Up, mask, var, static_cast<int>(delta), width,
                                                   file, line);
}
template <class T>
detail::value_of_t<T> __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                                       const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return detail::shuffle_as<detail::value_of_t<T>>(detail::ShuffleMode::Down, mask, var, static_cast<int>(delta),
                                                   width, file, line);
}
template <class T>
detail::value_of_t<T> __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                                      const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return detail::shuffle_as<detail::value_of_t<T>>(detail::ShuffleMode::Xor, mask, var, lane_mask, width, file, line);
}

// ---- atomics: a plain read-modify-write is atomic here, because fibers only switch at
// barriers and shuffles, never inside an atomic ----

inline float atomicAdd(float* p, float v) { const float old = *p; *p = old + v; return old; }
inline double atomicAdd(double* p, double v) { const double old = *p; *p = old + v; return old; }
inline int atomicAdd(int* p, int v) { const int old = *p; *p = old + v; return old; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { const unsigned old = *p; *p = old + v; return old; }
inline int atomicMax(int* p, int v) { const int old = *p; *p = old > v ? old : v; return old; }
inline int atomicMin(int* p, int v) { const int old = *p; *p = old < v ? old : v; return old; }
template <class T>
T atomicAdd(SharedPtr<T> p, typename detail::Identity<T>::type v) {
  return (*p).atomic_update([v](T old) { return static_cast<T>(old + v); });
}
template <class T>
T atomicMax(SharedPtr<T> p, typename detail::Identity<T>::type v) {
  return (*p).atomic_update([v](T old) { return old > v ? old : v; });
}

// ---- fast-math intrinsics: the exact functions here; the device versions are less accurate
// (CUDA C Programming Guide, "Intrinsic Functions"), so tolerances must allow for that ----

inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

}  // namespace device
}  // namespace mman::simt
