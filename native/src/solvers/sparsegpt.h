#pragma once
#include <cstddef>

#include "common/linalg.h"

namespace sparsellm {

// Fully specified by the caller (no defaults here: they are resolved once, in src/pipeline/options.ts).
struct SparseGptOptions {
  Sparsity sp;
  double percdamp;  // damping = percdamp · mean(diag H)
  int blocksize;    // columns per lazy-update block (a multiple of prunem)
  // Reference quirk (ALGORITHMS.md §1.4): the dead-input fix and the damping are written into the
  // caller's H, so repeated calls accumulate damping. Off: H is read-only.
  bool accumulateDamping;
  // Factor in double instead of float (slower, more robust for badly conditioned H).
  bool doublePrecision;
};

// A failed Cholesky factorisation is retried with 10x the damping at most this often (CPU and CUDA).
constexpr int kMaxCholeskyRetries = 8;

struct SparseGptResult {
  double loss = 0;     // Σ (w - q)² / [H⁻¹]_qq / 2 (the OBS loss SparseGPT prints)
  double damping = 0;  // absolute damping finally added to diag(H)
  int retries = 0;     // Cholesky failures recovered by 10x damping
  size_t pruned = 0;   // entries set to zero
  double seconds = 0;
};

// SparseGPT `fasterprune` on W [rows, cols] (row-major, in place) with H [cols, cols]
// (SparseGPT scaling 2/nseq Σ x xᵀ, row-major, symmetric).
//   dead inputs: diag(H)==0 -> H_ii = 1, W[:, i] = 0;  damping: percdamp * mean(diag(H));
//   Hinv = upper Cholesky factor of H⁻¹;  per block of `blocksize` columns the OBS update
//   err = (w - q) / Hinv_ii,  W[:, i:] -= err ⊗ Hinv[i, i:],  lazy W[:, i2:] -= Err · Hinv[i1:i2, i2:].
SparseGptResult SparseGptPrune(float* W, size_t rows, size_t cols, float* H, const SparseGptOptions& opt);

}  // namespace sparsellm
