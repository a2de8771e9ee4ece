// PackedLayout: how the utterances of a batch of conversations are laid out in memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mman {

// Conversations of a batch, sorted by non-increasing length, stored time-major without
// padding (PyTorch's PackedSequence): step t holds the rows
// [step_offsets[t], step_offsets[t] + batch_sizes[t]), one per conversation that is
// still running at t, in batch order. Row-wise layers (Linear, MMA, loss) see a plain
// [rows x d] matrix; the LSTM processes step t as one GEMM over batch_sizes[t] rows,
// so no compute is spent on padding.
struct PackedLayout {
  std::vector<int> lengths;            // [B] utterances per conversation, non-increasing
  std::vector<int> batch_sizes;        // [T] conversations active at step t, non-increasing
  std::vector<int64_t> step_offsets;   // [T + 1] first row of step t; back() == rows()

  int convs() const { return static_cast<int>(lengths.size()); }
  int steps() const { return static_cast<int>(batch_sizes.size()); }
  int64_t rows() const { return step_offsets.empty() ? 0 : step_offsets.back(); }
  // Row of conversation b (batch order) at step t; requires t < lengths[b].
  int64_t row(int b, int t) const { return step_offsets[static_cast<size_t>(t)] + b; }

  // Builds the layout from lengths that must already be non-increasing and positive.
  static PackedLayout from_lengths(std::vector<int> lengths);
};

}  // namespace mman
