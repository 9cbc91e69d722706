// Prunes the linear layers of one decoder block with the chosen method, from the block's statistics.
// The method table says, per method, how one linear is pruned locally; SparseLLM additionally prunes the
// FFN globally (fc1+fc2 for OPT, gate+up+down for LLaMA) and the attention projections locally with SparseGPT,
// as the reference does (ALGORITHMS.md §1.3, §1.6). Each linear gets its own target (specOf, from the allocation);
// SparseLLM's joint FFN solve takes one target for the whole FFN, so its roles must share it.
import type { DecoderBlock, FamilySpec, LinearLayer } from '../model/index.js';
import { magnitudePrune } from '../native/magnitude.js';
import { sparsegptPrune } from '../native/sparsegpt.js';
import { sparsellmLlama, sparsellmOpt, type SparseLlmResult } from '../native/sparsellm.js';
import type { SparsitySpec } from '../native/sparsity.js';
import { wandaPrune } from '../native/wanda.js';
import type { ObsLoss } from './layer-error.js';
import type { BlockStatistics } from './statistics.js';
import { sparseGptOptions, sparseLlmOptions, type Method, type ResolvedPruneOptions } from './options.js';

export interface LinearReport {
  block: number;
  role: string;
  in: number;
  out: number;
  sparsity: number;
  /**
   * Relative squared output error ‖(W − Ŵ)X‖² / ‖WX‖² over the calibration inputs, null without a Hessian
   * (magnitude, Wanda). Numerator: SparseGPT's OBS loss less its damping share (exact); SparseLLM's FFN: a row
   * subsample. Denominator: a row subsample of tr(W H Wᵀ) (all rows up to 64). See src/pipeline/layer-error.ts.
   */
  layerOutputError: number | null;
  solver: string;
  seconds: number;
  /** SparseGPT Cholesky retries with more damping (0 = none). */
  dampingRetries?: number;
}

export interface BlockPruneResult {
  weights: Map<string, Float32Array>;
  linears: LinearReport[];
  sparsellm?: { epochs: { objective: number | null; outputError: number }[]; outputError: number; chosenEpoch: number; seconds: number; warnings?: string[] };
}

type LocalSolver = (W: Float32Array, l: LinearLayer, stats: BlockStatistics | null, o: ResolvedPruneOptions, spec: SparsitySpec) => Promise<{ retries?: number; obs?: ObsLoss }>;

/** Relative squared output error of one pruned linear (W dense, Wp pruned; obs: SparseGPT's loss), null where the method has no Hessian. */
export type LayerOutputError = (W: Float32Array, Wp: Float32Array, l: LinearLayer, obs?: ObsLoss) => Promise<number | null>;

const LOCAL_SOLVERS: Record<Method, LocalSolver> = {
  magnitude: async (W, l, _s, _o, spec) => {
    await magnitudePrune(W, l.outFeatures, l.inFeatures, spec);
    return {};
  },
  wanda: async (W, l, s, _o, spec) => {
    await wandaPrune(W, l.outFeatures, l.inFeatures, s!.scaler(l.role), spec);
    return {};
  },
  sparsegpt: async (W, l, s, o, spec) => {
    const options = sparseGptOptions({ ...spec, percdamp: o.percdamp, blocksize: o.blocksize });
    const r = await sparsegptPrune(W, l.outFeatures, l.inFeatures, s!.hessian(l.role).H, options, o.device === 'cuda' ? 'cuda' : 'cpu');
    return { retries: r.retries, obs: { loss: r.loss, damping: r.damping } };
  },
  // SparseLLM prunes the attention projections locally with SparseGPT.
  sparsellm: (W, l, s, o, spec) => LOCAL_SOLVERS.sparsegpt(W, l, s, o, spec),
};

export async function pruneBlock(
  block: DecoderBlock,
  family: FamilySpec,
  weights: Map<string, Float32Array>,
  biases: Map<string, Float32Array>,
  stats: BlockStatistics | null,
  options: ResolvedPruneOptions,
  /** the sparsity target of each linear (by role) */
  specOf: (role: string) => SparsitySpec,
  layerOutputError: LayerOutputError,
): Promise<BlockPruneResult> {
  const pruned = new Map<string, Float32Array>();
  const reports: LinearReport[] = [];
  // a block given without its FFN (the search's attention-only probes) has no joint solve
  const global = new Set(options.method === 'sparsellm' && block.linears.some((l) => family.ffnRoles.global.includes(l.role)) ? family.ffnRoles.global : []);
  const linear = (role: string) => block.linears.find((l) => l.role === role)!;

  for (const l of block.linears) {
    if (global.has(l.role)) continue;
    const W = weights.get(l.role)!.slice();
    const t0 = performance.now();
    const r = await LOCAL_SOLVERS[options.method](W, l, stats, options, specOf(l.role));
    const seconds = (performance.now() - t0) / 1000;
    pruned.set(l.role, W);
    reports.push(await linearReport(l, W, weights.get(l.role)!, seconds, options.method === 'sparsellm' ? 'sparsegpt' : options.method, r.retries, layerOutputError, r.obs));
  }

  let sparsellm: BlockPruneResult['sparsellm'];
  if (global.size > 0) {
    const { X, tokens } = stats!.ffnInput();
    const spec = ffnSpec(block.index, [...global], specOf);
    const solverOptions = sparseLlmOptions(family, { ...options.sparsellm, ...spec, percdamp: options.percdamp, blocksize: options.blocksize });
    const t0 = performance.now();
    // --device cuda: SparseLLM's inner SparseGPT prunes run on the GPU too
    const device = options.device === 'cuda' ? 'cuda' : 'cpu';
    let result: SparseLlmResult;
    // the family table names the FFN's roles in the solver's order: OPT [fc1, fc2], LLaMA [gate, up, down]
    const roles = family.ffnRoles.global;
    const copy = (role: string) => {
      const W = weights.get(role)!.slice();
      pruned.set(role, W);
      return W;
    };
    if (family.ffn === 'relu-fc') {
      const [fc1, fc2] = roles.map(linear) as [LinearLayer, LinearLayer];
      // the joint solve fits the biased FFN: a caller that forgot the biases would get another (wrong) solution silently
      for (const l of [fc1, fc2]) if (l.biasName && !biases.has(l.role)) throw new Error(`pruneBlock: block ${block.index}'s ${l.role} has a bias, but none was given`);
      result = await sparsellmOpt(
        {
          tokens, hidden: fc1.inFeatures, ffn: fc1.outFeatures, X, W1: copy(fc1.role), W2: copy(fc2.role),
          b1: biases.get(fc1.role) ?? new Float32Array(fc1.outFeatures),
          b2: biases.get(fc2.role) ?? new Float32Array(fc2.outFeatures),
          H1: stats!.hessian(fc1.role).H, H2: stats!.hessian(fc2.role).H, nsamples: stats!.sequences,
        },
        solverOptions,
        device,
      );
    } else {
      const [gate, up, down] = roles.map(linear) as [LinearLayer, LinearLayer, LinearLayer];
      result = await sparsellmLlama(
        {
          tokens, hidden: up.inFeatures, ffn: up.outFeatures, X, Wg: copy(gate.role), Wu: copy(up.role), Wd: copy(down.role),
          Hx: stats!.hessian(family.ffnRoles.input).H, Hd: stats!.hessian(down.role).H, nsamples: stats!.sequences,
        },
        solverOptions,
        device,
      );
    }
    const seconds = (performance.now() - t0) / 1000;
    for (const role of global) {
      reports.push(await linearReport(linear(role), pruned.get(role)!, weights.get(role)!, seconds / global.size, 'sparsellm', undefined, layerOutputError));
    }
    sparsellm = {
      epochs: result.epochs.map((e) => ({ objective: e.objective, outputError: e.outputError })),
      outputError: result.outputError,
      chosenEpoch: result.chosenEpoch,
      seconds,
      ...(result.warnings.length ? { warnings: result.warnings } : {}),
    };
  }
  // keep the block's order of linears in the report
  const order = new Map(block.linears.map((l, k) => [l.role, k]));
  reports.sort((a, b) => order.get(a.role)! - order.get(b.role)!);
  return { weights: pruned, linears: reports, sparsellm };
}

/** The one target of SparseLLM's joint FFN solve: its roles must agree (the allocations and profiles keep them equal). */
export function ffnSpec(block: number, roles: string[], specOf: (role: string) => SparsitySpec): SparsitySpec {
  const specs = roles.map(specOf);
  const key = (s: SparsitySpec) => JSON.stringify(s);
  const odd = specs.findIndex((s) => key(s) !== key(specs[0]!));
  if (odd >= 0) throw new Error(`block ${block}: SparseLLM prunes ${roles.join('/')} jointly, but ${roles[odd]} has another target than ${roles[0]}`);
  return specs[0]!;
}

async function linearReport(
  l: LinearLayer, Wp: Float32Array, W: Float32Array, seconds: number, solver: string, retries: number | undefined,
  layerOutputError: LayerOutputError, obs?: ObsLoss,
): Promise<LinearReport> {
  let zeros = 0;
  for (let k = 0; k < Wp.length; k++) if (Wp[k] === 0) zeros++;
  return {
    block: l.block, role: l.role, in: l.inFeatures, out: l.outFeatures, sparsity: zeros / Wp.length,
    layerOutputError: await layerOutputError(W, Wp, l, obs), solver, seconds, ...(retries ? { dampingRetries: retries } : {}),
  };
}
