// `mman_exp info`: what this build is and what it can run on.
#include <fmt/format.h>

#include "mman/cuda_info.h"
#include "mman/threads.h"
#include "src/cli/commands.h"

namespace mman::cli {

int cmd_info() {
  fmt::print("mman {}\n", MMAN_VERSION);
  fmt::print("build: {} (C++{}, {})\n", MMAN_BUILD_TYPE, __cplusplus / 100 % 100, __VERSION__);
  fmt::print("threads: {}\n", num_threads());
  fmt::print("blas: {}\n", blas_description());
  fmt::print("cuda: {}\n", describe_cuda(query_cuda()));
  return 0;
}

}  // namespace mman::cli
