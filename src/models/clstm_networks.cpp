// The cLSTM networks: uni-modal and early fusion (one block), and clstm_mma (MMA + block).
#include <algorithm>

#include "mman/error.h"
#include "mman/layers/mma.h"
#include "mman/models/clstm.h"
#include "src/models/networks.h"

namespace mman {

bool Network::frozen(const ParamStore& params) const { return prefix_frozen(params.infos(), prefix_); }

void check_batch_inputs(const Batch& batch, const ModalityInputs& in, const std::string& who) {
  const int64_t rows = batch.rows();
  for (size_t i = 0; i < in.index.size(); ++i) {
    const int m = in.index[i];
    MMAN_CHECK(m < static_cast<int>(batch.features.size()), "{}: the batch has no features for modality '{}'", who,
               in.names[i]);
    const Tensor& f = batch.features[static_cast<size_t>(m)];
    MMAN_CHECK(f.rows() == rows && f.cols() == in.dims[i],
               "{}: batch features of modality '{}' are [{} x {}], expected [{} x {}]", who, in.names[i], f.rows(),
               f.cols(), rows, in.dims[i]);
  }
}

ClstmBlockConfig block_config(const ModelConfig& c, int input, int outputs) {
  ClstmBlockConfig b;
  b.input = input;
  b.hidden = c.hidden;
  b.layers = c.lstm_layers;
  b.lstm_dropout = c.lstm_dropout;
  b.bidirectional = c.bidirectional;
  b.fc = c.fc;
  b.dropout = c.dropout;
  b.outputs = outputs;
  return b;
}

MmaConfig mma_config(const ModelConfig& c, const ModalityInputs& in) {
  MmaConfig m;
  m.modalities = in.names;
  m.dims = in.dims;
  m.d_model = c.d_model;
  m.dropout = c.mma_dropout;
  m.score = c.score;
  m.skip = c.skip;
  return m;
}

namespace {

int total(const std::vector<int>& dims) {
  int s = 0;
  for (int d : dims) s += d;
  return s;
}

// One cLSTM block on one modality, or on the concatenation of several (early fusion).
class ClstmNetwork : public Network {
 public:
  ClstmNetwork(const ModelConfig& c, const ModalityInputs& in, int outputs, ParamStore& params,
               const std::string& prefix, uint64_t slot_base)
      : in_(in), who_("model '" + c.name + "'"),
        block_(params, prefix, block_config(c, total(in.dims), outputs), slot_base) {
    prefix_ = prefix;
  }

  void init(ParamStore& params, Rng& rng) const override { block_.init(params, rng); }

  void forward(const ParamStore& params, const Batch& batch, Mode mode, const DropoutKey& key,
               Tensor& logits) override {
    check_batch_inputs(batch, in_, who_);
    block_.forward(params, batch.layout, input(batch), logits, mode, key, ctx_);
  }

  void backward(ParamStore& params, const Batch& batch, const Tensor& dlogits) override {
    check_batch_inputs(batch, in_, who_);
    // The input is data: no gradient wanted, so the LSTM skips its input-gradient GEMMs.
    // concat_ still holds the forward's concatenation (backward follows forward on the
    // same batch), so it is not rebuilt.
    const float* x = in_.index.size() == 1 ? batch.features[static_cast<size_t>(in_.index[0])].data() : concat_.data();
    MMAN_CHECK(in_.index.size() == 1 || concat_.rows() == batch.rows(),
               "{}: backward on a batch of {} rows after a forward of {}", who_, batch.rows(), concat_.rows());
    block_.backward(params, batch.layout, x, dlogits, nullptr, ctx_);
  }

 private:
  // The single modality's matrix as is; several are concatenated row by row into
  // concat_ (rows x sum d_m). The copy is a few hundred KB per batch, small next to the
  // LSTM's first GEMM that reads it, and keeps the LSTM's contiguous-input contract.
  const float* input(const Batch& batch) {
    if (in_.index.size() == 1) return batch.features[static_cast<size_t>(in_.index[0])].data();
    const int64_t rows = batch.rows();
    const int width = total(in_.dims);
    concat_.resize(rows, width);
    int col = 0;
    for (size_t i = 0; i < in_.index.size(); ++i) {
      const Tensor& f = batch.features[static_cast<size_t>(in_.index[i])];
      const int d = in_.dims[i];
      for (int64_t r = 0; r < rows; ++r) std::copy_n(f.row(r), d, concat_.row(r) + col);
      col += d;
    }
    return concat_.data();
  }

  ModalityInputs in_;
  std::string who_;
  ClstmBlock block_;
  ClstmBlockContext ctx_;
  Tensor concat_;
};

// clstm_mma: MMA ("mma.") over the modalities, then a cLSTM block ("clstm.").
class MmaNetwork : public Network {
 public:
  MmaNetwork(const ModelConfig& c, const ModalityInputs& in, int outputs, ParamStore& params,
             const std::string& prefix, uint64_t slot_base)
      : in_(in), who_("model '" + c.name + "'") {
    prefix_ = prefix;
    mma_ = Mma(params, prefix + "mma.", mma_config(c, in), slot_base);
    block_ = ClstmBlock(params, prefix + "clstm.", block_config(c, mma_.output_dim(), outputs),
                        slot_base + kMmaSlots);
  }

  void init(ParamStore& params, Rng& rng) const override {
    mma_.init(params, rng);
    block_.init(params, rng);
  }

  void forward(const ParamStore& params, const Batch& batch, Mode mode, const DropoutKey& key,
               Tensor& logits) override {
    check_batch_inputs(batch, in_, who_);
    gather(batch);
    mma_.forward(params, batch.rows(), x_.data(), mma_out_, mode, key, mma_ctx_);
    block_.forward(params, batch.layout, mma_out_.data(), logits, mode, key, block_ctx_);
  }

  void backward(ParamStore& params, const Batch& batch, const Tensor& dlogits) override {
    check_batch_inputs(batch, in_, who_);
    gather(batch);
    dmma_.resize(mma_out_.rows(), mma_out_.cols());
    block_.backward(params, batch.layout, mma_out_.data(), dlogits, dmma_.data(), block_ctx_);
    mma_.backward(params, batch.rows(), x_.data(), dmma_, nullptr, mma_ctx_);
  }

  const Tensor* attention() const override { return &mma_ctx_.alpha; }

 private:
  void gather(const Batch& batch) {
    x_.resize(in_.index.size());  // same size every call: no allocation after the first
    for (size_t i = 0; i < in_.index.size(); ++i) x_[i] = batch.features[static_cast<size_t>(in_.index[i])].data();
  }

  ModalityInputs in_;
  std::string who_;
  Mma mma_;
  ClstmBlock block_;
  MmaContext mma_ctx_;
  ClstmBlockContext block_ctx_;
  Tensor mma_out_, dmma_;
  std::vector<const float*> x_;
};

}  // namespace

std::unique_ptr<Network> make_clstm_network(const ModelConfig& c, const ModalityInputs& in, int outputs,
                                            ParamStore& params, const std::string& prefix, uint64_t slot_base) {
  return std::make_unique<ClstmNetwork>(c, in, outputs, params, prefix, slot_base);
}

std::unique_ptr<Network> make_mma_network(const ModelConfig& c, const ModalityInputs& in, int outputs,
                                          ParamStore& params, const std::string& prefix, uint64_t slot_base) {
  return std::make_unique<MmaNetwork>(c, in, outputs, params, prefix, slot_base);
}

}  // namespace mman
