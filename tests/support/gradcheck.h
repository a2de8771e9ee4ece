// Finite-difference gradient checking shared by the layer and model tests.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace mman::test {

// Compares an analytic gradient with central differences of a scalar loss, computed
// in double where the loss allows. `loss` is re-evaluated after perturbing x[i] by
// +-eps; x is restored. Checks every index when x is small, otherwise `max_checks`
// indices spread evenly. Tolerance: |a - n| <= atol + rtol * max(|a|, |n|).
inline void expect_gradient_matches(std::vector<float>& x, const std::vector<float>& analytic,
                                    const std::function<double()>& loss, const char* what, float eps = 1e-2f,
                                    double rtol = 2e-2, double atol = 2e-4, size_t max_checks = 64) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  const size_t n = x.size();
  const size_t stride = n <= max_checks ? 1 : n / max_checks;
  int failures = 0;
  for (size_t i = 0; i < n && failures < 5; i += stride) {
    const float saved = x[i];
    x[i] = saved + eps;
    const double up = loss();
    x[i] = saved - eps;
    const double down = loss();
    x[i] = saved;
    const double numeric = (up - down) / (2.0 * eps);
    const double a = analytic[i];
    const double tol = atol + rtol * std::max(std::fabs(a), std::fabs(numeric));
    if (!(std::fabs(a - numeric) <= tol)) {
      ++failures;
      ADD_FAILURE() << what << "[" << i << "]: analytic " << a << " vs numeric " << numeric;
    }
  }
}

}  // namespace mman::test
