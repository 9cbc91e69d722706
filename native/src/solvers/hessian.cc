#include "solvers/hessian.h"

#include "common/blas.h"

namespace sparsellm {

void HessianAccumulate(float* H, const float* X, size_t rows, size_t cols, double nOld, double nNew) {
  const int n = static_cast<int>(cols), k = static_cast<int>(rows);
  const float keep = nNew > 0 ? static_cast<float>(nOld / nNew) : 0.0f;
  const float scale = nNew > 0 ? static_cast<float>(2.0 / nNew) : 0.0f;
  // SYRK on the upper triangle (row-major): H = keep*H + scale * X^T X.
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, n, k, scale, X, n, keep, H, n);
  // Mirror to the lower triangle so callers see a full symmetric matrix.
  for (size_t i = 0; i < cols; ++i)
    for (size_t j = 0; j < i; ++j) H[i * cols + j] = H[j * cols + i];
}

}  // namespace sparsellm
