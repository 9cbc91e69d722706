#include "solvers/sparsegpt.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "common/ftz.h"
#include "common/blas.h"
#include "common/masks.h"
#include "common/workspace.h"

namespace sparsellm {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

bool HaveAvx2Fma() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
#define SPARSELLM_AVX2 __attribute__((target("avx2,fma")))
#define SPARSELLM_HAVE_AVX2_PATH 1
#else
#define SPARSELLM_AVX2
#define SPARSELLM_HAVE_AVX2_PATH 0
#endif
#define SPARSELLM_INLINE inline __attribute__((always_inline))

// ---------------------------------------------------------------------------------------------
// Hinv = upper Cholesky factor of (H + damp I)^{-1}, with one potrf + one trtri (2n³/3 flops) and
// no strided copies. With J the reversal permutation: B = J A J (the flat array of A reversed —
// symmetric, so row- and column-major agree), B = Uᵦᵀ Uᵦ (potrf 'U', column-major), then
// A⁻¹ = J Uᵦ⁻¹ Uᵦ⁻ᵀ J = Uᵀ U with U = J Uᵦ⁻ᵀ J, i.e. U(i, j) = Uᵦ⁻¹(n-1-j, n-1-i), which sits at
// column-major index (n-1-j) + (n-1-i)·n = n²-1-(i·n+j): the row-major U is the flat array of
// Uᵦ⁻¹ reversed again. Only the upper triangle of the result is meaningful (the lower one holds
// the untouched input values); the solver reads only the upper one.

// dst[k] = src[len-1-k]; returns true when every value is finite (checked on the bit pattern).
template <typename T>
SPARSELLM_INLINE bool ReverseCopyBody(const float* __restrict src, size_t len, T* __restrict dst) {
  uint32_t bad = 0;
  const float* s = src + len;
  for (size_t k = 0; k < len; ++k) {
    const float v = s[-1 - ptrdiff_t(k)];
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    bad |= (u & 0x7f800000u) == 0x7f800000u;
    dst[k] = T(v);
  }
  return bad == 0;
}
template <typename T>
bool ReverseCopyGeneric(const float* src, size_t len, T* dst) { return ReverseCopyBody(src, len, dst); }
#if SPARSELLM_HAVE_AVX2_PATH
template <typename T>
SPARSELLM_AVX2 bool ReverseCopyAvx2(const float* src, size_t len, T* dst) { return ReverseCopyBody(src, len, dst); }
#endif
template <typename T>
bool ReverseCopy(const float* src, size_t len, T* dst) {
#if SPARSELLM_HAVE_AVX2_PATH
  if (HaveAvx2Fma()) return ReverseCopyAvx2(src, len, dst);
#endif
  return ReverseCopyGeneric(src, len, dst);
}

// dst[k] = float(src[len-1-k]) (double -> float, reversed)
void ReverseToFloat(const double* src, size_t len, float* dst) {
  for (size_t k = 0; k < len; ++k) dst[k] = float(src[len - 1 - k]);
}

int PotrfU(int n, float* a) {
  int info = 0;
  spotrf_("U", &n, a, &n, &info);
  return info;
}
int PotrfU(int n, double* a) {
  int info = 0;
  dpotrf_("U", &n, a, &n, &info);
  return info;
}
int TrtriU(int n, float* a) {
  int info = 0;
  strtri_("U", "N", &n, a, &n, &info);
  return info;
}
int TrtriU(int n, double* a) {
  int info = 0;
  dtrtri_("U", "N", &n, a, &n, &info);
  return info;
}

// ---------------------------------------------------------------------------------------------
// Column loop of one block, vectorised over rows: a chunk of R rows of the block is transposed into
// Wt[j][i] (column j, row i), so each column step (q, err, loss) and each OBS rank-1 update
// w[:, t] -= err ⊗ Hinv[j, t] is a contiguous, branch-free vector operation over the R rows.
// The updates of four consecutive columns are applied to the rest of the block in one pass
// (w[t] = w[t] - e0·u0[t] - e1·u1[t] - e2·u2[t] - e3·u3[t], the same order as one at a time);
// within the four they are applied immediately. Err is written transposed (ErrT[j][row]).
constexpr size_t kR = 16;

struct BlockArgs {
  float* W;
  size_t rows, cols;
  size_t i1, nb;          // block start and width
  const float* Hinv;      // row-major n x n, upper triangle
  size_t n;
  const float* diag;      // Hinv diagonal of this block (nb)
  const double* invdd;    // 1 / diag² in double (nb)
  float thresh;           // unstructured: prune where w² / d² <= thresh
  float* ErrT;            // nb x rows
  double* rowLoss;
  int M, N;               // N:M (M = 0: unstructured)
  size_t P;               // columns whose updates are applied together (4, or 1 for N:M with M not dividing/divisible by 4)
};

SPARSELLM_INLINE void ColumnLoopBody(const BlockArgs& a, size_t cb, size_t ce) {
  const size_t nb = a.nb, R = kR;
  std::vector<float> wtBuf(nb * R), keepBuf(nb * R);
  float* __restrict Wt = wtBuf.data();
  float* __restrict keep = keepBuf.data();
  const bool nm = a.M > 0;
  for (size_t c = cb; c < ce; ++c) {
    const size_t r0 = c * R, nr = std::min(R, a.rows - r0);
    // load (transpose) the chunk; rows past the end are zero (err 0, no effect)
    for (size_t i = 0; i < R; ++i) {
      if (i < nr) {
        const float* w = a.W + (r0 + i) * a.cols + a.i1;
        for (size_t j = 0; j < nb; ++j) Wt[j * R + i] = w[j];
      } else {
        for (size_t j = 0; j < nb; ++j) Wt[j * R + i] = 0.0f;
      }
    }
    if (!nm) {  // mask from the block-start weights: the same score as the threshold was taken from
      for (size_t j = 0; j < nb; ++j) {
        const float dd = a.diag[j] * a.diag[j];
        const float* wt = Wt + j * R;
        float* kp = keep + j * R;
        for (size_t i = 0; i < R; ++i) kp[i] = (wt[i] * wt[i]) / dd <= a.thresh ? 0.0f : 1.0f;
      }
    }
    double loss[kR] = {};
    float e[4][kR];
    for (size_t j0 = 0; j0 < nb; j0 += a.P) {
      const size_t j1 = std::min(nb, j0 + a.P);
      for (size_t j = j0; j < j1; ++j) {
        if (nm && j % size_t(a.M) == 0) {
          // N:M: rescore this group with the weights updated so far; prune the N smallest per row
          // (ties to the lower index, as MarkSmallestInGroup)
          const int M = a.M;
          for (int t = 0; t < M; ++t) {
            const float d = a.diag[j + size_t(t)];
            float* kp = keep + (j + size_t(t)) * R;
            const float* wt = Wt + (j + size_t(t)) * R;
            for (size_t i = 0; i < R; ++i) kp[i] = wt[i] * wt[i] / (d * d);  // score, for now
          }
          for (size_t i = 0; i < R; ++i) {
            float sc[64];
            uint8_t mk[64] = {};
            for (int t = 0; t < M; ++t) sc[t] = keep[(j + size_t(t)) * R + i];
            MarkSmallestInGroup(sc, M, a.N, mk);
            for (int t = 0; t < M; ++t) keep[(j + size_t(t)) * R + i] = mk[t] ? 0.0f : 1.0f;
          }
        }
        const float* u = a.Hinv + (a.i1 + j) * a.n + a.i1;  // row i1+j of Hinv, from the block start
        const float d = u[j];
        const double idd = a.invdd[j];
        float* wt = Wt + j * R;
        const float* kp = keep + j * R;
        float* ej = e[j - j0];
        for (size_t i = 0; i < R; ++i) {
          const float w = wt[i], q = w * kp[i];
          const float x = w - q;
          ej[i] = x / d;
          loss[i] += double(x) * double(x) * idd;
          wt[i] = q;
        }
        float* et = a.ErrT + (a.i1 + j - a.i1) * a.rows + r0;
        for (size_t i = 0; i < nr; ++i) et[i] = ej[i];
        for (size_t t = j + 1; t < j1; ++t) {  // inside the group of P: at once
          float* w2 = Wt + t * R;
          const float ut = u[t];
          for (size_t i = 0; i < R; ++i) w2[i] -= ej[i] * ut;
        }
      }
      // the rest of the block
      if (j1 - j0 == 4) {
        const float* u0 = a.Hinv + (a.i1 + j0) * a.n + a.i1;
        const float* u1 = u0 + a.n;
        const float* u2 = u1 + a.n;
        const float* u3 = u2 + a.n;
        for (size_t t = j1; t < nb; ++t) {
          float* w2 = Wt + t * R;
          const float a0 = u0[t], a1 = u1[t], a2 = u2[t], a3 = u3[t];
          for (size_t i = 0; i < R; ++i) {
            float x = w2[i];
            x -= e[0][i] * a0;
            x -= e[1][i] * a1;
            x -= e[2][i] * a2;
            x -= e[3][i] * a3;
            w2[i] = x;
          }
        }
      } else {
        for (size_t j = j0; j < j1; ++j) {
          const float* u = a.Hinv + (a.i1 + j) * a.n + a.i1;
          for (size_t t = j1; t < nb; ++t) {
            float* w2 = Wt + t * R;
            const float ut = u[t];
            for (size_t i = 0; i < R; ++i) w2[i] -= e[j - j0][i] * ut;
          }
        }
      }
    }
    // store the chunk back
    for (size_t i = 0; i < nr; ++i) {
      float* w = a.W + (r0 + i) * a.cols + a.i1;
      for (size_t j = 0; j < nb; ++j) w[j] = Wt[j * R + i];
      a.rowLoss[r0 + i] += loss[i];
    }
  }
}
void ColumnLoopGeneric(const BlockArgs& a, size_t cb, size_t ce) { ColumnLoopBody(a, cb, ce); }
#if SPARSELLM_HAVE_AVX2_PATH
SPARSELLM_AVX2 void ColumnLoopAvx2(const BlockArgs& a, size_t cb, size_t ce) { ColumnLoopBody(a, cb, ce); }
#endif
void ColumnLoop(const BlockArgs& a, size_t cb, size_t ce) {
#if SPARSELLM_HAVE_AVX2_PATH
  if (HaveAvx2Fma()) return ColumnLoopAvx2(a, cb, ce);
#endif
  ColumnLoopGeneric(a, cb, ce);
}

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
  SparseGptResult res;
  const size_t n = cols, nn = n * n;
  static const bool profile = std::getenv("SPARSELLM_PROFILE") != nullptr;

  // --- Hinv = upper Cholesky factor of (H + damp I)^-1 (dead inputs fixed), retrying with 10x damping ---
  Scratch hinvBuf(nn * sizeof(float)), dblBuf;
  float* Hinv = hinvBuf.as<float>();
  if (opt.doublePrecision) dblBuf.Reset(nn * sizeof(double));
  // reversed copy of H into the factor buffer (also the finiteness check of H, before W is touched)
  auto loadReversed = [&]() {
    const bool ok = opt.doublePrecision ? ReverseCopy(H, nn, dblBuf.as<double>()) : ReverseCopy(H, nn, Hinv);
    if (!ok) throw std::runtime_error("sparsegpt: H contains NaN or Inf");
  };
  loadReversed();
  // dead inputs: diag(H)==0 -> H_ii = 1, W[:, i] = 0; damping percdamp * mean(diag)
  std::vector<float> Adiag(n);
  double meanDiag = 0;
  for (size_t i = 0; i < n; ++i) {
    float h = H[i * n + i];
    if (h == 0.0f) {
      h = 1.0f;
      for (size_t r = 0; r < rows; ++r) W[r * cols + i] = 0.0f;
    }
    Adiag[i] = h;
    meanDiag += h;
  }
  meanDiag /= double(n);
  double damp = opt.percdamp * meanDiag;
  if (damp <= 0) damp = 0;
  for (bool first = true;; first = false) {
    if (!first) loadReversed();
    int info;
    if (opt.doublePrecision) {
      double* B = dblBuf.as<double>();
      for (size_t i = 0; i < n; ++i) B[(n - 1 - i) * (n + 1)] = double(float(double(Adiag[i]) + damp));
      info = PotrfU(int(n), B);
      if (info == 0) info = TrtriU(int(n), B);
      if (info == 0) ReverseToFloat(B, nn, Hinv);
    } else {
      for (size_t i = 0; i < n; ++i) Hinv[(n - 1 - i) * (n + 1)] = float(double(Adiag[i]) + damp);
      info = PotrfU(int(n), Hinv);
      if (info == 0) info = TrtriU(int(n), Hinv);
      if (info == 0) std::reverse(Hinv, Hinv + nn);
    }
    bool ok = info == 0;
    for (size_t i = 0; i < n && ok; ++i) ok = std::isfinite(Hinv[i * n + i]) && Hinv[i * n + i] > 0;
    for (size_t i = 0; i < n && ok; ++i) ok = AllFinite(Hinv + i * n + i, n - i);  // upper triangle
    if (ok) break;
    if (res.retries >= opt.maxRetries)
      throw std::runtime_error("sparsegpt: Cholesky of the damped Hessian failed after " + std::to_string(res.retries) +
                               " retries (damping " + std::to_string(damp) + ")");
    ++res.retries;
    damp = damp > 0 ? damp * 10 : std::max(1e-8, 0.01 * std::fabs(meanDiag) + 1e-8);
  }
  res.damping = damp;
  const double tChol = Since(t0);
  if (opt.accumulateDamping)
    for (size_t i = 0; i < n; ++i) H[i * n + i] = float(double(Adiag[i]) + damp);

  const bool unstructured = !opt.sp.nm();
  if (unstructured && opt.sp.sparsity == 0) {  // nothing is pruned: err = 0, W stays exactly as is
    res.seconds = Since(t0);
    return res;
  }

  const size_t B = std::min(size_t(opt.blocksize), n);
  const int M = opt.sp.prunem, N = opt.sp.prunen;
  Scratch errBuf(rows * B * sizeof(float)), scoreBuf, scratchBuf;
  float* ErrT = errBuf.as<float>();  // [nb, rows]
  if (unstructured) {
    scoreBuf.Reset(rows * B * sizeof(float));
    scratchBuf.Reset(rows * B * sizeof(float));
  }
  std::vector<double> rowLoss(rows, 0.0), invdd(B);
  std::vector<float> diag(B);
  const size_t P = (unstructured || M % 4 == 0 || 4 % M == 0) ? 4 : 1;
  const size_t chunks = (rows + kR - 1) / kR;
  double tMask = 0, tLoop = 0, tGemm = 0;

  for (size_t i1 = 0; i1 < n; i1 += B) {
    const size_t i2 = std::min(i1 + B, n), nb = i2 - i1;
    for (size_t j = 0; j < nb; ++j) {
      diag[j] = Hinv[(i1 + j) * n + i1 + j];
      invdd[j] = 1.0 / (double(diag[j]) * diag[j]);
    }
    auto tb = Clock::now();
    float thresh = 0;
    if (unstructured) {
      // one threshold shared by the whole block: sorted(W1² / diag(Hinv1)²)[int(numel*s)], prune <=
      float* score = scoreBuf.as<float>();
      for (size_t r = 0; r < rows; ++r) {
        const float* w = W + r * cols + i1;
        float* s = score + r * nb;
        for (size_t j = 0; j < nb; ++j) s[j] = (w[j] * w[j]) / (diag[j] * diag[j]);
      }
      const size_t numel = rows * nb;
      thresh = KthSmallestNonNegative(score, numel, size_t(double(numel) * opt.sp.sparsity), scratchBuf.as<float>());
    }
    auto tc = Clock::now();
    tMask += std::chrono::duration<double>(tc - tb).count();
    const BlockArgs args{W,     rows, cols, i1, nb, Hinv, n, diag.data(), invdd.data(), thresh, ErrT, rowLoss.data(),
                         unstructured ? 0 : M, N, P};
    ParallelFor(chunks, [&](size_t cb, size_t ce) { ColumnLoop(args, cb, ce); }, 2);
    auto td = Clock::now();
    tLoop += std::chrono::duration<double>(td - tc).count();
    if (i2 < n)  // lazy batch update: W[:, i2:] -= Err1 · Hinv[i1:i2, i2:]
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(rows), int(n - i2), int(nb), -1.0f, ErrT, int(rows),
                  &Hinv[i1 * n + i2], int(n), 1.0f, W + i2, int(cols));
    tGemm += Since(td);
  }
  for (size_t r = 0; r < rows; ++r) res.loss += rowLoss[r];
  res.loss /= 2;
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
  if (profile)
    std::fprintf(stderr, "sparsegpt %zux%zu: hinv %.1f ms, mask %.1f ms, column loop %.1f ms, lazy sgemm %.1f ms, total %.1f ms\n",
                 rows, cols, tChol * 1e3, tMask * 1e3, tLoop * 1e3, tGemm * 1e3, res.seconds * 1e3);
  return res;
}

}  // namespace sparsellm
