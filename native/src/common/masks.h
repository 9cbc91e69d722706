// Mask selection rules shared by magnitude, Wanda and SparseGPT.
#pragma once
#include <cstddef>
#include <cstdint>

namespace sparsellm {

// Marks (mask[i] = 1) the `n` smallest of score[0..m) in a group of m, ties broken by lower index
// (the order a stable sort gives). Entries already marked stay marked.
inline void MarkSmallestInGroup(const float* score, int m, int n, uint8_t* mask) {
  for (int i = 0; i < m; ++i) {
    int rank = 0;
    for (int k = 0; k < m; ++k) rank += (score[k] < score[i]) || (score[k] == score[i] && k < i);
    if (rank < n) mask[i] = 1;
  }
}

// k-th smallest (0-based) of values[0..n) — the `sorted[k]` of the reference; `scratch` holds n floats.
float KthSmallest(const float* values, size_t n, size_t k, float* scratch);

// Same result as KthSmallest for values that are all >= +0 (non-negative floats order like their bit
// patterns): a radix select (three 12-bit histogram passes over a shrinking candidate set, then
// nth_element on the few left) instead of nth_element over all n. Falls back to KthSmallest when a
// value has its sign bit set or is NaN. `scratch` holds n floats.
float KthSmallestNonNegative(const float* values, size_t n, size_t k, float* scratch);

}  // namespace sparsellm
