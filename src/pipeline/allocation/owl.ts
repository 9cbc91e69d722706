// --allocation owl: outlier-weighted layerwise sparsity (Yin et al., ICML 2024), as llm-compressor computes it
// (_infer_owl_layer_sparsity, owl_m / owl_lmbda). One dense pass over the calibration windows (the prune's own)
// gathers each linear input's ‖X_j‖ (Wanda's scaler); per block, with the Wanda scores A_ij = |W_ij|·‖X_j‖ of all its
// linears together, the outlier ratio is D_l = #{A_ij > M · mean(A)} / #A. The ratios are scaled to [0, 2λ]
// (D'_l = (D_l − min D) / (max D − min D) · 2λ) and s_l = target − (D'_l − mean D'): blocks with more outliers keep
// more weights, spread over target ± λ. Finally one common shift makes the parameter-weighted total exactly the
// target within the per-layer bounds (llm-compressor's plain mean is the same when blocks are equal in size).
import { BlockRunner, OnnxModel, type DecoderBlock } from '../../model/index.js';
import { SPARSITY_BOUNDS } from '../options.js';
import { BlockStatisticsCollector } from '../statistics.js';
import { shiftToBudget, type BudgetLinear, type LinearTargets } from './budget.js';
import { prologueInto } from '../state-store.js';
import type { AllocationContext, Meter } from './passes.js';

export interface OwlDetails {
  m: number;
  lambda: number;
  /** per pruned block: its outlier ratio D_l and its sparsity s_l */
  blocks: { block: number; outlierRatio: number; sparsity: number }[];
}

/** D_l of one block: the fraction of Wanda scores |W_ij|·sqrt(scaler_j) above m × their mean (all linears pooled). */
export function outlierRatio(linears: { W: Float32Array; rows: number; cols: number; scaler: Float32Array }[], m: number): number {
  let sum = 0, count = 0;
  const norms = linears.map((l) => Float64Array.from(l.scaler, (v) => Math.sqrt(v)));
  linears.forEach((l, k) => {
    const norm = norms[k]!;
    for (let r = 0; r < l.rows; r++) for (let c = 0; c < l.cols; c++) sum += Math.abs(l.W[r * l.cols + c]!) * norm[c]!;
    count += l.rows * l.cols;
  });
  const threshold = (m * sum) / count;
  let outliers = 0;
  linears.forEach((l, k) => {
    const norm = norms[k]!;
    for (let r = 0; r < l.rows; r++) for (let c = 0; c < l.cols; c++) if (Math.abs(l.W[r * l.cols + c]!) * norm[c]! > threshold) outliers++;
  });
  return outliers / count;
}

/** OWL's block sparsities from the ratios (before the exact-budget shift): target − (D'_l − mean D'). */
export function owlLevels(ratios: number[], target: number, lambda: number): number[] {
  const lo = Math.min(...ratios), hi = Math.max(...ratios);
  // all blocks alike (or one block): nothing to spread
  if (!(hi > lo)) return ratios.map(() => target);
  const scaled = ratios.map((d) => ((d - lo) / (hi - lo)) * 2 * lambda);
  const mean = scaled.reduce((a, b) => a + b, 0) / scaled.length;
  return scaled.map((d) => target - (d - mean));
}

export async function owlAllocation(
  ctx: AllocationContext, linears: BudgetLinear[], target: number, owl: { m: number; lambda: number }, meter: Meter,
): Promise<{ targets: LinearTargets; details: OwlDetails }> {
  const { layout, selected, o, progress } = ctx;
  const runner = await BlockRunner.open(OnnxModel.load(ctx.onnxFile));
  const states = ctx.newStore();
  const ratios = new Map<number, number>();
  try {
    await prologueInto(runner, ctx.windows, o.seqlen, states);
    const last = Math.max(...selected);
    for (const block of layout.blocks) {
      if (block.index > last) break;
      const stats = selected.has(block.index) ? new BlockStatisticsCollector(block, 'wanda', null) : null;
      progress.start(`owl: block ${block.index} (dense)`, states.count);
      for (let k = 0; k < states.count; k++) {
        const s = await states.get(k);
        const r = await runner.runBlock(block.index, s, { capture: stats !== null });
        if (stats) await stats.add(r.captures, s.batch, s.seqlen);
        if (block.index < last) await states.set(k, r.state);
        meter.blockForwards += s.batch;
        progress.tick(s.batch);
      }
      progress.stop();
      if (stats) ratios.set(block.index, blockRatio(block, runner.getBlockWeights(block.index), stats, owl.m));
    }
  } finally {
    states.dispose();
    await runner.dispose();
  }
  const blocks = [...selected].sort((a, b) => a - b);
  const D = blocks.map((b) => ratios.get(b)!);
  const params = blocks.map((b) => linears.filter((l) => l.block === b).reduce((a, l) => a + l.params, 0));
  const levels = shiftToBudget(owlLevels(D, target, owl.lambda), params, target, SPARSITY_BOUNDS);
  const targets: LinearTargets = new Map(blocks.map((b, k) => [b, new Map(linears.filter((l) => l.block === b).map((l) => [l.role, levels[k]!]))]));
  return { targets, details: { m: owl.m, lambda: owl.lambda, blocks: blocks.map((b, k) => ({ block: b, outlierRatio: D[k]!, sparsity: levels[k]! })) } };
}

function blockRatio(block: DecoderBlock, weights: Map<string, Float32Array>, stats: BlockStatisticsCollector, m: number): number {
  return outlierRatio(block.linears.map((l) => ({ W: weights.get(l.role)!, rows: l.outFeatures, cols: l.inFeatures, scaler: stats.scaler(l.role) })), m);
}
