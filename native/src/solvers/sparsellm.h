// SparseLLM global FFN pruning (Bai et al. 2024, PAPERS.md §3.2; reference behaviour ALGORITHMS.md §1.4/§1.5).
// Layout: tokens are rows. X [N, d], z/p/s [N, ffn], Y [N, d]; weights PyTorch-style [out, in].
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "solvers/sparsegpt.h"

namespace sparsellm {

// The SparseGPT implementation every prune inside SparseLLM calls (the CPU SparseGptPrune, or the CUDA binding's
// wrapper of cuda::SparseGptPrune for `--device cuda`).
using SparseGptPruneFn = SparseGptResult (*)(float* W, size_t rows, size_t cols, float* H, const SparseGptOptions& o);

// Fully specified by the caller (no defaults here: they are resolved once, in src/pipeline/options.ts).
struct SparseLlmOptions {
  Sparsity sp;
  double alpha, beta, gamma;  // Eq. 4.5 penalties: α ‖z − W a‖², β ‖Y − W_out p‖², γ ‖p − φ(z)‖²
  int epochs;
  double percdamp;            // SparseGPT's damping fraction and block width, for every prune inside
  int blocksize;
  bool fc2Gd;                 // OPT fc2 fit to p (output refit off): true = the reference's gdSteps GD steps, false = least squares
  int gdSteps;
  double gdLr;
  bool referenceQuirks;       // fp16 rounding of Xinv/p/z(/s) and damping accumulation in fc1/up/gate's H
  double lstsqRidge;          // ridge of the input-layer (and p) normal equations, relative to mean(diag(Gram))
  bool keepBest;              // keep the epoch whose sparse weights give the lowest output error
  // After pruning each epoch, refit the output layer (fc2 / down) by least squares on the activations the pruned input
  // layers really produce, then prune it with their Hessian (the reference keeps fc2 fitted to the auxiliary p).
  bool outputRefit;
  double refitRidge;          // ridge of that refit, relative to mean(diag(AᵀA))
  bool sNewton;               // LLaMA s update: true = safeguarded elementwise Newton, false = the reference's GD
  int sSteps;
  double sLr;
  // Tokens per block of the p, z and s updates and of the per-token accumulations (Gram matrices, Xᵀz): the solver
  // holds only these blocks beside its persistent N x f arrays. 0 = automatic (about 16 MB per f-wide block).
  size_t tokenChunk = 0;
  // The last epoch's p, z (, s) updates feed no weight: with the output refit they only produce that epoch's Eq. 4.5
  // objective. false skips them (the epoch's objective and its terms are then NaN); true computes them.
  bool lastEpochObjective = false;
  SparseGptPruneFn prune = nullptr;  // null: the CPU SparseGptPrune
};

struct SparseLlmEpoch {
  // Eq. 4.5 with the code's weights: beta*out + gamma*act + alpha*pre (+ alpha*gate for LLaMA), evaluated
  // after the epoch's prune + p + z (+ s) updates with the epoch's pruned weights. NaN for the last epoch when its
  // updates are skipped (SparseLlmOptions::lastEpochObjective false).
  double objective = 0, outTerm = 0, actTerm = 0, preTerm = 0, gateTerm = 0;
  double outputError = 0;  // ‖Y − f_sparse(X)‖² / ‖Y‖² with this epoch's pruned weights
  std::vector<SparseGptResult> prune;
};

struct SparseLlmResult {
  std::vector<SparseLlmEpoch> epochs;
  double outputError = 0;  // of the weights returned
  int chosenEpoch = 0;
  double seconds = 0;
  std::vector<std::string> warnings;  // e.g. too few calibration tokens for the FFN width (tokens < 4 x ffn)
};

// OPT FFN: fc1 W1 [f, d] + b1, ReLU, fc2 W2 [d, f] + b2. W1/W2 are replaced in place by the pruned weights.
// H1 [d, d] is fc1's Hessian (not modified); H2 (optional, [f, f]) is fc2's dense-pass Hessian for epoch 0,
// computed from ReLU(W1 X + b1) when null. nsamples = sequences (Hessian scale 2/nsamples).
SparseLlmResult SparseLlmOpt(const float* X, size_t N, size_t d, size_t f, float* W1, const float* b1, float* W2,
                             const float* b2, const float* H1, const float* H2, double nsamples,
                             const SparseLlmOptions& o);

// LLaMA FFN: p = silu(Wg X) ⊙ (Wu X), Y = Wd p; no biases. Hx [d, d] (gate/up Hessian), Hd optional [f, f].
SparseLlmResult SparseLlmLlama(const float* X, size_t N, size_t d, size_t f, float* Wg, float* Wu, float* Wd,
                               const float* Hx, const float* Hd, double nsamples, const SparseLlmOptions& o);

// ---- single steps (also exported for the tests) ----
// Eq. 4.6 / 4.10: P = (β WᵀW + γ I)⁻¹ (β Wᵀ(Y − b) + γ act), evaluated by the Woodbury identity in the d x d form
// p = act + Wᵀ (W Wᵀ + (γ/β) I)⁻¹ (y − b − W act), token blocks of `tokenChunk` rows (0 = automatic).
// W [d, f], Y [N, d], b [d] or null, act [N, f] (ReLU(z) or silu(s)⊙z); P [N, f] output.
void SparseLlmPUpdate(float* P, const float* Y, const float* W, const float* b, const float* act, size_t N, size_t d,
                      size_t f, double beta, double gamma, size_t tokenChunk = 0);
// Eqs. 4.7–4.8 (ReLU): per element argmin_v γ(p − relu(v))² + α(v − m)² over the two cases (ties -> z1).
void SparseLlmZUpdateRelu(float* Z, const float* P, const float* M, size_t n, double alpha, double gamma);
// Eq. 4.12 general form (SiLU gate): z = (α m + γ σ p) / (α + γ σ²), σ = silu(s).
void SparseLlmZUpdateSilu(float* Z, const float* P, const float* M, const float* S, size_t n, double alpha,
                          double gamma);
// Token rows per block of the p/z/s updates and per-token accumulations: `requested`, or 0 = automatic (at least 256,
// else about 16 MB of an f-wide float block), never more than N. The memory estimate (src/pipeline/memory.ts) reads
// this same rule through the addon.
size_t SparseLlmTokenBlockRows(size_t N, size_t f, size_t requested);
// G [n, n] = AᵀA for A [rows, n] as the solver forms its Gram matrices (output refit, p statistics): token blocks of
// `blockRows` rows (0 = automatic), each summed in float SSYRKs of at most 1536 rows, accumulated in double.
void SparseLlmGram(const float* A, size_t rows, size_t n, size_t blockRows, double* G);
// Eq. 4.13: s ← argmin α(s − g)² + γ(p − silu(s) z)² elementwise: `steps` GD steps of size lr (reference),
// or safeguarded Newton (never increases the elementwise objective).
void SparseLlmSUpdate(float* S, const float* G, const float* P, const float* Z, size_t n, double alpha, double gamma,
                      bool newton, int steps, double lr);

}  // namespace sparsellm
