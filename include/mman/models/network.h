// Network: a model's computation on a ParamStore under a name prefix, so composites can nest them.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mman/data/batch.h"
#include "mman/layers/mode.h"
#include "mman/models/model.h"
#include "mman/params.h"
#include "mman/rng.h"
#include "mman/tensor.h"

namespace mman {

// A Model owns one Network built on its own ParamStore with an empty prefix; clstm_lf
// and mman build their sub-networks on the same store under "subnets.<name>.", which is
// how a sub-network trained alone in stage 1 copies in name by name. Each network owns
// its forward contexts (one forward/backward in flight at a time).
//
// Dropout slots (see DropoutKey): a network built at `slot_base` uses
//   clstm_speech/visual/text/ef: its cLSTM block at slot_base (kClstmBlockSlots slots);
//   clstm_mma: the MMA at slot_base (kMmaSlots), its cLSTM block at slot_base + kMmaSlots;
//   clstm_lf, mman: sub-network i at slot_base + (i + 1) * kSubnetSlots, the top cLSTM
//     block of clstm_lf at slot_base (mman's fusion Linear has no dropout).
// Models are built at slot 0, so at most kMaxSubnets sub-networks fit in the
// kDropoutStreamsPerStep streams of a step.
inline constexpr uint64_t kSubnetSlots = 64;
inline constexpr int kMaxSubnets = static_cast<int>(kDropoutStreamsPerStep / kSubnetSlots) - 1;

class Network {
 public:
  virtual ~Network() = default;
  virtual void init(ParamStore& params, Rng& rng) const = 0;
  // logits resized to [batch.rows() x shape.num_outputs].
  virtual void forward(const ParamStore& params, const Batch& batch, Mode mode, const DropoutKey& key,
                       Tensor& logits) = 0;
  // After forward() on the same batch: parameter gradients accumulate (+=).
  virtual void backward(ParamStore& params, const Batch& batch, const Tensor& dlogits) = 0;
  // Model::precompute_frozen() on this network's parameters (fusion networks; others: 0).
  virtual int64_t precompute_frozen(const ParamStore& params, const Dataset& ds, const LabelProtocol& protocol,
                                    const std::vector<int>& conversations, const std::function<bool()>& stop) {
    (void)params, (void)ds, (void)protocol, (void)conversations, (void)stop;
    return 0;
  }
  // MMA weights of the last forward ([rows x M*M]), or the first MMA sub-network's.
  virtual const Tensor* attention() const { return nullptr; }
  // True when none of this network's parameters is trainable (a frozen sub-network).
  bool frozen(const ParamStore& params) const;

 protected:
  std::string prefix_;  // every parameter of this network starts with it
};

// Builds a network for a resolved config (resolved_config()) on `params` under `prefix`.
// Throws mman::Error for an unknown type, a modality the data lacks, or bad sizes.
std::unique_ptr<Network> make_network(const ModelConfig& resolved, const DataShape& shape, ParamStore& params,
                                      const std::string& prefix, uint64_t slot_base);

}  // namespace mman
