// SparseGPT, Algorithm 1 of Frantar & Alistarh 2023 (PAPERS.md; reference behaviour ALGORITHMS.md §2.3), with the
// mask chosen per block of B columns. The vectorised column loop is in sparsegpt_kernels.cc.
#include "solvers/sparsegpt.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/ftz.h"
#include "common/masks.h"
#include "common/workspace.h"
#include "solvers/sparsegpt_kernels.h"

namespace sparsellm {

namespace {
using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

SparseGptResult SparseGptPrune(float* W, size_t rows, size_t cols, float* H, const SparseGptOptions& opt) {
  const auto t0 = Clock::now();
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

  // Dead inputs: diag(H) = 0 → H_ii = 1, W[:, i] = 0. Damping λ = percdamp · mean(diag H).
  std::vector<float> Hdiag(n), damped(n);
  double meanDiag = 0;
  for (size_t i = 0; i < n; ++i) {
    float h = H[i * n + i];
    if (h == 0.0f) {
      h = 1.0f;
      for (size_t r = 0; r < rows; ++r) W[r * cols + i] = 0.0f;
    }
    Hdiag[i] = h;
    meanDiag += h;
  }
  meanDiag /= double(n);
  double damp = std::max(0.0, opt.percdamp * meanDiag);

  // Hinv = Cholesky(H⁻¹)ᵀ, upper (H⁻¹ = Hinvᵀ Hinv); a failed factorisation retries with 10x the damping.
  Scratch hinvBuf(n * n * sizeof(float));
  float* Hinv = hinvBuf.as<float>();
  {
    std::optional<SingleThreadBlas> oneThread;  // small n: single-threaded LAPACK (see SingleThreadBlas)
    if (n <= kEagerMaxN) oneThread.emplace();
    for (;;) {
      for (size_t i = 0; i < n; ++i) damped[i] = float(double(Hdiag[i]) + damp);
      if (UpperCholeskyOfInverse(H, damped.data(), n, opt.doublePrecision, Hinv)) break;
      if (res.retries >= kMaxCholeskyRetries)
        throw std::runtime_error("sparsegpt: Cholesky of the damped Hessian failed after " +
                                 std::to_string(res.retries) + " retries (damping " + std::to_string(damp) + ")");
      ++res.retries;
      damp = damp > 0 ? damp * 10 : std::max(1e-8, 0.01 * std::fabs(meanDiag) + 1e-8);
    }
  }
  res.damping = damp;
  const double tChol = Since(t0);
  if (opt.accumulateDamping)  // reference quirk: the fixed, damped diagonal is written back into the caller's H
    for (size_t i = 0; i < n; ++i) H[i * n + i] = damped[i];

  const bool unstructured = !opt.sp.nm();
  if (unstructured && opt.sp.sparsity == 0) {  // nothing is pruned: err = 0, W stays exactly as is
    res.seconds = Since(t0);
    return res;
  }

  const size_t B = std::min(size_t(opt.blocksize), n);
  ColumnSweep sweep(W, rows, n, Hinv, B, unstructured ? 0 : opt.sp.prunem, opt.sp.prunen);
  Scratch selectBuf(unstructured ? rows * B * sizeof(float) : 0);
  double tMask = 0, tLoop = 0, tLazy = 0;
  for (size_t i1 = 0; i1 < n; i1 += B) {
    const size_t i2 = std::min(i1 + B, n);
    auto t = Clock::now();
    // Mask of the block (unstructured): prune where w²/[Hinv]_jj² <= the (s·rows·(i2 − i1))-th smallest of them.
    // N:M masks are chosen inside the column loop, one group of M columns at a time.
    float thresh = 0;
    if (unstructured) {
      const size_t numel = rows * (i2 - i1);
      thresh = KthSmallestNonNegative(sweep.BlockScores(i1, i2), numel, size_t(double(numel) * opt.sp.sparsity),
                                      selectBuf.as<float>());
    }
    tMask += Since(t), t = Clock::now();
    // Column steps j = i1..i2−1: q = w·mask, err = (w − q)/[Hinv]_jj, W[:, j+1:i2] -= err ⊗ Hinv[j, j+1:i2].
    sweep.PruneBlock(i1, i2, thresh);
    tLoop += Since(t), t = Clock::now();
    // Lazy batch update of the later blocks: W[:, i2:] -= Err · Hinv[i1:i2, i2:].
    sweep.LazyUpdate(i1, i2);
    tLazy += Since(t);
  }
  res.loss = sweep.Finish() / 2;  // Σ (w − q)² / [Hinv]_qq² / 2

  bool finite = true;
  size_t pruned = 0;
  for (size_t t = 0; t < rows * cols; ++t) {
    pruned += W[t] == 0.0f;
    finite &= std::isfinite(W[t]);
  }
  res.pruned = pruned;
  if (!finite || !std::isfinite(res.loss))
    throw std::runtime_error("sparsegpt: the result contains NaN or Inf (Hessian too ill-conditioned?)");
  res.seconds = Since(t0);
  static const bool profile = std::getenv("SPARSELLM_PROFILE") != nullptr;
  if (profile)
    std::fprintf(stderr, "sparsegpt %zux%zu (%s): hinv %.1f ms, mask %.1f ms, column loop %.1f ms, lazy update %.1f ms, "
                 "total %.1f ms\n", rows, cols, sweep.eager() ? "eager" : "blocked", tChol * 1e3, tMask * 1e3,
                 tLoop * 1e3, tLazy * 1e3, res.seconds * 1e3);
  return res;
}

}  // namespace sparsellm
