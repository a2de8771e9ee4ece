// CudaModel: a Model on the GPU (device parameters, device network, loss and optimiser) and the shared device context.
#ifdef MMAN_WITH_CUDA
#include <mutex>
#include <utility>

#include "cuda/cross_entropy.cuh"
#include "mman/cuda/arena.h"
#include "mman/cuda/model.h"
#include "mman/error.h"
#include "mman/models/device_training.h"
#include "mman/models/network.h"
#include "mman/nvtx.h"
#include "src/gpu/device_batch.h"
#include "src/gpu/networks.h"

namespace mman::cuda {
namespace {

// The host ParamStore (Model::params_) keeps the layout, the initialisation (the CPU network's
// init, so both backends start from the same weights) and the checkpointable values; the
// device arenas mirror it (DeviceParams). Who holds the current values: see DeviceTraining.
class CudaModel final : public Model, public DeviceTraining {
 public:
  CudaModel(const ModelConfig& resolved, const DataShape& shape, std::shared_ptr<CudaContext> ctx)
      : Model(resolved), shape_(shape), ctx_(std::move(ctx)) {
    MMAN_CHECK(ctx_ != nullptr, "GPU model '{}': no CUDA context", resolved.name);
    // The CPU network validates the config against the data and registers the parameters.
    cpu_net_ = make_network(config_, shape_, params_, "", 0);
    dev_ = std::make_unique<DeviceParams>(*ctx_, params_);
    net_ = gpu::make_device_network(*ctx_, *dev_, config_, shape_, "", 0);
  }

  ~CudaModel() override = default;

  // ---- Model ----

  void init(Rng& rng) override { cpu_net_->init(params_, rng); }  // uploaded before the next use

  const Tensor& forward(const Batch& batch, Mode mode, const DropoutKey& key) override {
    MMAN_NVTX_RANGE("forward");
    if (!training_) refresh_device();
    run_forward(batch, mode, key);
    const int64_t rows = batch.rows();
    logits_.resize(rows, shape_.num_outputs);
    ctx_->download(logits_.data(), d_logits_.data(), d_logits_.bytes());
    int cols = 0;
    const float* att = net_->attention(&cols);
    has_attention_ = att != nullptr;
    if (has_attention_) {
      attention_.resize(rows, cols);
      ctx_->download(attention_.data(), att, static_cast<size_t>(rows) * cols * sizeof(float));
    }
    return logits_;
  }

  void backward(const Batch& batch, const Tensor& dlogits) override {
    MMAN_NVTX_RANGE("backward");
    const int64_t rows = batch.rows();
    MMAN_CHECK(rows == last_rows_ && dlogits.rows() == rows && dlogits.cols() == shape_.num_outputs,
               "GPU model '{}': backward got dlogits [{} x {}] for a forward of [{} x {}]", config_.name,
               dlogits.rows(), dlogits.cols(), last_rows_, shape_.num_outputs);
    // Model::backward accumulates into params().grads(): outside training the host gradients
    // are the model's, so they go up first and come back after.
    if (!training_) dev_->upload_grads(params_);
    d_dlogits_.resize(static_cast<size_t>(dlogits.size()));
    ctx_->upload(d_dlogits_.data(), dlogits.data(), d_dlogits_.bytes());
    net_->backward(*dev_, batch, dbatch_, d_dlogits_.data());
    if (!training_) dev_->download_grads(params_);
  }

  const Tensor* attention() const override { return has_attention_ ? &attention_ : nullptr; }
  std::vector<ModelConfig> subnet_configs() const override { return config_.subnets; }
  std::string backend() const override { return "cuda"; }
  std::unique_ptr<Model> make_like(const ModelConfig& config, const DataShape& shape) const override {
    return make_cuda_model(config, shape, ctx_);
  }
  DeviceTraining* device_training() override { return this; }

  // ---- DeviceTraining ----

  void begin_training(const AdamState& adam) override {
    refresh_device();
    dev_->upload_adam(adam);
    training_ = true;
  }
  void end_training() override {
    if (!training_) return;
    training_ = false;
    dev_->download_values(params_);
  }
  void download_values() override { dev_->download_values(params_); }
  void upload_values() override { dev_->upload_values(params_); }
  AdamState adam_state() const override { return dev_->download_adam(); }

  LossResult forward_backward(const Batch& batch, const DropoutKey& key, int heads) override {
    MMAN_CHECK(training_, "GPU model '{}': forward_backward outside begin_training/end_training", config_.name);
    dev_->zero_grads();
    {
      MMAN_NVTX_RANGE("forward");
      run_forward(batch, Mode::Train, key);
    }
    const int64_t rows = batch.rows();
    const int outputs = shape_.num_outputs;
    d_dlogits_.resize(static_cast<size_t>(rows) * outputs);
    loss_partial_.resize(static_cast<size_t>(kernels::cross_entropy_partial_count(rows)));
    loss_result_.resize(1);
    cross_entropy_device(d_logits_.data(), dbatch_.targets.data(), rows, outputs, heads, d_dlogits_.data(),
                         loss_partial_.data(), loss_result_.data(), ctx_->stream());
    {
      MMAN_NVTX_RANGE("backward");
      net_->backward(*dev_, batch, dbatch_, d_dlogits_.data());
    }
    kernels::CrossEntropyResult r;
    ctx_->download(&r, loss_result_.data(), sizeof(r));  // the step's one wait for the device
    kernels::check_cross_entropy_result(r, outputs, heads);
    LossResult out;
    out.loss = r.loss;
    out.labelled = r.labelled;
    out.scored = r.scored;
    out.correct = r.correct;
    return out;
  }

  double grad_norm() override { return dev_->grad_norm(); }
  void clip_grad_value(float clip_value) override { dev_->clip_grad_value(clip_value); }
  double clip_grad_norm(double max_norm) override { return dev_->clip_grad_norm(max_norm); }
  void adam_step(const AdamConfig& config) override {
    MMAN_NVTX_RANGE("optimizer");
    dev_->adam_step(config);
  }

  // GPU tests: compare the fused MMA kernels with the unfused path.
  void set_fused_mma(bool allowed) { net_->set_fused_mma(allowed); }

 private:
  // Outside training the host copy is the model's: values and trainable flags go up before use.
  void refresh_device() {
    dev_->upload_values(params_);
    dev_->sync_trainable(params_);
  }

  void run_forward(const Batch& batch, Mode mode, const DropoutKey& key) {
    dbatch_.upload(*ctx_, batch);
    d_logits_.resize(static_cast<size_t>(batch.rows()) * shape_.num_outputs);
    net_->forward(*dev_, batch, dbatch_, mode, key, d_logits_.data());
    last_rows_ = batch.rows();
  }

  DataShape shape_;
  std::shared_ptr<CudaContext> ctx_;
  std::unique_ptr<Network> cpu_net_;
  std::unique_ptr<DeviceParams> dev_;
  std::unique_ptr<gpu::DeviceNetwork> net_;
  gpu::DeviceBatch dbatch_;
  DeviceArray<float> d_logits_, d_dlogits_;
  DeviceArray<kernels::CrossEntropyPartial> loss_partial_;
  DeviceArray<kernels::CrossEntropyResult> loss_result_;
  Tensor logits_, attention_;
  bool has_attention_ = false;
  bool training_ = false;
  int64_t last_rows_ = -1;
};

}  // namespace

std::unique_ptr<Model> make_cuda_model(const ModelConfig& config, const DataShape& shape,
                                       std::shared_ptr<CudaContext> ctx) {
  return std::make_unique<CudaModel>(resolved_config(config), shape, std::move(ctx));
}

void set_fused_mma(Model& model, bool allowed) {
  auto* m = dynamic_cast<CudaModel*>(&model);
  MMAN_CHECK(m != nullptr, "set_fused_mma: model '{}' is on the {} backend, not a CUDA model", model.config().name,
             model.backend());
  m->set_fused_mma(allowed);
}

std::shared_ptr<CudaContext> shared_context() {
  // Held weakly: the context (stream, cuBLAS and cuDNN handles) goes when the last model using
  // it does, before the CUDA runtime shuts down at exit.
  static std::mutex mutex;
  static std::weak_ptr<CudaContext> shared;
  std::lock_guard<std::mutex> lock(mutex);
  std::shared_ptr<CudaContext> ctx = shared.lock();
  if (!ctx) {
    ctx = std::make_shared<CudaContext>(0);
    shared = ctx;
  }
  return ctx;
}

}  // namespace mman::cuda
#endif  // MMAN_WITH_CUDA
