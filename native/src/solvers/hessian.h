#pragma once
#include <cstddef>

namespace sparsellm {
// Streaming Hessian of a linear layer, as in SparseGPT's add_batch:
//   H <- H * n_old / n_new + (2 / n_new) * X^T X,  with n counted in sequences.
// H is [cols x cols] row-major (symmetric; both triangles are written), X is [rows x cols] row-major.
void HessianAccumulate(float* H, const float* X, size_t rows, size_t cols, double nOld, double nNew);
}  // namespace sparsellm
