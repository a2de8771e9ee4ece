// Device memory: DeviceBuffer (grow-only cudaMalloc blocks) and DeviceParams (the parameter arenas on the GPU).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <utility>

#include "cuda/adam.cuh"
#include "cuda/check.cuh"
#include "cuda/grad_clip.cuh"
#include "mman/cuda/arena.h"
#include "mman/cuda/buffer.h"
#include "mman/error.h"

namespace mman::cuda {

// ---- DeviceBuffer ----

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) MMAN_CUDA_LOG(cudaFree(data_));
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), capacity_(std::exchange(other.capacity_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) MMAN_CUDA_LOG(cudaFree(data_));
    data_ = std::exchange(other.data_, nullptr);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

void DeviceBuffer::reserve(size_t bytes) {
  if (bytes <= capacity_) return;
  release();
  // A quarter of headroom: batches grow in small steps during the first epoch, and each
  // growth costs a device-wide synchronisation in cudaFree.
  size_t want = bytes + bytes / 4;
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, want);
  if (err != cudaSuccess) {  // without the headroom, then give up
    cudaGetLastError();
    want = bytes;
    err = cudaMalloc(&p, want);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    fail("CUDA device memory: cannot allocate {} bytes ({:.2f} GiB): {}", bytes,
         static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0), cudaGetErrorString(err));
  }
  data_ = p;
  capacity_ = want;
}

void DeviceBuffer::release() {
  if (data_ != nullptr) {
    void* p = std::exchange(data_, nullptr);
    capacity_ = 0;
    MMAN_CUDA_CHECK(cudaFree(p));
  }
}

// ---- DeviceParams ----

DeviceParams::DeviceParams(CudaContext& ctx, std::vector<ParamInfo> infos, size_t size,
                           const std::vector<std::pair<size_t, size_t>>& spans)
    : ctx_(&ctx), infos_(std::move(infos)), size_(size) {
  values_.resize(size_);
  grads_.resize(size_);
  ctx_->zero(values_.data(), values_.bytes());  // padding stays zero, as on the host
  ctx_->zero(grads_.data(), grads_.bytes());
  std::vector<bool> flags;
  for (const ParamInfo& p : infos_) flags.push_back(p.trainable);
  set_trainable(flags, spans);
}

void DeviceParams::check_layout(const ParamStore& params, const char* what) const {
  MMAN_CHECK(params.count() == count() && params.values().size() == size_,
             "device parameters ({}): the store has {} tensors in {} floats, the device arena {} in {}", what,
             params.count(), params.values().size(), count(), size_);
  for (int id = 0; id < count(); ++id) {
    const ParamInfo& a = params.info(id);
    const ParamInfo& b = info(id);
    MMAN_CHECK(a.name == b.name && a.shape == b.shape && a.offset == b.offset && a.size == b.size,
               "device parameters ({}): tensor {} is '{}' in the store but '{}' on the device (or its shape differs)",
               what, id, a.name, b.name);
  }
}

void DeviceParams::upload_values(const ParamStore& params) {
  check_layout(params, "upload_values");
  ctx_->upload(values_.data(), params.values().data(), size_ * sizeof(float));
}

void DeviceParams::download_values(ParamStore& params) const {
  check_layout(params, "download_values");
  ctx_->download(params.values().data(), values_.data(), size_ * sizeof(float));
}

void DeviceParams::upload_grads(const ParamStore& params) {
  check_layout(params, "upload_grads");
  ctx_->upload(grads_.data(), params.grads().data(), size_ * sizeof(float));
}

void DeviceParams::download_grads(ParamStore& params) const {
  check_layout(params, "download_grads");
  ctx_->download(params.grads().data(), grads_.data(), size_ * sizeof(float));
}

void DeviceParams::zero_grads() { ctx_->zero(grads_.data(), grads_.bytes()); }

void DeviceParams::set_trainable(const std::vector<bool>& flags, const std::vector<std::pair<size_t, size_t>>& spans) {
  for (size_t i = 0; i < infos_.size() && i < flags.size(); ++i) infos_[i].trainable = flags[i];
  std::vector<long long> bounds;
  longest_span_ = 0;
  for (const auto& [begin, end] : spans) {
    MMAN_CHECK(begin <= end && end <= size_, "device parameters: trainable span [{}, {}) outside the arena of {}",
               begin, end, size_);
    bounds.push_back(static_cast<long long>(begin));
    bounds.push_back(static_cast<long long>(end));
    longest_span_ = std::max(longest_span_, static_cast<long long>(end - begin));
  }
  span_count_ = static_cast<int>(spans.size());
  span_bounds_.resize(std::max<size_t>(bounds.size(), 2));
  ctx_->upload(span_bounds_.data(), bounds.data(), bounds.size() * sizeof(long long));
  kernels::ArenaSpans s{span_bounds_.data(), span_count_, longest_span_};
  norm_partial_.resize(static_cast<size_t>(std::max<long long>(kernels::grad_norm_partial_count(s), 1)));
}

namespace {
kernels::ArenaSpans arena_spans(const DeviceParams& p) {
  return kernels::ArenaSpans{p.span_bounds(), p.span_count(), p.longest_span()};
}
}  // namespace

void DeviceParams::adam_step(const AdamConfig& config) {
  if (adam_m_.size() != size_) {  // first step: zero moments, as mman::Adam starts
    adam_m_.resize(size_);
    adam_v_.resize(size_);
    ctx_->zero(adam_m_.data(), adam_m_.bytes());
    ctx_->zero(adam_v_.data(), adam_v_.bytes());
  }
  adam_step_device(values_.data(), grads_.data(), adam_m_.data(), adam_v_.data(), arena_spans(*this), config,
                   adam_step_ + 1, ctx_->stream());
  ++adam_step_;  // only once the launch was accepted
}

void DeviceParams::upload_adam(const AdamState& state) {
  MMAN_CHECK(state.m.size() == size_ && state.v.size() == size_,
             "device parameters: saved Adam moments have {} / {} values but the arena has {}", state.m.size(),
             state.v.size(), size_);
  MMAN_CHECK(state.step >= 0, "device parameters: negative Adam step count {}", state.step);
  adam_m_.resize(size_);
  adam_v_.resize(size_);
  ctx_->upload(adam_m_.data(), state.m.data(), size_ * sizeof(float));
  ctx_->upload(adam_v_.data(), state.v.data(), size_ * sizeof(float));
  adam_step_ = state.step;
}

AdamState DeviceParams::download_adam() const {
  AdamState state;
  state.step = adam_step_;
  state.m.assign(size_, 0.0f);
  state.v.assign(size_, 0.0f);
  if (adam_m_.size() == size_) {  // no step yet: zero moments
    ctx_->download(state.m.data(), adam_m_.data(), size_ * sizeof(float));
    ctx_->download(state.v.data(), adam_v_.data(), size_ * sizeof(float));
  }
  return state;
}

double DeviceParams::clip_grad_norm(double max_norm) {
  norm_result_.reserve(sizeof(kernels::GradNormResult));
  auto* d_result = static_cast<kernels::GradNormResult*>(norm_result_.data());
  clip_grad_norm_device(grads_.data(), arena_spans(*this), max_norm, norm_partial_.data(), d_result, ctx_->stream());
  kernels::GradNormResult result;
  ctx_->download(&result, d_result, sizeof(result));
  return result.norm;
}

double DeviceParams::grad_norm() {
  norm_result_.reserve(sizeof(kernels::GradNormResult));
  auto* d_result = static_cast<kernels::GradNormResult*>(norm_result_.data());
  grad_norm_device(grads_.data(), arena_spans(*this), 0.0, norm_partial_.data(), d_result, ctx_->stream());
  kernels::GradNormResult result;
  ctx_->download(&result, d_result, sizeof(result));
  return result.norm;
}

void DeviceParams::clip_grad_value(float clip_value) {
  clip_grad_value_device(grads_.data(), arena_spans(*this), clip_value, ctx_->stream());
}

}  // namespace mman::cuda
