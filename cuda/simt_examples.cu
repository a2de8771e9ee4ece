// Device launchers for the SIMT layer's example kernels: the nvcc build of the same kernel source
// (cuda/kernels/reduce.cuh, softmax.cuh) that tests/test_simt.cpp runs on the CPU.
#include "cuda/kernels/reduce.cuh"
#include "cuda/kernels/softmax.cuh"
#include "cuda/simt_examples.cuh"

namespace mman::cuda {

int sum_device_scratch(long long n) { return kernels::sum_partial_count(n); }

void sum_device(const float* d_x, long long n, float* d_partial, float* d_out, cudaStream_t stream) {
  kernels::sum_launch(d_x, n, d_partial, d_out, kernels::SumAlgo::Shuffle, stream);
}

void softmax_rows_device(const float* d_x, float* d_y, int rows, int cols, cudaStream_t stream) {
  kernels::softmax_rows_launch(d_x, d_y, rows, cols, stream);
}

}  // namespace mman::cuda
