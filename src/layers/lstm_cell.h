// Fused elementwise LSTM cell kernels (one time step, forward and backward) for the CPU backend.
#pragma once

namespace mman::detail {

// Forward of one time step for n rows (the conversations active at this step).
// gates: [n x 4h] pre-activations x W_ih^T + h_prev W_hh^T (biases NOT yet added), laid
//   out i | f | g | o; overwritten with the activated gates sigmoid(i), sigmoid(f),
//   tanh(g), sigmoid(o).
// bias: [4h] b_ih + b_hh.
// c_prev: [n_prev x h] cell state of the previous step of rows 0..n_prev-1; rows
//   n_prev..n-1 start a conversation (c_prev = 0). May be null when n_prev == 0.
// c, tanh_c: [n x h] outputs c_t and tanh(c_t) (kept for backward).
// h_out: n rows of h_t with row stride ldh.
void lstm_cell_forward(int n, int n_prev, int h, const float* bias, float* gates, const float* c_prev,
                       float* c, float* tanh_c, float* h_out, int ldh);

// Backward of one time step for n rows (same row order as the forward).
// gates, c_prev (n_prev rows), tanh_c: what lstm_cell_forward kept.
// dy: n rows (stride ldy) of the loss gradient w.r.t. h_t from above (the layer output).
// dh_rec: [n x h] gradient w.r.t. h_t through the recurrence (from the next step), zero
//   for rows without a next step.
// dc: [n x h] on entry the gradient w.r.t. c_t through the recurrence (f_{t+1} * dc_{t+1},
//   zero for rows without a next step); on exit f_t * dc_t, the same for step t-1.
// dgates: [n x 4h] gradient w.r.t. the gate pre-activations (i, f, g, o).
void lstm_cell_backward(int n, int n_prev, int h, const float* gates, const float* c_prev,
                        const float* tanh_c, const float* dy, int ldy, const float* dh_rec, float* dc,
                        float* dgates);

// The activations the cell uses, exposed for their accuracy test: sig[i] = sigmoid(x[i]),
// th[i] = tanh(x[i]). Finite for every finite input; NaN propagates.
void lstm_activations(const float* x, int n, float* sig, float* th);

}  // namespace mman::detail
