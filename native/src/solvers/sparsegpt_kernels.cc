// SparseGPT's column loop, vectorised over rows. W is held transposed in chunks of kR rows: Wt[j][i] = row
// r0 + i, column j of the chunk, so each column step (q, err, loss) and each OBS rank-1 update
// w[:, t] -= err ⊗ Hinv[j, t] is a contiguous, branch-free vector operation over the kR rows. Rows are independent
// except for the per-block threshold (unstructured), so each chunk runs a block's columns on its own (one chunk per
// helper thread). Columns are processed in panels of kP (or a multiple of M for N:M): inside a panel they are pruned
// one at a time and each one's update is applied at once to the panel's later columns; the panel's errors then
// update the later columns (of the block, or eagerly of the whole row) in one register-blocked pass
// (w[t] ← w[t] − e_j·Hinv[j, t], j ascending — a small GEMM, k = P). Each element receives its updates one at a time
// in column order, as in SparseGPT; only the float rounding of the lazy GEMM's dot products differs.
#include "solvers/sparsegpt_kernels.h"

#include <algorithm>
#include <cstdint>
#include <mutex>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SPARSELLM_HAVE_AVX2_PATH 1
#else
#define SPARSELLM_HAVE_AVX2_PATH 0
#endif
#define SPARSELLM_INLINE inline __attribute__((always_inline))

#include "common/blas.h"
#include "common/linalg.h"

namespace sparsellm {

namespace {
std::mutex blasMutex;
int blasDepth = 0, blasSaved = 1;  // guarded by blasMutex
}  // namespace

SingleThreadBlas::SingleThreadBlas() {
  std::lock_guard<std::mutex> lock(blasMutex);
  if (blasDepth++ == 0) {
    blasSaved = openblas_get_num_threads();
    if (blasSaved > 1) openblas_set_num_threads(1);
  }
}
SingleThreadBlas::~SingleThreadBlas() {
  std::lock_guard<std::mutex> lock(blasMutex);
  if (--blasDepth == 0 && blasSaved > 1) openblas_set_num_threads(blasSaved);
}

namespace {

constexpr size_t kR = 16;  // rows per chunk (one zmm of floats)
constexpr size_t kP = 16;  // panel width

#if SPARSELLM_HAVE_AVX2_PATH
bool HaveAvx2Fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
bool HaveAvx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && HaveAvx2Fma();
  return ok;
}
#endif

// One OBS column step for R rows: q = w·keep, err = (w − q)/[Hinv]_jj (into ej), loss += (w − q)²/[Hinv]_jj²,
// w ← q. The update of the later columns from ej is the caller's.
SPARSELLM_INLINE void PruneColumn(float* wt, const float* kp, float d, double idd, float* ej, double* loss) {
  for (size_t i = 0; i < kR; ++i) {
    const float w = wt[i], q = w * kp[i];
    const float x = w - q;
    ej[i] = x / d;
    loss[i] += double(x) * double(x) * idd;
    wt[i] = q;
  }
}

// N:M mask of one group of M consecutive columns (Wt[t * kR + i] = row i, column t of the group): keep = 0 for the
// N smallest scores w² / d_t² of each row, 1 otherwise. A score's rank counts earlier equal scores as smaller (ties
// go to the lower index, as MarkSmallestInGroup; NaN compares false).
SPARSELLM_INLINE void NmGroupKeepMask(const float* Wt, int M, int N, const float* d, float* keep) {
  float sc[64 * kR];
  for (int t = 0; t < M; ++t) {
    const float* wt = Wt + size_t(t) * kR;
    for (size_t i = 0; i < kR; ++i) sc[size_t(t) * kR + i] = wt[i] * wt[i] / (d[t] * d[t]);
  }
  for (int t = 0; t < M; ++t) {
    const float* st = sc + size_t(t) * kR;
    int rank[kR] = {};
    for (int k = 0; k < t; ++k) {
      const float* sk = sc + size_t(k) * kR;
      for (size_t i = 0; i < kR; ++i) rank[i] += sk[i] <= st[i];
    }
    for (int k = t + 1; k < M; ++k) {
      const float* sk = sc + size_t(k) * kR;
      for (size_t i = 0; i < kR; ++i) rank[i] += sk[i] < st[i];
    }
    float* kp = keep + size_t(t) * kR;
    for (size_t i = 0; i < kR; ++i) kp[i] = rank[i] < N ? 0.0f : 1.0f;
  }
}

// Panel -> later columns: Wt[t][:] -= Σ_j E[j][:] · u0[j·n + t], j ascending, for t in [tb, te).
SPARSELLM_INLINE void RestUpdate(float* __restrict Wt, const float* __restrict E, const float* u0, size_t n, size_t pw,
                                 size_t tb, size_t te) {
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
// The same for a full 16-wide panel (one zmm per column): the panel's errors stay in 16 registers, four later
// columns are updated per pass (fused negative multiply-add, j ascending).
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

// Columns [i1, i2) of chunks [cb, ce). Wt (eager) holds every chunk transposed for the whole sweep; otherwise each
// chunk's block is transposed into a local buffer, its errors are kept in ErrT [i2 − i1, rows] for the lazy update,
// and it is written back. Later-column updates run up to `updateEnd` (n when eager, i2 otherwise).
struct LoopArgs {
  float* W;
  size_t rows, n;
  float* Wt;              // eager: chunks x n x kR; null: per-block transposes
  const float* Hinv;      // row-major n x n, upper triangle
  const double* invdd;    // 1 / [Hinv]_jj² in double (n)
  size_t i1, i2, updateEnd;
  float thresh;           // unstructured: prune where w² / [Hinv]_jj² <= thresh
  float* ErrT;            // not eager: (i2 − i1) x rows
  double* rowLoss;
  int M, N;               // N:M (M = 0: unstructured)
  size_t P;               // panel width (a multiple of M for N:M)
};

template <bool kFast>
SPARSELLM_INLINE void LoopBody(const LoopArgs& a, size_t cb, size_t ce) {
  const size_t n = a.n, nb = a.i2 - a.i1, span = a.updateEnd - a.i1, R = kR;
  std::vector<float> wtBuf(a.Wt ? 0 : nb * R), keepBuf(nb * R), eBuf(a.P * R);
  float* __restrict keep = keepBuf.data();
  float* __restrict E = eBuf.data();
  const bool nm = a.M > 0;
  for (size_t c = cb; c < ce; ++c) {
    const size_t r0 = c * R, nr = std::min(R, a.rows - r0);
    // Wt: column i1 + j of the chunk at Wt + j·R
    float* __restrict Wt = a.Wt ? a.Wt + (c * n + a.i1) * R : wtBuf.data();
    if (!a.Wt) {  // transpose the chunk's block in; rows past the end are zero (err 0, no effect)
      for (size_t i = 0; i < R; ++i) {
        const float* w = a.W + (r0 + i) * n + a.i1;
        for (size_t j = 0; j < nb; ++j) Wt[j * R + i] = i < nr ? w[j] : 0.0f;
      }
    }
    if (!nm) {  // mask from the block-start weights: the same score as the threshold was taken from
      for (size_t j = 0; j < nb; ++j) {
        const float d = a.Hinv[(a.i1 + j) * (n + 1)], dd = d * d;
        const float* wt = Wt + j * R;
        float* kp = keep + j * R;
        for (size_t i = 0; i < R; ++i) kp[i] = (wt[i] * wt[i]) / dd <= a.thresh ? 0.0f : 1.0f;
      }
    }
    double loss[kR] = {};
    for (size_t p0 = 0; p0 < nb; p0 += a.P) {
      const size_t p1 = std::min(nb, p0 + a.P);
      for (size_t j = p0; j < p1; ++j) {
        if (nm && j % size_t(a.M) == 0) {  // N:M: rescore this group with the weights updated so far
          float d[64];
          for (int t = 0; t < a.M; ++t) d[t] = a.Hinv[(a.i1 + j + size_t(t)) * (n + 1)];
          NmGroupKeepMask(Wt + j * R, a.M, a.N, d, keep + j * R);
        }
        const float* u = a.Hinv + (a.i1 + j) * n + a.i1;  // row i1 + j of Hinv, from column i1
        float* ej = E + (j - p0) * R;
        PruneColumn(Wt + j * R, keep + j * R, u[j], a.invdd[a.i1 + j], ej, loss);
        if (a.ErrT) {
          float* et = a.ErrT + j * a.rows + r0;
          for (size_t i = 0; i < nr; ++i) et[i] = ej[i];
        }
        for (size_t t = j + 1; t < p1; ++t) {  // inside the panel: at once
          float* w2 = Wt + t * R;
          const float ut = u[t];
          for (size_t i = 0; i < R; ++i) w2[i] -= ej[i] * ut;
        }
      }
      if (p1 < span) {  // the later columns, from the panel's errors
        const float* u0 = a.Hinv + (a.i1 + p0) * n + a.i1;
#if SPARSELLM_HAVE_AVX2_PATH
        if (kFast && p1 - p0 == kP) {
          RestUpdate16Avx512(Wt, E, u0, n, p1, span);
          continue;
        }
#endif
        RestUpdate(Wt, E, u0, n, p1 - p0, p1, span);
      }
    }
    if (!a.Wt) {  // write the chunk's block back
      for (size_t i = 0; i < nr; ++i) {
        float* w = a.W + (r0 + i) * n + a.i1;
        for (size_t j = 0; j < nb; ++j) w[j] = Wt[j * R + i];
      }
    }
    for (size_t i = 0; i < nr; ++i) a.rowLoss[r0 + i] += loss[i];
  }
}
void LoopGeneric(const LoopArgs& a, size_t cb, size_t ce) { LoopBody<false>(a, cb, ce); }
#if SPARSELLM_HAVE_AVX2_PATH
__attribute__((target("avx2,fma"))) void LoopAvx2(const LoopArgs& a, size_t cb, size_t ce) {
  LoopBody<false>(a, cb, ce);
}
__attribute__((target("avx512f,avx2,fma"))) void LoopAvx512(const LoopArgs& a, size_t cb, size_t ce) {
  LoopBody<true>(a, cb, ce);
}
#endif
void Loop(const LoopArgs& a, size_t cb, size_t ce) {
#if SPARSELLM_HAVE_AVX2_PATH
  if (HaveAvx512()) return LoopAvx512(a, cb, ce);
  if (HaveAvx2Fma()) return LoopAvx2(a, cb, ce);
#endif
  LoopGeneric(a, cb, ce);
}

}  // namespace

ColumnSweep::ColumnSweep(float* W, size_t rows, size_t n, const float* Hinv, size_t blocksize, int M, int N)
    : W_(W), rows_(rows), n_(n), chunks_((rows + kR - 1) / kR),
      // panel width: kP columns, or for N:M a multiple of M (each group of M must lie inside one panel)
      P_(M > 0 ? size_t(M) * std::max<size_t>(1, kP / size_t(M)) : kP), Hinv_(Hinv), M_(M), N_(N),
      eager_(n <= kEagerMaxN), invdd_(n), rowLoss_(rows, 0.0) {
  const size_t B = std::min(blocksize, n);
  for (size_t j = 0; j < n; ++j) {
    const float d = Hinv[j * n + j];
    invdd_[j] = 1.0 / (double(d) * d);
  }
  if (M == 0) score_.Reset(rows * B * sizeof(float));
  if (!eager_) {
    err_.Reset(rows * B * sizeof(float));
    return;
  }
  wt_.Reset(chunks_ * n * kR * sizeof(float));
  float* Wt = wt_.as<float>();
  ParallelFor(chunks_, [&](size_t cb, size_t ce) {  // rows past the end are zero (err 0, no effect)
    for (size_t c = cb; c < ce; ++c) {
      float* wt = Wt + c * n * kR;
      const size_t r0 = c * kR, nr = std::min(kR, rows - r0);
      for (size_t i = 0; i < kR; ++i) {
        const float* w = W + (r0 + i) * n;
        for (size_t j = 0; j < n; ++j) wt[j * kR + i] = i < nr ? w[j] : 0.0f;
      }
    }
  }, 2);
}

const float* ColumnSweep::BlockScores(size_t i1, size_t i2) {
  const size_t n = n_, nb = i2 - i1;
  float* score = score_.as<float>();
  const float* Wt = wt_.as<float>();
  for (size_t r = 0; r < rows_; ++r) {
    // current weights: the resident transposed chunk (eager) or W itself
    const float* w = eager_ ? Wt + ((r / kR) * n + i1) * kR + r % kR : W_ + r * n + i1;
    const size_t stride = eager_ ? kR : 1;
    for (size_t j = 0; j < nb; ++j) {
      const float d = Hinv_[(i1 + j) * (n + 1)], x = w[j * stride];
      score[r * nb + j] = (x * x) / (d * d);
    }
  }
  return score;
}

void ColumnSweep::PruneBlock(size_t i1, size_t i2, float thresh) {
  const LoopArgs args{W_, rows_, n_, eager_ ? wt_.as<float>() : nullptr, Hinv_, invdd_.data(), i1, i2,
                      eager_ ? n_ : i2, thresh, eager_ ? nullptr : err_.as<float>(), rowLoss_.data(), M_, N_, P_};
  ParallelFor(chunks_, [&](size_t cb, size_t ce) { Loop(args, cb, ce); }, 2);
}

void ColumnSweep::LazyUpdate(size_t i1, size_t i2) {
  if (eager_ || i2 >= n_) return;
  const size_t n = n_;
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(rows_), int(n - i2), int(i2 - i1), -1.0f, err_.as<float>(),
              int(rows_), &Hinv_[i1 * n + i2], int(n), 1.0f, W_ + i2, int(n));
}

double ColumnSweep::Finish() {
  if (eager_) {
    const float* Wt = wt_.as<float>();
    const size_t n = n_;
    ParallelFor(chunks_, [&](size_t cb, size_t ce) {
      for (size_t c = cb; c < ce; ++c) {
        const size_t r0 = c * kR, nr = std::min(kR, rows_ - r0);
        for (size_t i = 0; i < nr; ++i)
          for (size_t j = 0; j < n; ++j) W_[(r0 + i) * n + j] = Wt[(c * n + j) * kR + i];
      }
    }, 2);
  }
  double loss = 0;
  for (double l : rowLoss_) loss += l;
  return loss;
}

}  // namespace sparsellm
