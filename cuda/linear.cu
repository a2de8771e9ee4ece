// Linear on cuBLAS: bias broadcast and column sums as GEMMs with the context's ones vector, then the products.
#include <climits>

#include "cuda/gemm.cuh"
#include "cuda/linear.cuh"
#include "mman/error.h"

namespace mman::cuda {
namespace {

void check_shapes(const char* who, int in, int out, int64_t ldx, int64_t rows, int64_t ldy) {
  MMAN_CHECK(in > 0 && out > 0, "{}: sizes must be positive (in {}, out {})", who, in, out);
  MMAN_CHECK(rows >= 0 && rows <= INT_MAX && ldx >= in && ldx <= INT_MAX && ldy >= out && ldy <= INT_MAX,
             "{}: bad shape: {} rows, input stride {} (in {}), output stride {} (out {})", who, rows, ldx, in, ldy,
             out);
}

}  // namespace

void linear_forward_device(const CudaContext& ctx, const float* d_w, const float* d_b, int in, int out,
                           const float* d_x, int64_t ldx, int64_t rows, float* d_y, int64_t ldy) {
  check_shapes("linear_forward_device", in, out, ldx, rows, ldy);
  if (rows == 0) return;
  const int n = static_cast<int>(rows);
  // y = ones [rows x 1] * b [1 x out]: every element is 1 * b_j, exact, as the CPU's copy.
  gemm_device(ctx, false, false, n, out, 1, 1.0f, ctx.ones(static_cast<size_t>(n)), 1, d_b, out, 0.0f, d_y,
              static_cast<int>(ldy));
  gemm_device(ctx, false, true, n, out, in, 1.0f, d_x, static_cast<int>(ldx), d_w, in, 1.0f, d_y,
              static_cast<int>(ldy));
}

void linear_backward_device(const CudaContext& ctx, const float* d_w, float* d_dw, float* d_db, int in, int out,
                            const float* d_x, int64_t ldx, int64_t rows, const float* d_dy, int64_t lddy, float* d_dx,
                            int64_t lddx, bool accumulate_dx) {
  check_shapes("linear_backward_device", in, out, ldx, rows, lddy);
  MMAN_CHECK(d_dx == nullptr || (lddx >= in && lddx <= INT_MAX), "linear_backward_device: dx stride {} < in {}", lddx,
             in);
  if (rows == 0) return;
  const int n = static_cast<int>(rows);
  if (d_dw != nullptr)  // dW [out x in] += dy^T [out x rows] x [rows x in]
    gemm_device(ctx, true, false, out, in, n, 1.0f, d_dy, static_cast<int>(lddy), d_x, static_cast<int>(ldx), 1.0f,
                d_dw, in);
  if (d_db != nullptr)  // db [out x 1] += dy^T [out x rows] ones [rows x 1]
    gemm_device(ctx, true, false, out, 1, n, 1.0f, d_dy, static_cast<int>(lddy), ctx.ones(static_cast<size_t>(n)), 1,
                1.0f, d_db, 1);
  if (d_dx != nullptr)  // dx [rows x in] = dy [rows x out] W [out x in]
    gemm_device(ctx, false, false, n, in, out, 1.0f, d_dy, static_cast<int>(lddy), d_w, in,
                accumulate_dx ? 1.0f : 0.0f, d_dx, static_cast<int>(lddx));
}

}  // namespace mman::cuda
