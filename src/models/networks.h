// Constructors of the concrete networks, used by the factory (src/models/factory.cpp).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "mman/layers/mma.h"
#include "mman/models/clstm.h"
#include "mman/models/network.h"

namespace mman {

// Input widths and data positions of a network's modalities, checked by the factory.
struct ModalityInputs {
  std::vector<std::string> names;
  std::vector<int> index;  // into Batch::features / DataShape
  std::vector<int> dims;
};

// Resolves a config's modality names against the data (names, positions, widths); throws
// mman::Error naming `who` for a modality listed twice or one the data lacks.
ModalityInputs modality_inputs(const ModelConfig& c, const DataShape& shape, const std::string& who);

// Checks that the batch carries every feature matrix a network reads, with the widths
// it was built for and one row per packed utterance.
void check_batch_inputs(const Batch& batch, const ModalityInputs& in, const std::string& who);

// The cLSTM block settings of a model config (hidden, layers, dropouts, fc) for a given
// input width and output count.
ClstmBlockConfig block_config(const ModelConfig& c, int input, int outputs);

// The MMA settings of a clstm_mma config (d_model, dropout, score, skip) over its modalities.
MmaConfig mma_config(const ModelConfig& c, const ModalityInputs& in);

// clstm_speech / clstm_visual / clstm_text / clstm_ef: a cLSTM block on one modality or on
// the concatenation of several.
std::unique_ptr<Network> make_clstm_network(const ModelConfig& c, const ModalityInputs& in, int outputs,
                                            ParamStore& params, const std::string& prefix, uint64_t slot_base);
// clstm_mma: MMA over the modalities, then a cLSTM block.
std::unique_ptr<Network> make_mma_network(const ModelConfig& c, const ModalityInputs& in, int outputs,
                                          ParamStore& params, const std::string& prefix, uint64_t slot_base);
// clstm_lf / mman: sub-networks already built under prefix + "subnets.<name>.", fused by
// a cLSTM block (clstm_lf) or a Linear layer (mman) over their softmax outputs.
std::unique_ptr<Network> make_fusion_network(const ModelConfig& c, std::vector<std::unique_ptr<Network>> subnets,
                                             const DataShape& shape, ParamStore& params, const std::string& prefix,
                                             uint64_t slot_base);

}  // namespace mman
