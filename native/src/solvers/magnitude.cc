#include "solvers/magnitude.h"

#include <cmath>
#include <vector>

#include "common/masks.h"

namespace sparsellm {

size_t MagnitudePrune(float* W, size_t rows, size_t cols, const Sparsity& sp) {
  ValidateSparsity(sp, cols);
  const size_t numel = rows * cols;
  size_t pruned = 0;
  if (sp.nm()) {
    const int m = sp.prunem;
    std::vector<float> score(m);
    std::vector<uint8_t> mask(m);
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; c += m) {
        float* w = W + r * cols + c;
        for (int k = 0; k < m; ++k) score[k] = std::fabs(w[k]), mask[k] = 0;
        MarkSmallestInGroup(score.data(), m, sp.prunen, mask.data());
        for (int k = 0; k < m; ++k)
          if (mask[k]) w[k] = 0.0f, ++pruned;
      }
    return pruned;
  }
  if (sp.sparsity == 0 || numel == 0) return 0;
  std::vector<float> a(numel), scratch(numel);
  for (size_t i = 0; i < numel; ++i) a[i] = std::fabs(W[i]);
  const float thresh = KthSmallest(a.data(), numel, size_t(double(numel) * sp.sparsity), scratch.data());
  for (size_t i = 0; i < numel; ++i)
    if (a[i] <= thresh) W[i] = 0.0f, ++pruned;
  return pruned;
}

}  // namespace sparsellm
