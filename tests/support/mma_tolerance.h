// The MMA kernels' tolerance against the CPU layer, shared by their SIMT and native tests.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

namespace mman::test {

// The MMA kernels' tolerance (test_kernels_mma.cpp, test_kernels_attention.cpp and their native
// versions): both implementations err by at most about L eps times the magnitude on a path with
// reductions of total length L; softmax and the cosine normalisation pass errors on with factors
// of order one, hence a safety factor of 4. A NaN anywhere fails.
inline void expect_mma_close(const std::vector<float>& got, const float* ref, size_t n, double length,
                             const std::string& what) {
  ASSERT_EQ(got.size(), n) << what;
  double scale = 0.0, worst = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(static_cast<double>(ref[i])));
  for (size_t i = 0; i < n; ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    if (!(err <= worst)) worst = err, at = i;
  }
  const double tol = 4.0 * length * static_cast<double>(FLT_EPSILON) * scale;
  EXPECT_TRUE(worst <= tol) << what << ": max error " << worst << " at element " << at << " (kernel " << got[at]
                            << ", cpu " << ref[at] << "), tolerance " << tol;
}
inline void expect_mma_close(const std::vector<float>& got, const std::vector<float>& ref, double length,
                             const std::string& what) {
  expect_mma_close(got, ref.data(), ref.size(), length, what);
}

}  // namespace mman::test
