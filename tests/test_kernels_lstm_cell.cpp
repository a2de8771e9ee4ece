// LSTM cell kernels (cuda/kernels/lstm_cell.cuh) on the CPU through the SIMT layer: one step
// forward and backward equal the CPU cell (src/layers/lstm_cell.h) bit for bit, for ragged
// batches (rows that start a conversation), strided h and dy, and extreme pre-activations.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cuda/kernels/lstm_cell.cuh"
#include "mman/error.h"
#include "mman/rng.h"
#include "mman/simt/simt.h"
#include "src/layers/lstm_cell.h"

namespace mman {
namespace {

using simt::EmulationOptions;
using simt::ScopedEmulation;

std::vector<float> random_values(size_t n, double scale, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.uniform(-scale, scale));
  return v;
}

// The same bits, NaN included (a NaN input must give the CPU's NaN, not a number; a GPU
// would return its canonical NaN, so a native run should compare NaNs by isnan).
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Step {
  int n, n_prev, h, ldh, ldy;
};

void check_step(const Step& s, std::vector<float> gates_in, const std::vector<EmulationOptions>& schedules) {
  SCOPED_TRACE("n " + std::to_string(s.n) + ", n_prev " + std::to_string(s.n_prev) + ", h " + std::to_string(s.h) +
               ", ldh " + std::to_string(s.ldh));
  const size_t nh = static_cast<size_t>(s.n) * s.h;
  const std::vector<float> bias = random_values(4 * static_cast<size_t>(s.h), 0.5, 1);
  const std::vector<float> c_prev = random_values(static_cast<size_t>(s.n_prev) * s.h, 2.0, 2);
  const std::vector<float> dy = random_values(static_cast<size_t>(s.n) * s.ldy, 1.0, 3);
  const std::vector<float> dh_rec = random_values(nh, 1.0, 4);
  const std::vector<float> dc_in = random_values(nh, 1.0, 5);
  // CPU cell.
  std::vector<float> gates = gates_in, c(nh), tanh_c(nh), h_out(static_cast<size_t>(s.n) * s.ldh, -7.0f);
  detail::lstm_cell_forward(s.n, s.n_prev, s.h, bias.data(), gates.data(), c_prev.data(), c.data(), tanh_c.data(),
                            h_out.data(), s.ldh);
  std::vector<float> dc = dc_in, dgates(gates.size());
  detail::lstm_cell_backward(s.n, s.n_prev, s.h, gates.data(), c_prev.data(), tanh_c.data(), dy.data(), s.ldy,
                             dh_rec.data(), dc.data(), dgates.data());
  for (const EmulationOptions& o : schedules) {
    SCOPED_TRACE(simt::describe(o));
    ScopedEmulation scope(o);
    std::vector<float> kg = gates_in, kc(nh, NAN), ktc(nh, NAN), kh(h_out.size(), -7.0f);
    kernels::lstm_cell_forward_launch(s.n, s.n_prev, s.h, bias.data(), kg.data(), c_prev.data(), kc.data(), ktc.data(),
                                      kh.data(), s.ldh, nullptr);
    EXPECT_TRUE(same_bits(kg, gates));
    EXPECT_TRUE(same_bits(kc, c));
    EXPECT_TRUE(same_bits(ktc, tanh_c));
    EXPECT_TRUE(same_bits(kh, h_out));  // the padding between rows of h_out untouched
    std::vector<float> kdc = dc_in, kdg(gates.size(), NAN);
    kernels::lstm_cell_backward_launch(s.n, s.n_prev, s.h, gates.data(), c_prev.data(), tanh_c.data(), dy.data(), s.ldy,
                                       dh_rec.data(), kdc.data(), kdg.data(), nullptr);
    EXPECT_TRUE(same_bits(kdc, dc));
    EXPECT_TRUE(same_bits(kdg, dgates));
  }
}

TEST(KernelsLstmCell, StepsAreBitIdenticalToTheCpuCell) {
  const std::vector<Step> steps = {{1, 1, 1, 1, 1}, {1, 0, 37, 37, 37}, {7, 4, 5, 5, 5}, {33, 33, 37, 74, 40},
                                   {10, 6, 300, 600, 300}};
  for (const Step& s : steps)
    check_step(s, random_values(static_cast<size_t>(s.n) * 4 * s.h, 4.0, 10 + static_cast<uint64_t>(s.h)),
               simt::test_schedules());
}

// Pre-activations across every branch of the activations: the polynomial/exponential switch of
// tanh at 0.625, the +-80 clamp of exp, infinities, signed zeros, denormals and NaN.
TEST(KernelsLstmCell, ExtremePreActivationsAreBitIdentical) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> special = {0.0f,   -0.0f,  0.624f, 0.625f, -0.626f, 79.9f, 80.0f, 81.0f, -85.0f, 1e30f,
                                      -1e30f, inf,    -inf,   1e-40f, -1e-40f, 3.0f,  -3.0f, 40.0f, -40.0f, nan};
  const int h = 23, n = 9;
  std::vector<float> gates(static_cast<size_t>(n) * 4 * h);
  for (size_t i = 0; i < gates.size(); ++i) gates[i] = special[(i * 7) % special.size()];
  check_step({n, 5, h, h, h}, gates, {simt::test_schedules().back()});
}

TEST(KernelsLstmCell, BadShapesAreErrorsAndEmptyStepsNoOps) {
  EXPECT_THROW(kernels::lstm_cell_forward_launch(3, 4, 5, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 5,
                                                 nullptr),
               Error);  // n_prev > n
  EXPECT_THROW(kernels::lstm_cell_forward_launch(3, 0, 5, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4,
                                                 nullptr),
               Error);  // ldh < h
  EXPECT_THROW(kernels::lstm_cell_backward_launch(3, 0, 0, nullptr, nullptr, nullptr, nullptr, 5, nullptr, nullptr,
                                                  nullptr, nullptr),
               Error);  // h = 0
  kernels::lstm_cell_forward_launch(0, 0, 5, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 5, nullptr);
}

}  // namespace
}  // namespace mman
