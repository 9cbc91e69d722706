#pragma once
#include <cstddef>
#include <cstdint>

namespace sparsellm {
// Per-row negative log-likelihood −log softmax(logits[r])[targets[r]] for rows r with targets[r] >= 0
// (rows with a negative target are skipped and get NaN). Log-sum-exp in float64 over float32 logits.
void CrossEntropyRows(const float* logits, size_t rows, size_t vocab, const int32_t* targets, double* nll);
// In place: logits[r] -> log softmax(logits[r]) (log-sum-exp in float64, stored back in float32).
void LogSoftmaxRows(float* logits, size_t rows, size_t vocab);
// Per-row KL(P_r ‖ softmax(logits[r])) = Σ_v P_v (log P_v − log Q_v), with refLogProbs[r] = log P_r (from
// LogSoftmaxRows) and Q_r = softmax(logits[r]); summed in float64.
void KlRows(const float* refLogProbs, const float* logits, size_t rows, size_t vocab, double* kl);
}  // namespace sparsellm
