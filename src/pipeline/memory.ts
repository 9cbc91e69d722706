// A peak-memory estimate made before a prune starts, so a run that cannot fit stops with figures and advice
// instead of being killed by the system hours later.
import { existsSync, readFileSync } from 'node:fs';
import { freemem } from 'node:os';
import { UserError } from '../errors.js';
import { statSync } from 'node:fs';
import type { DecoderLayout, OnnxModel } from '../model/index.js';
import type { Method } from './options.js';

export interface MemoryEstimate {
  bytes: number;
  parts: Record<string, number>;
  nsamples: number;
  seqlen: number;
  offload: boolean;
}

/** The calibration size of a run: what the estimate scales with, and the knobs the refusal suggests. */
export interface CalibrationShape {
  nsamples: number;
  seqlen: number;
  /** --offload: the activations between blocks live in files, one micro-batch in memory */
  offload: boolean;
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

/** Sequences per onnxruntime run in the pipeline: about 4096 tokens. */
export function microBatchSize(nsamples: number, seqlen: number): number {
  return Math.max(1, Math.min(nsamples, Math.floor(4096 / seqlen)));
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

/** Bytes of a state's tensors (what the pipeline keeps per micro-batch between blocks). */
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
  const microBatch = microBatchSize(nsamples, seqlen);
  let blockParams = 0, blockStored = 0, hessians = 0, ffn = 0, widestInput = 0, largestLinear = 0;
  for (const b of layout.blocks) {
    let params = 0, stored = 0;
    const inputs = new Map<string, number>();
    for (const l of b.linears) {
      const n = l.inFeatures * l.outFeatures;
      params += n;
      stored += n * (l.dtype === 'float16' || l.dtype === 'bfloat16' ? 2 : 4);
      inputs.set(l.inputName, l.inFeatures);
      ffn = Math.max(ffn, l.outFeatures, l.inFeatures);
      widestInput = Math.max(widestInput, l.inFeatures);
      largestLinear = Math.max(largestLinear, n);
    }
    blockParams = Math.max(blockParams, params);
    blockStored = Math.max(blockStored, stored);
    hessians = Math.max(hessians, [...inputs.values()].reduce((s, n) => s + n * n * 4, 0));
  }
  const state = perSequence(shape, seqlen);
  const parts: Record<string, number> = {
    // the states between blocks: all sequences (or, offloaded, one micro-batch), plus the micro-batch being replaced
    activations: (run.offload ? microBatch : nsamples) * state + microBatch * state,
    // one block's weights: the float32 originals and pruned copies, and the session's (stored bytes + onnxruntime's
    // float32 pre-packed copy)
    blockWeights: blockParams * 4 * 2 + blockStored + blockParams * 4,
    hessians: method === 'wanda' ? 0 : hessians,
    // SparseGPT: H⁻¹'s Cholesky factor of the widest input (float32); SparseLLM's FFN error column: D and D·H
    solver: method === 'wanda' ? 0 : widestInput * widestInput * 4 + (method === 'sparsellm' ? largestLinear * 4 * 2 : 0),
    // SparseLLM (native/src/solvers/sparsellm.cc): the FFN input X and the dense targets Y [tokens, hidden], the
    // family's tokens × ffn arrays (z, s, pre-activations: FamilySpec.sparsellmFfnBuffers), the output layer's double
    // Gram and its Cholesky copy (16·ffn² bytes, the f × f peak of the refit), and the token blocks of the updates
    // (two float blocks and one double block of 2²² values: 64 MB)
    sparsellm: method === 'sparsellm'
      ? tokens * hidden * 4 * 2 + tokens * ffn * 4 * layout.family.sparsellmFfnBuffers + ffn * ffn * 16 + 64 * 2 ** 20
      : 0,
    // onnxruntime's attention scores/probabilities per run (4 copies), and the captured linear inputs and onnxruntime's
    // other buffers of one run (7 FFN-wide float32 rows per token; fitted, see RUNTIME_BYTES)
    forward: microBatch * heads * seqlen * seqlen * 4 * 4 + microBatch * seqlen * ffn * 4 * 7,
    model: shape.residentModelBytes,
    // --allocation search: its probe passes hold the calibration states as the prune does and, on top, the held-out
    // windows' states (one sequence each), the dense model's float32 log-probs of them (held-out × seqlen × vocab),
    // and one window's logits with its onnxruntime output (2 × seqlen × vocab)
    search: search ? search.heldOut * (state + seqlen * search.vocab * 4) + 2 * seqlen * search.vocab * 4 : 0,
    runtime: RUNTIME_BYTES,
  };
  return { bytes: Object.values(parts).reduce((a, b) => a + b, 0), parts, nsamples, seqlen, offload: run.offload };
}

/**
 * Node, onnxruntime and OpenBLAS with nothing loaded. Fitted with the forward term's factors by least squares to the
 * peak RSS of 12 prunes in child processes (bench/child-prune.ts, 2026-12-04: stories260K and OPT-shaped d=256..768,
 * 8..128 × 128..2048 tokens, Wanda/SparseGPT/SparseLLM): 183 MB, attention factor 0.99, FFN-row factor 1.21 × 6; every
 * run then within 0.90–1.13 of its estimate.
 */
const RUNTIME_BYTES = 180 * 2 ** 20;

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
