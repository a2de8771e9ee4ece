// LSTM on cuDNN 9 (cudnnRNNForward, cudnnRNNBackwardData_v8, cudnnRNNBackwardWeights_v8), layer by layer,
// with our counter-based dropout between layers and the PyTorch parameter layout mapped to cuDNN's weight space.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "cuda/check.cuh"
#include "cuda/dropout.cuh"
#include "cuda/lstm_cudnn.cuh"
#include "mman/cuda/buffer.h"
#include "mman/error.h"
#include "mman/nvtx.h"

namespace mman::cuda {
namespace {

// Owns one cuDNN descriptor (created on construction, destroyed with a logged failure).
template <class T, cudnnStatus_t (*Create)(T*), cudnnStatus_t (*Destroy)(T)>
class Descriptor {
 public:
  Descriptor() { MMAN_CUDNN_CHECK(Create(&d_)); }
  ~Descriptor() {
    if (d_ != nullptr) MMAN_CUDNN_LOG(Destroy(d_));
  }
  Descriptor(Descriptor&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
  Descriptor& operator=(Descriptor&& o) noexcept {
    std::swap(d_, o.d_);
    return *this;
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  T get() const { return d_; }

 private:
  T d_ = nullptr;
};

using RnnDescriptor = Descriptor<cudnnRNNDescriptor_t, cudnnCreateRNNDescriptor, cudnnDestroyRNNDescriptor>;
using RnnDataDescriptor =
    Descriptor<cudnnRNNDataDescriptor_t, cudnnCreateRNNDataDescriptor, cudnnDestroyRNNDataDescriptor>;
using TensorDescriptor = Descriptor<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor>;
using DropoutDescriptor =
    Descriptor<cudnnDropoutDescriptor_t, cudnnCreateDropoutDescriptor, cudnnDestroyDropoutDescriptor>;

// One contiguous run of floats that is contiguous both in the parameter arena and in a
// layer's cuDNN weight space.
struct Segment {
  size_t arena = 0;  // float offset in DeviceParams' arenas
  size_t space = 0;  // float offset in the weight space
  size_t count = 0;
  int param = -1;    // the tensor it belongs to (for its trainable flag)
};

struct LayerPlan {
  RnnDescriptor rnn;
  int input = 0;                  // width of this layer's input
  size_t weight_bytes = 0;        // cudnnGetRNNWeightSpaceSize
  DeviceBuffer weights;           // the weight space forward() fills from the arena
  std::vector<Segment> segments;  // sorted by weight-space offset
};

// Element count of a descriptor cudnnGetRNNWeightParams filled (0 when the matrix does not exist).
size_t descriptor_elements(cudnnTensorDescriptor_t desc, cudnnDataType_t* type) {
  int nb = 0;
  int dims[8] = {0}, strides[8] = {0};
  MMAN_CUDNN_CHECK(cudnnGetTensorNdDescriptor(desc, 8, type, &nb, dims, strides));
  if (nb <= 0) return 0;
  size_t n = 1;
  for (int i = 0; i < nb; ++i) n *= static_cast<size_t>(dims[i]);
  return n;
}

int find_param(const DeviceParams& params, const std::string& name, const std::vector<int64_t>& shape,
               const std::string& who) {
  const int id = params.find(name);
  MMAN_CHECK(id >= 0, "{}: the device parameters have no '{}'", who, name);
  MMAN_CHECK(params.info(id).shape == shape, "{}: parameter '{}' has the wrong shape for this layer", who, name);
  return id;
}

}  // namespace

struct CudnnLstmPlan {
  DropoutDescriptor dropout;  // probability 0: the RNN descriptor wants one; our dropout runs between calls
  std::vector<LayerPlan> layers;
  DeviceBuffer dweights;   // cuDNN-layout weight gradients of one layer (the largest)
  DeviceBuffer workspace;  // cuDNN's temporary space, shared by all calls on the stream
};

struct CudnnLstmState {
  bool valid = false;   // a forward ran and filled what follows
  bool keep = false;    // it ran in training mode (reserve spaces valid)
  const CudnnLstm* owner = nullptr;
  Mode mode = Mode::Eval;
  DropoutKey key;
  std::vector<Dropout> between;  // the dropouts between layers (empty: none applied)
  std::vector<int> lengths;      // the batch, to check backward() gets the same one
  int64_t rows = 0;
  DeviceArray<int32_t> dev_lengths;  // devSeqLengths: read asynchronously by cuDNN's kernels
  // Created on the first forward (a context that is never used needs no cuDNN).
  std::unique_ptr<RnnDataDescriptor> x_desc;  // [rows x input]
  std::unique_ptr<RnnDataDescriptor> y_desc;  // [rows x h * dirs]: outputs, and inputs of layers > 0
  std::unique_ptr<TensorDescriptor> h_desc;   // [dirs x convs x h] for h and c (null pointers: zero states)
  std::vector<DeviceArray<float>> outputs;    // [layer] rows x h * dirs, before dropout
  std::vector<DeviceArray<float>> dropped;    // [layer] rows x h * dirs, after dropout (train, layers > 1)
  std::vector<DeviceBuffer> reserve;          // [layer] cuDNN reserve space
  std::vector<size_t> reserve_bytes;
  DeviceArray<float> dlayer[2];  // backward: gradient w.r.t. a lower layer's output (ping-pong)
  DeviceArray<float> dx_scratch;  // backward: layer 0's dx when the caller wants none
};

CudnnLstmContext::CudnnLstmContext() : state_(std::make_unique<CudnnLstmState>()) {}
CudnnLstmContext::~CudnnLstmContext() = default;
CudnnLstmContext::CudnnLstmContext(CudnnLstmContext&&) noexcept = default;
CudnnLstmContext& CudnnLstmContext::operator=(CudnnLstmContext&&) noexcept = default;

CudnnLstm::CudnnLstm(CudaContext& ctx, const DeviceParams& params, const std::string& prefix,
                     const LstmConfig& config)
    : ctx_(&ctx), config_(config), prefix_(prefix.empty() || prefix.back() == '.' ? prefix : prefix + ".") {
  const std::string who = "cuDNN lstm '" + prefix_ + "'";
  MMAN_CHECK(config.input > 0, "{}: input size must be positive (got {})", who, config.input);
  MMAN_CHECK(config.hidden > 0, "{}: hidden size must be positive (got {})", who, config.hidden);
  MMAN_CHECK(config.layers > 0, "{}: number of layers must be positive (got {})", who, config.layers);
  MMAN_CHECK(config.dropout >= 0.0f && config.dropout < 1.0f, "{}: dropout {} is outside [0, 1)", who,
             config.dropout);
  const int h = config.hidden, dirs = config.bidirectional ? 2 : 1;
  cudnnHandle_t handle = ctx.cudnn();

  plan_ = std::make_unique<CudnnLstmPlan>();
  MMAN_CUDNN_CHECK(cudnnSetDropoutDescriptor(plan_->dropout.get(), handle, 0.0f, nullptr, 0, 0));
  size_t max_weight_bytes = 0;
  for (int k = 0; k < config.layers; ++k) {
    LayerPlan layer;
    layer.input = k == 0 ? config.input : h * dirs;
    // One physical layer per descriptor (see the header): numLayers = 1, so cuDNN's dropout
    // never applies; projSize = hiddenSize disables the projection.
    MMAN_CUDNN_CHECK(cudnnSetRNNDescriptor_v8(
        layer.rnn.get(), CUDNN_RNN_ALGO_STANDARD, CUDNN_LSTM, CUDNN_RNN_DOUBLE_BIAS,
        dirs == 2 ? CUDNN_BIDIRECTIONAL : CUDNN_UNIDIRECTIONAL, CUDNN_LINEAR_INPUT, CUDNN_DATA_FLOAT, CUDNN_DATA_FLOAT,
        CUDNN_FMA_MATH, layer.input, h, h, 1, plan_->dropout.get(), CUDNN_RNN_PADDED_IO_DISABLED));
    MMAN_CUDNN_CHECK(cudnnGetRNNWeightSpaceSize(handle, layer.rnn.get(), &layer.weight_bytes));
    MMAN_CHECK(layer.weight_bytes % sizeof(float) == 0, "{}: cuDNN weight space of {} bytes is not whole floats", who,
               layer.weight_bytes);
    layer.weights.reserve(layer.weight_bytes);
    ctx.zero(layer.weights.data(), layer.weight_bytes);  // any alignment padding stays defined
    max_weight_bytes = std::max(max_weight_bytes, layer.weight_bytes);

    // Map every gate matrix and bias of both directions. cuDNN only computes addresses
    // here (the weight space is not read), relative to the pointer we pass.
    TensorDescriptor m_desc, b_desc;
    const char* base = static_cast<const char*>(layer.weights.data());
    for (int d = 0; d < dirs; ++d) {
      const std::string suffix = "_l" + std::to_string(k) + (d == 1 ? "_reverse" : "");
      const int64_t h4 = 4L * h;
      const int w_ih = find_param(params, prefix_ + "weight_ih" + suffix, {h4, layer.input}, who);
      const int w_hh = find_param(params, prefix_ + "weight_hh" + suffix, {h4, h}, who);
      const int b_ih = find_param(params, prefix_ + "bias_ih" + suffix, {h4}, who);
      const int b_hh = find_param(params, prefix_ + "bias_hh" + suffix, {h4}, who);
      for (int lin = 0; lin < 8; ++lin) {
        void* m_addr = nullptr;
        void* b_addr = nullptr;
        MMAN_CUDNN_CHECK(cudnnGetRNNWeightParams(handle, layer.rnn.get(), d, layer.weight_bytes, layer.weights.data(),
                                                 lin, m_desc.get(), &m_addr, b_desc.get(), &b_addr));
        // linLayerID 0-3: input GEMM, gates i, f, g, o; 4-7: recurrent GEMM, same order:
        // PyTorch's gate order, so gate g is rows g*h .. g*h+h-1 of weight_ih / weight_hh.
        const int gate = lin % 4;
        const bool input_gemm = lin < 4;
        const size_t cols = static_cast<size_t>(input_gemm ? layer.input : h);
        cudnnDataType_t m_type = CUDNN_DATA_FLOAT, b_type = CUDNN_DATA_FLOAT;
        const size_t m_count = descriptor_elements(m_desc.get(), &m_type);
        const size_t b_count = descriptor_elements(b_desc.get(), &b_type);
        MMAN_CHECK(m_addr != nullptr && b_addr != nullptr && m_type == CUDNN_DATA_FLOAT && b_type == CUDNN_DATA_FLOAT &&
                       m_count == static_cast<size_t>(h) * cols && b_count == static_cast<size_t>(h),
                   "{}: cuDNN reports an unexpected weight layout for layer {} direction {} linLayerID {} ({} and {} "
                   "elements, expected {} and {})",
                   who, k, d, lin, m_count, b_count, static_cast<size_t>(h) * cols, h);
        const ptrdiff_t m_off = static_cast<const char*>(m_addr) - base;
        const ptrdiff_t b_off = static_cast<const char*>(b_addr) - base;
        MMAN_CHECK(m_off >= 0 && b_off >= 0 && m_off % 4 == 0 && b_off % 4 == 0 &&
                       static_cast<size_t>(m_off) + m_count * 4 <= layer.weight_bytes &&
                       static_cast<size_t>(b_off) + b_count * 4 <= layer.weight_bytes,
                   "{}: cuDNN weight parameter outside its weight space (layer {}, linLayerID {})", who, k, lin);
        const int mat = input_gemm ? w_ih : w_hh, bias = input_gemm ? b_ih : b_hh;
        layer.segments.push_back({params.info(mat).offset + static_cast<size_t>(gate) * h * cols,
                                  static_cast<size_t>(m_off) / 4, m_count, mat});
        layer.segments.push_back({params.info(bias).offset + static_cast<size_t>(gate) * h,
                                  static_cast<size_t>(b_off) / 4, b_count, bias});
      }
    }
    // Merge runs contiguous on both sides (same tensor): with cuDNN's usual layout the four
    // gates of a matrix or bias vector become one copy.
    std::sort(layer.segments.begin(), layer.segments.end(),
              [](const Segment& a, const Segment& b) { return a.space < b.space; });
    std::vector<Segment> merged;
    for (const Segment& s : layer.segments) {
      MMAN_CHECK(merged.empty() || merged.back().space + merged.back().count <= s.space,
                 "{}: cuDNN weight parameters overlap in the weight space of layer {}", who, k);
      if (!merged.empty() && merged.back().param == s.param && merged.back().space + merged.back().count == s.space &&
          merged.back().arena + merged.back().count == s.arena)
        merged.back().count += s.count;
      else
        merged.push_back(s);
    }
    layer.segments = std::move(merged);
    plan_->layers.push_back(std::move(layer));
  }
  plan_->dweights.reserve(max_weight_bytes);
}

CudnnLstm::~CudnnLstm() = default;

size_t CudnnLstm::weight_space_floats(int layer) const {
  MMAN_CHECK(layer >= 0 && layer < config_.layers, "cuDNN lstm '{}': no layer {}", prefix_, layer);
  return plan_->layers[static_cast<size_t>(layer)].weight_bytes / sizeof(float);
}

int CudnnLstm::weight_segments(int layer) const {
  MMAN_CHECK(layer >= 0 && layer < config_.layers, "cuDNN lstm '{}': no layer {}", prefix_, layer);
  return static_cast<int>(plan_->layers[static_cast<size_t>(layer)].segments.size());
}

void CudnnLstm::weight_space_to_values(int layer, DeviceParams& params) const {
  MMAN_CHECK(layer >= 0 && layer < config_.layers, "cuDNN lstm '{}': no layer {}", prefix_, layer);
  const LayerPlan& lp = plan_->layers[static_cast<size_t>(layer)];
  const float* space = static_cast<const float*>(lp.weights.data());
  for (const Segment& s : lp.segments)
    ctx_->copy(params.values() + s.arena, space + s.space, s.count * sizeof(float));
}

void CudnnLstm::forward_device(const DeviceParams& params, const PackedLayout& layout, const float* d_x, float* d_y,
                               Mode mode, const DropoutKey& key, const std::vector<Dropout>& between,
                               CudnnLstmContext& lctx, bool keep_for_backward) {
  MMAN_NVTX_RANGE("lstm.forward");
  const std::string who = "cuDNN lstm '" + prefix_ + "'";
  check_packed_layout(layout, who);
  MMAN_CHECK(&params.context() == ctx_, "{}: the device parameters belong to another CUDA context", who);
  const int64_t rows = layout.rows();
  const int h = config_.hidden, dirs = config_.bidirectional ? 2 : 1, hd = h * dirs, layers = config_.layers;
  const int convs = layout.convs();
  CudnnLstmState& st = lctx.state();
  st.valid = false;
  if (rows == 0) {
    st.valid = true;
    st.keep = keep_for_backward;
    st.owner = this;
    st.lengths.clear();
    st.rows = 0;
    return;
  }
  MMAN_CHECK(d_x != nullptr && d_y != nullptr, "{}: forward given no input or output", who);
  MMAN_CHECK(between.empty() || static_cast<int>(between.size()) == layers - 1,
             "{}: {} inter-layer dropouts for {} layers", who, between.size(), layers);
  const bool drop = mode == Mode::Train && !between.empty();
  cudnnHandle_t handle = ctx_->cudnn();
  cudaStream_t stream = ctx_->stream();

  // The batch: lengths on the device for cuDNN's kernels, data descriptors with each
  // conversation's length in the packed (PackedSequence) layout.
  st.lengths = layout.lengths;
  st.rows = rows;
  st.dev_lengths.resize(static_cast<size_t>(convs));
  static_assert(sizeof(int) == sizeof(int32_t), "cuDNN sequence lengths are int32");
  ctx_->upload(st.dev_lengths.data(), st.lengths.data(), static_cast<size_t>(convs) * sizeof(int32_t));
  if (!st.x_desc) {
    st.x_desc = std::make_unique<RnnDataDescriptor>();
    st.y_desc = std::make_unique<RnnDataDescriptor>();
    st.h_desc = std::make_unique<TensorDescriptor>();
  }
  const int max_len = st.lengths[0];
  MMAN_CUDNN_CHECK(cudnnSetRNNDataDescriptor(st.x_desc->get(), CUDNN_DATA_FLOAT, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED,
                                             max_len, convs, config_.input, st.lengths.data(), nullptr));
  MMAN_CUDNN_CHECK(cudnnSetRNNDataDescriptor(st.y_desc->get(), CUDNN_DATA_FLOAT, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED,
                                             max_len, convs, hd, st.lengths.data(), nullptr));
  const int h_dims[3] = {dirs, convs, h};
  const int h_strides[3] = {convs * h, h, 1};
  MMAN_CUDNN_CHECK(cudnnSetTensorNdDescriptor(st.h_desc->get(), CUDNN_DATA_FLOAT, 3, h_dims, h_strides));

  st.mode = mode;
  st.key = key;
  if (drop)
    st.between = between;
  else
    st.between.clear();
  st.keep = keep_for_backward;
  st.owner = this;
  st.outputs.resize(static_cast<size_t>(layers));
  st.dropped.resize(static_cast<size_t>(layers));
  st.reserve.resize(static_cast<size_t>(layers));
  st.reserve_bytes.assign(static_cast<size_t>(layers), 0);
  const cudnnForwardMode_t fwd_mode = keep_for_backward ? CUDNN_FWD_MODE_TRAINING : CUDNN_FWD_MODE_INFERENCE;
  const size_t out_elems = static_cast<size_t>(rows) * static_cast<size_t>(hd);
  const kernels::DropoutView view = kernels::dropout_view(rows, hd, hd, hd, "cuDNN lstm dropout");

  for (int k = 0; k < layers; ++k) {
    LayerPlan& lp = plan_->layers[static_cast<size_t>(k)];
    const float* in = k == 0 ? d_x : (drop ? st.dropped[k - 1].data() : st.outputs[k - 1].data());
    cudnnRNNDataDescriptor_t x_desc = k == 0 ? st.x_desc->get() : st.y_desc->get();

    // This layer's weights from the arena (PyTorch layout) into cuDNN's weight space.
    float* space = static_cast<float*>(lp.weights.data());
    for (const Segment& s : lp.segments)
      ctx_->copy(space + s.space, params.values() + s.arena, s.count * sizeof(float));

    size_t work_bytes = 0, reserve_bytes = 0;
    MMAN_CUDNN_CHECK(cudnnGetRNNTempSpaceSizes(handle, lp.rnn.get(), fwd_mode, x_desc, &work_bytes,
                                               keep_for_backward ? &reserve_bytes : nullptr));
    plan_->workspace.reserve(work_bytes);
    DeviceBuffer& reserve = st.reserve[static_cast<size_t>(k)];
    if (keep_for_backward) reserve.reserve(reserve_bytes);
    st.reserve_bytes[static_cast<size_t>(k)] = keep_for_backward ? reserve_bytes : 0;

    DeviceArray<float>& out = st.outputs[static_cast<size_t>(k)];
    out.resize(out_elems);
    MMAN_CUDNN_CHECK(cudnnRNNForward(handle, lp.rnn.get(), fwd_mode, st.dev_lengths.data(), x_desc, in,
                                     st.y_desc->get(), out.data(), st.h_desc->get(), nullptr, nullptr,
                                     st.h_desc->get(), nullptr, nullptr, lp.weight_bytes, lp.weights.data(),
                                     work_bytes, plan_->workspace.data(), st.reserve_bytes[static_cast<size_t>(k)],
                                     keep_for_backward ? reserve.data() : nullptr));

    if (drop && k + 1 < layers) {  // the CPU Lstm's mask, element row * hd + col
      DeviceArray<float>& dropped = st.dropped[static_cast<size_t>(k)];
      dropped.resize(out_elems);
      dropout_forward_device(between[static_cast<size_t>(k)], out.data(), dropped.data(), view, Mode::Train, key,
                             stream);
    }
  }
  ctx_->copy(d_y, st.outputs[static_cast<size_t>(layers - 1)].data(), out_elems * sizeof(float));
  st.valid = true;
}

void CudnnLstm::backward(DeviceParams& params, const PackedLayout& layout, const float* d_x, const float* d_dy,
                         float* d_dx, CudnnLstmContext& lctx) {
  MMAN_NVTX_RANGE("lstm.backward");
  const std::string who = "cuDNN lstm '" + prefix_ + "'";
  CudnnLstmState& st = lctx.state();
  MMAN_CHECK(st.valid && st.owner == this && st.lengths == layout.lengths,
             "{}: backward called without a forward of this layer on the same batch", who);
  MMAN_CHECK(st.keep, "{}: backward after a forward that did not keep its state (keep_for_backward = false)", who);
  MMAN_CHECK(&params.context() == ctx_, "{}: the device parameters belong to another CUDA context", who);
  const int64_t rows = layout.rows();
  if (rows == 0) return;
  MMAN_CHECK(d_x != nullptr && d_dy != nullptr, "{}: backward given no input or output gradient", who);
  MMAN_CHECK(d_dx != d_x, "{}: dx must not alias x (x is still read while dx is written)", who);
  const int h = config_.hidden, dirs = config_.bidirectional ? 2 : 1, hd = h * dirs, layers = config_.layers;
  cudnnHandle_t handle = ctx_->cudnn();
  cublasHandle_t blas = ctx_->cublas();
  cudaStream_t stream = ctx_->stream();
  const size_t out_elems = static_cast<size_t>(rows) * static_cast<size_t>(hd);
  const kernels::DropoutView view = kernels::dropout_view(rows, hd, hd, hd, "cuDNN lstm dropout");

  const float* dout = d_dy;
  for (int k = layers - 1; k >= 0; --k) {
    LayerPlan& lp = plan_->layers[static_cast<size_t>(k)];
    const float* in = k == 0 ? d_x : (st.between.empty() ? st.outputs[k - 1].data() : st.dropped[k - 1].data());
    cudnnRNNDataDescriptor_t x_desc = k == 0 ? st.x_desc->get() : st.y_desc->get();
    float* din = nullptr;
    if (k > 0) {
      DeviceArray<float>& buf = st.dlayer[k % 2];  // the other one may hold dout
      buf.resize(out_elems);
      din = buf.data();
    } else if (d_dx != nullptr) {
      din = d_dx;
    } else {  // cuDNN always writes dx; backward weights must still follow backward data
      st.dx_scratch.resize(static_cast<size_t>(rows) * static_cast<size_t>(config_.input));
      din = st.dx_scratch.data();
    }

    size_t work_bytes = 0;
    MMAN_CUDNN_CHECK(cudnnGetRNNTempSpaceSizes(handle, lp.rnn.get(), CUDNN_FWD_MODE_TRAINING, x_desc, &work_bytes,
                                               nullptr));
    plan_->workspace.reserve(work_bytes);
    void* reserve = st.reserve[static_cast<size_t>(k)].data();
    const size_t reserve_bytes = st.reserve_bytes[static_cast<size_t>(k)];

    MMAN_CUDNN_CHECK(cudnnRNNBackwardData_v8(
        handle, lp.rnn.get(), st.dev_lengths.data(), st.y_desc->get(), st.outputs[static_cast<size_t>(k)].data(), dout,
        x_desc, din, st.h_desc->get(), nullptr, nullptr, nullptr, st.h_desc->get(), nullptr, nullptr, nullptr,
        lp.weight_bytes, lp.weights.data(), work_bytes, plan_->workspace.data(), reserve_bytes, reserve));

    bool any_trainable = false;
    for (const Segment& s : lp.segments) any_trainable = any_trainable || params.info(s.param).trainable;
    if (any_trainable) {
      // cuDNN 9 only accumulates (CUDNN_WGRAD_MODE_ADD), into its own layout: a zeroed
      // gradient space, then each segment added into the arena (frozen tensors skipped).
      ctx_->zero(plan_->dweights.data(), lp.weight_bytes);
      MMAN_CUDNN_CHECK(cudnnRNNBackwardWeights_v8(handle, lp.rnn.get(), CUDNN_WGRAD_MODE_ADD, st.dev_lengths.data(),
                                                  x_desc, in, st.h_desc->get(), nullptr, st.y_desc->get(),
                                                  st.outputs[static_cast<size_t>(k)].data(), lp.weight_bytes,
                                                  plan_->dweights.data(), work_bytes, plan_->workspace.data(),
                                                  reserve_bytes, reserve));
      const float* dspace = static_cast<const float*>(plan_->dweights.data());
      const float one = 1.0f;
      for (const Segment& s : lp.segments) {
        if (!params.info(s.param).trainable) continue;
        MMAN_CUBLAS_CHECK(cublasSaxpy(blas, static_cast<int>(s.count), &one, dspace + s.space, 1,
                                      params.grads() + s.arena, 1));
      }
    }

    if (k > 0) {
      if (!st.between.empty())  // through the dropout between layer k-1 and k: the same mask
        dropout_backward_device(st.between[static_cast<size_t>(k - 1)], din, din, view, Mode::Train, st.key, stream);
      dout = din;
    }
  }
}

}  // namespace mman::cuda
