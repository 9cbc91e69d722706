#include "solvers/sparsegpt.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <stdexcept>
#include <mutex>
#include <optional>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

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

// OpenBLAS's idle workers spin (sched_yield) for a long while after every multi-threaded call, and on the
// 2-core machines they then compete with the solver's own two threads for the whole column loop. The
// factorisation is therefore run single-threaded (it is a small part of the work at n = 768); the column
// loop uses the solver's helper threads only. Nested/concurrent solver calls share one saved count.
class SingleThreadBlas {
 public:
  SingleThreadBlas() {
    std::lock_guard<std::mutex> lock(mu());
    if (depth()++ == 0) {
      saved() = openblas_get_num_threads();
      if (saved() > 1) openblas_set_num_threads(1);
    }
  }
  ~SingleThreadBlas() {
    std::lock_guard<std::mutex> lock(mu());
    if (--depth() == 0 && saved() > 1) openblas_set_num_threads(saved());
  }
  SingleThreadBlas(const SingleThreadBlas&) = delete;
  SingleThreadBlas& operator=(const SingleThreadBlas&) = delete;

 private:
  static std::mutex& mu() { static std::mutex m; return m; }
  static int& depth() { static int d = 0; return d; }
  static int& saved() { static int s = 1; return s; }
};

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
// Column loop, vectorised over rows. W is held transposed in chunks of R rows: Wt[c][j][i] (chunk c,
// column j, row r = c·R + i), so each column step (q, err, loss) and each OBS rank-1 update
// w[:, t] -= err ⊗ Hinv[j, t] is a contiguous, branch-free vector operation over the R rows. Rows are
// independent except for the per-block threshold (unstructured), so each chunk runs all the columns of a
// block (N:M: of the whole matrix) on its own. The columns are processed in panels of P (16, or a
// multiple of M for N:M): inside a panel they are pruned one at a time and each one's update is applied
// at once to the panel's later columns; the panel's errors then update every later column of the matrix
// in one register-blocked pass (w[t] ← w[t] − e_j·Hinv[j, t], j ascending — a small GEMM, k = P). This
// replaces SparseGPT's separate in-block updates and lazy Err1·Hinv[i1:i2, i2:] GEMM with one eager update
// in the same exact arithmetic (each element receives its updates one at a time in column order; only the
// float rounding of the lazy GEMM's dot products differs), and keeps OpenBLAS's thread pool out of the loop.
constexpr size_t kR = 16;

// One OBS column step for R rows: q = w·keep, err = (w − q)/[Hinv]_jj (into ej), loss += (w − q)²/[Hinv]_jj²,
// w ← q. The update of the later columns from ej is the caller's.
static inline void PruneColumn(float* wt, const float* kp, float d, double idd, size_t R, float* ej, double* loss) {
  for (size_t i = 0; i < R; ++i) {
    const float w = wt[i], q = w * kp[i];
    const float x = w - q;
    ej[i] = x / d;
    loss[i] += double(x) * double(x) * idd;
    wt[i] = q;
  }
}

// N:M mask of one group of M consecutive columns for R rows held transposed (Wt[t * R + i] = row i, column t of
// the group): keep[t * R + i] = 0 for the N smallest scores w² / d_t² of each row, 1 otherwise. A score's rank counts
// earlier equal scores as smaller (ties go to the lower index, as MarkSmallestInGroup; NaN compares false).
// Vectorised over the rows.
static void NmGroupKeepMask(const float* Wt, size_t R, int M, int N, const float* d, float* keep) {
  float sc[64 * kR];
  for (int t = 0; t < M; ++t) {
    const float* wt = Wt + size_t(t) * R;
    for (size_t i = 0; i < R; ++i) sc[size_t(t) * R + i] = wt[i] * wt[i] / (d[t] * d[t]);
  }
  for (int t = 0; t < M; ++t) {
    const float* st = sc + size_t(t) * R;
    int rank[kR] = {};
    for (int k = 0; k < t; ++k) {
      const float* sk = sc + size_t(k) * R;
      for (size_t i = 0; i < R; ++i) rank[i] += sk[i] <= st[i];
    }
    for (int k = t + 1; k < M; ++k) {
      const float* sk = sc + size_t(k) * R;
      for (size_t i = 0; i < R; ++i) rank[i] += sk[i] < st[i];
    }
    float* kp = keep + size_t(t) * R;
    for (size_t i = 0; i < R; ++i) kp[i] = rank[i] < N ? 0.0f : 1.0f;
  }
}

constexpr size_t kP = 16;  // panel width of the fast path

struct LoopArgs {
  float* Wt;              // chunks x n x R
  size_t rows, n;
  const float* Hinv;      // row-major n x n, upper triangle
  const double* invdd;    // 1 / diag(Hinv)² in double (n)
  double* rowLoss;
  int M, N;               // N:M (M = 0: unstructured)
  size_t P;               // panel width (a multiple of M for N:M)
};

// Generic panel -> rest update: Wt[t][:] -= Σ_j E[j][:] · Hinv[p0 + j, t], j ascending, for t in [tb, te).
SPARSELLM_INLINE void RestUpdateBody(float* __restrict Wt, const float* __restrict E, const float* u0, size_t n,
                                     size_t pw, size_t tb, size_t te) {
  for (size_t t = tb; t < te; ++t) {
    float* __restrict w2 = Wt + t * kR;
    float x[kR];
    for (size_t i = 0; i < kR; ++i) x[i] = w2[i];
    for (size_t j = 0; j < pw; ++j) {
      const float ut = u0[j * n + t];
      const float* ej = E + j * kR;
      for (size_t i = 0; i < kR; ++i) x[i] -= ej[i] * ut;
    }
    for (size_t i = 0; i < kR; ++i) w2[i] = x[i];
  }
}

#if SPARSELLM_HAVE_AVX2_PATH
bool HaveAvx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && HaveAvx2Fma();
  return ok;
}
// The same update for a 16-wide panel with R = 16 (one zmm per column): the panel's errors stay in 16
// registers, four later columns are updated per pass (fused negative multiply-add, j ascending).
__attribute__((target("avx512f,avx2,fma"))) void RestUpdate16Avx512(float* __restrict Wt, const float* __restrict E,
                                                                   const float* u0, size_t n, size_t tb, size_t te) {
  static_assert(kR == 16 && kP == 16, "kernel assumes 16 x 16");
  __m512 e[16];
  for (int k = 0; k < 16; ++k) e[k] = _mm512_loadu_ps(E + k * 16);
  size_t t = tb;
  for (; t + 4 <= te; t += 4) {
    float* w = Wt + t * 16;
    __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16), w2 = _mm512_loadu_ps(w + 32),
           w3 = _mm512_loadu_ps(w + 48);
    const float* u = u0 + t;
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) {
      const float* uk = u + size_t(k) * n;
      w0 = _mm512_fnmadd_ps(e[k], _mm512_set1_ps(uk[0]), w0);
      w1 = _mm512_fnmadd_ps(e[k], _mm512_set1_ps(uk[1]), w1);
      w2 = _mm512_fnmadd_ps(e[k], _mm512_set1_ps(uk[2]), w2);
      w3 = _mm512_fnmadd_ps(e[k], _mm512_set1_ps(uk[3]), w3);
    }
    _mm512_storeu_ps(w, w0);
    _mm512_storeu_ps(w + 16, w1);
    _mm512_storeu_ps(w + 32, w2);
    _mm512_storeu_ps(w + 48, w3);
  }
  for (; t < te; ++t) {
    float* w = Wt + t * 16;
    __m512 w0 = _mm512_loadu_ps(w);
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) w0 = _mm512_fnmadd_ps(e[k], _mm512_set1_ps(u0[size_t(k) * n + t]), w0);
    _mm512_storeu_ps(w, w0);
  }
}
#endif

// Columns [c0, c1) of chunks [cb, ce). Unstructured: [c0, c1) is one block, pruned where
// w² / d² <= thresh with w the block-start value.
// ---------------------------------------------------------------------------------------------
// Large n (fc2-like, n > kEagerMaxN): the block-wise scheme — per 128-column block, the same panel column
// loop restricted to the block (one chunk of R rows at a time, transposed on the fly, errors kept in ErrT),
// then SparseGPT's lazy update W[:, i2:] -= Err1 · Hinv[i1:i2, i2:] as one multi-threaded SGEMM. At large n
// the eager per-chunk update below streams the whole chunk and n-long Hinv rows from L2 and is slower.
constexpr size_t kEagerMaxN = 1024;
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
  size_t P;               // panel width (a multiple of M for N:M)
};

template <bool kFast>
SPARSELLM_INLINE void BlockLoopBody(const BlockArgs& a, size_t cb, size_t ce) {
  const size_t nb = a.nb, R = kR;
  std::vector<float> wtBuf(nb * R), keepBuf(nb * R), eBuf(a.P * R);
  float* __restrict Wt = wtBuf.data();
  float* __restrict keep = keepBuf.data();
  float* __restrict E = eBuf.data();
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
    for (size_t p0 = 0; p0 < nb; p0 += a.P) {
      const size_t p1 = std::min(nb, p0 + a.P);
      for (size_t j = p0; j < p1; ++j) {
        if (nm && j % size_t(a.M) == 0) {
          // N:M: rescore this group with the weights updated so far (the group lies inside the panel);
          // prune the N smallest per row (NmGroupKeepMask)
          float d[64];
          for (int t = 0; t < a.M; ++t) d[t] = a.diag[j + size_t(t)];
          NmGroupKeepMask(Wt + j * R, R, a.M, a.N, d, keep + j * R);
        }
        const float* u = a.Hinv + (a.i1 + j) * a.n + a.i1;  // row i1+j of Hinv, from the block start
        const float d = u[j];
        const double idd = a.invdd[j];
        float* wt = Wt + j * R;
        const float* kp = keep + j * R;
        float* ej = E + (j - p0) * R;
        PruneColumn(wt, kp, d, idd, R, ej, loss);
        float* et = a.ErrT + j * a.rows + r0;
        for (size_t i = 0; i < nr; ++i) et[i] = ej[i];
        for (size_t t = j + 1; t < p1; ++t) {  // inside the panel: at once
          float* w2 = Wt + t * R;
          const float ut = u[t];
          for (size_t i = 0; i < R; ++i) w2[i] -= ej[i] * ut;
        }
      }
      if (p1 < nb) {  // the rest of the block, from the panel's errors
        const float* u0 = a.Hinv + (a.i1 + p0) * a.n + a.i1;
#if SPARSELLM_HAVE_AVX2_PATH
        if (kFast && p1 - p0 == kP) {
          RestUpdate16Avx512(Wt, E, u0, a.n, p1, nb);
          continue;
        }
#endif
        RestUpdateBody(Wt, E, u0, a.n, p1 - p0, p1, nb);
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
void BlockLoopGeneric(const BlockArgs& a, size_t cb, size_t ce) { BlockLoopBody<false>(a, cb, ce); }
#if SPARSELLM_HAVE_AVX2_PATH
SPARSELLM_AVX2 void BlockLoopAvx2(const BlockArgs& a, size_t cb, size_t ce) { BlockLoopBody<false>(a, cb, ce); }
__attribute__((target("avx512f,avx2,fma"))) void BlockLoopAvx512(const BlockArgs& a, size_t cb, size_t ce) {
  BlockLoopBody<true>(a, cb, ce);
}
#endif
void BlockLoop(const BlockArgs& a, size_t cb, size_t ce) {
#if SPARSELLM_HAVE_AVX2_PATH
  if (HaveAvx512()) return BlockLoopAvx512(a, cb, ce);
  if (HaveAvx2Fma()) return BlockLoopAvx2(a, cb, ce);
#endif
  BlockLoopGeneric(a, cb, ce);
}

template <bool kFast>
SPARSELLM_INLINE void ColumnLoopBody(const LoopArgs& a, size_t c0, size_t c1, float thresh, size_t cb, size_t ce) {
  const size_t n = a.n, R = kR;
  std::vector<float> keepBuf((c1 - c0) * R), eBuf(a.P * R);
  float* __restrict keep = keepBuf.data();
  float* __restrict E = eBuf.data();
  const bool nm = a.M > 0;
  for (size_t c = cb; c < ce; ++c) {
    float* __restrict Wt = a.Wt + c * n * R;
    const size_t r0 = c * R, nr = std::min(R, a.rows - r0);
    if (!nm) {  // mask from the block-start weights: the same score as the threshold was taken from
      for (size_t j = c0; j < c1; ++j) {
        const float d = a.Hinv[j * n + j], dd = d * d;
        const float* wt = Wt + j * R;
        float* kp = keep + (j - c0) * R;
        for (size_t i = 0; i < R; ++i) kp[i] = (wt[i] * wt[i]) / dd <= thresh ? 0.0f : 1.0f;
      }
    }
    double loss[kR] = {};
    for (size_t p0 = c0; p0 < c1; p0 += a.P) {
      const size_t p1 = std::min(c1, p0 + a.P);
      for (size_t j = p0; j < p1; ++j) {
        if (nm && j % size_t(a.M) == 0) {
          // N:M: rescore this group with the weights updated so far (the group lies inside the panel) and
          // prune the N smallest per row (NmGroupKeepMask)
          float d[64];
          for (int t = 0; t < a.M; ++t) d[t] = a.Hinv[(j + size_t(t)) * (n + 1)];
          NmGroupKeepMask(Wt + j * R, R, a.M, a.N, d, keep + (j - c0) * R);
        }
        const float* u = a.Hinv + j * n;  // row j of Hinv
        const float d = u[j];
        const double idd = a.invdd[j];
        float* wt = Wt + j * R;
        const float* kp = keep + (j - c0) * R;
        float* ej = E + (j - p0) * R;
        PruneColumn(wt, kp, d, idd, R, ej, loss);
        for (size_t t = j + 1; t < p1; ++t) {  // inside the panel: at once
          float* w2 = Wt + t * R;
          const float ut = u[t];
          for (size_t i = 0; i < R; ++i) w2[i] -= ej[i] * ut;
        }
      }
      if (p1 < n) {  // every later column, from the panel's errors
        const float* u0 = a.Hinv + p0 * n;
#if SPARSELLM_HAVE_AVX2_PATH
        if (kFast && p1 - p0 == kP) {
          RestUpdate16Avx512(Wt, E, u0, n, p1, n);
          continue;
        }
#endif
        RestUpdateBody(Wt, E, u0, n, p1 - p0, p1, n);
      }
    }
    for (size_t i = 0; i < nr; ++i) a.rowLoss[r0 + i] += loss[i];
  }
}
void ColumnLoopGeneric(const LoopArgs& a, size_t c0, size_t c1, float th, size_t cb, size_t ce) {
  ColumnLoopBody<false>(a, c0, c1, th, cb, ce);
}
#if SPARSELLM_HAVE_AVX2_PATH
SPARSELLM_AVX2 void ColumnLoopAvx2(const LoopArgs& a, size_t c0, size_t c1, float th, size_t cb, size_t ce) {
  ColumnLoopBody<false>(a, c0, c1, th, cb, ce);
}
__attribute__((target("avx512f,avx2,fma"))) void ColumnLoopAvx512(const LoopArgs& a, size_t c0, size_t c1, float th,
                                                                 size_t cb, size_t ce) {
  ColumnLoopBody<true>(a, c0, c1, th, cb, ce);
}
#endif
void ColumnLoop(const LoopArgs& a, size_t c0, size_t c1, float th, size_t cb, size_t ce) {
#if SPARSELLM_HAVE_AVX2_PATH
  if (HaveAvx512()) return ColumnLoopAvx512(a, c0, c1, th, cb, ce);
  if (HaveAvx2Fma()) return ColumnLoopAvx2(a, c0, c1, th, cb, ce);
#endif
  ColumnLoopGeneric(a, c0, c1, th, cb, ce);
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
  const bool eager = n <= kEagerMaxN;

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
  std::optional<SingleThreadBlas> oneThread;
  if (eager) oneThread.emplace();
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
  oneThread.reset();
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
  std::vector<double> rowLoss(rows, 0.0);
  double tMask = 0, tLoop = 0, tGemm = 0;
  if (eager) {
    const size_t chunks = (rows + kR - 1) / kR;
    Scratch wtBuf(chunks * n * kR * sizeof(float)), scoreBuf, scratchBuf;
    float* Wt = wtBuf.as<float>();  // [chunk][col][row in chunk]
    if (unstructured) {
      scoreBuf.Reset(rows * B * sizeof(float));
      scratchBuf.Reset(rows * B * sizeof(float));
    }
    std::vector<double> invdd(n);
    for (size_t j = 0; j < n; ++j) {
      const float d = Hinv[j * n + j];
      invdd[j] = 1.0 / (double(d) * d);
    }
    // panel width: 16 columns, or for N:M a multiple of M (each group of M must lie inside one panel)
    const size_t P = unstructured ? kP : size_t(M) * std::max<size_t>(1, kP / size_t(M));
    const LoopArgs args{Wt, rows, n, Hinv, invdd.data(), rowLoss.data(), unstructured ? 0 : M, N, P};
    auto tl = Clock::now();
    // transpose W into the chunks (rows past the end are zero: err 0, no effect)
    ParallelFor(chunks, [&](size_t cb, size_t ce) {
      for (size_t c = cb; c < ce; ++c) {
        float* wt = Wt + c * n * kR;
        const size_t r0 = c * kR, nr = std::min(kR, rows - r0);
        for (size_t i = 0; i < kR; ++i) {
          if (i < nr) {
            const float* w = W + (r0 + i) * cols;
            for (size_t j = 0; j < n; ++j) wt[j * kR + i] = w[j];
          } else {
            for (size_t j = 0; j < n; ++j) wt[j * kR + i] = 0.0f;
          }
        }
      }
    }, 2);
    const double tTrans = Since(tl);
    if (unstructured) {
      for (size_t i1 = 0; i1 < n; i1 += B) {
        const size_t i2 = std::min(i1 + B, n), nb = i2 - i1;
        auto tb = Clock::now();
        // one threshold shared by the whole block: sorted(W1² / diag(Hinv1)²)[int(numel*s)], prune <=
        float* score = scoreBuf.as<float>();
        for (size_t c = 0; c < chunks; ++c) {
          const float* wt = Wt + c * n * kR;
          const size_t nr = std::min(kR, rows - c * kR);
          float* s = score + c * kR * nb;
          for (size_t j = i1; j < i2; ++j) {
            const float d = Hinv[j * n + j], dd = d * d;
            for (size_t i = 0; i < nr; ++i) s[(j - i1) * nr + i] = (wt[j * kR + i] * wt[j * kR + i]) / dd;
          }
        }
        const size_t numel = rows * nb;
        const float thresh =
            KthSmallestNonNegative(score, numel, size_t(double(numel) * opt.sp.sparsity), scratchBuf.as<float>());
        auto tc = Clock::now();
        tMask += std::chrono::duration<double>(tc - tb).count();
        ParallelFor(chunks, [&](size_t cb, size_t ce) { ColumnLoop(args, i1, i2, thresh, cb, ce); }, 2);
        tLoop += Since(tc);
      }
    } else {
      auto tc = Clock::now();
      ParallelFor(chunks, [&](size_t cb, size_t ce) {
        for (size_t i1 = 0; i1 < n; i1 += B) ColumnLoop(args, i1, std::min(i1 + B, n), 0.0f, cb, ce);
      }, 2);
      tLoop += Since(tc);
    }
    tl = Clock::now();
    ParallelFor(chunks, [&](size_t cb, size_t ce) {
      for (size_t c = cb; c < ce; ++c) {
        const float* wt = Wt + c * n * kR;
        const size_t r0 = c * kR, nr = std::min(kR, rows - r0);
        for (size_t i = 0; i < nr; ++i) {
          float* w = W + (r0 + i) * cols;
          for (size_t j = 0; j < n; ++j) w[j] = wt[j * kR + i];
        }
      }
    }, 2);
    tGemm = tTrans + Since(tl);
  } else {
    Scratch errBuf(rows * B * sizeof(float)), scoreBuf, scratchBuf;
    float* ErrT = errBuf.as<float>();  // [nb, rows]
    if (unstructured) {
      scoreBuf.Reset(rows * B * sizeof(float));
      scratchBuf.Reset(rows * B * sizeof(float));
    }
    std::vector<double> invdd(B);
    std::vector<float> diag(B);
    // panel width: 16 columns, or for N:M a multiple of M (each group of M must lie inside one panel)
    const size_t P = unstructured ? kP : size_t(M) * std::max<size_t>(1, kP / size_t(M));
    const size_t chunks = (rows + kR - 1) / kR;

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
      ParallelFor(chunks, [&](size_t cb, size_t ce) { BlockLoop(args, cb, ce); }, 2);
      auto td = Clock::now();
      tLoop += std::chrono::duration<double>(td - tc).count();
      if (i2 < n)  // lazy batch update: W[:, i2:] -= Err1 · Hinv[i1:i2, i2:]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(rows), int(n - i2), int(nb), -1.0f, ErrT, int(rows),
                    &Hinv[i1 * n + i2], int(n), 1.0f, W + i2, int(cols));
      tGemm += Since(td);
    }
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
    std::fprintf(stderr, "sparsegpt %zux%zu: hinv %.1f ms, mask %.1f ms, column loop %.1f ms, lazy sgemm / transposes %.1f ms, total %.1f ms\n",
                 rows, cols, tChol * 1e3, tMask * 1e3, tLoop * 1e3, tGemm * 1e3, res.seconds * 1e3);
  return res;
}

}  // namespace sparsellm
