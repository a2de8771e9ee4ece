// libFuzzer target: the experiment config parser (parse_experiment on arbitrary text, --set overrides included).
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mman::fuzz::config_input(data, size);
  return 0;
}
