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
#include "support/kernel_inputs.h"
#include "src/layers/lstm_cell.h"

namespace mman {
namespace {

using simt::EmulationOptions;
using simt::ScopedEmulation;

// The same bits, NaN included (a NaN input must give the CPU's NaN, not a number; a GPU
// would return its canonical NaN, so a native run should compare NaNs by isnan).
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

using test::LstmCellCase;
using test::LstmCellStep;

void check_step(const LstmCellCase& k, const std::vector<EmulationOptions>& schedules) {
  const LstmCellStep& s = k.s;
  SCOPED_TRACE(test::describe(s));
  const size_t nh = static_cast<size_t>(s.n) * s.h;
  for (const EmulationOptions& o : schedules) {
    SCOPED_TRACE(simt::describe(o));
    ScopedEmulation scope(o);
    std::vector<float> kg = k.gates_in, kc(nh, NAN), ktc(nh, NAN), kh(k.h_out.size(), -7.0f);
    kernels::lstm_cell_forward_launch(s.n, s.n_prev, s.h, k.bias.data(), kg.data(), k.c_prev.data(), kc.data(),
                                      ktc.data(), kh.data(), s.ldh, nullptr);
    EXPECT_TRUE(same_bits(kg, k.gates));
    EXPECT_TRUE(same_bits(kc, k.c));
    EXPECT_TRUE(same_bits(ktc, k.tanh_c));
    EXPECT_TRUE(same_bits(kh, k.h_out));  // the padding between rows of h_out untouched
    std::vector<float> kdc = k.dc_in, kdg(k.gates.size(), NAN);
    kernels::lstm_cell_backward_launch(s.n, s.n_prev, s.h, k.gates.data(), k.c_prev.data(), k.tanh_c.data(),
                                       k.dy.data(), s.ldy, k.dh_rec.data(), kdc.data(), kdg.data(), nullptr);
    EXPECT_TRUE(same_bits(kdc, k.dc));
    EXPECT_TRUE(same_bits(kdg, k.dgates));
  }
}

TEST(KernelsLstmCell, StepsAreBitIdenticalToTheCpuCell) {
  for (const LstmCellStep& s : test::lstm_cell_steps())
    check_step(test::lstm_cell_case(s, test::lstm_cell_random_gates(s)), simt::test_schedules());
}

// Pre-activations across every branch of the activations: the polynomial/exponential switch of
// tanh at 0.625, the +-80 clamp of exp, infinities, signed zeros, denormals and NaN.
TEST(KernelsLstmCell, ExtremePreActivationsAreBitIdentical) {
  check_step(test::lstm_cell_case(test::lstm_cell_extreme_step(), test::lstm_cell_extreme_gates()),
             {simt::test_schedules().back()});
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
