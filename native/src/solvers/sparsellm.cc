#include "solvers/sparsellm.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <functional>
#include <limits>
#include <stdexcept>
#include <vector>

#include "common/async.h"
#include "common/blas.h"
#include "common/workspace.h"

namespace sparsellm {

// Token blocks [r0, r0 + rows) of N tokens: `requested` rows, or about 16 MB of an f-wide float block.
size_t SparseLlmTokenBlockRows(size_t N, size_t f, size_t requested) {
  const size_t automatic = std::max<size_t>(256, (size_t(1) << 22) / std::max<size_t>(f, 1));
  return std::max<size_t>(1, std::min(N, requested ? requested : automatic));
}

namespace {

using Buf = std::vector<float>;

// C[m,n] = alpha * A[m,k] · B[n,k]ᵀ + beta * C
void GemmNT(size_t m, size_t n, size_t k, float alpha, const float* A, const float* B, float beta, float* C) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), alpha, A, int(k), B, int(k), beta, C,
              int(n));
}
// C[m,n] = alpha * A[m,k] · B[k,n] + beta * C
void GemmNN(size_t m, size_t n, size_t k, float alpha, const float* A, const float* B, float beta, float* C) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(k), alpha, A, int(k), B, int(n), beta, C,
              int(n));
}
// C[m,n] = alpha * A[k,m]ᵀ · B[k,n] + beta * C   (contraction over the token dimension)
void GemmTN(size_t m, size_t n, size_t k, float alpha, const float* A, const float* B, float beta, float* C) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(m), int(n), int(k), alpha, A, int(m), B, int(n), beta, C,
              int(n));
}
using DBuf = std::vector<double>;

// G[n,n] = A[k,n]ᵀ A accumulated in double (rows converted in chunks, DSYRK; both triangles). The least-squares Gram
// matrices are formed this way: in float, cancellation in Σ aᵢaⱼ over k ~ 1e5 tokens with outlier channels costs
// more digits than the ridge below is meant to touch (an fp32 Gram moved the weights by 26 % at an identical fit).
void GramDouble(const float* A, size_t k, size_t n, DBuf& G) {
  G.assign(n * n, 0.0);
  constexpr size_t kChunk = 1024;
  DBuf chunk(std::min(k, kChunk) * n);
  for (size_t r0 = 0; r0 < k; r0 += kChunk) {
    const size_t rows = std::min(kChunk, k - r0);
    for (size_t i = 0; i < rows * n; ++i) chunk[i] = A[r0 * n + i];
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, int(n), int(rows), 1.0, chunk.data(), int(n), 1.0, G.data(), int(n));
  }
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < i; ++j) G[i * n + j] = G[j * n + i];
}
// float(scale · G), e.g. SparseGPT's Hessian (2/nsamples) AᵀA from a double Gram of `count` entries.
void ScaledToFloat(const double* G, size_t count, double scale, float* H) {
  ParallelFor(count, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) H[i] = float(scale * G[i]);
  }, 1 << 16);
}
Buf ScaledToFloat(const double* G, size_t count, double scale) {
  Buf H(count);
  ScaledToFloat(G, count, scale, H.data());
  return H;
}

void AddRowVector(float* A, size_t rows, size_t cols, const float* v) {
  if (!v) return;
  ParallelFor(rows, [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r)
      for (size_t c = 0; c < cols; ++c) A[r * cols + c] += v[c];
  });
}
double SumSqDiff(const float* a, const float* b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) {
    double t = double(a[i]) - b[i];
    s += t * t;
  }
  return s;
}
double SumSq(const float* a, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(a[i]) * a[i];
  return s;
}
inline float Relu(float v) { return v > 0 ? v : 0.0f; }

inline double Sigmoid(double s) { return 1.0 / (1.0 + std::exp(-s)); }
inline float Silu(float s) { return float(s * Sigmoid(s)); }

// Factor G + λI for the Gram G = AᵀA of `tokens` rows (ridge x10 on failure), λ = max(relRidge, tokens·ε₆₄)·trace(G)/n.
// The floor is the data's own fp64 rounding: each entry of G is a sum of `tokens` products, so it carries an error up
// to about tokens·ε₆₄·(GᵢᵢGⱼⱼ)^½ — directions of G below that level are noise, and λ at that level keeps the Cholesky
// factor well defined without biasing anything the data determines. relRidge (lstsqRidge / refitRidge) is the
// regularisation chosen on top, relative to the same scale trace(G)/n.
void FactorGram(SpdFactor& F, const double* G, size_t n, size_t tokens, double relRidge, const char* what) {
  double mean = 0;
  for (size_t i = 0; i < n; ++i) mean += G[i * n + i];
  mean = std::max(mean / double(n), 1e-300);
  double ridge = std::max(relRidge, double(tokens) * std::numeric_limits<double>::epsilon()) * mean;
  for (int t = 0; t < 8; ++t, ridge = ridge > 0 ? ridge * 10 : 1e-12 * mean)
    if (F.Factor(G, n, ridge)) return;
  throw std::runtime_error(std::string("sparsellm: the normal equations of ") + what + " are not positive definite");
}

// Least squares W [out, in] = argmin ‖Tgt − Src Wᵀ − 1 biasᵀ‖² from the accumulated C = Srcᵀ Tgt [in, out], the column
// sums of Src and the factored Gram F of Src: (SrcᵀSrc) Wᵀ = Srcᵀ (Tgt − 1 biasᵀ) = C − colsum ⊗ bias.
void LeastSquaresFromProducts(const float* C, const DBuf& colsum, const float* bias, size_t in, size_t out,
                              const SpdFactor& F, float* W) {
  // column-major [in, out] right-hand side == row-major [out, in] == W's layout
  Scratch buf(in * out * sizeof(double));
  double* Bc = buf.as<double>();
  for (size_t j = 0; j < in; ++j)
    for (size_t o = 0; o < out; ++o) Bc[o * in + j] = C[j * out + o] - (bias ? float(colsum[j] * bias[o]) : 0.0f);
  F.Solve(Bc, out);
  for (size_t i = 0; i < in * out; ++i) W[i] = float(Bc[i]);
}
// The same with C accumulated in double (the output refit's AᵀY), the bias term subtracted in double.
void LeastSquaresFromProducts(const double* C, const DBuf& colsum, const float* bias, size_t in, size_t out,
                              const SpdFactor& F, float* W) {
  Scratch buf(in * out * sizeof(double));
  double* Bc = buf.as<double>();
  for (size_t j = 0; j < in; ++j)
    for (size_t o = 0; o < out; ++o) Bc[o * in + j] = C[j * out + o] - (bias ? colsum[j] * bias[o] : 0.0);
  F.Solve(Bc, out);
  for (size_t i = 0; i < in * out; ++i) W[i] = float(Bc[i]);
}

// Reference quirk: W = fp16(Xinvᵀ (Tgt − 1 biasᵀ)), Xinv = fp16(X (XᵀX)⁻¹) [N, d]; C = Xinvᵀ Tgt and the column sums
// of Xinv come accumulated over the token blocks.
void LeastSquaresFp16FromProducts(const float* C, const DBuf& colsum, const float* bias, size_t d, size_t out,
                                  float* W) {
  for (size_t j = 0; j < d; ++j)
    for (size_t o = 0; o < out; ++o)
      W[o * d + j] = RoundToHalf(C[j * out + o] - (bias ? float(colsum[j] * bias[o]) : 0.0f));
}

// G [n, n] = Σ over token blocks of AᵀA, a double sum of float partial Grams of at most kPartRows rows each (SSYRK on
// the upper triangle; the automatic token block is one partial up to f = 2730). The precision argument of GramDouble
// is about the long sum over ~1e5 tokens: a float partial over k <= 1536 rows is off by at most γ_k = kε₃₂/(1 − kε₃₂)
// ≈ 9e-5 of √(GᵢᵢGⱼⱼ) (typically ~√k·ε₃₂ ≈ 2e-6), and the double sum of the partials adds ~ε₆₄ — at float-SYRK speed,
// 2.3x DSYRK's here. Checked against a float64 AᵀA in test/solver-sparsellm.test.ts; on the d=768 bench block the
// epoch-0 dense refit of fc2 moved by 3.9e-6 (relative Frobenius) against the all-double Gram.
class GramAccumulator {
 public:
  static constexpr size_t kPartRows = 1536;
  void Reset(size_t n) {
    n_ = n;
    g_.Reset(n * n * sizeof(double));
    std::fill(G(), G() + n * n, 0.0);
    part_.Reset(n * n * sizeof(float));
  }
  void Add(const float* A, size_t rows) {
    const size_t parts = (rows + kPartRows - 1) / kPartRows, step = (rows + parts - 1) / parts;
    float* P = part_.as<float>();
    double* G = this->G();
    const size_t n = n_;
    for (size_t r0 = 0; r0 < rows; r0 += step) {
      const size_t k = std::min(step, rows - r0);
      cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, int(n), int(k), 1.0f, A + r0 * n, int(n), 0.0f, P, int(n));
      // G's upper triangle += P's; rows i and n−1−i go together so that the threads get equal shares
      ParallelFor((n + 1) / 2, [&](size_t b, size_t e) {
        auto addRow = [&](size_t r) {
          for (size_t j = r; j < n; ++j) G[r * n + j] += P[r * n + j];
        };
        for (size_t i = b; i < e; ++i) {
          addRow(i);
          if (n - 1 - i != i) addRow(n - 1 - i);
        }
      }, 16);
    }
  }
  // both triangles, when every block is in
  void Finish() {
    double* G = this->G();
    for (size_t i = 0; i < n_; ++i)
      for (size_t j = 0; j < i; ++j) G[i * n_ + j] = G[j * n_ + i];
    part_.Release();
  }
  double* G() const { return g_.as<double>(); }
  void Release() {
    g_.Release();
    part_.Release();
  }

 private:
  size_t n_ = 0;
  Scratch g_, part_;
};

void AddColumnSums(const float* A, size_t rows, size_t cols, DBuf& sums) {
  for (size_t t = 0; t < rows; ++t)
    for (size_t j = 0; j < cols; ++j) sums[j] += A[t * cols + j];
}

void CheckFinite(const float* x, size_t n, const char* what) {
  if (!AllFinite(x, n)) throw std::runtime_error(std::string("sparsellm: ") + what + " became NaN/Inf");
}

// SPARSELLM_PROFILE: CPU seconds (all threads, user + system) and wall seconds per step of the solve, to stderr.
class StepProfile {
 public:
  StepProfile() : on_(std::getenv("SPARSELLM_PROFILE") != nullptr) { Mark(); }
  void Mark() {
    if (!on_) return;
    cpu_ = Cpu();
    wall_ = std::chrono::steady_clock::now();
  }
  void Step(const char* name) {
    if (!on_) return;
    const double c = Cpu() - cpu_, w = Seconds(wall_);
    for (auto& e : steps_)
      if (e.name == name) {
        e.cpu += c, e.wall += w;
        Mark();
        return;
      }
    steps_.push_back({name, c, w});
    Mark();
  }
  ~StepProfile() {
    if (!on_) return;
    double tc = 0, tw = 0;
    for (auto& e : steps_) tc += e.cpu, tw += e.wall;
    for (auto& e : steps_) std::fprintf(stderr, "sparsellm step %-34s cpu %7.2f s  wall %7.2f s\n", e.name.c_str(), e.cpu, e.wall);
    std::fprintf(stderr, "sparsellm step %-34s cpu %7.2f s  wall %7.2f s\n", "TOTAL", tc, tw);
  }

 private:
  static double Cpu() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  static double Seconds(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  struct Entry {
    std::string name;
    double cpu, wall;
  };
  bool on_;
  double cpu_ = 0;
  std::chrono::steady_clock::time_point wall_;
  std::vector<Entry> steps_;
};

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

SparseGptOptions PruneOptions(const SparseLlmOptions& o, bool accumulate) {
  SparseGptOptions g;
  g.sp = o.sp;
  g.percdamp = o.percdamp;
  g.blocksize = o.blocksize;
  g.accumulateDamping = accumulate;
  g.doublePrecision = false;  // the FFN matrices are factored in float, as SparseGPT's own runs
  return g;
}

void Validate(const SparseLlmOptions& o, size_t d, size_t f, size_t N, double nsamples) {
  ValidateSparsity(o.sp, d);
  ValidateSparsity(o.sp, f);
  if (N == 0 || d == 0 || f == 0) throw std::invalid_argument("sparsellm: empty input");
  if (!(nsamples > 0)) throw std::invalid_argument("sparsellm: nsamples must be > 0");
  if (o.epochs < 1) throw std::invalid_argument("sparsellm: epochs must be >= 1");
  if (!(o.alpha > 0 && o.beta > 0 && o.gamma > 0)) throw std::invalid_argument("sparsellm: alpha, beta, gamma must be > 0");
}

}  // namespace

// ---------------------------------------------------------------- single steps

namespace {

// The p update of Eqs. 4.6 / 4.10 for one fixed output layer W [d, f]. (β WᵀW + γ I)⁻¹ is an identity plus a rank-d
// term; by the Woodbury identity (β WᵀW + γ I)⁻¹ = (1/γ) [I − Wᵀ (W Wᵀ + (γ/β) I)⁻¹ W], and substituting
// R = γ act + β (Y − 1bᵀ) W gives, per token row,
//   p = act + Wᵀ K⁻¹ (y − b − W act),   K = W Wᵀ + (γ/β) I_d,
// i.e. F = E K⁻¹ with E = Y − 1bᵀ − act Wᵀ [rows, d], then P = act + F W: 4·rows·d·f + 2·rows·d² flops per block,
// against 2·rows·f·(d + f) for the f x f form, and a d x d inverse instead of an f x f one. The output residual of
// the new p is Y − 1bᵀ − P Wᵀ = E − F (K − (γ/β) I) = (γ/β) F, so ‖Y − Wp − b‖² = (γ/β)² ‖F‖² comes for free.
class PUpdater {
 public:
  PUpdater(const float* W, size_t d, size_t f, double beta, double gamma, size_t maxRows)
      : W_(W), d_(d), f_(f), ratio_(gamma / beta), Kinv_(d * d) {
    // K = W Wᵀ + (γ/β) I in double (DSYRK over the f columns), inverted through Cholesky
    Scratch wBuf(d * f * sizeof(double)), kBuf(d * d * sizeof(double));
    double *Wd = wBuf.as<double>(), *K = kBuf.as<double>();
    std::copy(W, W + d * f, Wd);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, int(d), int(f), 1.0, Wd, int(f), 0.0, K, int(d));
    for (size_t i = 0; i < d; ++i) K[i * d + i] += ratio_;
    int n = int(d), info = 0;
    dpotrf_("L", &n, K, &n, &info);  // row-major upper == column-major lower
    if (info == 0) dpotri_("L", &n, K, &n, &info);
    if (info != 0) throw std::runtime_error("sparsellm: p-update matrix is not SPD");
    for (size_t c = 0; c < d; ++c)
      for (size_t r = c; r < d; ++r) Kinv_[r * d + c] = Kinv_[c * d + r] = float(K[r + c * d]);
    if (!AllFinite(Kinv_.data(), d * d)) throw std::runtime_error("sparsellm: p-update matrix is not SPD");
    E_.Reset(maxRows * d * sizeof(float));
    F_.Reset(maxRows * d * sizeof(float));
  }
  // P [rows, f] = act + F W for one token block (Y [rows, d]); returns ‖Y − 1bᵀ − P Wᵀ‖² = (γ/β)² ‖F‖².
  double Apply(const float* act, const float* Y, const float* b, size_t rows, float* P) {
    float* E = E_.as<float>();
    float* F = F_.as<float>();
    std::copy(Y, Y + rows * d_, E);
    if (b)
      for (size_t t = 0; t < rows; ++t)
        for (size_t j = 0; j < d_; ++j) E[t * d_ + j] -= b[j];
    GemmNT(rows, d_, f_, -1.0f, act, W_, 1.0f, E);           // E = Y − 1bᵀ − act Wᵀ
    GemmNN(rows, d_, d_, 1.0f, E, Kinv_.data(), 0.0f, F);     // F = E K⁻¹
    if (P != act) std::copy(act, act + rows * f_, P);
    GemmNN(rows, f_, d_, 1.0f, F, W_, 1.0f, P);               // P = act + F W
    return ratio_ * ratio_ * SumSq(F, rows * d_);
  }

 private:
  const float* W_;
  size_t d_, f_;
  double ratio_;
  Buf Kinv_;
  Scratch E_, F_;
};

}  // namespace

void SparseLlmPUpdate(float* P, const float* Y, const float* W, const float* b, const float* act, size_t N, size_t d,
                      size_t f, double beta, double gamma, size_t tokenChunk) {
  const size_t rows = SparseLlmTokenBlockRows(N, f, tokenChunk);
  PUpdater pu(W, d, f, beta, gamma, rows);
  for (size_t r0 = 0; r0 < N; r0 += rows) {
    const size_t n = std::min(rows, N - r0);
    pu.Apply(act + r0 * f, Y + r0 * d, b, n, P + r0 * f);
  }
}

void SparseLlmGram(const float* A, size_t rows, size_t n, size_t blockRows, double* G) {
  const size_t R = SparseLlmTokenBlockRows(rows, n, blockRows);
  GramAccumulator acc;
  acc.Reset(n);
  for (size_t r0 = 0; r0 < rows; r0 += R) acc.Add(A + r0 * n, std::min(R, rows - r0));
  acc.Finish();
  std::copy(acc.G(), acc.G() + n * n, G);
}

void SparseLlmZUpdateRelu(float* Z, const float* P, const float* M, size_t n, double alpha, double gamma) {
  const float a = float(alpha), g = float(gamma);
  ParallelFor(n, [&](size_t b, size_t e) {
    float* __restrict z = Z + b;
    const float* __restrict pp = P + b;
    const float* __restrict mm = M + b;
    // Branch-free so that it vectorises (the data make every branch a coin flip): relu(z1) = z1 as z1 >= 0, and
    // relu(z2) = 0 as z2 <= 0.
    for (size_t i = 0; i < e - b; ++i) {
      const float p = pp[i], m = mm[i];
      const float q = (g * p + a * m) / (g + a);
      const float z1 = q > 0.0f ? q : 0.0f;  // case z >= 0
      const float z2 = m < 0.0f ? m : 0.0f;  // case z <= 0
      const float r1 = p - z1, d1 = z1 - m, d2 = z2 - m;
      const float f1 = g * r1 * r1 + a * d1 * d1, f2 = g * p * p + a * d2 * d2;
      z[i] = f1 <= f2 ? z1 : z2;
    }
  }, 4096);
}

void SparseLlmZUpdateSilu(float* Z, const float* P, const float* M, const float* S, size_t n, double alpha,
                          double gamma) {
  ParallelFor(n, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      const double sg = Silu(S[i]);
      Z[i] = float((alpha * M[i] + gamma * sg * P[i]) / (alpha + gamma * sg * sg));
    }
  }, 4096);
}

void SparseLlmSUpdate(float* S, const float* G, const float* P, const float* Z, size_t n, double alpha, double gamma,
                      bool newton, int steps, double lr) {
  ParallelFor(n, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      const double g = G[i], p = P[i], z = Z[i];
      double s = S[i];
      auto phi = [&](double v) {
        const double r = p - v * Sigmoid(v) * z;
        return alpha * (v - g) * (v - g) + gamma * r * r;
      };
      if (!newton) {
        // reference: steps of plain GD on α(s−g)² + γ(p − silu(s) z)²
        for (int k = 0; k < steps; ++k) {
          const double sig = Sigmoid(s), d1 = sig * (1 + s * (1 - sig)), r = p - s * sig * z;
          s -= lr * (2 * alpha * (s - g) - 2 * gamma * r * z * d1);
        }
      } else {
        double fs = phi(s);
        const double fg = phi(g);
        if (fg < fs) s = g, fs = fg;
        for (int k = 0; k < 12; ++k) {
          const double sig = Sigmoid(s), d1 = sig * (1 + s * (1 - sig));
          const double d2 = sig * (1 - sig) * (2 + s * (1 - 2 * sig));
          const double r = p - s * sig * z;
          const double grad = 2 * alpha * (s - g) - 2 * gamma * r * z * d1;
          const double gn = 2 * alpha + 2 * gamma * z * z * d1 * d1;  // Gauss-Newton curvature (> 0)
          double hess = gn - 2 * gamma * r * z * d2;
          if (!(hess > 0)) hess = gn;
          const double step = -grad / hess;
          double t = 1;
          bool moved = false;
          for (int h = 0; h < 30; ++h, t *= 0.5) {
            const double sn = s + t * step, fn = phi(sn);
            if (fn < fs) {
              s = sn, fs = fn, moved = true;
              break;
            }
          }
          if (!moved || std::fabs(t * step) < 1e-7 * (1 + std::fabs(s))) break;
        }
      }
      S[i] = float(s);
    }
  }, 1024);
}

// The output layer's (fc2 / down) Hessian for this epoch: the dense pass's when given (epoch 0), else the refresh
// from the auxiliary activations p, H = (2/nsamples) pᵀp (Gp = pᵀp).
Buf OutputLayerHessian(const float* dense, const double* Gp, size_t f, double nsamples) {
  return dense ? Buf(dense, dense + f * f) : ScaledToFloat(Gp, f * f, 2.0 / nsamples);
}

// ---------------------------------------------------------------- the FFN solver, §1.4 (OPT) / §1.5 (LLaMA)

namespace {

enum class Family { kOptRelu, kLlamaSilu };

// One input layer of the FFN (OPT fc1; LLaMA up, gate — in that order): W [f, d] (+ bias [f]), its own copy of the
// input Hessian (the reference quirk accumulates damping into it), its pre-activation M = W X + b [N, f] with this
// epoch's pruned W, and the accumulated products for its next refit to its auxiliary target T (z for fc1/up, s for
// gate): XtT = Srcᵀ T [d, f] with Src = X (or fp16(X (XᵀX)⁻¹) under the reference quirks).
struct InputLayer {
  float* W;
  const float* b;
  Buf H;
  Buf M;
  Buf XtT;
};

// The activation the output layer sees: ReLU(m₁) (OPT) or silu(m_gate) ⊙ m_up (LLaMA), n elements from offset `at`.
void Activation(Family fam, const std::vector<InputLayer>& in, size_t at, size_t n, float* A) {
  const float* m0 = in[0].M.data() + at;
  if (fam == Family::kOptRelu)
    for (size_t i = 0; i < n; ++i) A[i] = Relu(m0[i]);
  else
    for (size_t i = 0, j = at; i < n; ++i, ++j) A[i] = Silu(in[1].M[j]) * m0[i];
}

// φ of the auxiliary variables: ReLU(z) (OPT) or silu(s) ⊙ z (LLaMA), n elements.
void AuxActivation(Family fam, const float* Z, const float* S, size_t n, float* A) {
  if (fam == Family::kOptRelu)
    for (size_t i = 0; i < n; ++i) A[i] = Relu(Z[i]);
  else
    for (size_t i = 0; i < n; ++i) A[i] = Silu(S[i]) * Z[i];
}

// The per-family activation step after the p update, on one token block of n elements: OPT z by the two-case ReLU rule
// (Eqs. 4.7–4.8) with m = W1ˢX + b1; LLaMA z by Eq. 4.12 with m = WuˢX, then s by Eq. 4.13 with g = WgˢX.
void ActivationStep(Family fam, const std::vector<InputLayer>& in, size_t at, size_t n, const float* P, float* Z,
                    float* S, const SparseLlmOptions& o) {
  if (fam == Family::kOptRelu) {
    SparseLlmZUpdateRelu(Z, P, in[0].M.data() + at, n, o.alpha, o.gamma);
    if (o.referenceQuirks) RoundToHalf(Z, n);
    CheckFinite(Z, n, "z");
    return;
  }
  SparseLlmZUpdateSilu(Z, P, in[0].M.data() + at, S, n, o.alpha, o.gamma);
  if (o.referenceQuirks) RoundToHalf(Z, n);
  CheckFinite(Z, n, "z");
  SparseLlmSUpdate(S, in[1].M.data() + at, P, Z, n, o.alpha, o.gamma, o.sNewton, o.sSteps, o.sLr);
  if (o.referenceQuirks) RoundToHalf(S, n);
  CheckFinite(S, n, "s");
}

// ‖Y − 1bᵀ − A Wᵀ‖² for W [d, f] from the Gram Ga = AᵀA [f, f] (double, both triangles), C = AᵀY [f, d] (double),
// the column sums of A and yCentredSq = ‖Y − 1bᵀ‖²: yCentredSq − 2 Σ W ∘ (C − colA bᵀ)ᵀ + Σ (W Ga) ∘ W. The quadratic
// term's product runs in float (W Ga with Ga rounded to float, into `work` [f, f] floats, half a DGEMM's time); the
// sums are double. Checked against the direct ‖Y − b − A Wᵀ‖² over the tokens on the d=768 bench block: the output
// error agreed to 1e-8 relative in every epoch.
double ResidualFromGram(const double* Ga, const double* C, const DBuf& colA, const float* b, const float* W, size_t f,
                        size_t d, double yCentredSq, float* work) {
  ScaledToFloat(Ga, f * f, 1.0, work);
  Scratch wgBuf(d * f * sizeof(float));
  float* WG = wgBuf.as<float>();
  GemmNN(d, f, f, 1.0f, W, work, 0.0f, WG);
  double quad = 0, cross = 0;
  for (size_t o = 0; o < d; ++o) {
    const double bo = b ? b[o] : 0.0;
    for (size_t j = 0; j < f; ++j) {
      const double w = W[o * f + j];
      quad += double(WG[o * f + j]) * w;
      cross += w * (C[j * d + o] - colA[j] * bo);
    }
  }
  return yCentredSq - 2 * cross + quad;
}

// What the reference's output-layer fit (output refit off) needs of the auxiliary p [N, f], accumulated over token
// blocks where p is formed: its Gram pᵀp (double), pᵀY [f, d] and its column sums.
struct PStatistics {
  GramAccumulator gram;
  Buf PtY;
  DBuf colsum;
  bool started = false;
  void Reset(size_t f, size_t d, size_t maxRows) {
    gram.Reset(f);
    PtY.assign(f * d, 0.0f);
    colsum.assign(f, 0.0);
    started = false;
  }
  void Add(const float* P, const float* Y, size_t rows, size_t f, size_t d) {
    gram.Add(P, rows);
    GemmTN(f, d, rows, 1.0f, P, Y, started ? 1.0f : 0.0f, PtY.data());
    AddColumnSums(P, rows, f, colsum);
    started = true;
  }
};

// The output layer's own W update of the reference (used with the output refit off): OPT fc2 by `gdSteps` GD steps
// on mean((W2 p + b2 − Y)²) or by least squares; LLaMA down by least squares. The reference rounds the GD result and
// down's least-squares result to fp16.
void FitOutputToP(Family fam, const PStatistics& ps, const float* b, size_t N, size_t f, size_t d,
                  const SparseLlmOptions& o, float* W) {
  const bool gd = fam == Family::kOptRelu && o.fc2Gd;
  if (!gd) {
    SpdFactor Fp;
    FactorGram(Fp, ps.gram.G(), f, N, o.lstsqRidge, fam == Family::kOptRelu ? "p (fc2 refit)" : "p (down refit)");
    LeastSquaresFromProducts(ps.PtY.data(), ps.colsum, b, f, d, Fp, W);
    if (o.referenceQuirks && fam == Family::kLlamaSilu) RoundToHalf(W, d * f);
    return;
  }
  // grad = 2/(dN) (W pᵀp + b 1ᵀp − Yᵀp)
  const Buf Gpf = ScaledToFloat(ps.gram.G(), f * f, 1.0);
  Buf Gr(d * f);
  const float sc = float(2.0 / (double(d) * double(N)));
  for (int k = 0; k < o.gdSteps; ++k) {
    GemmNN(d, f, f, 1.0f, W, Gpf.data(), 0.0f, Gr.data());
    for (size_t j = 0; j < d; ++j)
      for (size_t c = 0; c < f; ++c) {
        const float gr = sc * (Gr[j * f + c] + (b ? b[j] : 0.0f) * float(ps.colsum[c]) - ps.PtY[c * d + j]);
        W[j * f + c] -= float(o.gdLr) * gr;
      }
  }
  if (o.referenceQuirks) RoundToHalf(W, d * f);
}

// Output-layer refit on the real sparse activations A [N, f] (Gram Ga = AᵀA, C = AᵀY, column sums of A accumulated
// over the token blocks): W = argmin ‖Y − A Wᵀ − b‖² + ridge‖W‖² (dense), then SparseGPT with H = (2/nsamples) AᵀA.
// Since W is the least-squares solution, SparseGPT's ‖(W − Ŵ)A‖² equals ‖Y − b − ŴA‖² up to a constant, so the
// pruned layer fits the dense targets directly.
// The f x f peak is the refit's: Ga and its Cholesky factor (16 f² bytes); during the prune Ga (8 f²), H and
// SparseGPT's Hinv (4 f² each). Ga stays for the output error below and is released at the end.
//
// The output error of the pruned layer comes from the same products, in double (Eq.: with C' = C − colA bᵀ,
//   ‖Y − 1bᵀ − A Ŵᵀ‖² = ‖Y − 1bᵀ‖² − 2 Σ Ŵ ∘ C'ᵀ + Σ (Ŵ Ga) ∘ Ŵ),
// one d x f x f product instead of an N x f x d one over the tokens. Written to *residual.
SparseGptResult RefitOutputLayer(GramAccumulator& Ga, const double* C, const DBuf& colA, const float* b, size_t N,
                                 size_t f, size_t d, double nsamples, double yCentredSq, const SparseLlmOptions& o,
                                 SparseGptPruneFn prune, float* W, double* residual, StepProfile* prof) {
  {
    SpdFactor Fa;
    FactorGram(Fa, Ga.G(), f, N, o.refitRidge, "the sparse activations (output refit)");
    prof->Step("fc2 refit Cholesky (f x f double)");
    LeastSquaresFromProducts(C, colA, b, f, d, Fa, W);
    prof->Step("fc2 refit solve");
  }
  CheckFinite(W, d * f, "output layer after the refit");
  SparseGptResult r;
  {
    Scratch hBuf(f * f * sizeof(float));
    ScaledToFloat(Ga.G(), f * f, 2.0 / nsamples, hBuf.as<float>());
    prof->Step("fc2 Hessian to float");
    r = prune(W, d, f, hBuf.as<float>(), PruneOptions(o, false));
    prof->Step("fc2 prune (SparseGPT f x f)");
    *residual = ResidualFromGram(Ga.G(), C, colA, b, W, f, d, yCentredSq, hBuf.as<float>());
  }
  Ga.Release();
  prof->Step("output error from the Gram");
  return r;
}

// The alternating epochs (Eq. 4.5), shared by both families: (1) refit the input layers to their auxiliary
// targets, (2) prune them with SparseGPT, (3) fit and prune the output layer — by the output refit on the real sparse
// activations (default), or the reference's fit to p with the Hessian refreshed from p — (4) the p update,
// (5) the family's activation step, (6) the objective and the output error; keep the best epoch.
//
// Memory: the persistent N x f arrays are the auxiliary targets (z; LLaMA also s) and each input layer's
// pre-activation M (OPT 2, LLaMA 4; SparseLlmBuffers in src/model/families counts them), plus Y [N, d]. p, the
// activations and every per-token product exist only one token block at a time: the p update, the activation step
// and the objective run block by block, and what later steps need of them (Gram matrices, Xᵀz, pᵀY) is accumulated
// as each block is formed.
SparseLlmResult SparseLlmFfn(Family fam, const float* X, size_t N, size_t d, size_t f, std::vector<InputLayer>& in,
                             float* Wout, const float* bout, const float* HoutDense, double nsamples,
                             const SparseLlmOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  StepProfile prof;
  SparseLlmResult res;
  const bool llama = fam == Family::kLlamaSilu;
  const size_t nf = N * f, R = SparseLlmTokenBlockRows(N, f, o.tokenChunk);
  const SparseGptPruneFn prune = o.prune ? o.prune : &SparseGptPrune;
  auto blocks = [&](const std::function<void(size_t r0, size_t rows)>& fn) {
    for (size_t r0 = 0; r0 < N; r0 += R) fn(r0, std::min(R, N - r0));
  };
  // one token block of f-wide activations and p, one of d-wide outputs, one of quirk-mode Xinv
  Scratch actBlock(R * f * sizeof(float)), pBlock(R * f * sizeof(float)), yBlock(R * d * sizeof(float)), xinvBlock;
  float *act = actBlock.as<float>(), *Pb = pBlock.as<float>(), *Tb = yBlock.as<float>();

  // dense targets: z = M_up (s = M_gate) with the dense weights, Y = W_out act(M) + b_out
  Buf Z(nf), S(llama ? nf : 0), Y(N * d);
  for (auto& l : in) {
    l.M.resize(nf);
    l.XtT.resize(d * f);
  }
  PStatistics pstat;  // output refit off: the statistics of p for the next output-layer fit
  if (!o.outputRefit) pstat.Reset(f, d, R);
  double yNorm = 0, yCentredSq = 0;  // ‖Y‖², ‖Y − 1bᵀ‖²
  blocks([&](size_t r0, size_t rows) {
    for (size_t k = 0; k < in.size(); ++k) {
      float* dense = (k == 0 ? Z.data() : S.data()) + r0 * f;
      GemmNT(rows, f, d, 1.0f, X + r0 * d, in[k].W, 0.0f, dense);
      AddRowVector(dense, rows, f, in[k].b);
    }
    AuxActivation(fam, Z.data() + r0 * f, llama ? S.data() + r0 * f : nullptr, rows * f, act);
    GemmNT(rows, d, f, 1.0f, act, Wout, 0.0f, Y.data() + r0 * d);
    AddRowVector(Y.data() + r0 * d, rows, d, bout);
    yNorm += SumSq(Y.data() + r0 * d, rows * d);
    for (size_t t = 0; t < rows; ++t)
      for (size_t j = 0; j < d; ++j) {
        const double v = double(Y[(r0 + t) * d + j]) - (bout ? bout[j] : 0.0f);
        yCentredSq += v * v;
      }
    if (!o.outputRefit) pstat.Add(act, Y.data() + r0 * d, rows, f, d);
  });
  prof.Step("dense pass (targets)");
  yNorm = std::max(yNorm, 1e-300);
  if (!o.outputRefit) pstat.gram.Finish();

  // the input layers' normal equations: Gram of X (double), its column sums; quirk mode: (XᵀX)⁻¹ for Xinv
  DBuf G;
  GramDouble(X, N, d, G);
  SpdFactor Fx;
  FactorGram(Fx, G.data(), d, N, o.lstsqRidge, "X (input-layer refit)");
  DBuf colSrc(d, 0.0);
  Buf Ginv;
  if (o.referenceQuirks) {
    DBuf I(d * d, 0.0);
    for (size_t i = 0; i < d; ++i) I[i * d + i] = 1.0;
    Fx.Solve(I.data(), d);
    Ginv.assign(I.begin(), I.end());
    xinvBlock.Reset(R * d * sizeof(float));
  } else {
    AddColumnSums(X, N, d, colSrc);
  }
  prof.Step("X Gram + Cholesky");
  if (N < 4 * f)
    res.warnings.push_back(std::to_string(N) + " calibration tokens are fewer than 4 x the FFN width " +
                           std::to_string(f) + ": the least-squares fits of the FFN are poorly determined; use more " +
                           "calibration tokens (--nsamples, --seqlen)");
  std::vector<Buf> best(in.size() + 1);
  double bestErr = INFINITY;
  GramAccumulator Ga;
  DBuf C;                 // AᵀY [f, d], accumulated in double over the token blocks
  Scratch cBlock;         // one block's AᵀY in float
  DBuf colA;

  for (int ep = 0; ep < o.epochs; ++ep) {
    SparseLlmEpoch st;
    const bool last = ep + 1 == o.epochs;
    // (1) input layers W = target X⁺ (Eq. 4.5 weight step), from epoch 1 on, from the Xᵀ target products of the
    // previous epoch's blocks
    if (ep > 0)
      for (auto& l : in) {
        if (o.referenceQuirks)
          LeastSquaresFp16FromProducts(l.XtT.data(), colSrc, l.b, d, f, l.W);
        else
          LeastSquaresFromProducts(l.XtT.data(), colSrc, l.b, d, f, Fx, l.W);
        CheckFinite(l.W, f * d, "an input layer after the refit");
      }
    prof.Step("fc1 refit (solve from XtZ)");
    // (2) prune them (mask from scratch)
    for (auto& l : in) st.prune.push_back(prune(l.W, f, d, l.H.data(), PruneOptions(o, o.referenceQuirks)));
    prof.Step("fc1 prune (SparseGPT d x d)");
    // pass 1 over the tokens: M = WˢX + b; with the output refit, the Gram, AᵀY and column sums of A = act(M)
    if (o.outputRefit) {
      Ga.Reset(f);
      C.assign(f * d, 0.0);
      cBlock.Reset(f * d * sizeof(float));
      colA.assign(f, 0.0);
    }
    prof.Step("pass1 setup");
    blocks([&](size_t r0, size_t rows) {
      for (auto& l : in) {
        GemmNT(rows, f, d, 1.0f, X + r0 * d, l.W, 0.0f, l.M.data() + r0 * f);
        AddRowVector(l.M.data() + r0 * f, rows, f, l.b);
      }
      prof.Step("pass1 M = WX + b");
      if (!o.outputRefit) return;
      Activation(fam, in, r0 * f, rows * f, act);
      prof.Step("pass1 act(M)");
      Ga.Add(act, rows);
      prof.Step("pass1 Gram of A");
      float* Cb = cBlock.as<float>();
      GemmTN(f, d, rows, 1.0f, act, Y.data() + r0 * d, 0.0f, Cb);
      ParallelFor(f * d, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) C[i] += Cb[i];
      }, 1 << 16);
      prof.Step("pass1 AtY");
      if (bout) AddColumnSums(act, rows, f, colA);
      prof.Step("pass1 colsum A");
    });
    // (3) output layer
    double errSum = 0;
    if (o.outputRefit) {  // least squares on the real sparse activations, then pruned with their Hessian
      Ga.Finish();
      cBlock.Release();
      st.prune.push_back(RefitOutputLayer(Ga, C.data(), colA, bout, N, f, d, nsamples, yCentredSq, o, prune, Wout,
                                          &errSum, &prof));
    } else {  // the reference: fitted to p, pruned with the Hessian from p (epoch 0: the dense pass's)
      if (ep > 0) FitOutputToP(fam, pstat, bout, N, f, d, o, Wout);
      CheckFinite(Wout, d * f, "the output layer after the refit");
      Buf Hout = OutputLayerHessian(ep == 0 ? HoutDense : nullptr, pstat.gram.G(), f, nsamples);
      st.prune.push_back(prune(Wout, d, f, Hout.data(), PruneOptions(o, false)));
      if (!last) pstat.Reset(f, d, R);
    }
    // pass 2 over the tokens: (4) p update, Eq. 4.6 / 4.10: p = (β WᵀW + γI)⁻¹ (β Wᵀ(Y − b) + γ φ(z, s)) in the
    // Woodbury form (PUpdater); (5) z (and s); (6) objective β‖Y − Wˢp − b‖² + γ‖p − φ(z, s)‖² + α‖z − M_up‖²
    // (+ α‖s − M_gate‖²) and the output error ‖Y − (Wˢ act(Mˢ) + b)‖² / ‖Y‖²; the products of the next refit
    prof.Step("pass1 finish (mirror)");
    if (last && o.outputRefit && !o.lastEpochObjective) {
      // The last epoch's p, z (, s) updates would feed no weight: its output error came from the refit's Gram and
      // its weights are final. Skipping pass 2 saves about a third of the epoch's products; the objective is unknown.
      st.objective = st.outTerm = st.actTerm = st.preTerm = st.gateTerm = std::numeric_limits<double>::quiet_NaN();
    } else {
      PUpdater pu(Wout, d, f, o.beta, o.gamma, R);
      prof.Step("p-update K inverse (d x d)");
      blocks([&](size_t r0, size_t rows) {
        const size_t at = r0 * f, n = rows * f;
        float* Zb = Z.data() + at;
        float* Sb = llama ? S.data() + at : nullptr;
        const float* Yb = Y.data() + r0 * d;
        AuxActivation(fam, Zb, Sb, n, Pb);  // p is formed in place from φ(z, s): P = φ + F W
        prof.Step("pass2 phi(z)");
        const double outTerm = pu.Apply(Pb, Yb, bout, rows, Pb);
        prof.Step("pass2 p update (E, F, P gemms)");
        if (o.referenceQuirks) RoundToHalf(Pb, n);
        CheckFinite(Pb, n, "p");
        prof.Step("pass2 check p");
        if (o.referenceQuirks) {  // p was rounded: its residual is no longer (γ/β) F
          GemmNT(rows, d, f, 1.0f, Pb, Wout, 0.0f, Tb);
          AddRowVector(Tb, rows, d, bout);
          st.outTerm += SumSqDiff(Yb, Tb, rows * d);
        } else {
          st.outTerm += outTerm;
        }
        if (!o.outputRefit && !last) pstat.Add(Pb, Yb, rows, f, d);
        ActivationStep(fam, in, at, n, Pb, Zb, Sb, o);
        prof.Step("pass2 z step");
        AuxActivation(fam, Zb, Sb, n, act);
        st.actTerm += SumSqDiff(Pb, act, n);
        st.preTerm += SumSqDiff(Zb, in[0].M.data() + at, n);
        if (llama) st.gateTerm += SumSqDiff(Sb, in[1].M.data() + at, n);
        prof.Step("pass2 objective terms");
        if (!o.outputRefit) {  // with the refit, the output error came from its Gram (RefitOutputLayer)
          Activation(fam, in, at, n, act);
          GemmNT(rows, d, f, 1.0f, act, Wout, 0.0f, Tb);
          AddRowVector(Tb, rows, d, bout);
          errSum += SumSqDiff(Yb, Tb, rows * d);
          prof.Step("pass2 output error");
        }
        if (last) return;
        // Srcᵀ target for the next epoch's input-layer refit (z for fc1/up, s for gate)
        const float* src = X + r0 * d;
        if (o.referenceQuirks) {
          float* xinv = xinvBlock.as<float>();
          GemmNN(rows, d, d, 1.0f, src, Ginv.data(), 0.0f, xinv);
          RoundToHalf(xinv, rows * d);
          if (r0 == 0) colSrc.assign(d, 0.0);
          AddColumnSums(xinv, rows, d, colSrc);
          src = xinv;
        }
        for (size_t k = 0; k < in.size(); ++k)
          GemmTN(d, f, rows, 1.0f, src, k == 0 ? Zb : Sb, r0 == 0 ? 0.0f : 1.0f, in[k].XtT.data());
        prof.Step("pass2 XtZ");
      });
      if (!o.outputRefit && !last) pstat.gram.Finish();
      st.objective = o.beta * st.outTerm + o.gamma * st.actTerm + o.alpha * (st.preTerm + st.gateTerm);
      if (!std::isfinite(st.objective)) throw std::runtime_error("sparsellm: objective became NaN/Inf");
    }
    st.outputError = errSum / yNorm;
    if (!std::isfinite(st.outputError)) throw std::runtime_error("sparsellm: output error became NaN/Inf");
    if (st.outputError < bestErr || !o.keepBest) {
      bestErr = st.outputError;
      res.chosenEpoch = ep;
      if (o.keepBest) {
        for (size_t k = 0; k < in.size(); ++k) best[k].assign(in[k].W, in[k].W + f * d);
        best.back().assign(Wout, Wout + d * f);
      }
    }
    res.epochs.push_back(std::move(st));
    prof.Step("keep best");
  }
  if (o.keepBest) {
    for (size_t k = 0; k < in.size(); ++k) std::copy(best[k].begin(), best[k].end(), in[k].W);
    std::copy(best.back().begin(), best.back().end(), Wout);
  }
  res.outputError = res.epochs[res.chosenEpoch].outputError;
  prof.Step("restore best");
  res.seconds = Seconds(t0);
  return res;
}

}  // namespace

SparseLlmResult SparseLlmOpt(const float* X, size_t N, size_t d, size_t f, float* W1, const float* b1, float* W2,
                             const float* b2, const float* H1, const float* H2, double nsamples,
                             const SparseLlmOptions& o) {
  EnableFlushToZero();
  Validate(o, d, f, N, nsamples);
  RequireFinite(X, N * d, "sparsellm: X");
  RequireFinite(W1, f * d, "sparsellm: W1");
  RequireFinite(W2, d * f, "sparsellm: W2");
  RequireFinite(H1, d * d, "sparsellm: H1");
  if (b1) RequireFinite(b1, f, "sparsellm: b1");
  if (b2) RequireFinite(b2, d, "sparsellm: b2");
  std::vector<InputLayer> in;
  in.push_back({W1, b1, Buf(H1, H1 + d * d), {}});
  return SparseLlmFfn(Family::kOptRelu, X, N, d, f, in, W2, b2, H2, nsamples, o);
}

SparseLlmResult SparseLlmLlama(const float* X, size_t N, size_t d, size_t f, float* Wg, float* Wu, float* Wd,
                               const float* Hx, const float* Hd, double nsamples, const SparseLlmOptions& o) {
  EnableFlushToZero();
  Validate(o, d, f, N, nsamples);
  RequireFinite(X, N * d, "sparsellm: X");
  RequireFinite(Wg, f * d, "sparsellm: Wg");
  RequireFinite(Wu, f * d, "sparsellm: Wu");
  RequireFinite(Wd, d * f, "sparsellm: Wd");
  RequireFinite(Hx, d * d, "sparsellm: Hx");
  std::vector<InputLayer> in;
  in.push_back({Wu, nullptr, Buf(Hx, Hx + d * d), {}});
  in.push_back({Wg, nullptr, Buf(Hx, Hx + d * d), {}});
  return SparseLlmFfn(Family::kLlamaSilu, X, N, d, f, in, Wd, nullptr, Hd, nsamples, o);
}

}  // namespace sparsellm
