// Masked cross-entropy with numerically stable log-sum-exp and its gradient.
#include "mman/layers/loss.h"

#include <cmath>

#include "mman/error.h"

namespace mman {

namespace {
// Cross-entropy of one softmax group of width n at `target`; writes softmax - onehot
// (times `scale`) into g when given; reports whether the argmax equals target.
double group_loss(const float* z, int n, int target, float scale, float* g, bool* correct) {
  int arg = 0;
  for (int j = 1; j < n; ++j)
    if (z[j] > z[arg]) arg = j;
  const double mx = z[arg];
  double sum = 0.0;
  for (int j = 0; j < n; ++j) sum += std::exp(static_cast<double>(z[j]) - mx);
  // Offsets from the maximum first: mx + log(sum) would lose log(sum) entirely once |mx|
  // passes ~1e16 (a double's ulp exceeds 1), giving loss 0 and probabilities of 1.
  if (g != nullptr)
    for (int j = 0; j < n; ++j) {
      const double p = std::exp(static_cast<double>(z[j]) - mx) / sum;
      g[j] = static_cast<float>((p - (j == target ? 1.0 : 0.0)) * scale);
    }
  *correct = arg == target;
  return std::log(sum) - (static_cast<double>(z[target]) - mx);
}
}  // namespace

LossResult masked_cross_entropy(const Tensor& logits, const int32_t* targets, int heads, Tensor* dlogits) {
  const int64_t rows = logits.rows();
  const int cols = static_cast<int>(logits.cols());
  MMAN_CHECK(heads >= 1, "cross-entropy: {} heads", heads);
  MMAN_CHECK(heads == 1 || cols == 2 * heads, "cross-entropy: {} binary heads need {} logits per row, got {}", heads,
             2 * heads, cols);
  MMAN_CHECK(cols >= 1, "cross-entropy: logits have no columns");
  const int classes = heads == 1 ? cols : heads;
  LossResult res;
  for (int64_t r = 0; r < rows; ++r) {
    const int t = targets[r];
    MMAN_CHECK(t >= -1 && t < classes, "cross-entropy: row {} has target {} outside [-1, {})", r, t, classes);
    if (t >= 0) ++res.labelled;
  }
  res.scored = res.labelled * heads;
  if (dlogits != nullptr) {
    dlogits->resize(rows, cols);
    dlogits->zero();
  }
  if (res.scored == 0) return res;
  const float scale = static_cast<float>(1.0 / static_cast<double>(res.scored));
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const int t = targets[r];
    if (t < 0) continue;
    const float* z = logits.row(r);
    float* g = dlogits != nullptr ? dlogits->row(r) : nullptr;
    bool ok = false;
    if (heads == 1) {
      total += group_loss(z, cols, t, scale, g, &ok);
      res.correct += ok;
    } else {
      for (int k = 0; k < heads; ++k) {
        total += group_loss(z + 2 * k, 2, t == k ? 1 : 0, scale, g != nullptr ? g + 2 * k : nullptr, &ok);
        res.correct += ok;
      }
    }
  }
  res.loss = total / static_cast<double>(res.scored);
  return res;
}

}  // namespace mman
