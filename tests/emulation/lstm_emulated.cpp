// The device emulation's CudnnLstm: cuda/lstm_cudnn.cuh's contract computed by the CPU Lstm on host "device" memory.
//
// cuDNN cannot be emulated call by call with any confidence, so the emulation replaces the whole
// layer (cuda/lstm_cudnn.cu) instead: the parameters are looked up in the DeviceParams arena
// exactly as the real layer looks them up (names, shapes), copied into a private ParamStore,
// and mman::Lstm computes forward and backward with the inter-layer dropouts it was given. What
// this checks is everything around cuDNN: the callers' strides, buffers, modes, dropout slots,
// frozen tensors and gradient accumulation. What it cannot: cuDNN's own semantics (the weight
// map, the packed data descriptors), which only the GPU tests of tests/test_cuda_backend.cpp can.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cuda/lstm_cudnn.cuh"
#include "mman/error.h"
#include "mman/tensor.h"

namespace mman::cuda {

struct CudnnLstmPlan {
  ParamStore store;           // the layer's tensors under their bare names (weight_ih_l0, ...)
  Lstm lstm;                  // built on `store`
  std::vector<int> arena_id;  // per store tensor: its id in the DeviceParams
};

struct CudnnLstmState {
  bool valid = false;
  bool keep = false;
  const CudnnLstm* owner = nullptr;
  std::vector<int> lengths;
  int64_t rows = 0;
  LstmContext ctx;
  Tensor y;
};

CudnnLstmContext::CudnnLstmContext() : state_(std::make_unique<CudnnLstmState>()) {}
CudnnLstmContext::~CudnnLstmContext() = default;
CudnnLstmContext::CudnnLstmContext(CudnnLstmContext&&) noexcept = default;
CudnnLstmContext& CudnnLstmContext::operator=(CudnnLstmContext&&) noexcept = default;

CudnnLstm::CudnnLstm(CudaContext& ctx, const DeviceParams& params, const std::string& prefix,
                     const LstmConfig& config)
    : ctx_(&ctx), config_(config), prefix_(prefix.empty() || prefix.back() == '.' ? prefix : prefix + "."),
      plan_(std::make_unique<CudnnLstmPlan>()) {
  plan_->lstm = Lstm(plan_->store, "", config);  // validates the config as the CPU layer does
  for (const ParamInfo& p : plan_->store.infos()) {
    const int id = params.find(prefix_ + p.name);
    MMAN_CHECK(id >= 0, "cuDNN lstm '{}' (emulated): the device parameters have no '{}'", prefix_, prefix_ + p.name);
    MMAN_CHECK(params.info(id).shape == p.shape, "cuDNN lstm '{}' (emulated): parameter '{}' has the wrong shape",
               prefix_, prefix_ + p.name);
    plan_->arena_id.push_back(id);
  }
}

CudnnLstm::~CudnnLstm() = default;

size_t CudnnLstm::weight_space_floats(int) const { fail("cuDNN lstm: the device emulation has no weight space"); }
int CudnnLstm::weight_segments(int) const { fail("cuDNN lstm: the device emulation has no weight space"); }
void CudnnLstm::weight_space_to_values(int, DeviceParams&) const {
  fail("cuDNN lstm: the device emulation has no weight space");
}

void CudnnLstm::forward_device(const DeviceParams& params, const PackedLayout& layout, const float* d_x, float* d_y,
                               Mode mode, const DropoutKey& key, const std::vector<Dropout>& between,
                               CudnnLstmContext& ctx, bool keep_for_backward) {
  check_packed_layout(layout, "cuDNN lstm '" + prefix_ + "' (emulated)");
  CudnnLstmState& st = ctx.state();
  ParamStore& store = plan_->store;
  // The arena's current values (host memory in the emulation) into the layer's own store.
  for (size_t i = 0; i < plan_->arena_id.size(); ++i) {
    const ParamInfo& p = store.info(static_cast<int>(i));
    std::memcpy(store.value(static_cast<int>(i)), params.value(plan_->arena_id[i]), p.size * sizeof(float));
  }
  // The real layer applies the given dropouts between layers in Mode::Train only; they must
  // be the ones the CPU Lstm would draw (consecutive slots, the config's rate).
  const bool drop = mode == Mode::Train && !between.empty();
  if (drop) {
    MMAN_CHECK(static_cast<int>(between.size()) == config_.layers - 1,
               "cuDNN lstm '{}' (emulated): {} inter-layer dropouts for {} layers", prefix_, between.size(),
               config_.layers);
    for (size_t k = 0; k < between.size(); ++k)
      MMAN_CHECK(between[k].p() == config_.dropout && between[k].slot() == between[0].slot() + k,
                 "cuDNN lstm '{}' (emulated): inter-layer dropout {} has rate {} at slot {}", prefix_, k,
                 between[k].p(), between[k].slot());
  }
  plan_->lstm.forward(store, layout, d_x, st.y, drop ? Mode::Train : Mode::Eval, key,
                      drop ? between[0].slot() : 0, st.ctx);
  std::memcpy(d_y, st.y.data(), static_cast<size_t>(st.y.size()) * sizeof(float));
  st.valid = true;
  st.keep = keep_for_backward;
  st.owner = this;
  st.lengths = layout.lengths;
  st.rows = layout.rows();
}

void CudnnLstm::backward(DeviceParams& params, const PackedLayout& layout, const float* d_x, const float* d_dy,
                         float* d_dx, CudnnLstmContext& ctx) {
  CudnnLstmState& st = ctx.state();
  MMAN_CHECK(st.valid && st.owner == this, "cuDNN lstm '{}': backward without a forward of this layer", prefix_);
  MMAN_CHECK(st.keep, "cuDNN lstm '{}': backward after an inference-mode forward (keep_for_backward = false)",
             prefix_);
  MMAN_CHECK(st.lengths == layout.lengths && st.rows == layout.rows(),
             "cuDNN lstm '{}': backward on another batch than the forward's", prefix_);
  MMAN_CHECK(d_dx == nullptr || d_dx != d_x, "cuDNN lstm '{}': dx must not alias x", prefix_);
  ParamStore& store = plan_->store;
  store.zero_grads();
  for (size_t i = 0; i < plan_->arena_id.size(); ++i) {
    const ParamInfo& p = store.info(static_cast<int>(i));
    store.set_trainable(p.name, params.info(plan_->arena_id[i]).trainable);  // names in order: an exact prefix last
  }
  plan_->lstm.backward(store, layout, d_x, d_dy, d_dx, st.ctx);
  // Gradients accumulate (+=) into the arena's trainable tensors, as the real layer's axpy.
  for (size_t i = 0; i < plan_->arena_id.size(); ++i) {
    const int id = plan_->arena_id[i];
    if (!params.info(id).trainable) continue;
    const ParamInfo& p = store.info(static_cast<int>(i));
    float* g = params.grad(id);
    const float* s = store.grad(static_cast<int>(i));
    for (size_t e = 0; e < p.size; ++e) g[e] += s[e];
  }
}

}  // namespace mman::cuda
