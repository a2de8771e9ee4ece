// DeviceParams: a ParamStore's arenas on the GPU (values, gradients, Adam moments; one layout), device-neutral.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "mman/cuda/buffer.h"
#include "mman/cuda/context.h"
#include "mman/params.h"
#include "mman/train/optimizer.h"

namespace mman::cuda {

// The device mirror of a ParamStore (llm.c's malloc_and_point_parameters): one float arena of
// values, one of gradients and, once Adam runs, two of moments, all with the ParamStore's
// layout (the same offsets, the same zero padding). Moving parameters between host and
// device, writing a checkpoint or restoring Adam's state is therefore one copy per arena,
// and the optimiser is one fused kernel over the trainable spans (cuda/adam.cu).
//
// Tensor names, shapes and offsets are kept here (infos()); device pointers of one tensor
// are value(id) / grad(id) with the ParamStore's ids. The trainable flags are the store's at
// construction or at the last sync_trainable().
//
// Implemented in cuda/arena.cu (CUDA builds only). The inline members below run in the
// caller's translation unit: they are the device-neutral half (they may call mman_core,
// which cuda/*.cu never do, since mman_cuda is linked after mman_core).
class DeviceParams {
 public:
  // Allocates the arenas for `params`' layout, uploads its values and zeroes the gradients.
  DeviceParams(CudaContext& ctx, const ParamStore& params)
      : DeviceParams(ctx, params.infos(), params.values().size(), trainable_spans(params)) {
    upload_values(params);
  }
  DeviceParams(const DeviceParams&) = delete;
  DeviceParams& operator=(const DeviceParams&) = delete;

  CudaContext& context() const { return *ctx_; }
  size_t size() const { return size_; }  // floats per arena, padding included
  int count() const { return static_cast<int>(infos_.size()); }
  const ParamInfo& info(int id) const { return infos_[static_cast<size_t>(id)]; }
  const std::vector<ParamInfo>& infos() const { return infos_; }
  int find(const std::string& name) const {  // -1 when absent
    for (size_t i = 0; i < infos_.size(); ++i)
      if (infos_[i].name == name) return static_cast<int>(i);
    return -1;
  }

  float* values() const { return values_.data(); }
  float* grads() const { return grads_.data(); }
  float* value(int id) const { return values_.data() + info(id).offset; }
  float* grad(int id) const { return grads_.data() + info(id).offset; }

  // Whole-arena copies; the store must have this layout (same names, shapes, offsets),
  // otherwise mman::Error names the first tensor that differs. Downloads synchronise.
  void upload_values(const ParamStore& params);
  void download_values(ParamStore& params) const;
  void upload_grads(const ParamStore& params);
  void download_grads(ParamStore& params) const;
  void zero_grads();

  // Takes the store's trainable flags (after ParamStore::set_trainable, e.g. for stage 2).
  void sync_trainable(const ParamStore& params) {
    check_layout(params, "sync_trainable");
    std::vector<bool> flags;
    for (const ParamInfo& p : params.infos()) flags.push_back(p.trainable);
    set_trainable(flags, trainable_spans(params));
  }

  // The trainable spans ([begin, end) pairs, mman::trainable_spans) as the arena kernels
  // take them: a device table of 2 * span_count() offsets.
  const long long* span_bounds() const { return span_bounds_.data(); }
  int span_count() const { return span_count_; }
  long long longest_span() const { return longest_span_; }

  // mman::Adam::step on the device: one fused kernel over the trainable spans, with the
  // moments in two more arenas (allocated and zeroed on the first step). Bit-identical to
  // the CPU optimiser (cuda/kernels/adam.cuh).
  void adam_step(const AdamConfig& config);
  int64_t adam_steps() const { return adam_step_; }
  // Adam's state in the CPU optimiser's form, for checkpoints and exact resume.
  void upload_adam(const AdamState& state);
  AdamState download_adam() const;

  // mman::clip_grad_norm / clip_grad_value on the device. clip_grad_norm returns the norm
  // before clipping, which costs one synchronisation (the clipping itself does not wait).
  double clip_grad_norm(double max_norm);
  // The L2 norm of the trainable gradients (in double) without clipping; one synchronisation.
  double grad_norm();
  void clip_grad_value(float clip_value);

 private:
  DeviceParams(CudaContext& ctx, std::vector<ParamInfo> infos, size_t size,
               const std::vector<std::pair<size_t, size_t>>& spans);
  void check_layout(const ParamStore& params, const char* what) const;
  void set_trainable(const std::vector<bool>& flags, const std::vector<std::pair<size_t, size_t>>& spans);

  CudaContext* ctx_;
  std::vector<ParamInfo> infos_;
  size_t size_ = 0;
  DeviceArray<float> values_, grads_, adam_m_, adam_v_;
  int64_t adam_step_ = 0;
  DeviceArray<long long> span_bounds_;
  int span_count_ = 0;
  long long longest_span_ = 0;
  DeviceArray<double> norm_partial_;   // scratch of the gradient-norm reduction
  DeviceBuffer norm_result_;           // one kernels::GradNormResult
};

}  // namespace mman::cuda
