// The multi-modal attention layer on the GPU: standardisation (cuBLAS + fused ReLU/dropout), attention (fused or unfused kernels), backward.
#ifdef MMAN_WITH_CUDA
#include "src/gpu/mma_device.h"

#include "cuda/attention.cuh"
#include "cuda/elementwise.cuh"
#include "cuda/linear.cuh"
#include "cuda/mma.cuh"
#include "mman/error.h"
#include "mman/nvtx.h"

namespace mman::gpu {
namespace {

int find_param(const cuda::DeviceParams& params, const std::string& name, const std::vector<int64_t>& shape) {
  const int id = params.find(name);
  MMAN_CHECK(id >= 0, "GPU MMA: the device parameters have no '{}'", name);
  MMAN_CHECK(params.info(id).shape == shape, "GPU MMA: parameter '{}' has the wrong shape", name);
  return id;
}

const char* const kWhich[3] = {"q.", "k.", "v."};

}  // namespace

MmaDevice::MmaDevice(const cuda::DeviceParams& params, const std::string& prefix, const MmaConfig& config,
                     uint64_t slot_base)
    : config_(config), slot_base_(slot_base) {
  const int mc = modalities();
  MMAN_CHECK(mc >= 1 && mc <= kMmaMaxModalities && config.modalities.size() == config.dims.size(),
             "GPU MMA '{}': {} modalities with {} widths, expected 1 to {}", prefix, config.modalities.size(),
             config.dims.size(), kMmaMaxModalities);
  const int64_t d = config.d_model;
  MMAN_CHECK(d > 0, "GPU MMA '{}': d_model must be positive, got {}", prefix, d);
  for (int m = 0; m < mc; ++m) {
    const std::string base = prefix + "std." + config.modalities[m] + ".";
    std_w_.push_back(find_param(params, base + "weight", {d, config.dims[m]}));
    std_b_.push_back(find_param(params, base + "bias", {d}));
  }
  for (int which = 0; which < 3; ++which)
    for (int m = 0; m < mc; ++m) {
      const std::string base = prefix + kWhich[which] + config.modalities[m] + ".";
      proj_w_[which].push_back(find_param(params, base + "weight", {d, d}));
      proj_b_[which].push_back(find_param(params, base + "bias", {d}));
    }
  for (int m = 0; m < mc; ++m) drop_x_.emplace_back(config.dropout, slot_base + static_cast<uint64_t>(m));
}

int MmaDevice::output_dim() const {
  return modalities() * config_.d_model * (config_.skip == MmaSkip::Concat ? 2 : 1);
}

bool MmaDevice::fused() const { return fused_allowed_ && kernels::mma_fused_supported(modalities(), config_.d_model); }

void MmaDevice::forward(cuda::CudaContext& ctx, const cuda::DeviceParams& params, int64_t rows,
                        const float* const* d_x, Mode mode, const DropoutKey& key, MmaDeviceContext& c) const {
  MMAN_NVTX_RANGE("mma.forward");
  const int mc = modalities(), d = config_.d_model, md = mc * d;
  const size_t n = static_cast<size_t>(rows) * md;
  c.mode = mode;
  c.key = key;
  c.rows = rows;
  c.xhat.resize(n);
  c.alpha.resize(static_cast<size_t>(rows) * mc * mc);
  c.out.resize(static_cast<size_t>(rows) * output_dim());
  // q, k, v are kept in both modes, as the CPU layer keeps them: a backward may follow an
  // evaluation-mode forward (Model's contract), and the unfused attention reads them anyway.
  // Evaluation could skip the 3 * 4 d bytes per row of stores; not worth a second contract.
  c.q.resize(n);
  c.k.resize(n);
  c.v.resize(n);
  if (rows == 0) return;
  cudaStream_t stream = ctx.stream();
  for (int m = 0; m < mc; ++m) {
    float* xh = c.xhat.data() + static_cast<int64_t>(m) * d;
    cuda::linear_forward_device(ctx, params.value(std_w_[m]), params.value(std_b_[m]), config_.dims[m], d, d_x[m],
                                config_.dims[m], rows, xh, md);
    cuda::relu_dropout_forward_device(drop_x_[m], xh, xh, kernels::dropout_view(rows, d, md, md, "GPU MMA"), mode, key,
                                      stream);
  }
  const kernels::MmaShape s = kernels::mma_shape(rows, mc, d, config_.score, config_.skip, config_.dropout, mode, key,
                                                 slot_base_);
  if (fused()) {
    kernels::MmaWeights w;
    for (int which = 0; which < 3; ++which)
      for (int m = 0; m < mc; ++m) {
        w.w[which][m] = params.value(proj_w_[which][m]);
        w.b[which][m] = params.value(proj_b_[which][m]);
      }
    cuda::mma_fused_forward_device(c.xhat.data(), w, s, c.q.data(), c.k.data(), c.v.data(), c.alpha.data(),
                                   c.out.data(), stream);
    return;
  }
  float* proj[3] = {c.q.data(), c.k.data(), c.v.data()};
  for (int which = 0; which < 3; ++which)
    for (int m = 0; m < mc; ++m) {
      const int64_t col = static_cast<int64_t>(m) * d;
      cuda::linear_forward_device(ctx, params.value(proj_w_[which][m]), params.value(proj_b_[which][m]), d, d,
                                  c.xhat.data() + col, md, rows, proj[which] + col, md);
    }
  cuda::attention_forward_device(c.xhat.data(), c.q.data(), c.k.data(), c.v.data(), s, c.alpha.data(), c.out.data(),
                                 stream);
}

void MmaDevice::backward(cuda::CudaContext& ctx, cuda::DeviceParams& params, int64_t rows, const float* const* d_x,
                         const float* d_dout, MmaDeviceContext& c) const {
  MMAN_NVTX_RANGE("mma.backward");
  const size_t kept = static_cast<size_t>(rows) * modalities() * config_.d_model;
  MMAN_CHECK(c.rows == rows && c.q.size() == kept, "GPU MMA: backward on {} rows after a forward of {} rows", rows,
             c.rows);
  if (rows == 0) return;
  const int mc = modalities(), d = config_.d_model, md = mc * d;
  const size_t n = static_cast<size_t>(rows) * md;
  cudaStream_t stream = ctx.stream();
  auto grad_of = [&](int id) { return params.info(id).trainable ? params.grad(id) : nullptr; };
  c.dxhat.resize(n);
  c.dq.resize(n);
  c.dk.resize(n);
  c.dv.resize(n);
  const kernels::MmaShape s = kernels::mma_shape(rows, mc, d, config_.score, config_.skip, config_.dropout, c.mode,
                                                 c.key, slot_base_);
  if (fused()) {
    kernels::MmaWeights w;
    kernels::MmaWeightGrads g;
    for (int which = 0; which < 3; ++which)
      for (int m = 0; m < mc; ++m) {
        w.w[which][m] = params.value(proj_w_[which][m]);
        w.b[which][m] = params.value(proj_b_[which][m]);
        g.w[which][m] = grad_of(proj_w_[which][m]);
        g.b[which][m] = grad_of(proj_b_[which][m]);
      }
    // dxhat = the skip's share + [dq dk dv] [W_q; W_k; W_v], per modality.
    cuda::mma_fused_backward_device(c.q.data(), c.k.data(), c.v.data(), c.alpha.data(), d_dout, w, s, c.dq.data(),
                                    c.dk.data(), c.dv.data(), c.dxhat.data(), stream);
    cuda::mma_weight_grad_device(c.xhat.data(), c.dq.data(), c.dk.data(), c.dv.data(), g, rows, mc, d, stream);
  } else {
    cuda::attention_backward_device(c.q.data(), c.k.data(), c.v.data(), c.alpha.data(), d_dout, s, c.dq.data(),
                                    c.dk.data(), c.dv.data(), c.dxhat.data(), stream);
    const float* dproj[3] = {c.dq.data(), c.dk.data(), c.dv.data()};
    for (int which = 0; which < 3; ++which)
      for (int m = 0; m < mc; ++m) {
        const int64_t col = static_cast<int64_t>(m) * d;
        const int w = proj_w_[which][m], b = proj_b_[which][m];
        cuda::linear_backward_device(ctx, params.value(w), grad_of(w), grad_of(b), d, d, c.xhat.data() + col, md, rows,
                                     dproj[which] + col, md, c.dxhat.data() + col, md, /*accumulate_dx=*/true);
      }
  }
  for (int m = 0; m < mc; ++m) {
    const int64_t col = static_cast<int64_t>(m) * d;
    float* dxh = c.dxhat.data() + col;
    cuda::relu_dropout_backward_device(drop_x_[m], c.xhat.data() + col, dxh, dxh,
                                       kernels::dropout_view(rows, d, md, md, "GPU MMA"), c.mode, stream);
    const int w = std_w_[m], b = std_b_[m];
    cuda::linear_backward_device(ctx, params.value(w), grad_of(w), grad_of(b), config_.dims[m], d, d_x[m],
                                 config_.dims[m], rows, dxh, md, nullptr, 0);
  }
}

}  // namespace mman::gpu
#endif  // MMAN_WITH_CUDA
