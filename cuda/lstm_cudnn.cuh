// Launcher of the cuDNN 9 LSTM (cuda/lstm_cudnn.cu): mman::Lstm's contract on device memory, PyTorch weights.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mman/cuda/arena.h"
#include "mman/cuda/context.h"
#include "mman/error.h"
#include "mman/layers/dropout.h"
#include "mman/layers/lstm.h"
#include "mman/layers/mode.h"
#include "mman/packed.h"

namespace mman::cuda {

struct CudnnLstmPlan;   // descriptors, weight spaces and weight maps of one layer object
struct CudnnLstmState;  // what one forward keeps for its backward

// What forward() keeps for backward() (per layer: outputs, dropped inputs, cuDNN reserve
// space; the batch's descriptors and device copy of its lengths). Owned by the caller and
// reused across batches: buffers only grow. Device-neutral; defined in cuda/lstm_cudnn.cu.
// The shape contract of a packed layout, checked by CudnnLstm once per call (device-neutral, so
// the device emulation's layer checks the same): cuDNN's packed layout needs positive,
// non-increasing lengths that add up to the rows, and consistent batch sizes and step offsets.
inline void check_packed_layout(const PackedLayout& layout, const std::string& who) {
  const int convs = layout.convs(), steps = layout.steps();
  MMAN_CHECK(layout.step_offsets.size() == static_cast<size_t>(steps) + 1 || (steps == 0 && layout.step_offsets.empty()),
             "{}: packed layout has {} steps but {} step offsets", who, steps, layout.step_offsets.size());
  int64_t rows = 0;
  for (int b = 0; b < convs; ++b) {
    const int len = layout.lengths[static_cast<size_t>(b)];
    MMAN_CHECK(len > 0 && (b == 0 || len <= layout.lengths[static_cast<size_t>(b) - 1]),
               "{}: packed layout's lengths must be positive and non-increasing (conversation {})", who, b);
    rows += len;
  }
  MMAN_CHECK(rows == layout.rows() && (convs == 0 || layout.lengths[0] == steps),
             "{}: packed layout's lengths ({} rows, longest {}) disagree with its steps ({} rows, {} steps)", who, rows,
             convs == 0 ? 0 : layout.lengths[0], layout.rows(), steps);
  for (int t = 0; t < steps; ++t) {
    const int n = layout.batch_sizes[static_cast<size_t>(t)];
    MMAN_CHECK(n > 0 && n <= convs && (t == 0 || n <= layout.batch_sizes[static_cast<size_t>(t) - 1]) &&
                   layout.step_offsets[static_cast<size_t>(t) + 1] == layout.step_offsets[static_cast<size_t>(t)] + n,
               "{}: packed layout's batch sizes and step offsets disagree at step {}", who, t);
  }
}

class CudnnLstmContext {
 public:
  CudnnLstmContext();
  ~CudnnLstmContext();
  CudnnLstmContext(CudnnLstmContext&&) noexcept;
  CudnnLstmContext& operator=(CudnnLstmContext&&) noexcept;
  CudnnLstmState& state() { return *state_; }

 private:
  std::unique_ptr<CudnnLstmState> state_;
};

// mman::Lstm (include/mman/layers/lstm.h) on the GPU with cuDNN 9: the same parameters (PyTorch
// nn.LSTM names and layout in the DeviceParams arena, gates i, f, g, o, two biases), the same
// packed rows, the same counter-based dropout between layers, so a model or checkpoint runs on
// either backend and gives the same function within float32 tolerance.
//
// How it maps onto cuDNN:
// - The batch is an RNN data descriptor in CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED with each
//   conversation's length: that layout *is* PackedLayout (time-major, conversations sorted by
//   non-increasing length, no padding), so inputs and outputs are used in place and no compute
//   is spent on padding. h_0 = c_0 = 0 (null hx, cx). The reverse direction starts at each
//   conversation's own last utterance, as on the CPU.
// - One single-layer cuDNN RNN per layer (both directions in it when bidirectional), called
//   layer by layer: cuDNN's own inter-layer dropout draws from cuDNN's generator and cannot
//   reproduce the CPU's masks, so the dropout between layers is ours (cuda/dropout.cu, the
//   counter-based mask of element row * (h * dirs) + col with the CPU Lstm's streams
//   dropout_slot + k). Running layers separately costs cuDNN the chance to overlap layers;
//   with two layers of 300 units on ~500 rows per batch that is small, and it is the only
//   way to keep CPU and GPU masks identical.
// - Weights: cuDNN keeps its own weight space. Where each gate's matrix and bias lives in it
//   is asked from cudnnGetRNNWeightParams once at construction (pseudo-layer = direction,
//   linLayerID 0-3 = W_i,f,g,o of the input GEMM, 4-7 of the recurrent one; each matrix
//   [h x in] row-major as PyTorch's rows g*h..(g+1)*h-1 of weight_ih); adjacent pieces are
//   merged into copy segments. forward() copies the arena's values into the weight space
//   (one device copy per segment: four per direction when cuDNN's layout is contiguous, as
//   it is in PyTorch's experience); backward() has cudnnRNNBackwardWeights_v8 add into a
//   zeroed gradient space and adds each segment into the gradient arena with cublasSaxpy.
//   The arena keeps PyTorch's layout throughout, so checkpoints are the same on both
//   backends.
// - cudnnRNNForward (training mode keeps the reserve space), cudnnRNNBackwardData_v8, then
//   cudnnRNNBackwardWeights_v8 (cuDNN requires this order: backward data updates the
//   reserve space), CUDNN_FMA_MATH (no TF32), everything on the context's stream.
class CudnnLstm {
 public:
  // Finds the layer's parameters `prefix`.weight_ih_l0 ... in `params` (the names mman::Lstm
  // registers) and builds the cuDNN descriptors and weight maps. Throws mman::Error for a bad
  // config or missing / misshapen parameters.
  CudnnLstm(CudaContext& ctx, const DeviceParams& params, const std::string& prefix, const LstmConfig& config);
  ~CudnnLstm();
  CudnnLstm(const CudnnLstm&) = delete;
  CudnnLstm& operator=(const CudnnLstm&) = delete;

  const LstmConfig& config() const { return config_; }
  int output_dim() const { return config_.hidden * (config_.bidirectional ? 2 : 1); }

  // mman::Lstm::forward on device memory: d_x [layout.rows() x input] -> d_y [rows x
  // output_dim()] (overwritten). Dropout between layers in Mode::Train as on the CPU. With
  // keep_for_backward == false cuDNN runs in inference mode (no reserve space) and
  // backward() on this context throws.
  void forward(const DeviceParams& params, const PackedLayout& layout, const float* d_x, float* d_y, Mode mode,
               const DropoutKey& key, uint64_t dropout_slot, CudnnLstmContext& ctx, bool keep_for_backward = true) {
    // Built here, in the caller's translation unit (Dropout's constructor is mman_core's, and
    // checks the slots); the device part copies them into the context for backward().
    std::vector<Dropout> between;
    if (mode == Mode::Train && config_.dropout > 0.0f && config_.layers > 1)
      for (int k = 0; k + 1 < config_.layers; ++k)
        between.emplace_back(config_.dropout, dropout_slot + static_cast<uint64_t>(k));
    forward_device(params, layout, d_x, d_y, mode, key, between, ctx, keep_for_backward);
  }
  // The same with the inter-layer dropouts already built (layers - 1 of them, the first at the
  // slot forward() would use; empty for none), for callers in cuda/*.cu, which cannot
  // construct mman::Dropout (docs/cuda_backend.md, link order). Applied in Mode::Train only.
  void forward(const DeviceParams& params, const PackedLayout& layout, const float* d_x, float* d_y, Mode mode,
               const DropoutKey& key, const std::vector<Dropout>& between, CudnnLstmContext& ctx,
               bool keep_for_backward = true) {
    forward_device(params, layout, d_x, d_y, mode, key, between, ctx, keep_for_backward);
  }

  // mman::Lstm::backward: d_dy [rows x output_dim()] -> parameter gradients accumulated (+=)
  // into params.grads() (frozen tensors skipped); d_dx, when not null, overwritten with
  // [rows x input] (must not alias d_x). d_x is the forward's input, ctx its context.
  void backward(DeviceParams& params, const PackedLayout& layout, const float* d_x, const float* d_dy, float* d_dx,
                CudnnLstmContext& ctx);

  // Copies layer `layer`'s cuDNN weight space (as the last forward filled it) back into the
  // arena's values through the same map: with forward() it is a round trip that leaves the
  // values unchanged, which the GPU tests check.
  void weight_space_to_values(int layer, DeviceParams& params) const;
  // Floats of layer `layer`'s weight space and how many copy segments map it (tests, docs).
  size_t weight_space_floats(int layer) const;
  int weight_segments(int layer) const;

 private:
  void forward_device(const DeviceParams& params, const PackedLayout& layout, const float* d_x, float* d_y, Mode mode,
                      const DropoutKey& key, const std::vector<Dropout>& between, CudnnLstmContext& ctx,
                      bool keep_for_backward);

  CudaContext* ctx_;
  LstmConfig config_;
  std::string prefix_;
  std::unique_ptr<CudnnLstmPlan> plan_;
};

}  // namespace mman::cuda
