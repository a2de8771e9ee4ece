// Launchers of the LSTM cell's elementwise kernels (cuda/lstm_cell.cu): one time step forward and
// backward, bit-identical to the CPU cell, for an LSTM without cuDNN and to cross-check cuDNN.
#pragma once
#include <cuda_runtime_api.h>

namespace mman::cuda {

// As mman::detail::lstm_cell_forward (src/layers/lstm_cell.h), on device memory.
void lstm_cell_forward_device(int n, int n_prev, int h, const float* d_bias, float* d_gates, const float* d_c_prev,
                              float* d_c, float* d_tanh_c, float* d_h_out, int ldh, cudaStream_t stream);
// As mman::detail::lstm_cell_backward, on device memory.
void lstm_cell_backward_device(int n, int n_prev, int h, const float* d_gates, const float* d_c_prev,
                               const float* d_tanh_c, const float* d_dy, int ldy, const float* d_dh_rec, float* d_dc,
                               float* d_dgates, cudaStream_t stream);

}  // namespace mman::cuda
