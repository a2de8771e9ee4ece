// Tensor: an owning, row-major float32 matrix whose storage is reused across resizes.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace mman {

// Everything in mman is a matrix: [rows x cols] with rows = utterances (packed rows of a
// batch) and cols = features. resize() keeps the allocation when it shrinks, so a
// training loop that resizes to the same or smaller shapes allocates nothing after
// the first batch. Contents after a growing resize are zero; after a shrinking resize
// they are whatever was there.
class Tensor {
 public:
  Tensor() = default;
  Tensor(int64_t rows, int64_t cols) { resize(rows, cols); }

  void resize(int64_t rows, int64_t cols) {
    rows_ = rows;
    cols_ = cols;
    if (static_cast<size_t>(rows * cols) > buf_.size()) buf_.resize(static_cast<size_t>(rows * cols));
  }
  void zero() { std::fill(buf_.begin(), buf_.begin() + size(), 0.0f); }

  float* data() { return buf_.data(); }
  const float* data() const { return buf_.data(); }
  float* row(int64_t r) { return buf_.data() + r * cols_; }
  const float* row(int64_t r) const { return buf_.data() + r * cols_; }
  float& at(int64_t r, int64_t c) { return buf_[static_cast<size_t>(r * cols_ + c)]; }
  float at(int64_t r, int64_t c) const { return buf_[static_cast<size_t>(r * cols_ + c)]; }

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t size() const { return rows_ * cols_; }
  bool empty() const { return size() == 0; }

 private:
  std::vector<float> buf_;
  int64_t rows_ = 0;
  int64_t cols_ = 0;
};

}  // namespace mman
