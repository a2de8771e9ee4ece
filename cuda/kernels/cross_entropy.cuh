// Masked softmax cross-entropy on the GPU (mman/layers/loss.h): single multi-class head or
// binary4's one-vs-rest heads; loss, labelled and correct counts by deterministic block partials
// and one final block, then the gradient scaled by 1 / scored read on the device.
#pragma once
#include <cmath>
#include <cstdint>

#include "cuda/kernels/common.cuh"
#include "mman/error.h"
#include "mman/simt/simt.h"

namespace mman::kernels {

// One block's share of the sums.
struct CrossEntropyPartial {
  double loss = 0.0;
  long long labelled = 0;
  long long correct = 0;
  long long bad_row = 0;  // the first row with a target outside [-1, classes), or kNoBadRow
};

// What cross_entropy_launch leaves in device memory: mman::LossResult's fields, and the first
// row with an invalid target (the CPU throws for it; check_cross_entropy_result does here).
struct CrossEntropyResult {
  double loss_sum = 0.0;   // sum over the scored predictions
  double loss = 0.0;       // its mean (0 when nothing is scored)
  long long labelled = 0;  // rows with a target >= 0
  long long scored = 0;    // labelled * heads
  long long correct = 0;   // argmax predictions equal to their target among `scored`
  long long bad_row = -1;  // first row with a target outside [-1, classes); -1: none
  int bad_target = 0;      // its target
  float grad_scale = 0.0f;  // float(1 / scored), the gradient's factor
};

constexpr long long kNoBadRow = 0x7FFFFFFFFFFFFFFFLL;
constexpr int kLossThreads = 256;

// Cross-entropy of one softmax group of width n at `target`, as the CPU's group_loss (the same
// operations in the same order): the first maximum mx, sum = sum_j exp(z_j - mx) in double,
// loss = log(sum) - (z_t - mx), g (when not null) = (exp(z_j - mx) / sum - onehot) * scale
// rounded to float; *correct = (argmax == target). Offsets from the maximum come first because
// mx + log(sum) rounds to mx once |mx| passes ~1e16 (a double's ulp there exceeds log(sum) <=
// log(n)): ties at 1e20 would give loss 0 and probabilities 1 instead of log(k) and 1/k.
MMAN_HOST_DEVICE double cross_entropy_group(const float* z, int n, int target, float scale, float* g, bool* correct) {
  int arg = 0;
  for (int j = 1; j < n; ++j)
    if (z[j] > z[arg]) arg = j;
  const double mx = z[arg];
  double sum = 0.0;
  for (int j = 0; j < n; ++j) sum += exp(static_cast<double>(z[j]) - mx);
  if (g != nullptr)
    for (int j = 0; j < n; ++j) {
      const double p = exp(static_cast<double>(z[j]) - mx) / sum;
      g[j] = static_cast<float>((p - (j == target ? 1.0 : 0.0)) * scale);
    }
  *correct = arg == target;
  return log(sum) - (static_cast<double>(z[target]) - mx);
}

// Loss (with g == nullptr: none) of one row of `cols` logits with target t >= 0; counts the
// correct predictions. heads > 1: head k owns columns 2k, 2k + 1 and its label is (t == k).
MMAN_HOST_DEVICE double cross_entropy_row(const float* z, int cols, int heads, int t, float scale, float* g,
                                          long long* correct) {
  bool ok = false;
  if (heads == 1) {
    const double loss = cross_entropy_group(z, cols, t, scale, g, &ok);
    *correct += ok;
    return loss;
  }
  double loss = 0.0;
  for (int k = 0; k < heads; ++k) {
    loss += cross_entropy_group(z + 2 * k, 2, t == k ? 1 : 0, scale, g != nullptr ? g + 2 * k : nullptr, &ok);
    *correct += ok;
  }
  return loss;
}

// Block b sums rows [256 b, 256 b + 256): one row per thread, then tree reductions.
MMAN_KERNEL void cross_entropy_partials_kernel(const float* logits, const int32_t* targets, int rows, int cols,
                                               int heads, CrossEntropyPartial* partial) {
  MMAN_SHARED(double, dscratch, kLossThreads);
  MMAN_SHARED(long long, iscratch, kLossThreads);
  const int classes = heads == 1 ? cols : heads;
  const long long r = static_cast<long long>(blockIdx.x) * kLossThreads + threadIdx.x;
  double loss = 0.0;
  long long labelled = 0, correct = 0, bad = kNoBadRow;
  if (r < rows) {
    const int t = targets[r];
    if (t < -1 || t >= classes) {
      bad = r;
    } else if (t >= 0) {
      labelled = 1;
      loss = cross_entropy_row(logits + r * cols, cols, heads, t, 0.0f, nullptr, &correct);
    }
  }
  loss = block_tree_sum<kLossThreads>(loss, dscratch);
  labelled = block_tree_sum<kLossThreads>(labelled, iscratch);
  correct = block_tree_sum<kLossThreads>(correct, iscratch);
  bad = block_tree_reduce<kLossThreads>(bad, MinOp{}, iscratch);
  if (threadIdx.x == 0) {
    CrossEntropyPartial p;
    p.loss = loss;
    p.labelled = labelled;
    p.correct = correct;
    p.bad_row = bad;
    partial[blockIdx.x] = p;
  }
}

// One block: the partials in a fixed order, then the means and the gradient's factor.
MMAN_KERNEL void cross_entropy_finish_kernel(const CrossEntropyPartial* partial, int count, const int32_t* targets,
                                             int heads, CrossEntropyResult* result) {
  MMAN_SHARED(double, dscratch, kLossThreads);
  MMAN_SHARED(long long, iscratch, kLossThreads);
  double loss = 0.0;
  long long labelled = 0, correct = 0, bad = kNoBadRow;
  for (int i = static_cast<int>(threadIdx.x); i < count; i += kLossThreads) {
    const CrossEntropyPartial p = partial[i];
    loss += p.loss;
    labelled += p.labelled;
    correct += p.correct;
    bad = p.bad_row < bad ? p.bad_row : bad;
  }
  loss = block_tree_sum<kLossThreads>(loss, dscratch);
  labelled = block_tree_sum<kLossThreads>(labelled, iscratch);
  correct = block_tree_sum<kLossThreads>(correct, iscratch);
  bad = block_tree_reduce<kLossThreads>(bad, MinOp{}, iscratch);
  if (threadIdx.x != 0) return;
  CrossEntropyResult res;
  res.loss_sum = loss;
  res.labelled = labelled;
  res.scored = labelled * heads;
  res.correct = correct;
  res.loss = res.scored > 0 ? loss / static_cast<double>(res.scored) : 0.0;
  res.grad_scale = res.scored > 0 ? static_cast<float>(1.0 / static_cast<double>(res.scored)) : 0.0f;
  res.bad_row = bad == kNoBadRow ? -1 : bad;
  res.bad_target = bad == kNoBadRow ? 0 : targets[bad];
  *result = res;
}

// dlogits row r = dloss / dlogits: (softmax - onehot) / scored on labelled rows, zero on masked
// rows (and everywhere when a target is invalid, where the CPU computes nothing).
MMAN_KERNEL void cross_entropy_grad_kernel(const float* logits, const int32_t* targets, int rows, int cols, int heads,
                                           const CrossEntropyResult* result, float* dlogits) {
  const long long r = static_cast<long long>(blockIdx.x) * kLossThreads + threadIdx.x;
  if (r >= rows) return;
  float* g = dlogits + r * cols;
  const int t = targets[r];
  if (t < 0 || result->bad_row >= 0 || result->scored == 0) {
    for (int j = 0; j < cols; ++j) g[j] = 0.0f;
    return;
  }
  long long unused = 0;
  cross_entropy_row(logits + r * cols, cols, heads, t, result->grad_scale, g, &unused);
}

// Partials (scratch) cross_entropy_launch needs for `rows` rows.
inline int cross_entropy_partial_count(long long rows) {
  return static_cast<int>(rows > 0 ? ceil_div(rows, kLossThreads) : 1);
}

// mman::masked_cross_entropy on the device: logits [rows x cols], targets [rows] (-1: masked),
// heads as there. *result gets the loss and counts; dlogits [rows x cols] (when not null) the
// gradient. partial: cross_entropy_partial_count(rows) elements of scratch. Targets are device
// data, so an invalid one is reported in result->bad_row: call check_cross_entropy_result once
// the result is on the host.
inline void cross_entropy_launch(const float* logits, const int32_t* targets, long long rows, int cols, int heads,
                                 float* dlogits, CrossEntropyPartial* partial, CrossEntropyResult* result,
                                 simt::Stream stream) {
  MMAN_CHECK(heads >= 1, "cross-entropy: {} heads", heads);
  MMAN_CHECK(heads == 1 || cols == 2 * heads, "cross-entropy: {} binary heads need {} logits per row, got {}", heads,
             2 * heads, cols);
  MMAN_CHECK(cols >= 1, "cross-entropy: logits have no columns");
  MMAN_CHECK(rows >= 0 && rows <= (1LL << 30), "cross-entropy: row count {} is outside [0, 2^30]", rows);
  const int n = static_cast<int>(rows), blocks = cross_entropy_partial_count(rows);
  if (rows > 0)
    MMAN_LAUNCH((simt::LaunchConfig{dim3(static_cast<unsigned>(blocks)), dim3(kLossThreads), 0, stream}),
                cross_entropy_partials_kernel, logits, targets, n, cols, heads, partial);
  MMAN_LAUNCH((simt::LaunchConfig{dim3(1), dim3(kLossThreads), 0, stream}), cross_entropy_finish_kernel,
              static_cast<const CrossEntropyPartial*>(partial), rows > 0 ? blocks : 0, targets, heads, result);
  if (dlogits != nullptr && rows > 0)
    MMAN_LAUNCH((simt::LaunchConfig{dim3(static_cast<unsigned>(blocks)), dim3(kLossThreads), 0, stream}),
                cross_entropy_grad_kernel, logits, targets, n, cols, heads,
                static_cast<const CrossEntropyResult*>(result), dlogits);
}

// Throws the CPU's error for an invalid target recorded in a result copied to the host.
inline void check_cross_entropy_result(const CrossEntropyResult& result, int cols, int heads) {
  const int classes = heads == 1 ? cols : heads;
  MMAN_CHECK(result.bad_row < 0, "cross-entropy: row {} has target {} outside [-1, {})", result.bad_row,
             result.bad_target, classes);
}

}  // namespace mman::kernels
