#include "common/masks.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace sparsellm {
float KthSmallest(const float* values, size_t n, size_t k, float* scratch) {
  std::memcpy(scratch, values, n * sizeof(float));
  std::nth_element(scratch, scratch + k, scratch + n);
  return scratch[k];
}

float KthSmallestNonNegative(const float* values, size_t n, size_t k, float* scratch) {
  if (n < 4096) return KthSmallest(values, n, k, scratch);
  static_assert(sizeof(float) == sizeof(uint32_t), "32-bit float");
  auto bits = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
  };
  const float* src = values;
  size_t m = n;
  uint32_t hist[4096];
  for (int shift : {20, 8, 0}) {
    std::memset(hist, 0, sizeof(hist));
    uint32_t bad = 0;
    for (size_t i = 0; i < m; ++i) {
      const uint32_t u = bits(src[i]);
      bad |= u > 0x7f800000u;  // sign bit set or NaN
      ++hist[(u >> shift) & 0xfffu];
    }
    if (bad) return KthSmallest(values, n, k, scratch);
    uint32_t b = 0;
    for (; k >= hist[b]; ++b) k -= hist[b];
    size_t c = 0;
    for (size_t i = 0; i < m; ++i)  // in place from the 2nd level on (c <= i)
      if (((bits(src[i]) >> shift) & 0xfffu) == b) scratch[c++] = src[i];
    src = scratch;
    m = c;
    if (m <= 256) break;
  }
  std::nth_element(scratch, scratch + k, scratch + m);
  return scratch[k];
}

}  // namespace sparsellm
