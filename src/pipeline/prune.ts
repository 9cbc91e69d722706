// `sparsellm prune` end to end, the sequential pipeline of the reference implementations (ALGORITHMS.md §1.3, §2.4):
// calibration windows -> prologue -> for each block: dense pass with hooks (statistics) -> prune -> re-run the
// pruned block to make the next block's inputs -> save the model (new folder), copy config/tokenizer, report.
// Memory: one block's session plus the calibration activations (and SparseLLM's FFN activations).
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { prepareCalibration, type CalibrationSource } from '../data/calibration.js';
import { resolveDataset } from '../data/datasets.js';
import { loadTokenizer } from '../data/tokenizer.js';
import { planSafetensorsExport, writeSafetensorsExport, type SafetensorsPlan } from '../convert/export-safetensors.js';
import { UserError, isUserError } from '../errors.js';
import { resolveModelArgument } from '../hub/registry.js';
import { BlockRunner, OnnxModel, analyzeDecoder, resolveModelFile, type BlockState, type DecoderBlock, type DecoderLayout, type LinearLayer } from '../model/index.js';
import { readModelConfig } from '../model/full-session.js';
import { native } from '../native/addon.js';
import { resolveDevice } from '../native/device.js';
import { Checkpoint, checkpointKey } from './checkpoint.js';
import { evaluateDatasets, type EvalResults } from './evaluate.js';
import { checkMemory, estimatePeakMemory, microBatchSize, modelShape } from './memory.js';
import { parseLayers, targetSparsity, type PruneOptions } from './options.js';
import { copyCompanionFiles, commitOutput, createPartial, planOutput } from './output.js';
import { ffnInputRole, pruneBlock, type LinearReport } from './prune-block.js';
import type { Progress } from './progress.js';
import { BlockStatisticsCollector } from './statistics.js';

export interface PruneReport {
  tool: string;
  model: string;
  output: string;
  architecture: string;
  method: string;
  arguments: Record<string, unknown>;
  sparsity: { target: number; prunedLayers: number; overall: number };
  layers: LinearReport[];
  sparsellm: { block: number; epochs: { objective: number; outputError: number }[]; outputError: number; chosenEpoch: number }[];
  timings: Record<string, number>;
  perplexity?: EvalResults;
  resumedBlocks: number;
}

/** Set by SIGINT: the run stops at the next safe point, keeping its checkpoint. */
export const interruption = { requested: false };

function checkInterrupted(partial: string): void {
  if (interruption.requested) {
    throw new UserError(`interrupted: finished blocks are kept in ${partial}; rerun the same command with --resume to continue`, 130);
  }
}

function defaultSeqlen(onnxFile: string): number {
  const cfg = readModelConfig(onnxFile);
  const maxPos = cfg?.max_position_embeddings ?? cfg?.n_positions;
  return Math.min(typeof maxPos === 'number' ? maxPos : 2048, 2048);
}

/** ‖(W − Ŵ)X‖² / ‖WX‖² = tr(D H Dᵀ) / tr(W H Wᵀ) with D = W − Ŵ and H the layer-input Hessian. */
async function relativeErrorFromHessian(W: Float32Array, Wp: Float32Array, H: Float32Array, out: number, inF: number): Promise<number> {
  const D = new Float32Array(W.length);
  for (let k = 0; k < W.length; k++) D[k] = W[k]! - Wp[k]!;
  const quad = async (A: Float32Array) => {
    const AH = new Float32Array(A.length);
    await native().sgemm(A, H, AH, out, inF, inF);
    let s = 0;
    for (let k = 0; k < A.length; k++) s += AH[k]! * A[k]!;
    return s;
  };
  const den = await quad(W);
  return den > 0 ? (await quad(D)) / den : 0;
}

function formatSeconds(s: number): string {
  return s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
}

export function assertFinite(values: Float32Array, what: string): void {
  for (let k = 0; k < values.length; k++) {
    if (!Number.isFinite(values[k]!)) throw new UserError(`${what} contains NaN or Inf (at element ${k}): refusing to write a broken model`);
  }
}

/** Everything about the arguments and the input model that can be refused before any work is done. */
function checkRun(o: PruneOptions, model: OnnxModel, layout: DecoderLayout, selected: Set<number>, seqlen: number): void {
  const maxPos = readModelConfig(model.path)?.max_position_embeddings;
  if (typeof maxPos === 'number' && seqlen > maxPos) throw new UserError(`--seqlen ${seqlen} is longer than the model's ${maxPos} positions`);
  if (!Number.isInteger(o.nsamples) || o.nsamples < 1) throw new UserError(`--nsamples must be a positive integer, got ${o.nsamples}`);
  const pruned = layout.blocks.filter((b) => selected.has(b.index)).flatMap((b) => b.linears);
  // N:M needs the input size of every pruned linear to be a multiple of M.
  if ('prunen' in o.spec) {
    const m = o.spec.prunem;
    const bad = pruned.find((l) => l.inFeatures % m !== 0);
    if (bad) throw new UserError(`N:M with M = ${m} needs every input size to be a multiple of ${m}, but block ${bad.block} ${bad.role} has ${bad.inFeatures} inputs`);
  }
  // Input weights must be finite: pruning cannot repair NaN/Inf.
  for (const l of pruned) assertFinite(model.readFloat32(l.weightName), `input weight ${l.weightName} (block ${l.block} ${l.role})`);
  if (o.method !== 'magnitude') checkMemory(estimatePeakMemory(layout, o.nsamples, seqlen, modelShape(model, layout, o.nsamples, seqlen), o.method), o.maxMemoryGb);
  // Evaluation datasets and window, checked now rather than after the prune.
  for (const name of o.eval) resolveDataset(name, { docSeparator: o.docSeparator });
  if (o.evalSeqlen !== undefined) {
    if (!Number.isInteger(o.evalSeqlen) || o.evalSeqlen < 2) throw new UserError(`--eval-seqlen must be an integer ≥ 2, got ${o.evalSeqlen}`);
    if (typeof maxPos === 'number' && o.evalSeqlen > maxPos) throw new UserError(`--eval-seqlen ${o.evalSeqlen} is longer than the model's ${maxPos} positions`);
  }
}

export async function runPrune(o: PruneOptions, progress: Progress): Promise<PruneReport> {
  const timings: Record<string, number> = { calibration: 0, statistics: 0, solve: 0, rerun: 0, export: 0, eval: 0 };
  const clock = () => performance.now() / 1000;
  const tStart = clock();

  const modelPath = await resolveModelArgument(o.model, { ...o.modelSource, progress });
  const onnxFile = resolveModelFile(modelPath);
  const plan = planOutput(o.out, onnxFile, o.force, o.resume);
  const model = OnnxModel.load(onnxFile);
  const layout = analyzeDecoder(model);
  const selected = new Set(parseLayers(o.layers, layout.blocks.length));
  const spec = o.spec;
  const needsCalibration = o.method !== 'magnitude';

  const seqlen = o.seqlen ?? defaultSeqlen(onnxFile);
  checkRun(o, model, layout, selected, seqlen);
  const format = o.format ?? 'onnx';
  // --format safetensors|both: every checkpoint tensor must be found in the graph, checked before any work
  const safetensorsPlan: SafetensorsPlan | undefined = format === 'onnx' ? undefined : planSafetensorsExport(model);
  // Tokenizer and calibration text (missing, corrupt, too short) before `<out>.partial` exists.
  let source: CalibrationSource | undefined;
  if (needsCalibration) {
    const t = clock();
    const tok = loadTokenizer(o.tokenizer ?? onnxFile);
    source = await prepareCalibration(o.calib, tok, { dataDir: o.dataDir, docSeparator: o.docSeparator });
    if (source.tokenCount !== undefined && source.tokenCount <= seqlen) {
      source.close();
      throw new UserError(`calibration text ${o.calib} has ${source.tokenCount} tokens, fewer than one window of ${seqlen}: use a longer text or a shorter --seqlen`);
    }
    timings.calibration += clock() - t;
  }
  // Solvers on the GPU where a CUDA build finds one (SparseGPT so far; see docs/CUDA.md), else the CPU.
  const device = resolveDevice(o.device ?? 'auto');
  o = { ...o, device: device.device };
  progress.log(device.line);
  const runner = await BlockRunner.open(model);

  // A failed run removes its `<out>.partial`, except after an interruption (exit 130: it is resumable) or when it
  // resumed an earlier run's checkpoint (never thrown away by a later failure).
  const resumed = o.resume && existsSync(plan.partial);
  if (!o.resume && existsSync(plan.partial)) rmSync(plan.partial, { recursive: true, force: true });
  createPartial(plan);
  const settings = { method: o.method, spec, calib: o.calib, nsamples: o.nsamples, seqlen, seed: o.seed, layers: [...selected], percdamp: o.percdamp, blocksize: o.blocksize, sparsellm: o.sparsellm };
  const reports: LinearReport[] = [];
  const sparsellmReports: PruneReport['sparsellm'] = [];
  try {
    const checkpoint = new Checkpoint(plan.partial, checkpointKey(onnxFile, settings), o.resume);
    // 1. Calibration windows -> prologue states, in micro-batches of whole sequences.
    let states: BlockState[] = [];
    if (source) {
      const t = clock();
      const batch = microBatchSize(o.nsamples, seqlen);
      progress.start('calibration', o.nsamples);
      let pending: BigInt64Array[] = [];
      const flush = async () => {
        const ids = new BigInt64Array(pending.length * seqlen);
        pending.forEach((w, k) => ids.set(w, k * seqlen));
        states.push(await runner.prologue(ids, pending.length, seqlen));
        progress.tick(pending.length);
        pending = [];
      };
      try {
        for await (const w of source.windows(o.nsamples, seqlen, o.seed)) {
          pending.push(w);
          if (pending.length === batch) await flush();
          checkInterrupted(plan.partial);
        }
        if (pending.length) await flush();
      } finally {
        source.close();
      }
      progress.stop();
      timings.calibration += clock() - t;
    }

    // 2. Blocks in order. Finished blocks from a checkpoint are restored and only re-run.
    const restored = new Map(checkpoint.finished.map((b) => [b.index, b]));
    let prunedHere = 0, tFirstBlock = 0;
    for (const block of layout.blocks) {
      checkInterrupted(plan.partial);
      const i = block.index;
      const done = restored.get(i);
      if (done) {
        const sizes = new Map(block.linears.map((l) => [l.role, l.inFeatures * l.outFeatures]));
        await runner.setBlockWeights(i, checkpoint.weights(done, sizes));
        reports.push(...done.linears);
        if (done.sparsellm) sparsellmReports.push({ block: i, ...done.sparsellm });
      } else if (selected.has(i)) {
        const t0 = clock();
        // overall ETA from the blocks pruned so far in this run
        const remaining = [...selected].filter((b) => b >= i && !restored.has(b)).length;
        const eta = prunedHere > 0 ? ` — about ${formatSeconds(((t0 - tFirstBlock) / prunedHere) * remaining)} left` : '';
        if (prunedHere === 0) tFirstBlock = t0;
        progress.log(`block ${i} (${i + 1} of ${layout.blocks.length}): pruning with ${o.method}${eta}`);
        const result = await pruneOneBlock(runner, block, states, o, progress);
        prunedHere++;
        timings.statistics += result.statisticsSeconds;
        timings.solve += result.solveSeconds;
        for (const [role, W] of result.weights) assertFinite(W, `pruned weight of block ${i} ${role}`);
        await runner.setBlockWeights(i, result.weights);
        reports.push(...result.linears);
        if (result.sparsellm) sparsellmReports.push({ block: i, ...result.sparsellm });
        checkpoint.save(
          { index: i, roles: [...result.weights.keys()], linears: result.linears, sparsellm: result.sparsellm, seconds: clock() - t0 },
          result.weights,
        );
      }
      // Re-run the (pruned) block: its outputs are the next block's inputs.
      if (needsCalibration && i < layout.blocks.length - 1) {
        const t = clock();
        progress.start(`block ${i} forward`, states.length);
        for (let k = 0; k < states.length; k++) {
          states[k] = (await runner.runBlock(i, states[k]!)).state;
          progress.tick();
        }
        progress.stop();
        timings.rerun += clock() - t;
      }
    }
    states = [];

    // 3. Export: the same layout as the input (inline weights stay inline when the input had no external data).
    let t = clock();
    // with --format safetensors alone, the ONNX is written aside only for --eval and dropped at commit
    const EVAL_ONLY = '.eval-onnx';
    const outOnnx = format === 'safetensors' ? join(plan.partial, EVAL_ONLY, plan.onnxRelative) : join(plan.partial, plan.onnxRelative);
    if (format !== 'safetensors' || o.eval.length) {
      mkdirSync(dirname(outOnnx), { recursive: true });
      const inlineInput = model.externalDataFiles.length === 0;
      runner.saveModel(outOnnx, inlineInput ? { sizeThreshold: Number.MAX_SAFE_INTEGER } : {});
    }
    if (safetensorsPlan) writeSafetensorsExport(safetensorsPlan, plan.partial, o.maxShardBytes);
    copyCompanionFiles(plan);
    if (format === 'safetensors' && o.eval.length) copyCompanionFiles({ ...plan, partial: join(plan.partial, EVAL_ONLY) }); // config + tokenizer for --eval
    timings.export += clock() - t;

    // 4. Optional evaluation of the written model.
    let perplexity: EvalResults | undefined;
    if (o.eval.length) {
      t = clock();
      perplexity = await evaluateDatasets(outOnnx, o.eval, { tokenizer: o.tokenizer, seqlen: o.evalSeqlen, maxWindows: o.evalMaxWindows, dataDir: o.dataDir, docSeparator: o.docSeparator, progress });
      timings.eval += clock() - t;
    }
    timings.total = clock() - tStart;

    let zeros = 0, total = 0;
    for (const r of reports) {
      zeros += r.sparsity * r.in * r.out;
      total += r.in * r.out;
    }
    const report: PruneReport = {
      tool: 'sparsellm',
      model: onnxFile,
      output: format === 'safetensors' ? plan.out : join(plan.out, plan.onnxRelative),
      architecture: layout.architecture,
      method: o.method,
      arguments: { ...settings, layers: o.layers, prunedBlocks: [...selected], eval: o.eval },
      sparsity: { target: targetSparsity(spec), prunedLayers: reports.length, overall: total ? zeros / total : 0 },
      layers: reports,
      sparsellm: sparsellmReports,
      timings,
      ...(perplexity ? { perplexity } : {}),
      resumedBlocks: restored.size,
    };
    writeFileSync(join(plan.partial, 'sparsellm-report.json'), `${JSON.stringify(report, null, 2)}\n`);
    commitOutput(plan, (name) => name !== '.checkpoint' && name !== EVAL_ONLY);
    return report;
  } catch (e) {
    const interrupted = isUserError(e) && e.exitCode === 130;
    if (!interrupted && !resumed) rmSync(plan.partial, { recursive: true, force: true });
    throw e;
  } finally {
    await runner.dispose();
  }
}

async function pruneOneBlock(runner: BlockRunner, block: DecoderBlock, states: BlockState[], o: PruneOptions, progress: Progress) {
  const family = runner.layout.family;
  const keepFfn = o.method === 'sparsellm' ? ffnInputRole(family) : null;
  let statisticsSeconds = 0;
  let stats: BlockStatisticsCollector | null = null;
  if (o.method !== 'magnitude') {
    const t = performance.now();
    stats = new BlockStatisticsCollector(block, o.method, keepFfn);
    progress.start(`block ${block.index} statistics`, states.length);
    for (const s of states) {
      const { captures } = await runner.runBlock(block.index, s, { capture: true });
      await stats.add(captures, s.batch, s.seqlen);
      progress.tick();
      checkInterrupted(`${o.out}.partial`);
    }
    progress.stop();
    statisticsSeconds = (performance.now() - t) / 1000;
  }
  const t = performance.now();
  const weights = runner.getBlockWeights(block.index);
  const biases = new Map<string, Float32Array>();
  for (const l of block.linears) if (l.biasName) biases.set(l.role, runner.model.readFloat32(l.biasName));
  const relErr = async (W: Float32Array, Wp: Float32Array, l: LinearLayer) =>
    o.method === 'magnitude' || o.method === 'wanda' ? null : relativeErrorFromHessian(W, Wp, stats!.hessian(l.role).H, l.outFeatures, l.inFeatures);
  const result = await pruneBlock(block, family, weights, biases, stats, o, o.spec, relErr);
  return { ...result, statisticsSeconds, solveSeconds: (performance.now() - t) / 1000 };
}
