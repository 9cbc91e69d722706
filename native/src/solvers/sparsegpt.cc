#include "solvers/sparsegpt.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "common/async.h"
#include "common/blas.h"
#include "common/masks.h"

namespace sparsellm {

SparseGptResult SparseGptPrune(float* W, size_t rows, size_t cols, float* H, const SparseGptOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  EnableFlushToZero();
  ValidateSparsity(opt.sp, cols);
  if (opt.blocksize <= 0) throw std::invalid_argument("blocksize must be > 0");
  if (opt.sp.nm() && opt.blocksize % opt.sp.prunem != 0)
    throw std::invalid_argument("blocksize must be a multiple of prunem");
  if (opt.sp.nm() && opt.sp.prunem > 64) throw std::invalid_argument("prunem must be <= 64");
  if (!(opt.percdamp >= 0)) throw std::invalid_argument("percdamp must be >= 0");
  RequireFinite(W, rows * cols, "sparsegpt: W");
  RequireFinite(H, cols * cols, "sparsegpt: H");
  SparseGptResult res;
  const size_t n = cols;

  // --- dead inputs and damping (on a private copy unless accumulateDamping) ---
  std::vector<float> A(H, H + n * n);
  double meanDiag = 0;
  for (size_t i = 0; i < n; ++i) {
    if (A[i * n + i] == 0.0f) {
      A[i * n + i] = 1.0f;
      for (size_t r = 0; r < rows; ++r) W[r * cols + i] = 0.0f;
    }
    meanDiag += A[i * n + i];
  }
  meanDiag /= double(n);
  double damp = opt.percdamp * meanDiag;
  if (damp <= 0) damp = 0;

  // --- Hinv = upper Cholesky factor of (H + damp I)^-1, retrying with 10x damping ---
  std::vector<float> Hinv(n * n), Ad(n * n);
  for (;;) {
    Ad = A;
    for (size_t i = 0; i < n; ++i) Ad[i * n + i] = float(double(A[i * n + i]) + damp);
    int info = opt.doublePrecision ? UpperCholeskyOfInverse<double>(Ad.data(), n, Hinv.data())
                                   : UpperCholeskyOfInverse<float>(Ad.data(), n, Hinv.data());
    bool ok = info == 0;
    if (ok)
      for (size_t i = 0; i < n && ok; ++i) ok = std::isfinite(Hinv[i * n + i]) && Hinv[i * n + i] > 0;
    if (ok) ok = AllFinite(Hinv.data(), n * n);
    if (ok) break;
    if (res.retries >= opt.maxRetries)
      throw std::runtime_error("sparsegpt: Cholesky of the damped Hessian failed after " + std::to_string(res.retries) +
                               " retries (damping " + std::to_string(damp) + ")");
    ++res.retries;
    damp = damp > 0 ? damp * 10 : std::max(1e-8, 0.01 * std::fabs(meanDiag) + 1e-8);
  }
  res.damping = damp;
  const double tChol = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  static const bool profile = std::getenv("SPARSELLM_PROFILE") != nullptr;
  if (opt.accumulateDamping) std::copy(Ad.begin(), Ad.end(), H);

  const bool unstructured = !opt.sp.nm();
  if (unstructured && opt.sp.sparsity == 0) {  // nothing is pruned: err = 0, W stays exactly as is
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res;
  }

  const size_t B = size_t(opt.blocksize);
  const int M = opt.sp.prunem, N = opt.sp.prunen;
  // sub-block: the column-by-column part works on `sb` columns, then a small GEMM updates the
  // rest of the block (same arithmetic as the rank-1 updates, just reordered into BLAS-3).
  size_t sb = 32;
  if (!unstructured) sb = M >= 32 ? size_t(M) : size_t(32 / M) * M;
  std::vector<float> Err(rows * B), score(rows * B), scratch(rows * B);
  std::vector<uint8_t> mask(rows * B);
  std::vector<double> rowLoss(rows, 0.0);

  for (size_t i1 = 0; i1 < n; i1 += B) {
    const size_t i2 = std::min(i1 + B, n), nb = i2 - i1;
    std::fill(mask.begin(), mask.end(), 0);
    if (unstructured) {
      // one threshold shared by the whole block: sorted(W1² / diag(Hinv1)²)[int(numel*s)], prune <=
      for (size_t r = 0; r < rows; ++r)
        for (size_t j = 0; j < nb; ++j) {
          const float w = W[r * cols + i1 + j], d = Hinv[(i1 + j) * n + i1 + j];
          score[r * nb + j] = (w * w) / (d * d);
        }
      const size_t numel = rows * nb;
      const float thresh = KthSmallest(score.data(), numel, size_t(double(numel) * opt.sp.sparsity), scratch.data());
      for (size_t t = 0; t < numel; ++t) mask[t] = score[t] <= thresh;
    }
    for (size_t j1 = 0; j1 < nb; j1 += sb) {
      const size_t j2 = std::min(j1 + sb, nb);
      ParallelFor(rows, [&](size_t rb, size_t re) {
        float sc[64];
        for (size_t r = rb; r < re; ++r) {
          float* w = W + r * cols + i1;
          uint8_t* mk = &mask[r * nb];
          double loss = 0;
          for (size_t j = j1; j < j2; ++j) {
            if (!unstructured && j % size_t(M) == 0) {
              // N:M: rescore this group with the weights updated so far
              for (int t = 0; t < M; ++t) {
                const float d = Hinv[(i1 + j + t) * n + i1 + j + t];
                sc[t] = w[j + t] * w[j + t] / (d * d);
              }
              MarkSmallestInGroup(sc, M, N, mk + j);
            }
            const float* u = &Hinv[(i1 + j) * n + i1];  // row i of Hinv, from the block start
            const float d = u[j];
            const float wj = w[j], q = mk[j] ? 0.0f : wj;
            const float err = (wj - q) / d;
            loss += double(wj - q) * double(wj - q) / (double(d) * d);
            w[j] = q;
            Err[r * B + j] = err;
            if (err != 0.0f)
              for (size_t t = j + 1; t < j2; ++t) w[t] -= err * u[t];
          }
          rowLoss[r] += loss;
        }
      }, 32);
      if (j2 < nb)  // rest of the block: W[:, i1+j2:i2] -= Err[:, j1:j2] · Hinv[i1+j1:i1+j2, i1+j2:i2]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(nb - j2), int(j2 - j1), -1.0f,
                    &Err[j1], int(B), &Hinv[(i1 + j1) * n + i1 + j2], int(n), 1.0f, W + i1 + j2, int(cols));
    }
    if (i2 < n)  // lazy batch update: W[:, i2:] -= Err1 · Hinv[i1:i2, i2:]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(n - i2), int(nb), -1.0f, Err.data(),
                  int(B), &Hinv[i1 * n + i2], int(n), 1.0f, W + i2, int(cols));
  }
  if (profile)
    std::fprintf(stderr, "sparsegpt %zux%zu: hinv %.3fs total %.3fs\n", rows, cols, tChol,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  for (size_t r = 0; r < rows; ++r) res.loss += rowLoss[r];
  res.loss /= 2;
  for (size_t t = 0; t < rows * cols; ++t) res.pruned += W[t] == 0.0f;
  if (!AllFinite(W, rows * cols) || !std::isfinite(res.loss))
    throw std::runtime_error("sparsegpt: the result contains NaN or Inf (Hessian too ill-conditioned?)");
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace sparsellm
