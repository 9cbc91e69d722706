#pragma once
#include <cstddef>
#include <cstdint>

namespace sparsellm {
// Per-row negative log-likelihood −log softmax(logits[r])[targets[r]] for rows r with targets[r] >= 0
// (rows with a negative target are skipped and get NaN). Log-sum-exp in float64 over float32 logits.
void CrossEntropyRows(const float* logits, size_t rows, size_t vocab, const int32_t* targets, double* nll);
}  // namespace sparsellm
