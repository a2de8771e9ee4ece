// Test helper shared by the attention kernel tests: per-modality matrices to the kernels' row layout.
#pragma once
#include <cstring>
#include <vector>

#include "mman/tensor.h"

namespace mman::test {

// Concatenates per-modality [rows x d] tensors into [rows x M d] (row r holds modality 0's
// d values, then modality 1's, ...), the layout the attention kernels read and write.
inline std::vector<float> concat_modalities(const std::vector<Tensor>& ts, int64_t rows, int d) {
  const int mc = static_cast<int>(ts.size());
  std::vector<float> out(static_cast<size_t>(rows * mc * d));
  for (int64_t r = 0; r < rows; ++r)
    for (int m = 0; m < mc; ++m)
      std::memcpy(&out[static_cast<size_t>((r * mc + m) * d)], ts[static_cast<size_t>(m)].row(r),
                  static_cast<size_t>(d) * sizeof(float));
  return out;
}

}  // namespace mman::test
