#include "common/cross_entropy.h"

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

namespace sparsellm {

static void Rows(const float* logits, size_t r0, size_t r1, size_t vocab, const int32_t* targets, double* nll) {
  std::vector<float> shifted(vocab);
  for (size_t r = r0; r < r1; ++r) {
    if (targets[r] < 0) {
      nll[r] = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    const float* row = logits + r * vocab;
    float mx = row[0];
    for (size_t v = 1; v < vocab; ++v) mx = row[v] > mx ? row[v] : mx;
    // exp in float (vectorised), sum in double: stable because every term is in (0, 1].
    for (size_t v = 0; v < vocab; ++v) shifted[v] = std::exp(row[v] - mx);
    double sum = 0;
    for (size_t v = 0; v < vocab; ++v) sum += shifted[v];
    nll[r] = double(mx) + std::log(sum) - double(row[targets[r]]);
  }
}

// Runs rowFn(r0, r1) over [0, rows) split across the cores (one chunk per thread, at least 64 rows each).
template <typename F>
static void ParallelRows(size_t rows, F rowFn) {
  unsigned threads = std::max(1u, std::min(std::thread::hardware_concurrency(), unsigned(rows / 64 + 1)));
  std::vector<std::thread> pool;
  size_t per = (rows + threads - 1) / threads;
  for (unsigned t = 0; t < threads; ++t) {
    size_t r0 = t * per, r1 = std::min(rows, r0 + per);
    if (r0 >= r1) break;
    pool.emplace_back(rowFn, r0, r1);
  }
  for (auto& th : pool) th.join();
}

// log Σ_v exp(row[v]) = mx + log Σ exp(row[v] − mx): exp in float (vectorised), sum in double.
static double LogSumExp(const float* row, size_t vocab, float* scratch) {
  float mx = row[0];
  for (size_t v = 1; v < vocab; ++v) mx = row[v] > mx ? row[v] : mx;
  for (size_t v = 0; v < vocab; ++v) scratch[v] = std::exp(row[v] - mx);
  double sum = 0;
  for (size_t v = 0; v < vocab; ++v) sum += scratch[v];
  return double(mx) + std::log(sum);
}

void CrossEntropyRows(const float* logits, size_t rows, size_t vocab, const int32_t* targets, double* nll) {
  ParallelRows(rows, [=](size_t r0, size_t r1) { Rows(logits, r0, r1, vocab, targets, nll); });
}

void LogSoftmaxRows(float* logits, size_t rows, size_t vocab) {
  ParallelRows(rows, [=](size_t r0, size_t r1) {
    std::vector<float> scratch(vocab);
    for (size_t r = r0; r < r1; ++r) {
      float* row = logits + r * vocab;
      const double lse = LogSumExp(row, vocab, scratch.data());
      for (size_t v = 0; v < vocab; ++v) row[v] = float(double(row[v]) - lse);
    }
  });
}

void KlRows(const float* refLogProbs, const float* logits, size_t rows, size_t vocab, double* kl) {
  ParallelRows(rows, [=](size_t r0, size_t r1) {
    std::vector<float> scratch(vocab);
    for (size_t r = r0; r < r1; ++r) {
      const float* p = refLogProbs + r * vocab;
      const float* q = logits + r * vocab;
      const float lq = float(LogSumExp(q, vocab, scratch.data()));
      // KL(P ‖ Q) = Σ_v P_v (log P_v − log Q_v), log Q_v = q_v − lq; terms in float, sum in double
      for (size_t v = 0; v < vocab; ++v) scratch[v] = std::exp(p[v]) * (p[v] - (q[v] - lq));
      double sum = 0;
      for (size_t v = 0; v < vocab; ++v) sum += scratch[v];
      kl[r] = sum;
    }
  });
}

}  // namespace sparsellm
