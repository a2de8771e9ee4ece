// libFuzzer target: the dataset loader (read_dataset on arbitrary bytes, then protocols, splits, normaliser, batches).
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_targets.h"
#include "mman/threads.h"

// One thread: no OpenMP team to fork around (the HDF5 probe forks) or to spin between inputs.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mman::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mman::fuzz::dataset_input(data, size);
  return 0;
}
