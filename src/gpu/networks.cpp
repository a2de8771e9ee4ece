// The networks on the GPU: cLSTM (uni-modal, early fusion), cLSTM-MMA, and the late-fusion composites clstm_lf and mman.
#ifdef MMAN_WITH_CUDA
#include "src/gpu/networks.h"

#include <utility>
#include <vector>

#include "cuda/clstm_block.cuh"
#include "cuda/linear.cuh"
#include "cuda/softmax.cuh"
#include "mman/error.h"
#include "mman/layers/mma.h"
#include "mman/models/network.h"
#include "mman/nvtx.h"
#include "src/gpu/mma_device.h"
#include "src/models/networks.h"

namespace mman::gpu {

bool DeviceNetwork::frozen(const cuda::DeviceParams& params) const { return prefix_frozen(params.infos(), prefix_); }

namespace {

int total(const std::vector<int>& dims) {
  int s = 0;
  for (int d : dims) s += d;
  return s;
}

int find_param(const cuda::DeviceParams& params, const std::string& name, const std::vector<int64_t>& shape) {
  const int id = params.find(name);
  MMAN_CHECK(id >= 0, "GPU network: the device parameters have no '{}'", name);
  MMAN_CHECK(params.info(id).shape == shape, "GPU network: parameter '{}' has the wrong shape", name);
  return id;
}

// One cLSTM block on one modality, or on the concatenation of several (early fusion; the
// concatenation is one strided device-to-device copy per modality).
class ClstmDeviceNetwork : public DeviceNetwork {
 public:
  ClstmDeviceNetwork(cuda::CudaContext& ctx, const cuda::DeviceParams& params, const ModelConfig& c,
                     const ModalityInputs& in, int outputs, const std::string& prefix, uint64_t slot_base)
      : ctx_(&ctx), in_(in), who_("GPU model '" + c.name + "'"),
        block_(ctx, params, prefix, block_config(c, total(in.dims), outputs), slot_base) {
    prefix_ = prefix;
  }

  void forward(const cuda::DeviceParams& params, const Batch& batch, const DeviceBatch& dbatch, Mode mode,
               const DropoutKey& key, float* d_logits) override {
    check_batch_inputs(batch, in_, who_);
    block_.forward(params, batch.layout, input(batch, dbatch), d_logits, mode, key, ctx_block_);
  }

  void backward(cuda::DeviceParams& params, const Batch& batch, const DeviceBatch& dbatch,
                const float* d_dlogits) override {
    check_batch_inputs(batch, in_, who_);
    // The input is data: no gradient wanted. The concatenation still holds the forward's.
    const float* x = in_.index.size() == 1 ? dbatch.features[static_cast<size_t>(in_.index[0])].data() : concat_.data();
    block_.backward(params, batch.layout, x, d_dlogits, nullptr, ctx_block_);
  }

 private:
  const float* input(const Batch& batch, const DeviceBatch& dbatch) {
    if (in_.index.size() == 1) return dbatch.features[static_cast<size_t>(in_.index[0])].data();
    const int64_t rows = batch.rows();
    const size_t width = static_cast<size_t>(total(in_.dims));
    concat_.resize(static_cast<size_t>(rows) * width);
    size_t col = 0;
    for (size_t i = 0; i < in_.index.size(); ++i) {
      const size_t d = static_cast<size_t>(in_.dims[i]);
      ctx_->copy_rows(concat_.data() + col, width * sizeof(float),
                      dbatch.features[static_cast<size_t>(in_.index[i])].data(), d * sizeof(float), d * sizeof(float),
                      static_cast<size_t>(rows));
      col += d;
    }
    return concat_.data();
  }

  cuda::CudaContext* ctx_;
  ModalityInputs in_;
  std::string who_;
  cuda::ClstmBlockDevice block_;
  cuda::ClstmBlockDeviceContext ctx_block_;
  cuda::DeviceArray<float> concat_;
};

// clstm_mma: MMA ("mma.") over the modalities, then a cLSTM block ("clstm.").
class MmaDeviceNetwork : public DeviceNetwork {
 public:
  MmaDeviceNetwork(cuda::CudaContext& ctx, const cuda::DeviceParams& params, const ModelConfig& c,
                   const ModalityInputs& in, int outputs, const std::string& prefix, uint64_t slot_base)
      : ctx_(&ctx), in_(in), who_("GPU model '" + c.name + "'"),
        mma_(params, prefix + "mma.", mma_config(c, in), slot_base),
        block_(ctx, params, prefix + "clstm.", block_config(c, mma_.output_dim(), outputs), slot_base + kMmaSlots) {
    prefix_ = prefix;
  }

  void forward(const cuda::DeviceParams& params, const Batch& batch, const DeviceBatch& dbatch, Mode mode,
               const DropoutKey& key, float* d_logits) override {
    check_batch_inputs(batch, in_, who_);
    gather(dbatch);
    mma_.forward(*ctx_, params, batch.rows(), x_.data(), mode, key, mma_ctx_);
    block_.forward(params, batch.layout, mma_ctx_.out.data(), d_logits, mode, key, block_ctx_);
  }

  void backward(cuda::DeviceParams& params, const Batch& batch, const DeviceBatch& dbatch,
                const float* d_dlogits) override {
    check_batch_inputs(batch, in_, who_);
    gather(dbatch);
    dmma_.resize(static_cast<size_t>(batch.rows()) * mma_.output_dim());
    block_.backward(params, batch.layout, mma_ctx_.out.data(), d_dlogits, dmma_.data(), block_ctx_);
    mma_.backward(*ctx_, params, batch.rows(), x_.data(), dmma_.data(), mma_ctx_);
  }

  const float* attention(int* cols) const override {
    *cols = mma_.modalities() * mma_.modalities();
    return mma_ctx_.alpha.data();
  }
  void set_fused_mma(bool allowed) override { mma_.set_fused(allowed); }

 private:
  void gather(const DeviceBatch& dbatch) {
    x_.resize(in_.index.size());
    for (size_t i = 0; i < in_.index.size(); ++i) x_[i] = dbatch.features[static_cast<size_t>(in_.index[i])].data();
  }

  cuda::CudaContext* ctx_;
  ModalityInputs in_;
  std::string who_;
  MmaDevice mma_;
  cuda::ClstmBlockDevice block_;
  MmaDeviceContext mma_ctx_;
  cuda::ClstmBlockDeviceContext block_ctx_;
  cuda::DeviceArray<float> dmma_;
  std::vector<const float*> x_;
};

// clstm_lf / mman: the sub-networks' class probabilities (softmax per head) side by side in
// one [rows x S*O] matrix, fused by a cLSTM block (clstm_lf) or a Linear layer (mman), as the
// CPU's FusionNetwork. A frozen sub-network (stage 2) runs in evaluation mode and gets no
// backward. Unlike the CPU, its outputs are recomputed every batch (no frozen-output cache):
// on a GPU the evaluation pass is a small share of a step.
class FusionDeviceNetwork : public DeviceNetwork {
 public:
  FusionDeviceNetwork(cuda::CudaContext& ctx, const cuda::DeviceParams& params, const ModelConfig& c,
                      std::vector<std::unique_ptr<DeviceNetwork>> subnets, const DataShape& shape,
                      const std::string& prefix, uint64_t slot_base)
      : ctx_(&ctx), subs_(std::move(subnets)), outputs_(shape.num_outputs),
        group_(shape.heads > 1 ? 2 : shape.num_outputs), lf_(c.type == "clstm_lf"),
        who_("GPU model '" + c.name + "'") {
    prefix_ = prefix;
    const int width = static_cast<int>(subs_.size()) * outputs_;
    if (lf_) {
      top_ = std::make_unique<cuda::ClstmBlockDevice>(ctx, params, prefix + "clstm.",
                                                      block_config(c, width, outputs_), slot_base);
    } else {
      fusion_w_ = find_param(params, prefix + "fusion.weight", {outputs_, width});
      fusion_b_ = find_param(params, prefix + "fusion.bias", {outputs_});
    }
    sub_logits_.resize(subs_.size());
    frozen_.assign(subs_.size(), false);
  }

  void forward(const cuda::DeviceParams& params, const Batch& batch, const DeviceBatch& dbatch, Mode mode,
               const DropoutKey& key, float* d_logits) override {
    MMAN_NVTX_RANGE("fusion.forward");
    const int64_t rows = batch.rows();
    const int width = static_cast<int>(subs_.size()) * outputs_;
    probs_.resize(static_cast<size_t>(rows) * width);
    rows_ = rows;
    for (size_t s = 0; s < subs_.size(); ++s) {
      frozen_[s] = subs_[s]->frozen(params);
      sub_logits_[s].resize(static_cast<size_t>(rows) * outputs_);
      subs_[s]->forward(params, batch, dbatch, frozen_[s] ? Mode::Eval : mode, key, sub_logits_[s].data());
      cuda::group_softmax_forward_device(
          sub_logits_[s].data(), probs_.data() + static_cast<int64_t>(s) * outputs_,
          kernels::group_softmax_shape(rows, outputs_, group_, outputs_, width, who_.c_str()), ctx_->stream());
    }
    if (lf_) {
      top_->forward(params, batch.layout, probs_.data(), d_logits, mode, key, top_ctx_);
    } else if (rows > 0) {
      cuda::linear_forward_device(*ctx_, params.value(fusion_w_), params.value(fusion_b_), width, outputs_,
                                  probs_.data(), width, rows, d_logits, outputs_);
    }
  }

  void backward(cuda::DeviceParams& params, const Batch& batch, const DeviceBatch& dbatch,
                const float* d_dlogits) override {
    MMAN_NVTX_RANGE("fusion.backward");
    const int64_t rows = batch.rows();
    MMAN_CHECK(rows == rows_, "{}: backward on {} rows after a forward of {}", who_, rows, rows_);
    const int width = static_cast<int>(subs_.size()) * outputs_;
    bool any_trainable = false;
    for (size_t s = 0; s < subs_.size(); ++s) any_trainable = any_trainable || !frozen_[s];
    // The gradient w.r.t. the probabilities is only needed for sub-networks that train.
    float* dprobs = nullptr;
    if (any_trainable) {
      dprobs_.resize(static_cast<size_t>(rows) * width);
      dprobs = dprobs_.data();
    }
    if (lf_) {
      top_->backward(params, batch.layout, probs_.data(), d_dlogits, dprobs, top_ctx_);
    } else if (rows > 0) {
      auto grad_of = [&](int id) { return params.info(id).trainable ? params.grad(id) : nullptr; };
      cuda::linear_backward_device(*ctx_, params.value(fusion_w_), grad_of(fusion_w_), grad_of(fusion_b_), width,
                                   outputs_, probs_.data(), width, rows, d_dlogits, outputs_, dprobs, width);
    }
    for (size_t s = 0; s < subs_.size(); ++s) {
      if (frozen_[s]) continue;
      const int64_t col = static_cast<int64_t>(s) * outputs_;
      dsub_.resize(static_cast<size_t>(rows) * outputs_);
      cuda::group_softmax_backward_device(
          probs_.data() + col, dprobs_.data() + col, dsub_.data(),
          kernels::group_softmax_shape(rows, outputs_, group_, width, outputs_, who_.c_str()), ctx_->stream());
      subs_[s]->backward(params, batch, dbatch, dsub_.data());
    }
  }

  const float* attention(int* cols) const override {
    for (const auto& s : subs_)
      if (const float* a = s->attention(cols)) return a;
    return nullptr;
  }
  void set_fused_mma(bool allowed) override {
    for (const auto& s : subs_) s->set_fused_mma(allowed);
  }

 private:
  cuda::CudaContext* ctx_;
  std::vector<std::unique_ptr<DeviceNetwork>> subs_;
  int outputs_, group_;
  bool lf_;
  std::string who_;
  std::unique_ptr<cuda::ClstmBlockDevice> top_;  // clstm_lf
  cuda::ClstmBlockDeviceContext top_ctx_;
  int fusion_w_ = -1, fusion_b_ = -1;            // mman
  std::vector<cuda::DeviceArray<float>> sub_logits_;
  std::vector<bool> frozen_;
  cuda::DeviceArray<float> probs_, dprobs_, dsub_;
  int64_t rows_ = -1;
};

}  // namespace

std::unique_ptr<DeviceNetwork> make_device_network(cuda::CudaContext& ctx, const cuda::DeviceParams& params,
                                                   const ModelConfig& c, const DataShape& shape,
                                                   const std::string& prefix, uint64_t slot_base) {
  const std::string who = "model '" + c.name + "' (" + c.type + ")";
  if (c.type == "clstm_lf" || c.type == "mman") {
    std::vector<std::unique_ptr<DeviceNetwork>> subs;
    for (size_t i = 0; i < c.subnets.size(); ++i)
      subs.push_back(make_device_network(ctx, params, c.subnets[i], shape, prefix + "subnets." + c.subnets[i].name + ".",
                                         slot_base + (i + 1) * kSubnetSlots));
    return std::make_unique<FusionDeviceNetwork>(ctx, params, c, std::move(subs), shape, prefix, slot_base);
  }
  const ModalityInputs in = modality_inputs(c, shape, who);
  if (c.type == "clstm_mma")
    return std::make_unique<MmaDeviceNetwork>(ctx, params, c, in, shape.num_outputs, prefix, slot_base);
  return std::make_unique<ClstmDeviceNetwork>(ctx, params, c, in, shape.num_outputs, prefix, slot_base);
}

}  // namespace mman::gpu
#endif  // MMAN_WITH_CUDA
