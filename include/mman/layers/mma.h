// Mma: the multi-modal attention layer of cLSTM-MMA (paper section 2.1), hand-written backward.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mman/layers/dropout.h"
#include "mman/layers/linear.h"
#include "mman/layers/mode.h"
#include "mman/models/model.h"  // MmaScore, MmaSkip (declared with ModelConfig)
#include "mman/params.h"
#include "mman/rng.h"
#include "mman/tensor.h"

namespace mman {

struct MmaConfig {
  std::vector<std::string> modalities;  // names, in model order (parameter names use them)
  std::vector<int> dims;                // input width of each modality
  int d_model = 150;                    // standardised width; d_k = d_v = d_model
  float dropout = 0.1f;                 // on the standardised inputs and (residual) on z_m
  MmaScore score = MmaScore::ScaledDot;
  MmaSkip skip = MmaSkip::Residual;
};

// Everything forward() keeps for backward(), owned by the caller and reused across
// batches. Per modality m (model order), each [rows x d_model]:
struct MmaContext {
  Mode mode = Mode::Eval;
  DropoutKey key;
  std::vector<Tensor> xhat;     // dropout(ReLU(W_m x_m + b_m))
  std::vector<Tensor> q, k, v;  // projections of xhat
  std::vector<Tensor> z;        // sum_n alpha_{m,n} v_n (before its dropout); backward: dz
  Tensor alpha;                 // [rows x M*M], query m and key n at column M*m + n
  Tensor qnorm, knorm;          // [rows x M] Euclidean norms (cosine score only)
  std::vector<Tensor> dxhat, dq, dk, dv;  // backward scratch
};

// Per modality m: x̂_m = dropout_p(ReLU(W_m x_m + b_m)) to d_model; q_m = W_q^m x̂_m + b,
// k_n = W_k^n x̂_n + b, v_n = W_v^n x̂_n + b; e_{m,n} = q_m·k_n / sqrt(d_model)
// (ScaledDot) or cos(q_m, k_n) (Cosine); alpha_{m,.} = softmax_n(e_{m,.});
// z_m = sum_n alpha_{m,n} v_n; out_m = x̂_m + dropout_p(z_m) (Residual) or [x̂_m; z_m]
// (Concat); the output row is [out_0, out_1, ...] (M*d_model or 2*M*d_model wide).
//
// Cosine: cos(q, k) = q·k / (max(|q|, eps) * max(|k|, eps)) with eps = kMmaCosineEps,
// which is torch.nn.functional.cosine_similarity (torch 1.13) exactly: an all-zero q or
// k gives score 0 (finite), and the gradient follows the same max() branches.
//
// Parameters (prefix + ...), registered in the order of a PyTorch module holding four
// ModuleDicts std, q, k, v keyed by modality: std.<modality>.weight|bias
// [d_model x d_m] for every modality, then q.<modality>.* [d_model x d_model] for
// every modality, then k.*, then v.*. Every projection is one GEMM over all rows.
//
// Dropout slots (relative to the `slot_base` passed to the constructor): the
// standardisation dropout of modality m uses slot_base + m, the dropout on z_m uses
// slot_base + kMmaMaxModalities + m; an Mma occupies kMmaSlots slots.
inline constexpr int kMmaMaxModalities = 8;
inline constexpr uint64_t kMmaSlots = 2 * kMmaMaxModalities;
inline constexpr float kMmaCosineEps = 1e-8f;

class Mma {
 public:
  Mma() = default;
  Mma(ParamStore& params, const std::string& prefix, const MmaConfig& config, uint64_t slot_base);

  const MmaConfig& config() const { return config_; }
  int modalities() const { return static_cast<int>(config_.dims.size()); }
  int output_dim() const;

  void init(ParamStore& params, Rng& rng) const;  // every Linear: PyTorch default

  // x[m]: [rows x dims[m]] contiguous, for each modality m. out: resized to
  // [rows x output_dim()]. Fills ctx (alpha is kept in both modes for export).
  void forward(const ParamStore& params, int64_t rows, const float* const* x, Tensor& out, Mode mode,
               const DropoutKey& key, MmaContext& ctx) const;

  // dout: [rows x output_dim()]. Parameter gradients accumulate (+=); when dx is not
  // null, every dx[m] that is not null is overwritten with [rows x dims[m]].
  void backward(ParamStore& params, int64_t rows, const float* const* x, const Tensor& dout, float* const* dx,
                MmaContext& ctx) const;

 private:
  MmaConfig config_;
  std::vector<Linear> std_, q_, k_, v_;
  std::vector<Dropout> drop_x_, drop_z_;
};

}  // namespace mman
