// Masked softmax cross-entropy (single multi-class head or binary4's one-vs-rest heads).
#pragma once
#include <cstdint>

#include "mman/tensor.h"

namespace mman {

struct LossResult {
  double loss = 0.0;     // mean over the scored predictions (0 when there are none)
  int64_t labelled = 0;  // rows with a target >= 0
  int64_t scored = 0;    // predictions in the mean: labelled * heads
  int64_t correct = 0;   // argmax predictions equal to their target, among `scored`
};

// logits [rows x cols]; targets [rows], -1 = context only (no loss, no score).
//
// heads == 1: cols classes, targets in [0, cols); loss = mean over labelled rows of
//   -log softmax(logits)[target].
// heads > 1 (binary4): cols == 2 * heads; head k owns columns 2k ("not k") and 2k+1
//   ("k"); a row with target t in [0, heads) has label (t == k) for head k, so every
//   labelled row scores on every head. loss = mean over labelled rows and heads of the
//   two-way cross-entropy, i.e. sum / (labelled * heads); `correct` counts (row, head)
//   pairs whose argmax is right (ties go to the lower column, "not k").
//
// Log-sum-exp in double with the row maximum subtracted: finite for logits of any
// finite magnitude. When dlogits is not null it is resized to [rows x cols] and
// overwritten with dloss/dlogits (zero on masked rows). A target out of range throws.
LossResult masked_cross_entropy(const Tensor& logits, const int32_t* targets, int heads, Tensor* dlogits);

}  // namespace mman
