// The options of a prune run: every default, in one place (following the reference implementations), their
// resolution into the fully specified options the solvers take, and their validation. The per-family facts
// (SparseLLM's α/β/γ, the FFN roles) are in the family table (src/model/families) and are read from here.
import { UserError } from '../errors.js';
import type { FamilySpec, ModelConfig } from '../model/families/registry.js';
import type { SparseGptOptions } from '../native/sparsegpt.js';
import type { SparseLlmOptions } from '../native/sparsellm.js';
import type { SparsitySpec } from '../native/sparsity.js';

export type { SparsitySpec };
import type { ModelSourceOptions } from '../hub/registry.js';

export const METHODS = ['magnitude', 'wanda', 'sparsegpt', 'sparsellm'] as const;
export type Method = (typeof METHODS)[number];

export type Device = 'cuda' | 'cpu' | 'auto';

/** Fraction of weights pruned per layer when neither --sparsity nor N:M is given. */
export const DEFAULT_SPARSITY = 0.5;

/** SparseGPT (PAPERS.md §2, ALGORITHMS.md §2.3): damping = percdamp · mean(diag H), lazy-update block width. */
export const SPARSEGPT_DEFAULTS = {
  percdamp: 0.01,
  blocksize: 128,
  /** reference quirk (ALGORITHMS.md §1.4): write the dead-input fix + damping back into H */
  accumulateDamping: false,
  /** factor H in float64 instead of float32 */
  doublePrecision: false,
} as const;

/** SparseLLM (ALGORITHMS.md §1.4–1.5) except α/β/γ, which are per family (FamilySpec.sparsellm). */
export const SPARSELLM_DEFAULTS = {
  /** alternating epochs; epoch 0 = SparseGPT of every FFN matrix with its local Hessian */
  epochs: 4,
  /** OPT fc2 update: 'gd' (the reference's gradient steps; measured better) or 'lstsq' (closed form) */
  fc2Update: 'gd',
  gdSteps: 10,
  gdLr: 0.01,
  /** the reference's fp16 casts and accumulated damping */
  referenceQuirks: false,
  /** ridge of the least-squares normal equations, relative to mean(diag(AᵀA)) */
  lstsqRidge: 1e-6,
  /** keep the epoch with the lowest FFN output error on the calibration data (false = the reference: last epoch) */
  keepBest: true,
  /** refit fc2/down on the real sparse activations each epoch (false = the reference) */
  outputRefit: true,
  refitRidge: 1e-3,
  /** LLaMA s update: 'newton' (safeguarded elementwise Newton) or 'gd' (the reference: sSteps steps of sLr) */
  sUpdate: 'newton',
  sSteps: 2,
  sLr: 0.01,
  /** token rows per block of the solver's updates (0 = automatic: about 16 MB per FFN-wide block) */
  tokenChunk: 0,
  /** the last epoch's p/z(/s) updates only report its objective: skipped (about a quarter of that epoch's products) */
  lastEpochObjective: false,
} as const satisfies Omit<SparseLlmOptions, 'alpha' | 'beta' | 'gamma' | 'percdamp' | 'blocksize' | 'sparsity' | 'prunen' | 'prunem'>;

/** Token-row stride of the report-only Hessian of SparseLLM's output layer (src/pipeline/statistics.ts). */
export const REPORT_HESSIAN_ROW_STRIDE = 4;

/** How the sparsity budget is spread over the pruned linears (src/pipeline/allocation). */
export const ALLOCATIONS = ['uniform', 'owl', 'search'] as const;
export type Allocation = (typeof ALLOCATIONS)[number];

/** Per-layer bounds of any allocated target (a profile's values must lie inside them too). */
export const SPARSITY_BOUNDS = { min: 0, max: 0.99 } as const;

/**
 * OWL (Yin et al., ICML 2024; llm-compressor's owl_m / owl_lmbda): a weight is an outlier when its Wanda score
 * |W_ij|·‖X_j‖ exceeds m × its block's mean score; block sparsities spread over target ± lambda.
 */
export const OWL_DEFAULTS = { m: 5, lambda: 0.08 } as const;

/**
 * --allocation search (src/pipeline/allocation/search.ts): per-unit deviations from the target are bounded by
 * maxDeviation; the loss probes run on heldOut extra calibration windows (drawn after the nsamples of the prune).
 * rounds: probe passes (the first around the uniform profile, each next one around the previous round's choice, over
 * half the deviation); one more pass then measures the last choice, and the profile with the lowest held-out loss wins.
 * guard: a profile other than uniform wins only if its paired per-window gain over uniform exceeds guard standard
 * errors (0: the lowest mean wins, ties to uniform). 2: on the 12 rows of the README's allocation table the chosen
 * profiles beat uniform by 3.4–15 standard errors except one (0.77), the one that lost a test set to uniform.
 */
export const SEARCH_DEFAULTS = { maxDeviation: 0.1, heldOut: 8, metric: 'kl' as 'kl' | 'nll', rounds: 2, guard: 2 } as const;

export interface AllocationSettings {
  allocation?: Allocation;
  owlM?: number;
  owlLambda?: number;
  searchDeviation?: number;
  searchHeldOut?: number;
  searchRounds?: number;
  /** standard errors of the paired held-out gain a non-uniform profile needs to beat uniform */
  searchGuard?: number;
  /** the probes' score: KL to the dense model's next-token distributions (kl) or the held-out text's NLL (nll) */
  searchMetric?: 'kl' | 'nll';
  /** the probes' held-out text (a --calib dataset name or file); default: the calibration text, windows after the prune's */
  searchData?: string;
  /** explicit per-block / per-matrix targets (a profile JSON or a sparsellm-report.json) */
  sparsityProfile?: string;
}

/** The rest of a prune run's defaults (CLI flags and runPrune callers both take them from here). */
export type OutputFormat = 'onnx' | 'safetensors' | 'both';

export const PRUNE_DEFAULTS = {
  method: 'sparsellm' as Method,
  calib: 'c4',
  seed: 0,
  layers: 'all',
  device: 'auto' as Device,
  format: 'onnx' as OutputFormat,
  /** calibration windows are at most this long (and evaluation windows): the reference's 2048 */
  maxSeqlen: 2048,
  /**
   * onnxruntime's working memory for one block forward (attention scores, FFN rows) is kept under this many MB by
   * running fewer sequences at once (memory.ts forwardBatchSize); at least one sequence runs. Not a user setting: the
   * same command must give the same forward batches, hence the same numbers, on every machine. Batching more
   * sequences buys nothing once a run's products have a few hundred rows: on the d=768 bench model (32 × 512 tokens,
   * 44 MB per sequence) a SparseGPT prune took 51.4 s at 1 sequence per run and 53.8 s at 4 with onnxruntime's arena,
   * peak RSS 622 and 850 MB, and 106 s at 4 without the arena (2026-12-05, bench/child-prune.ts, idle machine); the
   * small models still batch (stories260K: 5 MB per sequence at 256 tokens). It also decides the arena (forwardArena).
   */
  forwardBudgetMb: 64,
};

/** Calibration sequences: the reference's 128 (SparseGPT, Wanda), 64 for SparseLLM (it keeps every FFN activation). */
export function defaultNsamples(method: Method): number {
  return method === 'sparsellm' ? 64 : 128;
}

/** Calibration / evaluation window: the model's positions, at most 2048 (2048 when the config does not say). */
export function defaultSeqlen(config: Pick<ModelConfig, 'maxPositions'>): number {
  return Math.min(config.maxPositions ?? PRUNE_DEFAULTS.maxSeqlen, PRUNE_DEFAULTS.maxSeqlen);
}

/** SparseLLM settings a user may give; unset values take SPARSELLM_DEFAULTS and the family's α/β/γ. */
export interface SparseLlmSettings {
  alpha?: number;
  beta?: number;
  gamma?: number;
  epochs?: number;
  fc2Update?: 'lstsq' | 'gd';
  referenceQuirks?: boolean;
  keepBest?: boolean;
  outputRefit?: boolean;
  refitRidge?: number;
  lstsqRidge?: number;
  sUpdate?: 'gd' | 'newton';
  /** compute the last epoch's objective (its p/z updates feed no weight; bench/repro.ts prints the objective trace) */
  lastEpochObjective?: boolean;
}

/** A prune run as callers describe it: unset fields take the defaults above (see resolvePruneOptions). */
export interface PruneOptions {
  model: string;
  /** --revision / --model-file for a hub model or folder */
  modelSource?: ModelSourceOptions;
  out: string;
  method?: Method;
  /** default: DEFAULT_SPARSITY unstructured */
  spec?: SparsitySpec;
  calib?: string;
  nsamples?: number;
  /** default: defaultSeqlen(the model's config) */
  seqlen?: number;
  seed?: number;
  docSeparator?: string;
  layers?: string;
  percdamp?: number;
  blocksize?: number;
  sparsellm?: SparseLlmSettings;
  force?: boolean;
  resume?: boolean;
  eval?: string[];
  evalSeqlen?: number;
  /** Evaluate only the first N windows per dataset (quick looks; not the reference number). */
  evalMaxWindows?: number;
  dataDir?: string;
  /** Tokenizer folder or file when the model has none (default: the model's folder). */
  tokenizer?: string;
  quiet?: boolean;
  maxMemoryGb?: number;
  /**
   * Stream the calibration activations between blocks through files in a fresh folder under this one (removed at
   * the end) instead of holding them in memory: for calibration sets larger than RAM.
   */
  offload?: string;
  /** Where the solvers run: 'auto' takes CUDA when a CUDA build finds a GPU and cuBLAS. */
  device?: Device;
  /** Output: ONNX (the input's layout), a HF safetensors checkpoint in the input family's layout, or both. */
  format?: OutputFormat;
  /** Largest safetensors shard in bytes (DEFAULT_MAX_SHARD_BYTES in src/convert/safetensors.ts when unset, as hub checkpoints). */
  maxShardBytes?: number;
  /** Non-uniform sparsity: --allocation, OWL's m/λ, the search's bounds, --sparsity-profile (default: uniform). */
  allocation?: AllocationSettings;
  /**
   * Sequences per onnxruntime block run, a divisor of the statistics group (memory.ts statisticsGroupSize); default
   * from PRUNE_DEFAULTS.forwardBudgetMb (forwardBatchSize). Not a CLI flag: tests and benchmarks set it.
   */
  forwardBatch?: number;
}

/** Every option of a run decided, except what depends on the model (seqlen, the family's α/β/γ). */
export type ResolvedPruneOptions = Required<Omit<PruneOptions, 'seqlen' | 'docSeparator' | 'evalSeqlen' | 'evalMaxWindows' | 'dataDir' | 'tokenizer' | 'maxMemoryGb' | 'maxShardBytes' | 'modelSource' | 'offload' | 'forwardBatch'>> &
  Pick<PruneOptions, 'seqlen' | 'docSeparator' | 'evalSeqlen' | 'evalMaxWindows' | 'dataDir' | 'tokenizer' | 'maxMemoryGb' | 'maxShardBytes' | 'modelSource' | 'offload' | 'forwardBatch'>;

export function resolvePruneOptions(o: PruneOptions): ResolvedPruneOptions {
  const method = o.method ?? PRUNE_DEFAULTS.method;
  return {
    ...o,
    method,
    spec: o.spec ?? { sparsity: DEFAULT_SPARSITY },
    calib: o.calib ?? PRUNE_DEFAULTS.calib,
    nsamples: o.nsamples ?? defaultNsamples(method),
    seed: o.seed ?? PRUNE_DEFAULTS.seed,
    layers: o.layers ?? PRUNE_DEFAULTS.layers,
    percdamp: o.percdamp ?? SPARSEGPT_DEFAULTS.percdamp,
    blocksize: o.blocksize ?? SPARSEGPT_DEFAULTS.blocksize,
    sparsellm: o.sparsellm ?? {},
    force: o.force ?? false,
    resume: o.resume ?? false,
    eval: o.eval ?? [],
    quiet: o.quiet ?? false,
    device: o.device ?? PRUNE_DEFAULTS.device,
    format: o.format ?? PRUNE_DEFAULTS.format,
    allocation: o.allocation ?? {},
  };
}

export interface ResolvedAllocation {
  allocation: Allocation | 'profile';
  owl: { m: number; lambda: number };
  search: { maxDeviation: number; heldOut: number; metric: 'kl' | 'nll'; rounds: number; guard: number; data?: string };
  sparsityProfile?: string;
}

/** The allocation settings with their defaults, checked (N:M is refused by checkRun, which knows the spec). */
export function resolveAllocation(a: AllocationSettings): ResolvedAllocation {
  if (a.sparsityProfile !== undefined && a.allocation !== undefined && a.allocation !== 'uniform') {
    throw new UserError(`--allocation ${a.allocation} and --sparsity-profile contradict each other: the profile gives the targets itself; give one of them`);
  }
  if (a.allocation !== undefined && !(ALLOCATIONS as readonly string[]).includes(a.allocation)) throw new UserError(`--allocation ${a.allocation} is not one of ${ALLOCATIONS.join(', ')}`);
  const owl = { m: a.owlM ?? OWL_DEFAULTS.m, lambda: a.owlLambda ?? OWL_DEFAULTS.lambda };
  if (!(Number.isFinite(owl.m) && owl.m > 0)) throw new UserError(`--owl-m must be a positive number, got ${a.owlM}`);
  if (!(Number.isFinite(owl.lambda) && owl.lambda >= 0 && owl.lambda < 0.5)) throw new UserError(`--owl-lambda must be in [0, 0.5), got ${a.owlLambda}`);
  const search = { maxDeviation: a.searchDeviation ?? SEARCH_DEFAULTS.maxDeviation, heldOut: a.searchHeldOut ?? SEARCH_DEFAULTS.heldOut, metric: a.searchMetric ?? SEARCH_DEFAULTS.metric, rounds: a.searchRounds ?? SEARCH_DEFAULTS.rounds, guard: a.searchGuard ?? SEARCH_DEFAULTS.guard, ...(a.searchData !== undefined ? { data: a.searchData } : {}) };
  if (search.data === '') throw new UserError('--search-data needs a dataset name or a text file');
  if (search.metric !== 'kl' && search.metric !== 'nll') throw new UserError(`--search-metric ${a.searchMetric} is not kl or nll`);
  if (!(Number.isFinite(search.maxDeviation) && search.maxDeviation > 0 && search.maxDeviation < 0.5)) throw new UserError(`--search-deviation must be in (0, 0.5), got ${a.searchDeviation}`);
  if (!(Number.isInteger(search.heldOut) && search.heldOut >= 1)) throw new UserError(`--search-held-out must be a positive integer, got ${a.searchHeldOut}`);
  if (!(Number.isInteger(search.rounds) && search.rounds >= 1 && search.rounds <= 5)) throw new UserError(`--search-rounds must be an integer from 1 to 5, got ${a.searchRounds}`);
  if (!(Number.isFinite(search.guard) && search.guard >= 0 && search.guard <= 10)) throw new UserError(`--search-guard must be a number from 0 to 10, got ${a.searchGuard}`);
  const allocation = a.sparsityProfile !== undefined ? 'profile' : a.allocation ?? 'uniform';
  return { allocation, owl, search, ...(a.sparsityProfile !== undefined ? { sparsityProfile: a.sparsityProfile } : {}) };
}

type SparseGptSettings = Partial<Omit<SparseGptOptions, keyof SparsitySpec>>;
type SparseLlmSolverSettings = Partial<Omit<SparseLlmOptions, keyof SparsitySpec>>;

/** Fully specified SparseGPT options: the spec and what `o` sets, SPARSEGPT_DEFAULTS for the rest. */
export function sparseGptOptions(o: SparsitySpec & SparseGptSettings): SparseGptOptions {
  return {
    ...o,
    percdamp: o.percdamp ?? SPARSEGPT_DEFAULTS.percdamp,
    blocksize: o.blocksize ?? SPARSEGPT_DEFAULTS.blocksize,
    accumulateDamping: o.accumulateDamping ?? SPARSEGPT_DEFAULTS.accumulateDamping,
    doublePrecision: o.doublePrecision ?? SPARSEGPT_DEFAULTS.doublePrecision,
  };
}

/**
 * Fully specified SparseLLM options for a family: the spec and what `o` sets, else the family's α/β/γ
 * (FamilySpec.sparsellm), SPARSEGPT_DEFAULTS and SPARSELLM_DEFAULTS.
 */
export function sparseLlmOptions(family: Pick<FamilySpec, 'sparsellm'>, o: SparsitySpec & SparseLlmSolverSettings): SparseLlmOptions {
  const pick = <K extends keyof typeof SPARSELLM_DEFAULTS>(k: K) => (o[k] ?? SPARSELLM_DEFAULTS[k]) as SparseLlmOptions[K];
  return {
    ...o,
    alpha: o.alpha ?? family.sparsellm.alpha,
    beta: o.beta ?? family.sparsellm.beta,
    gamma: o.gamma ?? family.sparsellm.gamma,
    percdamp: o.percdamp ?? SPARSEGPT_DEFAULTS.percdamp,
    blocksize: o.blocksize ?? SPARSEGPT_DEFAULTS.blocksize,
    epochs: pick('epochs'),
    fc2Update: pick('fc2Update'),
    gdSteps: pick('gdSteps'),
    gdLr: pick('gdLr'),
    referenceQuirks: pick('referenceQuirks'),
    lstsqRidge: pick('lstsqRidge'),
    keepBest: pick('keepBest'),
    outputRefit: pick('outputRefit'),
    refitRidge: pick('refitRidge'),
    sUpdate: pick('sUpdate'),
    sSteps: pick('sSteps'),
    sLr: pick('sLr'),
    tokenChunk: pick('tokenChunk'),
    lastEpochObjective: pick('lastEpochObjective'),
  };
}

export function sparsitySpec(sparsity: number | undefined, prunen: number | undefined, prunem: number | undefined): SparsitySpec {
  if (prunen !== undefined || prunem !== undefined) {
    if (prunen === undefined || prunem === undefined)
      throw new UserError('N:M sparsity needs both --prunen (weights pruned per group) and --prunem (group size)');
    if (!Number.isInteger(prunen) || !Number.isInteger(prunem) || prunen <= 0 || prunem <= 1 || prunen >= prunem)
      throw new UserError(`--prunen ${prunen} --prunem ${prunem} is not a valid N:M pattern: need integers 0 < N < M (N = weights pruned per group of M, e.g. 2:4)`);
    return { prunen, prunem };
  }
  const s = sparsity ?? DEFAULT_SPARSITY;
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
