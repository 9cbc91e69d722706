// The vectorised column loop behind SparseGPT (solvers/sparsegpt.cc): W held transposed in chunks of kR rows so
// that each column step and each OBS rank-1 update is a contiguous, branch-free vector operation over the rows.
#pragma once
#include <cstddef>
#include <vector>

#include "common/workspace.h"

namespace sparsellm {

// Up to kEagerMaxN columns the whole of W stays transposed for the whole sweep and every column step updates all
// later columns of its chunk at once ("eager"); wider layers (every real fc2/down_proj) are transposed one block at a
// time and the later blocks get SparseGPT's lazy batch update W[:, i2:] -= Err · Hinv[i1:i2, i2:] as one SGEMM
// (at large n the eager update streams n-long Hinv rows from L2 and is slower).
constexpr size_t kEagerMaxN = 1024;

// Sets OpenBLAS to one thread for its lifetime (idle OpenBLAS workers spin and would compete with the solver's
// own two threads on the 2-core machines). Nested/concurrent holders share one saved count.
class SingleThreadBlas {
 public:
  SingleThreadBlas();
  ~SingleThreadBlas();
  SingleThreadBlas(const SingleThreadBlas&) = delete;
  SingleThreadBlas& operator=(const SingleThreadBlas&) = delete;
};

// W [rows, n] (row-major, pruned in place) swept block by block against Hinv (upper Cholesky factor of H⁻¹).
class ColumnSweep {
 public:
  // M = 0: unstructured; else N:M (prune N of every M).
  ColumnSweep(float* W, size_t rows, size_t n, const float* Hinv, size_t blocksize, int M, int N);
  // w² / [Hinv]_jj² of the current weights of columns [i1, i2), every row (rows·(i2 − i1) values).
  const float* BlockScores(size_t i1, size_t i2);
  // Column steps j = i1 .. i2−1 of every row, with the mask w²/[Hinv]_jj² <= thresh from the block-start weights
  // (unstructured) or the N smallest of each group of M (N:M, rescored when the sweep reaches the group):
  // q = w·keep, err = (w − q)/[Hinv]_jj, W[:, j+1:] -= err ⊗ Hinv[j, j+1:] — up to the block end, or (eager) up
  // to the last column.
  void PruneBlock(size_t i1, size_t i2, float thresh);
  // W[:, i2:] -= Err · Hinv[i1:i2, i2:] (no-op when eager: already applied).
  void LazyUpdate(size_t i1, size_t i2);
  // Writes W back (eager) and returns Σ_rows Σ_j (w − q)² / [Hinv]_jj² in row order.
  double Finish();
  bool eager() const { return eager_; }

 private:
  float* W_;
  size_t rows_, n_, chunks_, P_;
  const float* Hinv_;
  int M_, N_;
  bool eager_;
  Scratch wt_, err_, score_;
  std::vector<double> invdd_, rowLoss_;
};

}  // namespace sparsellm
