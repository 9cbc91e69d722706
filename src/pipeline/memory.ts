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
}

export interface ModelShape {
  hidden: number;
  /** attention heads (ModelConfig), for onnxruntime's [batch, heads, seqlen, seqlen] score tensors */
  heads: number;
  /** sequences per onnxruntime run */
  microBatch: number;
  /** bytes of weights held in memory besides the current block (inline models keep the whole file) */
  residentModelBytes: number;
}

/** Sequences per onnxruntime run in the pipeline: about 4096 tokens. */
export function microBatchSize(nsamples: number, seqlen: number): number {
  return Math.max(1, Math.min(nsamples, Math.floor(4096 / seqlen)));
}

export function modelShape(model: OnnxModel, layout: DecoderLayout, nsamples: number, seqlen: number): ModelShape {
  const hidden = layout.blocks[0]!.linears[0]!.inFeatures;
  const heads = layout.config.heads;
  return {
    hidden,
    heads: heads ?? Math.max(1, Math.round(hidden / 64)),
    microBatch: microBatchSize(nsamples, seqlen),
    residentModelBytes: model.externalDataFiles.length === 0 ? statSync(model.path).size : 0,
  };
}

export function estimatePeakMemory(layout: DecoderLayout, nsamples: number, seqlen: number, shape: ModelShape, method: Method): MemoryEstimate {
  const tokens = nsamples * seqlen;
  const { hidden, heads, microBatch } = shape;
  let blockWeights = 0, hessians = 0, ffn = 0;
  for (const b of layout.blocks) {
    let w = 0;
    const inputs = new Map<string, number>();
    for (const l of b.linears) {
      w += l.inFeatures * l.outFeatures * 4;
      inputs.set(l.inputName, l.inFeatures);
      ffn = Math.max(ffn, l.outFeatures, l.inFeatures);
    }
    blockWeights = Math.max(blockWeights, w);
    hessians = Math.max(hessians, [...inputs.values()].reduce((s, n) => s + n * n * 4, 0));
  }
  const parts: Record<string, number> = {
    // hidden states between blocks (up to two tensors cross a boundary), plus the next block's copy
    activations: tokens * hidden * 4 * 3,
    // one block's weights: original, pruned copy, session copy
    blockWeights: blockWeights * 3,
    hessians: method === 'wanda' ? 0 : hessians,
    // SparseLLM (native/src/solvers/sparsellm.cc): the FFN input X and the dense targets Y [tokens, hidden], the
    // family's tokens × ffn arrays (z, s, pre-activations: FamilySpec.sparsellmFfnBuffers), the output layer's double
    // Gram and its Cholesky copy (16·ffn² bytes, the f × f peak of the refit), and the token blocks of the updates
    // (two float blocks and one double block of 2²² values: 64 MB)
    sparsellm: method === 'sparsellm'
      ? tokens * hidden * 4 * 2 + tokens * ffn * 4 * layout.family.sparsellmFfnBuffers + ffn * ffn * 16 + 64 * 2 ** 20
      : 0,
    // onnxruntime's attention scores/probabilities per run, and the captured linear inputs of one run
    forward: microBatch * heads * seqlen * seqlen * 4 * 4 + microBatch * seqlen * ffn * 4 * 6,
    model: shape.residentModelBytes,
    runtime: 300 * 2 ** 20,
  };
  return { bytes: Object.values(parts).reduce((a, b) => a + b, 0), parts, nsamples, seqlen };
}

export function availableMemoryBytes(): number {
  if (existsSync('/proc/meminfo')) {
    const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  }
  return freemem();
}

const gb = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(1)} GB` : `${Math.round(b / 2 ** 20)} MB`);

/** Throws a UserError when the estimate exceeds available memory (or --max-memory). */
export function checkMemory(estimate: MemoryEstimate, maxMemoryGb?: number): void {
  const limit = maxMemoryGb !== undefined ? maxMemoryGb * 2 ** 30 : availableMemoryBytes();
  if (estimate.bytes <= limit) return;
  const biggest = Object.entries(estimate.parts).sort((a, b) => b[1] - a[1]).slice(0, 2).map(([k, v]) => `${k} ${gb(v)}`).join(', ');
  const fit = Math.max(1, Math.floor((estimate.nsamples * limit) / estimate.bytes));
  throw new UserError(
    `estimated peak memory ${gb(estimate.bytes)} (${biggest}) exceeds the ${gb(limit)} available: lower --nsamples (about ${fit} would fit) or --seqlen`,
  );
}
