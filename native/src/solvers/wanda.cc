#include "solvers/wanda.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "common/masks.h"

namespace sparsellm {

size_t WandaPrune(float* W, size_t rows, size_t cols, const float* scaler, const Sparsity& sp) {
  ValidateSparsity(sp, cols);
  std::vector<float> norm(cols);
  for (size_t j = 0; j < cols; ++j) {
    if (!(scaler[j] >= 0) || !std::isfinite(scaler[j])) throw std::invalid_argument("wanda: scaler must be finite and >= 0");
    norm[j] = std::sqrt(scaler[j]);
  }
  size_t pruned = 0;
  std::vector<float> score(cols);
  std::vector<uint32_t> idx(cols);
  const size_t k = sp.nm() ? 0 : size_t(double(cols) * sp.sparsity);
  std::vector<uint8_t> mask(cols);
  for (size_t r = 0; r < rows; ++r) {
    float* w = W + r * cols;
    for (size_t j = 0; j < cols; ++j) score[j] = std::fabs(w[j]) * norm[j], mask[j] = 0;
    if (sp.nm()) {
      for (size_t c = 0; c < cols; c += sp.prunem) MarkSmallestInGroup(&score[c], sp.prunem, sp.prunen, &mask[c]);
    } else if (k > 0) {
      // the first k entries of a stable ascending sort == k smallest under (score, index) order
      std::iota(idx.begin(), idx.end(), 0u);
      auto less = [&](uint32_t a, uint32_t b) { return score[a] < score[b] || (score[a] == score[b] && a < b); };
      std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), less);
      for (size_t t = 0; t < k; ++t) mask[idx[t]] = 1;
    }
    for (size_t j = 0; j < cols; ++j)
      if (mask[j]) w[j] = 0.0f, ++pruned;
  }
  return pruned;
}

void WandaScalerAccumulate(float* scaler, const float* X, size_t rows, size_t cols, double nOld, double nNew) {
  std::vector<double> acc(cols, 0.0);
  for (size_t r = 0; r < rows; ++r) {
    const float* x = X + r * cols;
    for (size_t j = 0; j < cols; ++j) acc[j] += double(x[j]) * x[j];
  }
  const double keep = nNew > 0 ? nOld / nNew : 0.0;
  for (size_t j = 0; j < cols; ++j) scaler[j] = float(scaler[j] * keep + (nNew > 0 ? acc[j] / nNew : 0.0));
}

}  // namespace sparsellm
