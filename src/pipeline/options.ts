// The options of a prune run, their defaults (following the reference implementations) and their validation.
import { UserError } from '../errors.js';
import type { ModelSourceOptions } from '../hub/registry.js';

export const METHODS = ['magnitude', 'wanda', 'sparsegpt', 'sparsellm'] as const;
export type Method = (typeof METHODS)[number];

import type { SparsitySpec } from '../native/sparsity.js';
export type { SparsitySpec };

/** SparseLLM settings; unset values take the solver's per-family defaults (those of the reference code). */
export interface SparseLlmOptions {
  alpha?: number;
  beta?: number;
  gamma?: number;
  epochs?: number;
  /** OPT fc2 refit: 'gd' (the reference's 10 gradient steps) or 'lstsq' (closed form). */
  fc2Update?: 'lstsq' | 'gd';
  /** Reproduce the reference's fp16 casts and accumulated damping. */
  referenceQuirks?: boolean;
  /** Keep the epoch whose FFN output error on the calibration data is lowest (epoch 0 = SparseGPT). */
  keepBest?: boolean;
  /** Refit fc2/down on the real sparse activations each epoch (default true; false = reference). */
  outputRefit?: boolean;
  refitRidge?: number;
  lstsqRidge?: number;
}

export interface PruneOptions {
  model: string;
  /** --revision / --model-file for a hub model or folder */
  modelSource?: ModelSourceOptions;
  method: Method;
  spec: SparsitySpec;
  calib: string;
  nsamples: number;
  seqlen?: number;
  seed: number;
  docSeparator?: string;
  layers: string;
  percdamp: number;
  blocksize: number;
  sparsellm: SparseLlmOptions;
  out: string;
  force: boolean;
  resume: boolean;
  eval: string[];
  evalSeqlen?: number;
  /** Evaluate only the first N windows per dataset (quick looks; not the reference number). */
  evalMaxWindows?: number;
  dataDir?: string;
  /** Tokenizer folder or file when the model has none (default: the model's folder). */
  tokenizer?: string;
  quiet: boolean;
  maxMemoryGb?: number;
  /** Where the solvers run: 'auto' (default) takes CUDA when a CUDA build finds a GPU and cuBLAS. */
  device?: 'cuda' | 'cpu' | 'auto';
  /** Output: ONNX (default), a HF safetensors checkpoint in the input family's layout, or both. */
  format?: 'onnx' | 'safetensors' | 'both';
  /** Largest safetensors shard in bytes (default 5 GB, as hub checkpoints). */
  maxShardBytes?: number;
}

export function sparsitySpec(sparsity: number | undefined, prunen: number | undefined, prunem: number | undefined): SparsitySpec {
  if (prunen !== undefined || prunem !== undefined) {
    if (prunen === undefined || prunem === undefined)
      throw new UserError('N:M sparsity needs both --prunen (weights pruned per group) and --prunem (group size)');
    if (!Number.isInteger(prunen) || !Number.isInteger(prunem) || prunen <= 0 || prunem <= 1 || prunen >= prunem)
      throw new UserError(`--prunen ${prunen} --prunem ${prunem} is not a valid N:M pattern: need integers 0 < N < M (N = weights pruned per group of M, e.g. 2:4)`);
    return { prunen, prunem };
  }
  const s = sparsity ?? 0.5;
  if (!Number.isFinite(s) || s < 0 || s >= 1) throw new UserError(`--sparsity ${sparsity} is outside [0, 1): give the fraction of weights to prune, e.g. 0.5`);
  return { sparsity: s };
}

export function describeSpec(spec: SparsitySpec): string {
  return 'prunen' in spec ? `${spec.prunen}:${spec.prunem} (prune ${spec.prunen} of every ${spec.prunem})` : `${(spec.sparsity * 100).toFixed(0)}% unstructured`;
}

/** Expected fraction of zeros a spec produces. */
export function targetSparsity(spec: SparsitySpec): number {
  return 'prunen' in spec ? spec.prunen / spec.prunem : spec.sparsity;
}

/**
 * Parses --layers: `all`, `first-half` (the SparseLLM paper's setting), `last-half`, or a list of
 * indices and ranges such as `0-11` or `0,2,5-7`. Returns the sorted block indices.
 */
export function parseLayers(spec: string, numBlocks: number): number[] {
  const s = spec.trim().toLowerCase();
  if (s === 'all' || s === '') return [...Array(numBlocks).keys()];
  if (s === 'first-half') return [...Array(Math.floor(numBlocks / 2)).keys()];
  if (s === 'last-half') return [...Array(numBlocks).keys()].slice(Math.floor(numBlocks / 2));
  const picked = new Set<number>();
  for (const part of s.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new UserError(`--layers "${spec}" is not understood: use all, first-half, last-half, or indices like 0-11 or 0,2,5-7`);
    const lo = Number(m[1]), hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo || hi >= numBlocks)
      throw new UserError(`--layers "${spec}" is out of range: the model has ${numBlocks} blocks (0-${numBlocks - 1})`);
    for (let i = lo; i <= hi; i++) picked.add(i);
  }
  return [...picked].sort((a, b) => a - b);
}
