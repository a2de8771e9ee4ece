// NvtxRange: an RAII NVTX range for Nsight Systems timelines; a no-op in builds without CUDA.
#pragma once

namespace mman {

// The device emulation (tests/emulation) compiles the GPU code for the host and links it with a
// core library built without CUDA: it takes the no-op ranges, as that library does.
#if (defined(MMAN_WITH_CUDA) || defined(__CUDACC__)) && !defined(MMAN_DEVICE_EMULATION)

namespace detail {
// cuda/nvtx.cu: nvtxRangePushA / nvtxRangePop in NVTX's default domain. Without a tool
// attached (nsys, ncu) each is a load and a branch in the NVTX stub, so ranges can stay in
// release builds.
void nvtx_push(const char* name) noexcept;
void nvtx_pop() noexcept;
}  // namespace detail

// Marks the enclosing scope as a named range on the calling thread's NVTX stack, e.g.
//   MMAN_NVTX_RANGE("forward");
// around stage, model, forward, backward and optimiser step (STYLE practice 8). Ranges nest;
// `name` must stay valid for the call only (NVTX copies it). Host-side timing only: the
// range covers the time the CPU spends queueing GPU work, which Nsight Systems projects onto
// the GPU rows for the kernels launched inside it.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) noexcept { detail::nvtx_push(name); }
  ~NvtxRange() { detail::nvtx_pop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

#else

class NvtxRange {
 public:
  explicit NvtxRange(const char*) noexcept {}
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

#endif

}  // namespace mman

#define MMAN_NVTX_CONCAT_INNER(a, b) a##b
#define MMAN_NVTX_CONCAT(a, b) MMAN_NVTX_CONCAT_INNER(a, b)
// A range named `name` until the end of the enclosing scope.
#define MMAN_NVTX_RANGE(name) const ::mman::NvtxRange MMAN_NVTX_CONCAT(mman_nvtx_range_, __LINE__)(name)
