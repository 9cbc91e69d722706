// Small dense linear-algebra helpers shared by the pruning solvers.
// Conventions: every matrix is row-major float unless the name says otherwise. LAPACK is called
// column-major; a symmetric row-major matrix is the same memory as its column-major view.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

#include "common/workspace.h"

namespace sparsellm {

// A sparsity spec. prunen > 0 selects N:M (prunen = number PRUNED per group of prunem inputs).
struct Sparsity {
  double sparsity = 0;
  int prunen = 0;
  int prunem = 0;
  bool nm() const { return prunen > 0; }
};

// Throws std::invalid_argument unless 0 <= sparsity < 1, or 0 < N < M with cols % M == 0.
void ValidateSparsity(const Sparsity& sp, size_t cols);

// Runs fn(begin, end) over [0, n) split across up to `threads` std::threads (each with FTZ/DAZ on).
void ParallelFor(size_t n, const std::function<void(size_t, size_t)>& fn, size_t minChunk = 64);

// Round a float to the nearest IEEE fp16 value (ties to even, subnormals kept, overflow -> inf)
// and back; emulates PyTorch's .half() for the reference-quirk mode.
float RoundToHalf(float x);
void RoundToHalf(float* x, size_t n);

// True when every value is finite.
bool AllFinite(const float* x, size_t n);
void RequireFinite(const float* x, size_t n, const std::string& what);

// Copies the upper triangle of a row-major symmetric n x n matrix to the lower one.
void MirrorUpper(float* A, size_t n);

// The one Cholesky-of-inverse routine (SparseGPT's Hinv): U upper triangular with (A')⁻¹ = Uᵀ U, where A' is the
// row-major symmetric n x n A with its diagonal replaced by `diag`. Reversal trick, one potrf + one trtri
// (2n³/3 flops) and no strided copies: with J the reversal permutation, B = J A' J is A's flat array reversed;
// B = Uᵦᵀ Uᵦ (potrf 'U', column-major) gives A'⁻¹ = J Uᵦ⁻¹ Uᵦ⁻ᵀ J = Uᵀ U with U = J Uᵦ⁻ᵀ J, and the row-major U
// is the flat array of Uᵦ⁻¹ reversed again. Factored in float, or in double (`inDouble`) and rounded to float.
// Only U's upper triangle is written meaningfully (the lower one holds leftovers). Returns false when A' is not
// positive definite or U's upper triangle is not finite with a positive diagonal.
bool UpperCholeskyOfInverse(const float* A, const float* diag, size_t n, bool inDouble, float* U);

// Solves (G + ridge*I) Xc = B in double, G symmetric n x n row-major double, B given column-major
// n x nrhs in double (overwritten by the solution). Throws on failure.
// The factor lives in a Scratch buffer (reused across calls: no fresh page faults for the same size).
struct SpdFactor {
  size_t n = 0;
  SpdFactor() = default;
  SpdFactor(const SpdFactor&) = delete;
  SpdFactor& operator=(const SpdFactor&) = delete;
  // Factor G + ridge*I (G row-major double symmetric). Returns false if not SPD.
  bool Factor(const double* G, size_t n, double ridge);
  // In-place solve on a column-major n x nrhs double matrix.
  void Solve(double* B, size_t nrhs) const;

 private:
  Scratch L_;  // column-major lower Cholesky factor, n x n doubles
};

// Ainv = (A)^{-1} for a symmetric positive definite row-major n x n A, in double (potrf + potri).
// Returns false if A is not SPD.
bool SpdInverse(const float* A, size_t n, float* Ainv);

}  // namespace sparsellm
