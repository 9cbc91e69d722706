// `sparsellm prune` end to end, the sequential pipeline of the reference implementations (ALGORITHMS.md §1.3, §2.4):
// calibrate (windows -> prologue states) -> prune blocks (for each block: dense pass with hooks (statistics) -> prune
// -> re-run the pruned block to make the next block's inputs) -> export (new folder, config/tokenizer copied) -> report.
// Memory: one block's session plus the calibration activations (and SparseLLM's FFN activations); finished blocks
// are streamed into the output's data file (OnnxModel.streamReplacedTo), not kept.
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { prepareCalibration, type CalibrationSource } from '../data/calibration.js';
import { resolveDataset } from '../data/datasets.js';
import { loadTokenizer } from '../data/tokenizer.js';
import { planSafetensorsExport, writeSafetensorsExport, type SafetensorsPlan } from '../convert/export-safetensors.js';
import { UserError, isUserError } from '../errors.js';
import { resolveModelArgument } from '../hub/registry.js';
import { BlockRunner, OnnxModel, analyzeDecoder, resolveModelFile, type BlockState, type DecoderBlock, type DecoderLayout, type LinearLayer } from '../model/index.js';
import { native } from '../native/addon.js';
import { resolveDevice } from '../native/device.js';
import { Checkpoint, checkpointKey } from './checkpoint.js';
import { evaluateDatasets, type EvalResults } from './evaluate.js';
import { checkMemory, estimatePeakMemory, forwardArena, forwardBatchSize, forwardShape, measureStateBytes, modelShape, stateBytes, statisticsGroupSize, type MemoryEstimate } from './memory.js';
import { defaultSeqlen, parseLayers, resolveAllocation, resolvePruneOptions, targetSparsity, SPARSELLM_DEFAULTS, SPARSITY_BOUNDS, type PruneOptions, type ResolvedPruneOptions, type SparsitySpec } from './options.js';
import { allocate, allocationNeedsCalibration, assertJointFfn, budgetLinears, extraWindows, targetOf, type AllocationReport, type LinearTargets } from './allocation/index.js';
import { profileTargets, readProfile } from './allocation/profile.js';
import { writeSparsityChart } from './allocation/chart.js';
import { copyCompanionFiles, commitOutput, createPartial, planOutput, type OutputPlan } from './output.js';
import { layerOutputError, type ObsLoss } from './layer-error.js';
import { pruneBlock, type LinearReport } from './prune-block.js';
import { assertOutputOutsideInput, assertScratchOutsideInputs, modelInputs, optionInputs } from './output-placement.js';
import type { Progress } from './progress.js';
import { BlockStatisticsCollector, GroupBuffers } from './statistics.js';
import { FileStateStore, MemoryStateStore, prologueInto, type StateStore } from './state-store.js';

export interface PruneReport {
  tool: string;
  model: string;
  output: string;
  architecture: string;
  method: string;
  arguments: Record<string, unknown>;
  sparsity: { target: number; prunedLayers: number; overall: number };
  layers: LinearReport[];
  sparsellm: { block: number; epochs: { objective: number | null; outputError: number }[]; outputError: number; chosenEpoch: number; warnings?: string[] }[];
  timings: Record<string, number>;
  /** the pre-run peak-memory estimate (src/pipeline/memory.ts), bytes in all and per part */
  memoryEstimate?: { bytes: number; parts: Record<string, number> };
  perplexity?: EvalResults;
  resumedBlocks: number;
  /** how the budget was spread (unstructured runs): the profile (replayable with --sparsity-profile) and its cost */
  allocation?: AllocationReport;
}

/** Set by SIGINT: the run stops at the next safe point, keeping its checkpoint. */
export const interruption = { requested: false };

/** `partial`: the run's `<out>.partial` (resumable); undefined for an in-memory run (pruneToMemory), which keeps nothing. */
function checkInterrupted(partial: string | undefined): void {
  if (interruption.requested) {
    throw new UserError(partial === undefined ? 'interrupted' : `interrupted: finished blocks are kept in ${partial}; rerun the same command with --resume to continue`, 130);
  }
}

/** Seconds per phase of the run. */
export type Timings = Record<'calibration' | 'statistics' | 'solve' | 'rerun' | 'export' | 'eval', number> & { total?: number };

const clock = () => performance.now() / 1000;

/** Everything a run decided before any work: the model, its layout, the resolved options (and, for runPrune, its output). */
interface ModelRun {
  /** the options with every default applied; device becomes 'cuda' or 'cpu' once resolved */
  o: ResolvedPruneOptions & { seqlen: number };
  onnxFile: string;
  /** --format safetensors|both: every checkpoint tensor found in the graph, checked before any work */
  safetensors?: SafetensorsPlan;
  model: OnnxModel;
  layout: DecoderLayout;
  selected: Set<number>;
  /** the output folder; undefined for an in-memory run (pruneToMemory) */
  plan?: OutputPlan;
  /** what the checkpoint key and the report's arguments record */
  settings: Record<string, unknown>;
}

interface PruneRun extends ModelRun {
  plan: OutputPlan;
}

function formatSeconds(s: number): string {
  return s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
}

export function assertFinite(values: Float32Array, what: string): void {
  for (let k = 0; k < values.length; k++) {
    if (!Number.isFinite(values[k]!)) throw new UserError(`${what} contains NaN or Inf (at element ${k}): refusing to write a broken model`);
  }
}

/**
 * The weights as they will be written (fp16 / bf16 models store them rounded): a finite float32 value above the
 * storage type's range becomes Inf there, so the check runs on the stored values.
 */
export function assertStoredFinite(model: OnnxModel, block: DecoderBlock, roles: Iterable<string>): void {
  for (const role of roles) {
    const l = block.linears.find((x) => x.role === role)!;
    const stored = model.readFloat32(l.weightName);
    const k = stored.findIndex((v) => !Number.isFinite(v));
    if (k >= 0) throw new UserError(`pruned weight of block ${block.index} ${role} overflows its ${l.dtype} storage (Inf at element ${k}): refusing to write a broken model`);
  }
}

/** Everything about the arguments and the input model that can be refused before any work is done. */
function checkRun(run: ModelRun): void {
  const { o, model, layout, selected } = run;
  const maxPos = layout.config.maxPositions;
  if (maxPos !== undefined && o.seqlen > maxPos) throw new UserError(`--seqlen ${o.seqlen} is longer than the model's ${maxPos} positions`);
  if (!Number.isInteger(o.nsamples) || o.nsamples < 1) throw new UserError(`--nsamples must be a positive integer, got ${o.nsamples}`);
  const prunedBlocks = layout.blocks.filter((b) => selected.has(b.index));
  const pruned = prunedBlocks.flatMap((b) => b.linears);
  // N:M needs the input size of every pruned linear to be a multiple of M.
  if ('prunen' in o.spec) {
    const m = o.spec.prunem;
    const bad = pruned.find((l) => l.inFeatures % m !== 0);
    if (bad) throw new UserError(`N:M with M = ${m} needs every input size to be a multiple of ${m}, but block ${bad.block} ${bad.role} has ${bad.inFeatures} inputs`);
  }
  // The SwiGLU SparseLLM solver has no bias terms: a LLaMA FFN with biases (config mlp_bias) would lose them.
  if (o.method === 'sparsellm' && layout.family.ffn === 'swiglu') {
    const biased = prunedBlocks.flatMap((b) => b.linears).find((l) => layout.family.ffnRoles.global.includes(l.role) && l.biasName !== null);
    if (biased || layout.config.mlpBias) {
      throw new UserError(`sparsellm does not support LLaMA FFN biases (mlp_bias${biased ? `: block ${biased.block} ${biased.role} has one` : ' in config.json'}): use --method sparsegpt`);
    }
  }
  checkAllocation(run);
  // Input weights must be finite: pruning cannot repair NaN/Inf.
  for (const l of pruned) assertFinite(model.readFloat32(l.weightName), `input weight ${l.weightName} (block ${l.block} ${l.role})`);
  // Evaluation datasets and window, checked now rather than after the prune.
  for (const name of o.eval) resolveDataset(name, { docSeparator: o.docSeparator });
  if (o.evalSeqlen !== undefined) {
    if (!Number.isInteger(o.evalSeqlen) || o.evalSeqlen < 2) throw new UserError(`--eval-seqlen must be an integer ≥ 2, got ${o.evalSeqlen}`);
    if (maxPos !== undefined && o.evalSeqlen > maxPos) throw new UserError(`--eval-seqlen ${o.evalSeqlen} is longer than the model's ${maxPos} positions`);
  }
}

/** --allocation / --sparsity-profile: N:M is refused (its pattern is fixed); a profile is read and checked now. */
function checkAllocation(run: ModelRun): void {
  const { o, layout, selected } = run;
  const a = resolveAllocation(o.allocation);
  if (a.allocation === 'uniform') return;
  const what = a.allocation === 'profile' ? '--sparsity-profile' : `--allocation ${a.allocation}`;
  if ('prunen' in o.spec) throw new UserError(`${what} does not go with N:M sparsity: the N:M pattern is fixed by the hardware, so every layer keeps ${o.spec.prunen}:${o.spec.prunem}; drop ${what} or use --sparsity`);
  if (a.allocation === 'profile') {
    const source = `--sparsity-profile ${a.sparsityProfile}`;
    const targets = profileTargets(readProfile(a.sparsityProfile!, SPARSITY_BOUNDS), budgetLinears(layout, selected), source);
    if (o.method === 'sparsellm') assertJointFfn(targets, layout.family.ffnRoles.global, source);
  }
}

/**
 * The pre-run peak-memory estimate against available memory (or --max-memory), with the state between blocks measured
 * by two dry prologue runs of one sequence; refuses (naming the knob that fits) before `<out>.partial` exists.
 */
async function checkRunMemory(run: PruneRun, runner: BlockRunner): Promise<MemoryEstimate | undefined> {
  const { o, model, layout } = run;
  if (o.method === 'magnitude') return undefined;
  const ids = (s: number) => new BigInt64Array(s).fill(1n);
  const shape = { ...modelShape(model, layout), statePerSequence: await measureStateBytes(async (s) => stateBytes((await runner.prologue(ids(s), 1, s)).tensors.values()), o.seqlen) };
  const a = resolveAllocation(o.allocation);
  // the search's log-probs need the vocabulary size (config.json's vocab_size; a bare .onnx without it: not counted)
  const search = a.allocation === 'search' ? { heldOut: a.search.heldOut, vocab: layout.config.vocab ?? 0 } : undefined;
  return checkMemory((r) => estimatePeakMemory(layout, r, shape, o.method, search), { nsamples: o.nsamples, seqlen: o.seqlen, offload: o.offload !== undefined, forwardBatch: o.forwardBatch }, o.maxMemoryGb);
}

/** Resolves the model and the options and checks them; nothing is written yet. */
async function planRun(options: PruneOptions, progress: Progress): Promise<PruneRun> {
  const run = await planModelRun(options, progress, (resolved, modelPath, onnxFile) => {
    const inputs = [
      ...modelInputs(modelPath, onnxFile),
      ...optionInputs({ '--calib': resolved.calib, '--eval': resolved.eval, '--tokenizer': resolved.tokenizer, '--data-dir': resolved.dataDir, '--search-data': resolved.allocation.searchData }),
    ];
    assertOutputOutsideInput(resolved.out, inputs);
    if (resolved.offload !== undefined) assertScratchOutsideInputs(resolved.offload, '--offload', inputs, resolved.out);
    return planOutput(resolved.out, onnxFile, resolved.force, resolved.resume);
  });
  if (run.o.format !== 'onnx') run.safetensors = planSafetensorsExport(run.model);
  return run as PruneRun;
}

/** The model, its layout and the resolved options, checked; `planOutputFor` plans the output (none: in memory). */
async function planModelRun(
  options: PruneOptions, progress: Progress,
  planOutputFor?: (resolved: ResolvedPruneOptions, modelPath: string, onnxFile: string) => OutputPlan,
): Promise<ModelRun> {
  const resolved = resolvePruneOptions(options);
  const modelPath = await resolveModelArgument(resolved.model, { ...resolved.modelSource, progress });
  const onnxFile = resolveModelFile(modelPath);
  const plan = planOutputFor?.(resolved, modelPath, onnxFile);
  const model = OnnxModel.load(onnxFile);
  const layout = analyzeDecoder(model);
  const selected = new Set(parseLayers(resolved.layers, layout.blocks.length));
  const o = { ...resolved, seqlen: resolved.seqlen ?? defaultSeqlen(layout.config) };
  const allocation = resolveAllocation(o.allocation);
  const settings = {
    method: o.method, spec: o.spec, calib: o.calib, nsamples: o.nsamples, seqlen: o.seqlen, seed: o.seed, layers: [...selected],
    percdamp: o.percdamp, blocksize: o.blocksize, sparsellm: o.sparsellm,
    // recorded only when not uniform, so uniform runs keep their arguments and checkpoint keys
    ...(allocation.allocation !== 'uniform' ? { allocation } : {}),
  };
  const run: ModelRun = { o, onnxFile, model, layout, selected, plan, settings };
  checkRun(run);
  return run;
}

/** The calibration text and, with --search-data, the text of the search's held-out probe windows. */
type RunCalibration = CalibrationSource & { heldOutSource?: CalibrationSource };

/** Tokenizer and calibration text (missing, corrupt, too short), opened before `<out>.partial` exists. */
async function openCalibration(run: ModelRun, timings: Timings): Promise<RunCalibration | undefined> {
  const { o } = run;
  if (o.method === 'magnitude' && !allocationNeedsCalibration(o)) return undefined;
  const t = clock();
  const tok = loadTokenizer(o.tokenizer ?? run.onnxFile);
  const open = async (name: string, what: string) => {
    const source = await prepareCalibration(name, tok, { dataDir: o.dataDir, docSeparator: o.docSeparator });
    if (source.tokenCount !== undefined && source.tokenCount <= o.seqlen) {
      source.close();
      throw new UserError(`${what} ${name} has ${source.tokenCount} tokens, fewer than one window of ${o.seqlen}: use a longer text or a shorter --seqlen`);
    }
    return source;
  };
  const source: RunCalibration = await open(o.calib, 'calibration text');
  const allocation = resolveAllocation(o.allocation);
  if (allocation.allocation === 'search' && allocation.search.data !== undefined) {
    try {
      source.heldOutSource = await open(allocation.search.data, '--search-data text');
    } catch (e) {
      source.close();
      throw e;
    }
  }
  timings.calibration += clock() - t;
  return source;
}

/**
 * 1a. The calibration windows (token ids): the prune's nsamples, then the allocation's extra ones (drawn after them
 * with the same generator, so the first nsamples are the same as without; with --search-data, drawn from that text
 * with the same seed instead).
 */
async function drawWindows(run: ModelRun, source: RunCalibration, timings: Timings): Promise<BigInt64Array[]> {
  const { o } = run;
  const t = clock();
  const windows: BigInt64Array[] = [];
  const draw = async (from: CalibrationSource, n: number) => {
    for await (const w of from.windows(n, o.seqlen, o.seed)) {
      windows.push(w);
      checkInterrupted(run.plan?.partial);
    }
  };
  try {
    if (source.heldOutSource) {
      await draw(source, o.nsamples);
      await draw(source.heldOutSource, extraWindows(o));
    } else await draw(source, o.nsamples + extraWindows(o));
  } finally {
    source.close();
    source.heldOutSource?.close();
  }
  timings.calibration += clock() - t;
  return windows;
}

/** Sequences per onnxruntime block run (memory.ts forwardBatchSize; o.forwardBatch overrides it, for tests). */
function forwardBatch(run: ModelRun): number {
  const { o, model, layout } = run;
  if (o.forwardBatch === undefined) return forwardBatchSize(o.nsamples, o.seqlen, forwardShape(layout, modelShape(model, layout).heads));
  const group = statisticsGroupSize(o.nsamples, o.seqlen);
  if (!(o.forwardBatch >= 1 && group % o.forwardBatch === 0)) throw new Error(`forwardBatch ${o.forwardBatch} does not divide the statistics group of ${group} sequences`);
  return o.forwardBatch;
}

/** The pipeline's block runner: onnxruntime's arena where one forward batch is small (memory.ts forwardArena). */
async function openBlockRunner(run: ModelRun): Promise<BlockRunner> {
  const { o, model, layout } = run;
  const shape = forwardShape(layout, modelShape(model, layout).heads);
  return BlockRunner.open(model, { arena: forwardArena(forwardBatch(run), o.seqlen, shape) });
}

/** 1b. Calibration windows -> prologue states, one per forward batch of whole sequences. */
async function calibrate(run: ModelRun, runner: BlockRunner, windows: BigInt64Array[], states: StateStore, progress: Progress, timings: Timings): Promise<void> {
  const { o } = run;
  const t = clock();
  progress.start('calibration', o.nsamples);
  await prologueInto(runner, windows.slice(0, o.nsamples), o.seqlen, states, forwardBatch(run), (sequences) => {
    progress.tick(sequences);
    checkInterrupted(run.plan?.partial);
  });
  progress.stop();
  timings.calibration += clock() - t;
}

/** 1c. The per-linear targets (src/pipeline/allocation), or on --resume the ones the interrupted run chose. */
async function allocateTargets(
  run: ModelRun, windows: BigInt64Array[] | undefined, newStore: () => StateStore, progress: Progress, checkpoint: Checkpoint | null,
): Promise<{ targets: LinearTargets; report?: AllocationReport }> {
  const { o, layout, selected } = run;
  const linears = budgetLinears(layout, selected);
  if ('prunen' in o.spec) return { targets: new Map() };
  const saved = checkpoint?.allocation as AllocationReport | undefined;
  if (saved) return { targets: profileTargets(saved.profile, linears, 'the checkpoint\'s allocation'), report: saved };
  const ctx = { onnxFile: run.onnxFile, layout, selected, o, windows: (windows ?? []).slice(0, o.nsamples), heldOut: (windows ?? []).slice(o.nsamples), newStore, progress };
  const a = await allocate(ctx, o.spec.sparsity);
  checkpoint?.saveAllocation(a.report);
  return a;
}

/** 1a–1c: the windows, the per-linear targets, and (except for magnitude) the calibration states of block 0. */
async function prepareBlocks(
  run: ModelRun, runner: BlockRunner, source: CalibrationSource | undefined, states: StateStore, newStore: () => StateStore,
  progress: Progress, timings: Timings, checkpoint: Checkpoint | null,
): Promise<{ targets: LinearTargets; report?: AllocationReport }> {
  const windows = source ? await drawWindows(run, source, timings) : undefined;
  const allocation = await allocateTargets(run, windows, newStore, progress, checkpoint);
  if (windows && run.o.method !== 'magnitude') await calibrate(run, runner, windows, states, progress, timings);
  return allocation;
}

/** The solvers' spec of one linear: N:M as given, else its allocated target. */
function specFor(o: ResolvedPruneOptions, targets: LinearTargets, block: number): (role: string) => SparsitySpec {
  return (role) => ('prunen' in o.spec ? o.spec : { sparsity: targetOf(targets, block, role) });
}

interface PrunedBlocks {
  linears: LinearReport[];
  sparsellm: PruneReport['sparsellm'];
  resumedBlocks: number;
}

/** 2. Blocks in order. Finished blocks from a checkpoint are restored and only re-run (no checkpoint: in memory). */
async function pruneBlocks(
  run: ModelRun, runner: BlockRunner, checkpoint: Checkpoint | null, states: StateStore, progress: Progress, timings: Timings, targets: LinearTargets,
): Promise<PrunedBlocks> {
  const { o, layout, selected } = run;
  const linears: LinearReport[] = [];
  const sparsellm: PruneReport['sparsellm'] = [];
  const restored = new Map((checkpoint?.finished ?? []).map((b) => [b.index, b]));
  let prunedHere = 0, tFirstBlock = 0;
  const groupBuffers = new GroupBuffers();
  const lastSelected = Math.max(-1, ...selected);
  for (const block of layout.blocks) {
    checkInterrupted(run.plan?.partial);
    const i = block.index;
    const done = restored.get(i);
    if (done) {
      // its pruned weights are already in the data file the run streams into
      const names = block.linears.filter((l) => done.roles.includes(l.role)).map((l) => l.weightName);
      runner.model.markStreamed(names, `the checkpoint of block ${i}`);
      linears.push(...done.linears);
      if (done.sparsellm) sparsellm.push({ block: i, ...done.sparsellm });
    } else if (selected.has(i)) {
      const t0 = clock();
      // overall ETA from the blocks pruned so far in this run
      const remaining = [...selected].filter((b) => b >= i && !restored.has(b)).length;
      const eta = prunedHere > 0 ? ` — about ${formatSeconds(((t0 - tFirstBlock) / prunedHere) * remaining)} left` : '';
      if (prunedHere === 0) tFirstBlock = t0;
      progress.log(`block ${i} (${i + 1} of ${layout.blocks.length}): pruning with ${o.method}${eta}`);
      const result = await pruneOneBlock(run, runner, block, states, progress, targets, groupBuffers);
      prunedHere++;
      timings.statistics += result.statisticsSeconds;
      timings.solve += result.solveSeconds;
      for (const [role, W] of result.weights) assertFinite(W, `pruned weight of block ${i} ${role}`);
      await runner.setBlockWeights(i, result.weights);
      const roles = [...result.weights.keys()];
      assertStoredFinite(runner.model, block, roles);
      // the weights are in the output's data file now: drop them before the next block (a suspended async frame can
      // keep `result` reachable until the next one is assigned: a whole block of float32 weights through its passes)
      result.weights.clear();
      linears.push(...result.linears);
      if (result.sparsellm) sparsellm.push({ block: i, ...result.sparsellm });
      checkpoint?.save({ index: i, roles, linears: result.linears, sparsellm: result.sparsellm, seconds: clock() - t0 });
    }
    // Re-run the (pruned) block: its outputs are the next block's inputs (none needed after the last pruned block).
    if (states.count > 0 && i < lastSelected) {
      const t = clock();
      progress.start(`block ${i} forward`, states.count);
      for (let k = 0; k < states.count; k++) {
        await states.set(k, (await runner.runBlock(i, await states.get(k))).state);
        progress.tick();
      }
      progress.stop();
      timings.rerun += clock() - t;
    }
  }
  states.dispose();
  return { linears, sparsellm, resumedBlocks: restored.size };
}

async function pruneOneBlock(run: ModelRun, runner: BlockRunner, block: DecoderBlock, states: StateStore, progress: Progress, targets: LinearTargets, groupBuffers: GroupBuffers) {
  const { o, layout } = run;
  const family = layout.family;
  let statisticsSeconds = 0;
  let stats: BlockStatisticsCollector | null = null;
  if (o.method !== 'magnitude') {
    const t = performance.now();
    // with the output refit, SparseLLM's output layer (fc2 / down) needs its dense Hessian for the report alone
    const reportOnly = o.method === 'sparsellm' && (o.sparsellm?.outputRefit ?? SPARSELLM_DEFAULTS.outputRefit) ? new Set([family.ffnRoles.global.at(-1)!]) : new Set<string>();
    stats = new BlockStatisticsCollector(block, o.method, o.method === 'sparsellm' ? family.ffnRoles.input : null, statisticsGroupSize(o.nsamples, o.seqlen), reportOnly, groupBuffers);
    progress.start(`block ${block.index} statistics`, states.count);
    for (let k = 0; k < states.count; k++) {
      const s = await states.get(k);
      const { captures, outputSquares } = await runner.runBlock(block.index, s, { capture: true });
      await stats.add(captures, s.batch, s.seqlen, outputSquares);
      progress.tick();
      checkInterrupted(run.plan?.partial);
    }
    await stats.finish();
    progress.stop();
    // the solver needs none of the session's memory (the re-run makes a new session with the pruned weights)
    await runner.releaseSession();
    native().releaseMemory();  // onnxruntime frees the session into the C heap: hand it back before the solve
    statisticsSeconds = (performance.now() - t) / 1000;
  }
  const t = performance.now();
  const weights = runner.getBlockWeights(block.index);
  const biases = runner.getBlockBiases(block.index);
  const outputError = async (W: Float32Array, Wp: Float32Array, l: LinearLayer, obs?: ObsLoss) =>
    o.method === 'magnitude' || o.method === 'wanda' ? null : layerOutputError(W, Wp, stats!.hessian(l.role).H, l.outFeatures, l.inFeatures, stats!.weightQuadratic(l.role), obs);
  const result = await pruneBlock(block, family, weights, biases, stats, o, specFor(o, targets, block.index), outputError);
  native().releaseMemory();  // the solvers' cached buffers, before the re-run and the next block's forward passes
  return { ...result, statisticsSeconds, solveSeconds: (performance.now() - t) / 1000 };
}

/** With --format safetensors alone, the ONNX is written aside only for --eval and dropped at commit. */
const EVAL_ONLY_ONNX = '.eval-onnx';

/** Where the ONNX is written, and the file the pruned weights stream into while the blocks are pruned. */
interface OnnxTarget {
  outOnnx: string;
  writeOnnx: boolean;
  /** the same layout as the input: inline weights stay inline when the input had no external data */
  sizeThreshold?: number;
  /**
   * The output's own external data file when it has one: each block's weights are written there as it finishes, and
   * the export only fills in the rest. Otherwise (inline output, or no ONNX) a scratch file in the checkpoint folder.
   */
  streamFile: string;
}

function onnxTarget(run: PruneRun): OnnxTarget {
  const { o, plan, model } = run;
  const onnxOnlyForEval = o.format === 'safetensors';
  const outOnnx = onnxOnlyForEval ? join(plan.partial, EVAL_ONLY_ONNX, plan.onnxRelative) : join(plan.partial, plan.onnxRelative);
  const writeOnnx = !onnxOnlyForEval || o.eval.length > 0;
  const inlineInput = model.externalDataFiles.length === 0;
  const streamFile = writeOnnx && !inlineInput ? join(dirname(outOnnx), model.externalDataNameFor(outOnnx)) : join(plan.partial, '.checkpoint', 'weights.bin');
  return { outOnnx, writeOnnx, sizeThreshold: inlineInput ? Number.MAX_SAFE_INTEGER : undefined, streamFile };
}

/** 3. Export: the ONNX (completing its streamed data file) and/or the HF safetensors checkpoint. Returns the written ONNX, if any. */
function exportModel(run: PruneRun, runner: BlockRunner, target: OnnxTarget, timings: Timings): string | undefined {
  const { o, plan } = run;
  const t = clock();
  const { outOnnx, writeOnnx } = target;
  if (writeOnnx) {
    mkdirSync(dirname(outOnnx), { recursive: true });
    runner.saveModel(outOnnx, target.sizeThreshold !== undefined ? { sizeThreshold: target.sizeThreshold } : {});
  }
  if (run.safetensors) writeSafetensorsExport(run.safetensors, plan.partial, o.maxShardBytes);
  copyCompanionFiles(plan);
  if (o.format === 'safetensors' && writeOnnx) copyCompanionFiles({ ...plan, partial: join(plan.partial, EVAL_ONLY_ONNX) }); // config + tokenizer for --eval
  timings.export += clock() - t;
  return writeOnnx ? outOnnx : undefined;
}

/** 4. The report: settings, per-layer results, overall sparsity, timings, perplexity. */
function buildReport(
  run: PruneRun, pruned: PrunedBlocks, timings: Timings, perplexity: EvalResults | undefined, memory: MemoryEstimate | undefined, allocation: AllocationReport | undefined,
): PruneReport {
  const { o } = run;
  let zeros = 0, total = 0;
  for (const r of pruned.linears) {
    zeros += r.sparsity * r.in * r.out;
    total += r.in * r.out;
  }
  return {
    tool: 'sparsellm',
    model: run.onnxFile,
    output: o.format === 'safetensors' ? run.plan.out : join(run.plan.out, run.plan.onnxRelative),
    architecture: run.layout.architecture,
    method: o.method,
    arguments: { ...run.settings, layers: o.layers, prunedBlocks: [...run.selected], eval: o.eval },
    sparsity: { target: allocation?.target ?? targetSparsity(o.spec), prunedLayers: pruned.linears.length, overall: total ? zeros / total : 0 },
    layers: pruned.linears,
    sparsellm: pruned.sparsellm,
    timings,
    ...(memory ? { memoryEstimate: { bytes: memory.bytes, parts: memory.parts } } : {}),
    ...(perplexity ? { perplexity } : {}),
    resumedBlocks: pruned.resumedBlocks,
    ...(allocation ? { allocation } : {}),
  };
}

export async function runPrune(options: PruneOptions, progress: Progress): Promise<PruneReport> {
  const timings: Timings = { calibration: 0, statistics: 0, solve: 0, rerun: 0, export: 0, eval: 0 };
  const tStart = clock();
  const run = await planRun(options, progress);
  const { o, plan } = run;
  const source = await openCalibration(run, timings);
  // Solvers on the GPU where a CUDA build finds one (SparseGPT so far; see docs/CUDA.md), else the CPU.
  const device = resolveDevice(o.device);
  o.device = device.device;
  progress.log(device.line);
  if (source?.warning) process.stderr.write(`sparsellm: warning: calibration text ${o.calib} ${source.warning}\n`);
  const runner = await openBlockRunner(run);
  const memory = await checkRunMemory(run, runner);

  // A failed run removes its `<out>.partial`, except after an interruption (exit 130: it is resumable) or when it
  // resumed an earlier run's checkpoint (never thrown away by a later failure).
  const resumed = o.resume && existsSync(plan.partial);
  if (!o.resume && existsSync(plan.partial)) rmSync(plan.partial, { recursive: true, force: true });
  createPartial(plan);
  const newStore = (): StateStore => (o.offload ? new FileStateStore(o.offload) : new MemoryStateStore());
  const states = newStore();
  try {
    const target = onnxTarget(run);
    const checkpoint = new Checkpoint(plan.partial, checkpointKey(run.onnxFile, run.settings), o.resume, relative(plan.partial, target.streamFile), () => run.model.syncStream());
    mkdirSync(dirname(target.streamFile), { recursive: true });
    run.model.streamReplacedTo(target.streamFile, { keep: checkpoint.finished.length > 0 });
    const allocation = await prepareBlocks(run, runner, source, states, newStore, progress, timings, checkpoint);
    const pruned = await pruneBlocks(run, runner, checkpoint, states, progress, timings, allocation.targets);
    const outOnnx = exportModel(run, runner, target, timings);
    let perplexity: EvalResults | undefined;
    if (o.eval.length && outOnnx) {
      const t = clock();
      perplexity = await evaluateDatasets(outOnnx, o.eval, { tokenizer: o.tokenizer, seqlen: o.evalSeqlen, maxWindows: o.evalMaxWindows, dataDir: o.dataDir, docSeparator: o.docSeparator, progress });
      timings.eval += clock() - t;
    }
    timings.total = clock() - tStart;
    const report = buildReport(run, pruned, timings, perplexity, memory, allocation.report);
    writeFileSync(join(plan.partial, 'sparsellm-report.json'), `${JSON.stringify(report, null, 2)}\n`);
    if (allocation.report) writeFileSync(join(plan.partial, 'sparsity-profile.json'), `${JSON.stringify(allocation.report.profile, null, 2)}\n`);
    writeSparsityChart(join(plan.partial, 'sparsity-profile.svg'), report);
    commitOutput(plan, (name) => name !== '.checkpoint' && name !== EVAL_ONLY_ONNX);
    // the solvers' warnings (e.g. too few calibration tokens for the FFN width), once each, after a finished run:
    // a failing run keeps to its one error line
    for (const w of new Set(pruned.sparsellm.flatMap((b) => b.warnings ?? []))) process.stderr.write(`sparsellm: warning: ${w}\n`);
    return report;
  } catch (e) {
    const interrupted = isUserError(e) && e.exitCode === 130;
    if (!interrupted && !resumed) rmSync(plan.partial, { recursive: true, force: true });
    throw e;
  } finally {
    states.dispose();
    run.model.closeStream();
    await runner.dispose();
  }
}

/** Options of an in-memory run: a prune run without an output (no folder, no export, no evaluation). */
export type MemoryPruneOptions = Omit<PruneOptions, 'out' | 'force' | 'resume' | 'eval' | 'evalSeqlen' | 'evalMaxWindows' | 'format' | 'maxShardBytes'>;

/** One pruned linear's weight as the model stores it: the initializer's own layout and (rounded) values. */
export interface PrunedTensor {
  /** initializer name in the input model */
  name: string;
  block: number;
  role: string;
  /** the initializer's dims (ONNX MatMul: [in, out]) */
  dims: number[];
  values: Float32Array;
}

export interface MemoryPruneResult {
  /** the selected blocks' pruned linears, in block then layer order */
  tensors: PrunedTensor[];
  linears: LinearReport[];
  sparsellm: PruneReport['sparsellm'];
  timings: Timings;
}

/**
 * The same sequential prune as runPrune (calibrate, then each block: statistics, solve, re-run; blocks outside
 * `layers` run dense), but nothing is written: the selected blocks' pruned weights are handed back. The input model is
 * only read. Used by FedSpaLLM's clients (src/federate/local-prune.ts), which upload only those weights.
 */
export async function pruneToMemory(options: MemoryPruneOptions, progress: Progress): Promise<MemoryPruneResult> {
  const timings: Timings = { calibration: 0, statistics: 0, solve: 0, rerun: 0, export: 0, eval: 0 };
  const tStart = clock();
  const run = await planModelRun({ ...options, out: '' }, progress);
  const source = await openCalibration(run, timings);
  const device = resolveDevice(run.o.device);
  run.o.device = device.device;
  progress.log(device.line);
  if (source?.warning) process.stderr.write(`sparsellm: warning: calibration text ${run.o.calib} ${source.warning}\n`);
  const runner = await openBlockRunner(run);
  try {
    const states = new MemoryStateStore();
    const allocation = await prepareBlocks(run, runner, source, states, () => new MemoryStateStore(), progress, timings, null);
    const pruned = await pruneBlocks(run, runner, null, states, progress, timings, allocation.targets);
    const tensors: PrunedTensor[] = [];
    for (const block of run.layout.blocks) {
      if (!run.selected.has(block.index)) continue;
      for (const l of block.linears) {
        tensors.push({ name: l.weightName, block: block.index, role: l.role, dims: run.model.dims(l.weightName), values: run.model.readFloat32(l.weightName) });
      }
    }
    timings.total = clock() - tStart;
    return { tensors, linears: pruned.linears, sparsellm: pruned.sparsellm, timings };
  } finally {
    await runner.dispose();
  }
}
