// --allocation search: spends the budget where the measured end-to-end loss says it hurts least.
//
// One probe pass before the prune, sequential like the prune itself, on its own copy of the model:
//   for each pruned block i, its inputs coming from the blocks before it already pruned uniformly (the prefix of the
//   uniformly pruned model, as the lesson of a lost first attempt says: measure around the pruned model, not the dense):
//   1. statistics of block i on the calibration windows (the prune's own), and a uniform solve of the block at the
//      target t (the base);
//   2. for each unit u of the block (its attention projections; its FFN, which SparseLLM solves jointly), re-solve only
//      u at t − δ and at t + δ (δ = --search-deviation, at most (1 − t)/2, clipped to the bounds) and score the model
//      on held-out windows (drawn after the calibration windows, never used for statistics), with block i's other units
//      at t, the blocks before pruned, the blocks after dense: L = the mean KL(dense ‖ probe) of the next-token
//      distributions (--search-metric kl, the default: fidelity to the dense model, not to the calibration text's
//      domain), or the mean next-token NLL of the held-out text (nll);
//   3. keep the base, run block i forward on both window sets, give block i its dense weights back (levels are
//      recomputed, nothing is stored per level).
// Each unit's loss change is fitted by a quadratic f_u(s) = a_u (s − t)² + b_u (s − t) through its three points
// (L(t) = base), convex by a floor on a_u; the allocation minimises Σ_u f_u(s_u) subject to the exact budget
// Σ_u n_u s_u = t Σ_u n_u (n_u = the unit's weights) and t − δ ≤ s_u ≤ t + δ (budget.ts: allocateQuadratic).
// The probe solves with the run's method, except SparseLLM, whose FFN is probed with SparseGPT (its epoch 0): the probe
// pass then costs about statistics + 3 SparseGPT solves per block instead of 3 SparseLLM solves.
import { rowsNll } from '../../data/perplexity.js';
import { BlockRunner, OnnxModel, type BlockState, type DecoderBlock } from '../../model/index.js';
import { SPARSITY_BOUNDS, type Method } from '../options.js';
import { pruneBlock } from '../prune-block.js';
import { BlockStatisticsCollector } from '../statistics.js';
import { allocateQuadratic, type BudgetLinear, type LinearTargets } from './budget.js';
import { prologueInto } from '../state-store.js';
import type { AllocationContext, Meter } from './passes.js';

export interface SearchUnit {
  block: number;
  unit: 'attention' | 'ffn';
  roles: string[];
  params: number;
  /** the probed levels [t − δ, t, t + δ] (clipped to the bounds) and the held-out score (KL or NLL) at each */
  levels: number[];
  losses: number[];
  /** f(s) = a (s − t)² + b (s − t) */
  a: number;
  b: number;
  /** the chosen level */
  sparsity: number;
}

export interface SearchDetails {
  metric: 'kl' | 'nll';
  maxDeviation: number;
  /** the deviation used: min(maxDeviation, (1 − t) / 2) */
  deviation: number;
  heldOutWindows: number;
  probeMethod: Method;
  units: SearchUnit[];
  /** Σ_u f_u(s_u): the loss change the fits predict for the chosen levels (additive model) */
  predictedLossChange: number;
}

/**
 * The probed (and allowed) deviation from the target t: --search-deviation, but at most half the density 1 − t left,
 * so that at 90 % no unit goes beyond 95 %, where the loss explodes and the quadratic fit no longer holds.
 */
export function searchDeviation(target: number, maxDeviation: number): number {
  return Math.min(maxDeviation, (1 - target) / 2);
}

/** Curvature floor of a fit, relative to the measured changes over the deviation (keeps every f_u convex). */
const MIN_CURVATURE = 1e-3;

/** The quadratic a x² + b x through (x₋, y₋), (x₊, y₊) (x = s − t, y = L(s) − L(t)); one side may be missing (at a bound). */
export function fitQuadratic(xm: number | null, ym: number | null, xp: number | null, yp: number | null, deviation: number): { a: number; b: number } {
  const scale = Math.max(Math.abs(ym ?? 0), Math.abs(yp ?? 0), 1e-12);
  const aMin = (MIN_CURVATURE * scale) / (deviation * deviation);
  if (xm !== null && xp !== null && ym !== null && yp !== null) {
    const det = xm * xp * (xm - xp);
    const a = (ym * xp - yp * xm) / det;
    const b = (xm * xm * yp - xp * xp * ym) / det;
    if (a >= aMin) return { a, b };
    return { a: aMin, b: (yp - ym) / (xp - xm) };
  }
  if (xm !== null && ym !== null) return { a: aMin, b: ym / xm };
  if (xp !== null && yp !== null) return { a: aMin, b: yp / xp };
  return { a: aMin, b: 0 };
}

export async function searchAllocation(
  ctx: AllocationContext, linears: BudgetLinear[], target: number, search: { maxDeviation: number; heldOut: number; metric: 'kl' | 'nll' }, meter: Meter,
): Promise<{ targets: LinearTargets; details: SearchDetails }> {
  const { layout, selected, o, progress } = ctx;
  const family = layout.family;
  const probeMethod: Method = o.method === 'sparsellm' ? 'sparsegpt' : o.method;
  const probeOptions = { ...o, method: probeMethod };
  const deviation = searchDeviation(target, search.maxDeviation);
  const lo = Math.max(SPARSITY_BOUNDS.min, target - deviation);
  const hi = Math.min(SPARSITY_BOUNDS.max, target + deviation);
  const runner = await BlockRunner.open(OnnxModel.load(ctx.onnxFile));
  const calib = ctx.newStore();
  const units: SearchUnit[] = [];
  try {
    if (probeMethod !== 'magnitude') await prologueInto(runner, ctx.windows, o.seqlen, calib);
    let held: BlockState[] = [];
    for (const w of ctx.heldOut) held.push(await runner.prologue(w, 1, o.seqlen));
    const heldIds = ctx.heldOut;

    /** The held-out states run from block `from` to the end (the current weights). */
    const runToEnd = async (from: number): Promise<BlockState[]> => {
      let states = held;
      for (let j = from; j < runner.numBlocks; j++) {
        const next: BlockState[] = [];
        for (const s of states) next.push((await runner.runBlock(j, s)).state);
        meter.blockForwards += states.length;
        states = next;
      }
      return states;
    };
    // the dense model's final states of the held-out windows: its next-token distributions are the probes' reference
    const denseFinal = search.metric === 'kl' ? await runToEnd(0) : [];

    /**
     * The probe's score on the held-out windows from block `from` on: the mean KL(dense ‖ probe) of the next-token
     * distributions (metric kl), or the mean next-token NLL of the text (metric nll).
     */
    const heldOutLoss = async (from: number): Promise<number> => {
      meter.probes++;
      const states = await runToEnd(from);
      let total = 0, count = 0;
      for (const [k, s] of states.entries()) {
        const logits = await runner.epilogue(s);
        const vocab = logits.length / o.seqlen;
        if (search.metric === 'kl') {
          total += klRows(await runner.epilogue(denseFinal[k]!), logits, o.seqlen, vocab);
          count += o.seqlen;
        } else {
          const ids = heldIds[k]!;
          const targets = new Int32Array(o.seqlen).fill(-1);
          for (let t = 0; t + 1 < o.seqlen; t++) targets[t] = Number(ids[t + 1]!);
          const rows = await rowsNll(logits, vocab, targets);
          for (let t = 0; t + 1 < o.seqlen; t++) total += rows[t]!;
          count += o.seqlen - 1;
        }
      }
      return total / count;
    };

    const last = Math.max(...selected);
    for (const block of layout.blocks) {
      const i = block.index;
      if (i > last) break;
      if (selected.has(i)) {
        progress.log(`search: block ${i} — probing ${probeMethod} at ${fmt(lo)} / ${fmt(target)} / ${fmt(hi)}`);
        let stats: BlockStatisticsCollector | null = null;
        if (probeMethod !== 'magnitude') {
          stats = new BlockStatisticsCollector(block, probeMethod, null);
          for (let k = 0; k < calib.count; k++) {
            const s = await calib.get(k);
            const r = await runner.runBlock(i, s, { capture: true });
            await stats.add(r.captures, s.batch, s.seqlen);
            meter.blockForwards += s.batch;
          }
        }
        const dense = runner.getBlockWeights(i);
        const solve = async (part: DecoderBlock, level: number) => {
          meter.solves += part.linears.length;
          const r = await pruneBlock(part, family, dense, new Map(), stats, probeOptions, () => ({ sparsity: level }), async () => null);
          return r.weights;
        };
        const base = await solve(block, target);
        await runner.setBlockWeights(i, base);
        const L0 = await heldOutLoss(i);
        const ffnRoles = new Set(family.ffnRoles.global);
        const groups: [SearchUnit['unit'], string[]][] = [
          ['attention', block.linears.filter((l) => !ffnRoles.has(l.role)).map((l) => l.role)],
          ['ffn', block.linears.filter((l) => ffnRoles.has(l.role)).map((l) => l.role)],
        ];
        for (const [unit, roles] of groups) {
          if (roles.length === 0) continue;
          const part = { ...block, linears: block.linears.filter((l) => roles.includes(l.role)) };
          const lossAt = async (level: number): Promise<number | null> => {
            if (level === target) return null;
            await runner.setBlockWeights(i, await solve(part, level));
            const L = await heldOutLoss(i);
            await runner.setBlockWeights(i, new Map(roles.map((r) => [r, base.get(r)!])));
            return L;
          };
          const Lm = await lossAt(lo), Lp = await lossAt(hi);
          const fit = fitQuadratic(Lm === null ? null : lo - target, Lm === null ? null : Lm - L0, Lp === null ? null : hi - target, Lp === null ? null : Lp - L0, deviation);
          const params = linears.filter((l) => l.block === i && roles.includes(l.role)).reduce((a, l) => a + l.params, 0);
          units.push({ block: i, unit, roles, params, levels: [lo, target, hi], losses: [Lm ?? L0, L0, Lp ?? L0], ...fit, sparsity: target });
        }
      }
      // block i (pruned at t, or dense when not selected) makes the next block's inputs
      for (let k = 0; k < calib.count; k++) {
        const s = await calib.get(k);
        await calib.set(k, (await runner.runBlock(i, s)).state);
        meter.blockForwards += s.batch;
      }
      const next: BlockState[] = [];
      for (const s of held) next.push((await runner.runBlock(i, s)).state);
      meter.blockForwards += held.length;
      held = next;
      if (selected.has(i)) await runner.restoreBlockWeights(i);
    }
  } finally {
    calib.dispose();
    await runner.dispose();
  }
  const levels = allocateQuadratic(units.map((u) => ({ params: u.params, a: u.a, b: u.b, lo, hi })), target);
  units.forEach((u, k) => (u.sparsity = levels[k]!));
  const targets: LinearTargets = new Map();
  for (const u of units) {
    if (!targets.has(u.block)) targets.set(u.block, new Map());
    for (const r of u.roles) targets.get(u.block)!.set(r, u.sparsity);
  }
  const predictedLossChange = units.reduce((acc, u) => acc + u.a * (u.sparsity - target) ** 2 + u.b * (u.sparsity - target), 0);
  return { targets, details: { metric: search.metric, maxDeviation: search.maxDeviation, deviation, heldOutWindows: ctx.heldOut.length, probeMethod, units, predictedLossChange } };
}

const fmt = (v: number) => `${(v * 100).toFixed(1)}%`;

/** Σ over rows of KL(softmax(p_row) ‖ softmax(q_row)) = Σ_v P_v (log P_v − log Q_v), in float64. */
export function klRows(p: Float32Array, q: Float32Array, rows: number, vocab: number): number {
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const base = r * vocab;
    let mp = -Infinity, mq = -Infinity;
    for (let v = 0; v < vocab; v++) {
      if (p[base + v]! > mp) mp = p[base + v]!;
      if (q[base + v]! > mq) mq = q[base + v]!;
    }
    let sp = 0, sq = 0;
    for (let v = 0; v < vocab; v++) {
      sp += Math.exp(p[base + v]! - mp);
      sq += Math.exp(q[base + v]! - mq);
    }
    const lp = mp + Math.log(sp), lq = mq + Math.log(sq);
    let kl = 0;
    for (let v = 0; v < vocab; v++) {
      const a = p[base + v]! - lp;
      kl += Math.exp(a) * (a - (q[base + v]! - lq));
    }
    total += kl;
  }
  return total;
}
