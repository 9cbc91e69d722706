/**
 * SparseLLM global pruning of one FFN (Bai et al. 2024; PAPERS.md §3.2, ALGORITHMS.md §1.4–1.5).
 * Orientation: tokens are rows. X [N, d] token-major; weights PyTorch-style [out, in]; W* are replaced in place
 * by the pruned weights. All heavy steps run in C++ (SGEMM/SYRK/Cholesky) off the JavaScript thread.
 */
import { native } from './addon.js';
import { requireCuda } from './device.js';
import type { SparseGptResult } from './sparsegpt.js';
import { checkDim, checkLength, checkSparsity, sparsityFields, type SparsitySpec } from './sparsity.js';

/** Fully specified (defaults: SPARSELLM_DEFAULTS, the family's α/β/γ; sparseLlmOptions() in src/pipeline/options.ts). */
export type SparseLlmOptions = SparsitySpec & {
  /** penalty weights. alpha: ‖z − W a‖², beta: ‖Y − W_next p‖², gamma: ‖p − φ(z)‖² */
  alpha: number;
  beta: number;
  gamma: number;
  /** alternating epochs. Epoch 0 = plain SparseGPT of every matrix with its local Hessian. */
  epochs: number;
  /** SparseGPT's damping fraction and lazy-update block width */
  percdamp: number;
  blocksize: number;
  /** OPT fc2 refit: 'gd' (the reference's GD steps of gdLr) or 'lstsq' (closed form; overfits the auxiliary p and loses to SparseGPT at 90%) */
  fc2Update: 'lstsq' | 'gd';
  gdSteps: number;
  gdLr: number;
  /** fp16 rounding of Xinv / p / z (/ s) and in-place damping accumulation in fc1/up/gate's Hessian */
  referenceQuirks: boolean;
  /** ridge of the least-squares normal equations, relative to mean(diag(AᵀA)) */
  lstsqRidge: number;
  /** return the weights of the epoch with the lowest FFN output reconstruction error on the calibration data (false = last epoch, as the reference) */
  keepBest: boolean;
  /** after pruning each epoch, refit fc2/down by least squares on the activations the pruned fc1/up/gate really produce,
   * then prune it with their Hessian (false = the reference, fc2 stays fitted to the auxiliary p) */
  outputRefit: boolean;
  /** ridge of that refit relative to mean(diag(AᵀA)) */
  refitRidge: number;
  /** LLaMA s update: 'newton' (safeguarded elementwise Newton, never increases the objective) or 'gd' (reference: sSteps GD steps of size sLr; diverges on our test data at α=γ=5) */
  sUpdate: 'gd' | 'newton';
  sSteps: number;
  sLr: number;
  /** tokens per block of the p/z/s updates and of the per-token accumulations (0 = automatic, about 16 MB per FFN-wide block) */
  tokenChunk: number;
  /** run the last epoch's p, z (, s) updates only to report its Eq. 4.5 objective (they feed no weight; false skips
   * them with the output refit on, and that epoch's objective and terms are null) */
  lastEpochObjective: boolean;
};

/** The options object the bindings read: every field present. */
function bindingOptions(o: SparseLlmOptions): Record<string, unknown> {
  return { ...o, ...sparsityFields(o) };
}

export interface SparseLlmEpoch {
  /** Eq. 4.5 as the code's updates minimise it: beta·outTerm + gamma·actTerm + alpha·preTerm (+ alpha·gateTerm for LLaMA),
   * with this epoch's pruned weights and its updated p, z (, s). null for the last epoch when its updates were skipped
   * (lastEpochObjective false), as are the terms below. */
  objective: number | null;
  /** ‖Y − W2ˢ p − b2‖² */
  outTerm: number | null;
  /** ‖p − ReLU(z)‖² (OPT) or ‖p − silu(s)⊙z‖² (LLaMA) */
  actTerm: number | null;
  /** ‖z − W1ˢ X − b1‖² */
  preTerm: number | null;
  /** LLaMA: ‖s − WgˢX‖² */
  gateTerm: number | null;
  /** ‖Y − f_sparse(X)‖² / ‖Y‖² with this epoch's pruned weights */
  outputError: number;
  /** SparseGPT results, in pruning order: OPT [fc1, fc2]; LLaMA [up, gate, down] */
  prune: SparseGptResult[];
}

export interface SparseLlmResult {
  epochs: SparseLlmEpoch[];
  /** relative output reconstruction error of the returned weights */
  outputError: number;
  /** epoch whose weights are returned (last, unless keepBest) */
  chosenEpoch: number;
  seconds: number;
  /** problems the caller should show the user, e.g. fewer calibration tokens than 4 × the FFN width */
  warnings: string[];
}

export interface OptFfn {
  /** tokens N, hidden d, ffn width */
  tokens: number;
  hidden: number;
  ffn: number;
  /** fc1 input [N, d] (dense pass) */
  X: Float32Array;
  /** fc1 [ffn, d], b1 [ffn], fc2 [d, ffn], b2 [d] — W1/W2 modified in place */
  W1: Float32Array;
  b1: Float32Array;
  W2: Float32Array;
  b2: Float32Array;
  /** fc1's Hessian [d, d] (SparseGPT scaling), not modified */
  H1: Float32Array;
  /** optional fc2 dense-pass Hessian [ffn, ffn] for epoch 0; computed from ReLU(W1 X + b1) when absent */
  H2?: Float32Array;
  /** calibration sequences (Hessian scale 2/nsamples) */
  nsamples: number;
}

export interface LlamaFfn {
  tokens: number;
  hidden: number;
  ffn: number;
  /** up/gate input [N, d] */
  X: Float32Array;
  /** gate [ffn, d], up [ffn, d], down [d, ffn] — modified in place */
  Wg: Float32Array;
  Wu: Float32Array;
  Wd: Float32Array;
  /** gate/up Hessian [d, d], not modified */
  Hx: Float32Array;
  /** optional down_proj dense-pass Hessian [ffn, ffn] */
  Hd?: Float32Array;
  nsamples: number;
}

function checkCommon(tokens: number, hidden: number, ffn: number, nsamples: number, options: SparseLlmOptions): void {
  checkDim('tokens', tokens);
  checkDim('hidden', hidden);
  checkDim('ffn', ffn);
  if (!(nsamples > 0)) throw new RangeError(`nsamples must be > 0, got ${nsamples}`);
  checkSparsity(options, hidden);
  checkSparsity(options, ffn);
}

/** The addon entry points: the CPU build's, or the CUDA build's (every SparseGPT prune inside on the GPU; the p, z, s
 * updates, refits and Gram matrices on the CPU). */
function solverAddon(device: 'cpu' | 'cuda') {
  if (device === 'cpu') return { opt: native().sparsellmOpt, llama: native().sparsellmLlama };
  const gpu = requireCuda();
  return { opt: gpu.cudaSparsellmOpt, llama: gpu.cudaSparsellmLlama };
}

/** SparseLLM on an OPT FFN (fc1 → ReLU → fc2); `device` 'cuda' runs its SparseGPT prunes on the GPU. */
export async function sparsellmOpt(ffn: OptFfn, options: SparseLlmOptions, device: 'cpu' | 'cuda' = 'cpu'): Promise<SparseLlmResult> {
  const { tokens: N, hidden: d, ffn: f } = ffn;
  checkCommon(N, d, f, ffn.nsamples, options);
  checkLength('X', ffn.X, N * d, `${N}×${d}`);
  checkLength('W1', ffn.W1, f * d, `${f}×${d}`);
  checkLength('b1', ffn.b1, f, `${f}`);
  checkLength('W2', ffn.W2, d * f, `${d}×${f}`);
  checkLength('b2', ffn.b2, d, `${d}`);
  checkLength('H1', ffn.H1, d * d, `${d}×${d}`);
  if (ffn.H2) checkLength('H2', ffn.H2, f * f, `${f}×${f}`);
  return (await solverAddon(device).opt(
    ffn.X, ffn.W1, ffn.b1, ffn.W2, ffn.b2, ffn.H1, ffn.H2 ?? null, N, d, f, ffn.nsamples, bindingOptions(options),
  )) as SparseLlmResult;
}

/** SparseLLM on a LLaMA FFN (down(silu(gate x) ⊙ up x)); `device` as sparsellmOpt. */
export async function sparsellmLlama(ffn: LlamaFfn, options: SparseLlmOptions, device: 'cpu' | 'cuda' = 'cpu'): Promise<SparseLlmResult> {
  const { tokens: N, hidden: d, ffn: f } = ffn;
  checkCommon(N, d, f, ffn.nsamples, options);
  checkLength('X', ffn.X, N * d, `${N}×${d}`);
  checkLength('Wg', ffn.Wg, f * d, `${f}×${d}`);
  checkLength('Wu', ffn.Wu, f * d, `${f}×${d}`);
  checkLength('Wd', ffn.Wd, d * f, `${d}×${f}`);
  checkLength('Hx', ffn.Hx, d * d, `${d}×${d}`);
  if (ffn.Hd) checkLength('Hd', ffn.Hd, f * f, `${f}×${f}`);
  return (await solverAddon(device).llama(
    ffn.X, ffn.Wg, ffn.Wu, ffn.Wd, ffn.Hx, ffn.Hd ?? null, N, d, f, ffn.nsamples, bindingOptions(options),
  )) as SparseLlmResult;
}

/** Token rows per block of the solver's updates for `tokens` tokens of an `ffn`-wide FFN: `requested`, or 0 = the
 * solver's automatic size (SparseLlmTokenBlockRows in native/src/solvers/sparsellm.cc, the one owner of the rule). */
export function sparsellmTokenBlockRows(tokens: number, ffn: number, requested = 0): number {
  return native().sparsellmTokenBlockRows(tokens, ffn, requested);
}

/** Single SparseLLM update steps (exported for tests and experiments); all arrays [N, f] token-major unless noted. */
export const sparsellmSteps = {
  /** Eq. 4.6/4.10: P ← (β WᵀW + γI)⁻¹(β Wᵀ(Y − b) + γ act) (Woodbury d×d form, token blocks of `chunk` rows,
   * 0 = automatic); W [d, f], Y [N, d], b [d] optional. */
  p(P: Float32Array, Y: Float32Array, W: Float32Array, act: Float32Array, N: number, d: number, f: number,
    beta: number, gamma: number, b?: Float32Array, chunk = 0): Promise<void> {
    const arrays: Record<string, Float32Array> = { P, Y, W, act };
    if (b) arrays.b = b;
    return native().sparsellmStep('p', arrays, { N, d, f, chunk }, { beta, gamma });
  },
  /** G [n, n] ← AᵀA for A [rows, n], accumulated as the solver forms its Gram matrices: token blocks of `chunk`
   * rows (0 = automatic), float SSYRKs of at most 1536 rows each, summed in double. */
  gram(G: Float64Array, A: Float32Array, rows: number, n: number, chunk = 0): Promise<void> {
    return native().sparsellmStep('gram', { A, G }, { rows, n, chunk }, {});
  },
  /** Eqs. 4.7–4.8: Z ← argmin_v γ(p − relu(v))² + α(v − m)² elementwise. */
  zRelu(Z: Float32Array, P: Float32Array, M: Float32Array, alpha: number, gamma: number): Promise<void> {
    return native().sparsellmStep('zRelu', { Z, P, M }, { n: Z.length }, { alpha, gamma });
  },
  /** Eq. 4.12: Z ← (α m + γ σ p)/(α + γ σ²), σ = silu(S). */
  zSilu(Z: Float32Array, P: Float32Array, M: Float32Array, S: Float32Array, alpha: number, gamma: number): Promise<void> {
    return native().sparsellmStep('zSilu', { Z, P, M, S }, { n: Z.length }, { alpha, gamma });
  },
  /** Eq. 4.13: S ← (approx.) argmin α(s − g)² + γ(p − silu(s) z)² elementwise. */
  s(S: Float32Array, G: Float32Array, P: Float32Array, Z: Float32Array, alpha: number, gamma: number,
    mode: 'gd' | 'newton', steps: number, lr: number): Promise<void> {
    return native().sparsellmStep('s', { S, G, P, Z }, { n: S.length }, { alpha, gamma, newton: mode === 'newton', steps, lr });
  },
};
