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

void CrossEntropyRows(const float* logits, size_t rows, size_t vocab, const int32_t* targets, double* nll) {
  unsigned threads = std::max(1u, std::min(std::thread::hardware_concurrency(), unsigned(rows / 64 + 1)));
  std::vector<std::thread> pool;
  size_t per = (rows + threads - 1) / threads;
  for (unsigned t = 0; t < threads; ++t) {
    size_t r0 = t * per, r1 = std::min(rows, r0 + per);
    if (r0 >= r1) break;
    pool.emplace_back(Rows, logits, r0, r1, vocab, targets, nll);
  }
  for (auto& th : pool) th.join();
}

}  // namespace sparsellm
