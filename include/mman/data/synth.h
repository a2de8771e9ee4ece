// Synthetic IEMOCAP-shaped data (`mman_exp synth --preset iemocap`).
#pragma once
#include <cstdint>
#include <string>

#include "mman/data/dataset.h"

namespace mman {

// Generates the `iemocap` preset: Table 1 counts per raw class and split, 120/31
// conversations, dims audio 100 / visual 512 / text 100, sessions 1-4 train and 5 test,
// two speakers per conversation; signal partial per modality, partly cross-modal and
// contextual. The same seed gives an identical dataset. The generative model is
// documented in src/data/synth.cpp and the README.
Dataset synth_dataset(const std::string& preset, uint64_t seed);

}  // namespace mman
