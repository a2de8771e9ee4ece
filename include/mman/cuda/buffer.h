// DeviceBuffer / DeviceArray<T>: owning device allocations that grow on demand (device-neutral declaration).
#pragma once
#include <cstddef>

namespace mman::cuda {

// One cudaMalloc'd block. reserve() grows it (never shrinks), so a training loop that
// reserves every batch allocates only while batches keep getting bigger: this is the
// backend's workspace allocator for activations, as Tensor's resize() is on the CPU.
// Growth discards the contents and frees the old block with cudaFree, which waits for the
// device, so work still queued on the old block is safe. Failures throw mman::Error
// (an out-of-memory names the requested size); the destructor only logs.
// Implemented in cuda/arena.cu (CUDA builds only).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { reserve(bytes); }
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // At least `bytes` bytes from now on; contents are undefined after a growth.
  void reserve(size_t bytes);
  void release();
  void* data() const { return data_; }
  size_t capacity() const { return capacity_; }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

// A typed view of a DeviceBuffer with a logical size: resize(n) keeps the allocation when n
// shrinks, like Tensor::resize on the CPU.
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) { resize(n); }
  void resize(size_t n) {
    buf_.reserve(n * sizeof(T));
    size_ = n;
  }
  T* data() const { return static_cast<T*>(buf_.data()); }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }

 private:
  DeviceBuffer buf_;
  size_t size_ = 0;
};

}  // namespace mman::cuda
