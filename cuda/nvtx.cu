// NVTX push/pop behind mman::NvtxRange (include/mman/nvtx.h); NVTX 3 is header-only.
#include <nvtx3/nvToolsExt.h>

#include "mman/nvtx.h"

namespace mman::detail {

void nvtx_push(const char* name) noexcept { nvtxRangePushA(name); }
void nvtx_pop() noexcept { nvtxRangePop(); }

}  // namespace mman::detail
