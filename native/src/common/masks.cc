#include "common/masks.h"

#include <algorithm>
#include <cstring>

namespace sparsellm {
float KthSmallest(const float* values, size_t n, size_t k, float* scratch) {
  std::memcpy(scratch, values, n * sizeof(float));
  std::nth_element(scratch, scratch + k, scratch + n);
  return scratch[k];
}
}  // namespace sparsellm
