// libFuzzer target: the checkpoint loader (read_checkpoint_meta, load_checkpoint with /train_state, on arbitrary bytes).
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mman::fuzz::checkpoint_input(data, size);
  return 0;
}
