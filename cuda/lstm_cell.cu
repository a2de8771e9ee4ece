// Device launchers of the LSTM cell: the nvcc build of cuda/kernels/lstm_cell.cuh, which
// tests/test_kernels_lstm_cell.cpp runs on the CPU.
#include "cuda/kernels/lstm_cell.cuh"
#include "cuda/lstm_cell.cuh"

namespace mman::cuda {

void lstm_cell_forward_device(int n, int n_prev, int h, const float* d_bias, float* d_gates, const float* d_c_prev,
                              float* d_c, float* d_tanh_c, float* d_h_out, int ldh, cudaStream_t stream) {
  kernels::lstm_cell_forward_launch(n, n_prev, h, d_bias, d_gates, d_c_prev, d_c, d_tanh_c, d_h_out, ldh, stream);
}

void lstm_cell_backward_device(int n, int n_prev, int h, const float* d_gates, const float* d_c_prev,
                               const float* d_tanh_c, const float* d_dy, int ldy, const float* d_dh_rec, float* d_dc,
                               float* d_dgates, cudaStream_t stream) {
  kernels::lstm_cell_backward_launch(n, n_prev, h, d_gates, d_c_prev, d_tanh_c, d_dy, ldy, d_dh_rec, d_dc, d_dgates,
                                     stream);
}

}  // namespace mman::cuda
