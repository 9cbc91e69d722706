// A peak-memory estimate made before a prune starts, so a run that cannot fit stops with figures and advice
// instead of being killed by the system hours later.
import { existsSync, readFileSync } from 'node:fs';
import { freemem } from 'node:os';
import { UserError } from '../errors.js';
import { statSync } from 'node:fs';
import type { DecoderLayout, OnnxModel } from '../model/index.js';
import { sparsellmTokenBlockRows } from '../native/sparsellm.js';
import { PRUNE_DEFAULTS, SPARSELLM_DEFAULTS, type Method } from './options.js';

export interface MemoryEstimate {
  /** the larger phase */
  bytes: number;
  parts: Record<string, number>;
  /** bytes of the block's dense pass (statistics) and of its solve: which parts each holds, see estimatePeakMemory */
  phases: { statistics: number; solve: number };
  nsamples: number;
  seqlen: number;
  offload: boolean;
}

/** The calibration size of a run: what the estimate scales with, and the knobs the refusal suggests. */
export interface CalibrationShape {
  nsamples: number;
  seqlen: number;
  /** --offload: the activations between blocks live in files, one forward batch in memory */
  offload: boolean;
  /** sequences per onnxruntime block run when not forwardBatchSize's choice (PruneOptions.forwardBatch) */
  forwardBatch?: number;
}

export interface ModelShape {
  hidden: number;
  /** attention heads (ModelConfig), for onnxruntime's [batch, heads, seqlen, seqlen] score tensors */
  heads: number;
  /** bytes of weights held in memory besides the current block (inline models keep the whole file) */
  residentModelBytes: number;
  /**
   * Bytes of one sequence's state between two blocks at window length s: a·s + b·s² (hidden states, and e.g. a
   * [1, 1, s, s] attention mask the prologue builds). Measured by a dry prologue run (measureStateBytes) or assumed.
   */
  statePerSequence: { a: number; b: number };
}

/**
 * Sequences whose captured linear inputs are accumulated together into the Hessians / Wanda scalers (one SYRK per
 * group): about 4096 tokens. It depends on the calibration size only, so the statistics (hence the pruned weights) are
 * the same whatever number of sequences onnxruntime runs at once (forwardBatchSize).
 */
export function statisticsGroupSize(nsamples: number, seqlen: number): number {
  return Math.max(1, Math.min(nsamples, Math.floor(4096 / seqlen)));
}

/** What onnxruntime's working memory in a block forward scales with. */
export interface ForwardShape {
  heads: number;
  /** the widest linear dimension (the FFN width) */
  ffn: number;
  /** bytes per activation value: 2 for fp16 models (onnxruntime computes in fp16), else 4 */
  elementBytes: number;
}

export function forwardShape(layout: DecoderLayout, heads: number): ForwardShape {
  const linears = layout.blocks.flatMap((b) => b.linears);
  const half = linears.every((l) => l.dtype === 'float16');
  return { heads, ffn: Math.max(...linears.flatMap((l) => [l.inFeatures, l.outFeatures])), elementBytes: half ? 2 : 4 };
}

/**
 * onnxruntime's working memory for one block forward of `batch` sequences, besides the captured linear inputs:
 * the attention scores/probabilities [batch, heads, s, s] (ATTENTION_COPIES copies alive at once) and the rows of
 * FFN width (FFN_ROWS per token), in the model's activation type. Factors fitted, see RUNTIME_BYTES.
 */
export function forwardWorkBytes(batch: number, seqlen: number, f: ForwardShape): number {
  return batch * f.elementBytes * (f.heads * seqlen * seqlen * ATTENTION_COPIES + seqlen * f.ffn * FFN_ROWS);
}

/**
 * Sequences per onnxruntime block run in the prune pipeline: the largest divisor of the statistics group whose forward
 * working memory fits PRUNE_DEFAULTS.forwardBudgetMb, at least 1. A divisor, so that every run's sequences fall in one
 * statistics group. Depends on the model's shape and the calibration size only (never on the machine).
 */
export function forwardBatchSize(nsamples: number, seqlen: number, f: ForwardShape): number {
  const group = statisticsGroupSize(nsamples, seqlen);
  const budget = PRUNE_DEFAULTS.forwardBudgetMb * 2 ** 20;
  for (let b = group; b > 1; b--) if (group % b === 0 && forwardWorkBytes(b, seqlen, f) <= budget) return b;
  return 1;
}

/**
 * Whether the block sessions keep onnxruntime's arena (BlockRunnerOptions.arena): when one forward batch's working
 * memory fits PRUNE_DEFAULTS.forwardBudgetMb, so that the arena's growth stays small; a wide model's single sequence
 * runs without it and its memory is what the estimate's forward part fits.
 */
export function forwardArena(batch: number, seqlen: number, f: ForwardShape): boolean {
  return forwardWorkBytes(batch, seqlen, f) <= PRUNE_DEFAULTS.forwardBudgetMb * 2 ** 20;
}

/**
 * The model's facts for the estimate without running it: the state per sequence assumed as a float32 hidden state
 * plus a float32 [s, s] mask (what an HF-exported OPT carries between blocks; an upper bound for the others).
 */
export function modelShape(model: OnnxModel, layout: DecoderLayout): ModelShape {
  const hidden = layout.blocks[0]!.linears[0]!.inFeatures;
  const heads = layout.config.heads;
  return {
    hidden,
    heads: heads ?? Math.max(1, Math.round(hidden / 64)),
    residentModelBytes: model.externalDataFiles.length === 0 ? statSync(model.path).size : 0,
    statePerSequence: { a: hidden * 4, b: 4 },
  };
}

/** Bytes of a state's tensors (what the pipeline keeps per forward batch between blocks). */
export function stateBytes(tensors: Iterable<{ data: unknown }>): number {
  let n = 0;
  for (const t of tensors) n += (t.data as ArrayBufferView).byteLength;
  return n;
}

/**
 * Fits a·s + b·s² to the bytes of one sequence's state after the prologue, from two dry prologue runs (s and s/2),
 * so that the estimate sees exactly what crosses the block boundaries of this model (hidden states in the model's
 * dtype, masks, rotary tables).
 */
export async function measureStateBytes(prologueBytes: (seqlen: number) => Promise<number>, seqlen: number): Promise<{ a: number; b: number }> {
  const s1 = seqlen, s2 = Math.max(1, Math.floor(seqlen / 2));
  const y1 = await prologueBytes(s1);
  if (s2 === s1) return { a: y1 / s1, b: 0 };
  const y2 = await prologueBytes(s2);
  // y = a·s + b·s²: b = (y1/s1 − y2/s2) / (s1 − s2)
  const b = Math.max(0, (y1 / s1 - y2 / s2) / (s1 - s2));
  return { a: Math.max(0, y1 / s1 - b * s1), b };
}

/** Calibration activations of one sequence at window length s. */
const perSequence = (shape: ModelShape, s: number) => shape.statePerSequence.a * s + shape.statePerSequence.b * s * s;

/** --allocation search's probe passes (src/pipeline/allocation/search.ts): its held-out windows and the LM head's width. */
export interface SearchShape {
  heldOut: number;
  vocab: number;
}

export function estimatePeakMemory(layout: DecoderLayout, run: CalibrationShape, shape: ModelShape, method: Method, search?: SearchShape): MemoryEstimate {
  const { nsamples, seqlen } = run;
  const tokens = nsamples * seqlen;
  const { hidden, heads } = shape;
  const fshape = forwardShape(layout, heads);
  const ffn = fshape.ffn;
  // SparseLLM's input layers (OPT fc1; LLaMA up, gate): the family's joint FFN roles but the output layer
  const ffnInputLayers = layout.family.ffnRoles.global.length - 1;
  const group = statisticsGroupSize(nsamples, seqlen);
  const forward = Math.min(run.forwardBatch ?? forwardBatchSize(nsamples, seqlen, fshape), group);
  let blockParams = 0, blockStored = 0, hessians = 0, widestInput = 0, largestLinear = 0, captureWidth = 0;
  for (const b of layout.blocks) {
    let params = 0, stored = 0;
    const inputs = new Map<string, number>();
    for (const l of b.linears) {
      const n = l.inFeatures * l.outFeatures;
      params += n;
      stored += n * (l.dtype === 'float16' || l.dtype === 'bfloat16' ? 2 : 4);
      inputs.set(l.inputName, l.inFeatures);
      widestInput = Math.max(widestInput, l.inFeatures);
      largestLinear = Math.max(largestLinear, n);
    }
    blockParams = Math.max(blockParams, params);
    blockStored = Math.max(blockStored, stored);
    hessians = Math.max(hessians, [...inputs.values()].reduce((s, n) => s + n * n * 4, 0));
    captureWidth = Math.max(captureWidth, [...inputs.values()].reduce((s, n) => s + n, 0));
  }
  const state = perSequence(shape, seqlen);
  const parts: Record<string, number> = {
    // the states between blocks: all sequences (or, offloaded, one forward batch), plus the forward batch being replaced
    activations: (run.offload ? forward : nsamples) * state + forward * state,
    // the captured inputs of the block's linears (float32, one row per token and distinct input): one forward batch's,
    // and the statistics group they are gathered into when the group spans several forward batches
    captures: ((forward < group ? group : 0) + forward) * seqlen * captureWidth * 4,
    // one block's weights for the solver: the float32 originals and pruned copies
    blockWeights: blockParams * 4 * 2,
    // the stored bytes (the model's dtype) read to make those float32 copies: garbage through the solve until V8
    // collects it (2 bytes a weight in fp16: a LLaMA-7B block's 386 MB)
    storedRead: blockStored,
    // one block's weights in onnxruntime's session: the stored bytes and onnxruntime's float32 pre-packed copy
    sessionWeights: blockStored + blockParams * 4,
    hessians: method === 'wanda' ? 0 : hessians,
    // SparseGPT: H⁻¹'s Cholesky factor of the widest input (float32); SparseLLM's FFN error column: D and D·H
    solver: method === 'wanda' ? 0 : widestInput * widestInput * 4 + (method === 'sparsellm' ? largestLinear * 4 * 2 : 0),
    // SparseLLM (native/src/solvers/sparsellm.cc): the FFN input X and the dense targets Y [tokens, hidden], the
    // family's tokens × ffn arrays (z, s, pre-activations: FamilySpec.sparsellmFfnBuffers), the output layer's double
    // Gram and its Cholesky copy (16·ffn² bytes, the f × f peak of the refit), the token blocks of the updates
    // (two float blocks and one double block of R·ffn values; R read from the solver's own rule,
    // SparseLlmTokenBlockRows: about 2²² values, 64 MB, unless all the tokens fit in one block); and the ffn × hidden
    // arrays: AᵀY and the refit's right-hand side in double (16·ffn·hidden), each input layer's Xᵀ-target product in float, and the kept best
    // epoch's copy of every FFN matrix (all alive at a refit from epoch 1 on). Checked (bench/child-prune.ts,
    // 2026-12-05, blocks 0-1, 1 epoch): LLaMA-7B's width, 2 × 1024 tokens, peak 7043 MB against 7460 estimated;
    // OPT-1.3b's width, 2 × 1024 tokens, 2976 against 3230
    sparsellm: method === 'sparsellm'
      ? tokens * hidden * 4 * 2 + tokens * ffn * 4 * layout.family.sparsellmFfnBuffers + ffn * ffn * 16 +
        16 * sparsellmTokenBlockRows(tokens, ffn, SPARSELLM_DEFAULTS.tokenChunk) * ffn +
        ffn * hidden * (16 + 4 * ffnInputLayers + 4 * layout.family.ffnRoles.global.length)
      : 0,
    // onnxruntime's working memory of one forward batch (attention scores, FFN intermediates)
    forward: forwardWorkBytes(forward, seqlen, fshape),
    model: shape.residentModelBytes,
    // --allocation search: its probe passes hold the calibration states as the prune does and, on top, the held-out
    // windows' states (one sequence each), the dense model's float32 log-probs of them (held-out × seqlen × vocab),
    // and one window's logits with its onnxruntime output (2 × seqlen × vocab)
    search: search ? search.heldOut * (state + seqlen * search.vocab * 4) + 2 * seqlen * search.vocab * 4 : 0,
    runtime: RUNTIME_BYTES,
    slack: SLACK_BYTES,
  };
  // The block's dense pass (statistics, and the re-run: less) and its solve do not overlap: the pipeline releases the
  // session before the solve and reads the float32 weights after the pass, and at both boundaries hands the C heap's
  // free pages and the solvers' workspace cache back to the system (native releaseMemory; without it onnxruntime's freed
  // session stayed resident through the solve: OPT-1.3b's shape, SparseGPT, 1855 MB against 1530 estimated). The peak
  // is the larger of the two.
  const p = parts as Record<string, number>;
  // (--allocation search's part is counted in both: its probe passes run the same pass and solve per block)
  const common = p.runtime! + p.slack! + p.model! + p.activations! + p.hessians! + p.captures! + p.search!;
  const phases = {
    // the FFN inputs SparseLLM keeps grow to [tokens, hidden] during the pass
    statistics: common + p.sessionWeights! + p.forward! + (method === 'sparsellm' ? tokens * hidden * 4 : 0),
    // the pass's capture buffers are garbage by then, but typed arrays are only freed when the collector runs
    solve: common + p.blockWeights! + p.storedRead! + p.solver! + p.sparsellm!,
  };
  return { bytes: Math.max(phases.statistics, phases.solve), parts, phases, nsamples, seqlen, offload: run.offload };
}

/**
 * Node, onnxruntime and OpenBLAS with nothing loaded: 172–175 MB measured (2026-12-05: the pipeline's modules, the addon,
 * one stories260K block session run and one SYRK, process RSS).
 */
const RUNTIME_BYTES = 180 * 2 ** 20;
/**
 * [batch, heads, s, s] attention tensors and FFN-wide rows per token of onnxruntime's block forward (forwardWorkBytes),
 * and a fixed slack (glibc's and onnxruntime's per-run allocations, garbage not yet collected), fitted to three prunes in
 * child processes with the block sessions' arena off (bench/child-prune.ts, 2026-12-05, SparseGPT): OPT-shaped d=512
 * fp32, 8 × 256 tokens (forward batch 8): peak 450 MB; d=2048 FFN 8192 fp16, 4 × 1024 tokens, forward batch 1 and 2:
 * peaks 1442 and 1431 MB. The estimates are then 439, 1560 and 1892 MB (0.98, 1.08 and 1.32 of the peak), and 2800 MB for
 * SparseLLM at d=2048, 2 × 1024 tokens (peak 2725 MB, a fourth check not used in the fit). The forward batch 2 run is
 * overestimated most (its peak was the solve's, not the pass's); PRUNE_DEFAULTS.forwardBudgetMb keeps that shape at 1.
 * The slack was cut from 96 to 48 MB on 2026-12-06, when the pipeline began handing the C heap back between a block's
 * pass and its solve (native releaseMemory) and the solve phase began counting the stored bytes read (storedRead): 96 MB
 * then overestimated the small models of `npm run bench` by up to 1.58× (a whole OPT d=64 prune peaks at 224 MB).
 * With 48 MB the estimates of that day's runs are 0.84–1.12 of the peak for `npm run bench`'s models, 0.89–1.01 for
 * `--scale`'s OPT-1.3b and LLaMA-7B shapes, and 0.82–0.89 for the single d=512 peaks of its depth chart (bench/RESULTS.md).
 */
const ATTENTION_COPIES = 2;
const FFN_ROWS = 3;
const SLACK_BYTES = 48 * 2 ** 20;

export function availableMemoryBytes(): number {
  if (existsSync('/proc/meminfo')) {
    const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  }
  return freemem();
}

const gb = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(1)} GB` : `${Math.round(b / 2 ** 20)} MB`);

/** The largest value in [1, upper] for which fits(v) holds (fits is monotone: true up to some value), or 0. */
function largestFitting(upper: number, fits: (v: number) => boolean): number {
  if (!fits(1)) return 0;
  let lo = 1, hi = upper;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Throws a UserError when the estimate exceeds available memory (or --max-memory), naming the knobs that bring it
 * under with the values that fit: --offload DIR, --nsamples N, --seqlen N (each alone, the others as given).
 */
export function checkMemory(estimate: (run: CalibrationShape) => MemoryEstimate, run: CalibrationShape, maxMemoryGb?: number): MemoryEstimate {
  const limit = maxMemoryGb !== undefined ? maxMemoryGb * 2 ** 30 : availableMemoryBytes();
  const e = estimate(run);
  if (e.bytes <= limit) return e;
  const biggest = Object.entries(e.parts).sort((a, b) => b[1] - a[1]).slice(0, 2).map(([k, v]) => `${k} ${gb(v)}`).join(', ');
  const fits = (r: CalibrationShape) => estimate(r).bytes <= limit;
  const knobs: string[] = [];
  if (!run.offload && fits({ ...run, offload: true })) knobs.push(`--offload DIR (estimate ${gb(estimate({ ...run, offload: true }).bytes)})`);
  const n = largestFitting(run.nsamples - 1, (v) => fits({ ...run, nsamples: v }));
  if (n > 0) knobs.push(`--nsamples ${n}`);
  const s = largestFitting(run.seqlen - 1, (v) => fits({ ...run, seqlen: v }));
  if (s > 0) knobs.push(`--seqlen ${s}`);
  const where = maxMemoryGb !== undefined ? `the --max-memory ${maxMemoryGb} GB` : `the ${gb(limit)} available`;
  const advice = knobs.length
    ? `use ${knobs.join(', or ')}`
    : `no --nsamples, --seqlen or --offload brings it under (1 sample of 1 token, offloaded, still needs ${gb(estimate({ nsamples: 1, seqlen: 1, offload: true }).bytes)}: the runtime and one block)`;
  throw new UserError(`estimated peak memory ${gb(e.bytes)} (${biggest}) exceeds ${where}: ${advice}`);
}
