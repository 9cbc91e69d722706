#include "solvers/sparsellm.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "common/async.h"
#include "common/blas.h"

namespace sparsellm {

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
// G[n,n] = scale * A[k,n]ᵀ A  (SYRK, both triangles)
void Gram(const float* A, size_t k, size_t n, float scale, float* G) {
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, int(n), int(k), scale, A, int(n), 0.0f, G, int(n));
  MirrorUpper(G, n);
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
// float(scale · G), e.g. SparseGPT's Hessian (2/nsamples) AᵀA from a double Gram.
Buf ScaledToFloat(const DBuf& G, double scale) {
  Buf H(G.size());
  for (size_t i = 0; i < G.size(); ++i) H[i] = float(scale * G[i]);
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
void FactorGram(SpdFactor& F, const DBuf& G, size_t n, size_t tokens, double relRidge, const char* what) {
  double mean = 0;
  for (size_t i = 0; i < n; ++i) mean += G[i * n + i];
  mean = std::max(mean / double(n), 1e-300);
  double ridge = std::max(relRidge, double(tokens) * std::numeric_limits<double>::epsilon()) * mean;
  for (int t = 0; t < 8; ++t, ridge = ridge > 0 ? ridge * 10 : 1e-12 * mean)
    if (F.Factor(G.data(), n, ridge)) return;
  throw std::runtime_error(std::string("sparsellm: the normal equations of ") + what + " are not positive definite");
}

// Least squares W [out, in] = argmin ‖Tgt − Src Wᵀ − 1 biasᵀ‖² through the factored Gram F of Src [N, in]:
// (SrcᵀSrc) Wᵀ = Srcᵀ (Tgt − 1 biasᵀ).
void LeastSquares(const float* Src, const float* Tgt, const float* bias, size_t N, size_t in, size_t out,
                  const SpdFactor& F, float* W) {
  Buf C(in * out);
  GemmTN(in, out, N, 1.0f, Src, Tgt, 0.0f, C.data());  // Srcᵀ Tgt [in, out]
  if (bias) {
    std::vector<double> colsum(in, 0.0);
    for (size_t t = 0; t < N; ++t)
      for (size_t j = 0; j < in; ++j) colsum[j] += Src[t * in + j];
    for (size_t j = 0; j < in; ++j)
      for (size_t o = 0; o < out; ++o) C[j * out + o] -= float(colsum[j] * bias[o]);
  }
  // column-major [in, out] right-hand side == row-major [out, in] == W's layout
  std::vector<double> Bc(in * out);
  for (size_t j = 0; j < in; ++j)
    for (size_t o = 0; o < out; ++o) Bc[o * in + j] = C[j * out + o];
  F.Solve(Bc.data(), out);
  for (size_t i = 0; i < in * out; ++i) W[i] = float(Bc[i]);
}

// Reference quirk: W = Tgt_centredᵀ · fp16(Xinv), Xinv = X (XᵀX)⁻¹ [N, d] rounded to fp16, result rounded to fp16.
void LeastSquaresFp16Pinv(const float* X, const float* Tgt, const float* bias, size_t N, size_t d, size_t out,
                          const SpdFactor& F, float* W) {
  std::vector<double> I(d * d, 0.0);
  for (size_t i = 0; i < d; ++i) I[i * d + i] = 1.0;
  F.Solve(I.data(), d);
  Buf Ginv(I.begin(), I.end());
  Buf Xinv(N * d);
  GemmNN(N, d, d, 1.0f, X, Ginv.data(), 0.0f, Xinv.data());
  RoundToHalf(Xinv.data(), Xinv.size());
  Buf C(d * out);
  GemmTN(d, out, N, 1.0f, Xinv.data(), Tgt, 0.0f, C.data());  // Xinvᵀ Tgt
  if (bias) {
    std::vector<double> colsum(d, 0.0);
    for (size_t t = 0; t < N; ++t)
      for (size_t j = 0; j < d; ++j) colsum[j] += Xinv[t * d + j];
    for (size_t j = 0; j < d; ++j)
      for (size_t o = 0; o < out; ++o) C[j * out + o] -= float(colsum[j] * bias[o]);
  }
  for (size_t j = 0; j < d; ++j)
    for (size_t o = 0; o < out; ++o) W[o * d + j] = RoundToHalf(C[j * out + o]);
}

void CheckFinite(const float* x, size_t n, const char* what) {
  if (!AllFinite(x, n)) throw std::runtime_error(std::string("sparsellm: ") + what + " became NaN/Inf");
}

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

void SparseLlmPUpdate(float* P, const float* Y, const float* W, const float* b, const float* act, size_t N, size_t d,
                      size_t f, double beta, double gamma) {
  // A = β WᵀW + γ I  (f x f, SYRK), inverted through Cholesky in double
  Buf A(f * f), Ainv(f * f);
  Gram(W, d, f, float(beta), A.data());
  for (size_t i = 0; i < f; ++i) A[i * f + i] += float(gamma);
  if (!SpdInverse(A.data(), f, Ainv.data())) throw std::runtime_error("sparsellm: p-update matrix is not SPD");
  // R = γ act + β (Y − 1bᵀ) W
  Buf R(act, act + N * f);
  for (auto& v : R) v *= float(gamma);
  GemmNN(N, f, d, float(beta), Y, W, 1.0f, R.data());
  if (b) {
    Buf v(f, 0.0f);
    for (size_t j = 0; j < d; ++j)
      for (size_t c = 0; c < f; ++c) v[c] -= float(beta) * b[j] * W[j * f + c];
    AddRowVector(R.data(), N, f, v.data());
  }
  GemmNN(N, f, f, 1.0f, R.data(), Ainv.data(), 0.0f, P);  // P = R A⁻¹ (A symmetric)
}

void SparseLlmZUpdateRelu(float* Z, const float* P, const float* M, size_t n, double alpha, double gamma) {
  const float a = float(alpha), g = float(gamma);
  ParallelFor(n, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      const float p = P[i], m = M[i];
      const float z1 = std::max((g * p + a * m) / (g + a), 0.0f);  // case z >= 0
      const float z2 = std::min(m, 0.0f);                          // case z <= 0
      const float r1 = p - Relu(z1), d1 = z1 - m, r2 = p - Relu(z2), d2 = z2 - m;
      const float f1 = g * r1 * r1 + a * d1 * d1, f2 = g * r2 * r2 + a * d2 * d2;
      Z[i] = f1 <= f2 ? z1 : z2;
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
Buf OutputLayerHessian(const float* dense, const DBuf& Gp, size_t f, double nsamples) {
  return dense ? Buf(dense, dense + f * f) : ScaledToFloat(Gp, 2.0 / nsamples);
}

// Output-layer refit on the real sparse activations A [N, f]: W = argmin ‖Y − A Wᵀ − b‖² + ridge‖W‖² (dense),
// then SparseGPT with H = (2/nsamples) AᵀA. Since W is the least-squares solution, SparseGPT's
// ‖(W − Ŵ)A‖² equals ‖Y − b − ŴA‖² up to a constant, so the pruned layer fits the dense targets directly.
SparseGptResult RefitOutputLayer(const float* A, const float* Y, const float* b, size_t N, size_t f, size_t d,
                                 double nsamples, const SparseLlmOptions& o, float* W) {
  DBuf Ga;
  GramDouble(A, N, f, Ga);
  SpdFactor Fa;
  FactorGram(Fa, Ga, f, N, o.refitRidge, "the sparse activations (output refit)");
  LeastSquares(A, Y, b, N, f, d, Fa, W);
  CheckFinite(W, d * f, "output layer after the refit");
  Buf H = ScaledToFloat(Ga, 2.0 / nsamples);
  return SparseGptPrune(W, d, f, H.data(), PruneOptions(o, false));
}

// ---------------------------------------------------------------- the FFN solver, §1.4 (OPT) / §1.5 (LLaMA)

namespace {

enum class Family { kOptRelu, kLlamaSilu };

// One input layer of the FFN (OPT fc1; LLaMA up, gate — in that order): W [f, d] (+ bias [f]), its own copy of the
// input Hessian (the reference quirk accumulates damping into it), and its pre-activation M = W X + b (dense before
// the first epoch, then with this epoch's pruned W). Its auxiliary target is z (fc1, up) or s (gate).
struct InputLayer {
  float* W;
  const float* b;
  Buf H;
  Buf M;
};

// The dense activation the output layer sees: ReLU(m₁) (OPT) or silu(m_gate) ⊙ m_up (LLaMA; layers {up, gate}).
void Activation(Family fam, const std::vector<InputLayer>& in, size_t n, float* A) {
  if (fam == Family::kOptRelu)
    for (size_t i = 0; i < n; ++i) A[i] = Relu(in[0].M[i]);
  else
    for (size_t i = 0; i < n; ++i) A[i] = Silu(in[1].M[i]) * in[0].M[i];
}

// φ of the auxiliary variables: ReLU(z) (OPT) or silu(s) ⊙ z (LLaMA).
void AuxActivation(Family fam, const Buf& Z, const Buf& S, float* A) {
  if (fam == Family::kOptRelu)
    for (size_t i = 0; i < Z.size(); ++i) A[i] = Relu(Z[i]);
  else
    for (size_t i = 0; i < Z.size(); ++i) A[i] = Silu(S[i]) * Z[i];
}

// The per-family activation step after the p update: OPT z by the two-case ReLU rule (Eqs. 4.7–4.8) with
// m = W1ˢX + b1; LLaMA z by Eq. 4.12 with m = WuˢX, then s by Eq. 4.13 with g = WgˢX.
void ActivationStep(Family fam, const std::vector<InputLayer>& in, const Buf& P, Buf& Z, Buf& S,
                    const SparseLlmOptions& o) {
  const size_t n = Z.size();
  if (fam == Family::kOptRelu) {
    SparseLlmZUpdateRelu(Z.data(), P.data(), in[0].M.data(), n, o.alpha, o.gamma);
    if (o.referenceQuirks) RoundToHalf(Z.data(), n);
    CheckFinite(Z.data(), n, "z");
    return;
  }
  SparseLlmZUpdateSilu(Z.data(), P.data(), in[0].M.data(), S.data(), n, o.alpha, o.gamma);
  if (o.referenceQuirks) RoundToHalf(Z.data(), n);
  CheckFinite(Z.data(), n, "z");
  SparseLlmSUpdate(S.data(), in[1].M.data(), P.data(), Z.data(), n, o.alpha, o.gamma, o.sNewton, o.sSteps, o.sLr);
  if (o.referenceQuirks) RoundToHalf(S.data(), n);
  CheckFinite(S.data(), n, "s");
}

// The output layer's own W update of the reference (used with the output refit off): OPT fc2 by `gdSteps` GD steps
// on mean((W2 p + b2 − Y)²) or by least squares; LLaMA down by least squares. The reference rounds the GD result and
// down's least-squares result to fp16.
void FitOutputToP(Family fam, const Buf& P, const DBuf& Gp, const Buf& Y, const float* b, size_t N, size_t f, size_t d,
                  const SparseLlmOptions& o, float* W) {
  const bool gd = fam == Family::kOptRelu && o.fc2Gd;
  if (!gd) {
    SpdFactor Fp;
    FactorGram(Fp, Gp, f, N, o.lstsqRidge, fam == Family::kOptRelu ? "p (fc2 refit)" : "p (down refit)");
    LeastSquares(P.data(), Y.data(), b, N, f, d, Fp, W);
    if (o.referenceQuirks && fam == Family::kLlamaSilu) RoundToHalf(W, d * f);
    return;
  }
  // grad = 2/(dN) (W pᵀp + b 1ᵀp − Yᵀp)
  const Buf Gpf = ScaledToFloat(Gp, 1.0);
  Buf YtP(d * f), colP(f, 0.0f), Gr(d * f);
  GemmTN(d, f, N, 1.0f, Y.data(), P.data(), 0.0f, YtP.data());
  for (size_t t = 0; t < N; ++t)
    for (size_t c = 0; c < f; ++c) colP[c] += P[t * f + c];
  const float sc = float(2.0 / (double(d) * double(N)));
  for (int k = 0; k < o.gdSteps; ++k) {
    GemmNN(d, f, f, 1.0f, W, Gpf.data(), 0.0f, Gr.data());
    for (size_t j = 0; j < d; ++j)
      for (size_t c = 0; c < f; ++c) {
        const float gr = sc * (Gr[j * f + c] + (b ? b[j] : 0.0f) * colP[c] - YtP[j * f + c]);
        W[j * f + c] -= float(o.gdLr) * gr;
      }
  }
  if (o.referenceQuirks) RoundToHalf(W, d * f);
}

// The alternating epochs (Eq. 4.5), shared by both families: (1) refit the input layers to their auxiliary
// targets, (2) prune them with SparseGPT, (3) fit and prune the output layer — by the output refit on the real sparse
// activations (default), or the reference's fit to p with the Hessian refreshed from p — (4) the p update,
// (5) the family's activation step, (6) the objective and the output error; keep the best epoch.
SparseLlmResult SparseLlmFfn(Family fam, const float* X, size_t N, size_t d, size_t f, std::vector<InputLayer>& in,
                             float* Wout, const float* bout, const float* HoutDense, double nsamples,
                             const SparseLlmOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  SparseLlmResult res;
  const size_t nf = N * f;

  // dense targets: M_k = W_k X + b_k, z = M_up (s = M_gate), p = act(M), Y = W_out p + b_out
  Buf Z, S, P(nf), A(nf), Y(N * d), T(N * d);
  for (auto& l : in) {
    l.M.resize(nf);
    GemmNT(N, f, d, 1.0f, X, l.W, 0.0f, l.M.data());
    AddRowVector(l.M.data(), N, f, l.b);
  }
  Z = in[0].M;
  if (fam == Family::kLlamaSilu) S = in[1].M;
  Activation(fam, in, nf, P.data());
  GemmNT(N, d, f, 1.0f, P.data(), Wout, 0.0f, Y.data());
  AddRowVector(Y.data(), N, d, bout);
  const double yNorm = std::max(SumSq(Y.data(), Y.size()), 1e-300);

  DBuf G;
  GramDouble(X, N, d, G);
  SpdFactor Fx;
  FactorGram(Fx, G, d, N, o.lstsqRidge, "X (input-layer refit)");
  if (N < 4 * f)
    res.warnings.push_back(std::to_string(N) + " calibration tokens are fewer than 4 x the FFN width " +
                           std::to_string(f) + ": the least-squares fits of the FFN are poorly determined; use more " +
                           "calibration tokens (--nsamples, --seqlen)");
  std::vector<Buf> best(in.size() + 1);
  double bestErr = INFINITY;

  for (int ep = 0; ep < o.epochs; ++ep) {
    SparseLlmEpoch st;
    // (1) input layers W = target X⁺ (Eq. 4.5 weight step), from epoch 1 on
    if (ep > 0)
      for (auto& l : in) {
        const float* target = &l == &in[0] ? Z.data() : S.data();
        if (o.referenceQuirks)
          LeastSquaresFp16Pinv(X, target, l.b, N, d, f, Fx, l.W);
        else
          LeastSquares(X, target, l.b, N, d, f, Fx, l.W);
        CheckFinite(l.W, f * d, "an input layer after the refit");
      }
    // (2) prune them (mask from scratch)
    for (auto& l : in) st.prune.push_back(SparseGptPrune(l.W, f, d, l.H.data(), PruneOptions(o, o.referenceQuirks)));
    for (auto& l : in) {
      GemmNT(N, f, d, 1.0f, X, l.W, 0.0f, l.M.data());
      AddRowVector(l.M.data(), N, f, l.b);
    }
    // (3) output layer
    if (o.outputRefit) {  // least squares on the real sparse activations, then pruned with their Hessian
      Activation(fam, in, nf, A.data());
      st.prune.push_back(RefitOutputLayer(A.data(), Y.data(), bout, N, f, d, nsamples, o, Wout));
    } else {  // the reference: fitted to p, pruned with the Hessian from p (epoch 0: the dense pass's)
      DBuf Gp;
      GramDouble(P.data(), N, f, Gp);
      if (ep > 0) FitOutputToP(fam, P, Gp, Y, bout, N, f, d, o, Wout);
      CheckFinite(Wout, d * f, "the output layer after the refit");
      Buf Hout = OutputLayerHessian(ep == 0 ? HoutDense : nullptr, Gp, f, nsamples);
      st.prune.push_back(SparseGptPrune(Wout, d, f, Hout.data(), PruneOptions(o, false)));
    }
    // (4) p update, Eq. 4.6 / 4.10: p = (β WᵀW + γI)⁻¹ (β Wᵀ(Y − b) + γ φ(z, s))
    AuxActivation(fam, Z, S, A.data());
    SparseLlmPUpdate(P.data(), Y.data(), Wout, bout, A.data(), N, d, f, o.beta, o.gamma);
    if (o.referenceQuirks) RoundToHalf(P.data(), P.size());
    CheckFinite(P.data(), P.size(), "p");
    // (5) z (and s)
    ActivationStep(fam, in, P, Z, S, o);
    // (6) objective β‖Y − Wˢp − b‖² + γ‖p − φ(z, s)‖² + α‖z − M_up‖² (+ α‖s − M_gate‖²)
    GemmNT(N, d, f, 1.0f, P.data(), Wout, 0.0f, T.data());
    AddRowVector(T.data(), N, d, bout);
    st.outTerm = SumSqDiff(Y.data(), T.data(), T.size());
    AuxActivation(fam, Z, S, A.data());
    st.actTerm = SumSqDiff(P.data(), A.data(), nf);
    st.preTerm = SumSqDiff(Z.data(), in[0].M.data(), nf);
    if (fam == Family::kLlamaSilu) st.gateTerm = SumSqDiff(S.data(), in[1].M.data(), nf);
    st.objective = o.beta * st.outTerm + o.gamma * st.actTerm + o.alpha * (st.preTerm + st.gateTerm);
    // output error of this epoch's sparse FFN: ‖Y − (Wˢ act(Mˢ) + b)‖² / ‖Y‖²
    Activation(fam, in, nf, A.data());
    GemmNT(N, d, f, 1.0f, A.data(), Wout, 0.0f, T.data());
    AddRowVector(T.data(), N, d, bout);
    st.outputError = SumSqDiff(Y.data(), T.data(), T.size()) / yNorm;
    if (!std::isfinite(st.objective) || !std::isfinite(st.outputError))
      throw std::runtime_error("sparsellm: objective became NaN/Inf");
    if (st.outputError < bestErr || !o.keepBest) {
      bestErr = st.outputError;
      res.chosenEpoch = ep;
      if (o.keepBest) {
        for (size_t k = 0; k < in.size(); ++k) best[k].assign(in[k].W, in[k].W + f * d);
        best.back().assign(Wout, Wout + d * f);
      }
    }
    res.epochs.push_back(std::move(st));
  }
  if (o.keepBest) {
    for (size_t k = 0; k < in.size(); ++k) std::copy(best[k].begin(), best[k].end(), in[k].W);
    std::copy(best.back().begin(), best.back().end(), Wout);
  }
  res.outputError = res.epochs[res.chosenEpoch].outputError;
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
