// libFuzzer target: the dataset loader (read_dataset on arbitrary bytes, then protocols, splits, normaliser, batches).
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mman::fuzz::dataset_input(data, size);
  return 0;
}
