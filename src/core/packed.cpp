// PackedLayout construction from sorted conversation lengths.
#include "mman/packed.h"

#include "mman/error.h"

namespace mman {

PackedLayout PackedLayout::from_lengths(std::vector<int> lengths) {
  PackedLayout p;
  for (size_t b = 0; b < lengths.size(); ++b) {
    MMAN_CHECK(lengths[b] > 0, "packed layout: conversation {} has length {}", b, lengths[b]);
    MMAN_CHECK(b == 0 || lengths[b] <= lengths[b - 1],
               "packed layout: lengths must be non-increasing (position {})", b);
  }
  p.lengths = std::move(lengths);
  const int steps = p.lengths.empty() ? 0 : p.lengths.front();
  p.batch_sizes.assign(static_cast<size_t>(steps), 0);
  for (int len : p.lengths)
    for (int t = 0; t < len; ++t) ++p.batch_sizes[static_cast<size_t>(t)];
  p.step_offsets.assign(static_cast<size_t>(steps) + 1, 0);
  for (int t = 0; t < steps; ++t)
    p.step_offsets[static_cast<size_t>(t) + 1] = p.step_offsets[static_cast<size_t>(t)] + p.batch_sizes[static_cast<size_t>(t)];
  return p;
}

}  // namespace mman
