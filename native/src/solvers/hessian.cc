#include "solvers/hessian.h"

#include <algorithm>

#include "common/blas.h"

namespace sparsellm {

void HessianAccumulate(float* H, const float* X, size_t rows, size_t cols, double nOld, double nNew) {
  const int n = static_cast<int>(cols), k = static_cast<int>(rows);
  const float keep = nNew > 0 ? static_cast<float>(nOld / nNew) : 0.0f;
  const float scale = nNew > 0 ? static_cast<float>(2.0 / nNew) : 0.0f;
  // SYRK on the upper triangle (row-major): H = keep*H + scale * X^T X.
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, n, k, scale, X, n, keep, H, n);
  // Mirror to the lower triangle so callers see a full symmetric matrix. Tiled: a plain loop reads the
  // upper triangle column-wise (stride n), one cache miss per element once n² no longer fits in cache.
  const size_t TS = 64;
  for (size_t i0 = 0; i0 < cols; i0 += TS)
    for (size_t j0 = 0; j0 <= i0; j0 += TS) {
      const size_t i1 = std::min(cols, i0 + TS), j1 = std::min(cols, j0 + TS);
      for (size_t i = i0; i < i1; ++i) {
        float* dst = H + i * cols;
        const size_t je = std::min(j1, i);
        for (size_t j = j0; j < je; ++j) dst[j] = H[j * cols + i];
      }
    }
}

}  // namespace sparsellm
