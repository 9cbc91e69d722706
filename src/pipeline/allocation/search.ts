// --allocation search: spends the budget where the measured end-to-end loss says it hurts least.
//
// Probe passes before the prune, sequential like the prune itself, on their own copy of the model. A pass runs around
// a centre profile c (the first: uniform, every unit at the target t):
//   for each pruned block i, its inputs coming from the blocks before it already pruned at their centre levels (measure
//   around the pruned model, not the dense, as the lesson of a lost first attempt says):
//   1. statistics of block i on the calibration windows (the prune's own), and a solve of the block at c (the base);
//   2. for each unit u of the block (its attention projections; its FFN, which SparseLLM solves jointly), re-solve only
//      u at c_u − r and c_u + r (r = δ in the first pass, δ/2 in later ones; δ = --search-deviation, at most
//      (1 − t)/2; levels kept inside t ± δ and the bounds) and score the model on held-out windows (drawn after the
//      calibration windows, never used for statistics), with block i's other units at c, the blocks before pruned, the
//      blocks after dense: L = the mean KL(dense ‖ probe) of the next-token distributions (--search-metric kl, the
//      default: fidelity to the dense model, not to the calibration text's domain; native, against the dense model's
//      log-probs computed once), or the mean next-token NLL of the held-out text (nll);
//   3. keep the base, run block i forward on both window sets, give block i its dense weights back (levels are
//      recomputed, nothing is stored per level).
// At the last pruned block the base score is the whole centre profile's held-out loss (the blocks after it are dense in
// the pruned model too). Each unit's loss change is fitted by a quadratic f_u(s) = a_u (s − c_u)² + b_u (s − c_u)
// through its three points (L(c) = base), convex by a floor on a_u; the next profile minimises Σ_u f_u(s_u) subject to
// the exact budget Σ_u n_u s_u = t Σ_u n_u (n_u = the unit's weights) and the probed range (budget.ts:
// allocateQuadratic). --search-rounds passes (default 2: around uniform, then around the first choice), then one pass
// without probes measures the last choice; the measured profile with the lowest held-out loss wins, uniform included,
// so the search never returns a profile that scores worse than uniform on its held-out windows. With --search-guard z
// > 0 it must also beat uniform by more than z standard errors of the paired per-window differences
// (chooseMeasuredProfile): a gain the few held-out windows cannot tell from noise keeps uniform.
// The probes solve with the run's method (SparseLLM units with SparseLLM).
import { logSoftmaxInPlace, rowsKl, rowsNll } from '../../data/perplexity.js';
import { BlockRunner, OnnxModel, type BlockState, type DecoderBlock } from '../../model/index.js';
import { SPARSITY_BOUNDS, type Method } from '../options.js';
import { pruneBlock } from '../prune-block.js';
import { BlockStatisticsCollector, type BlockStatistics } from '../statistics.js';
import { allocateQuadratic, type BudgetLinear, type LinearTargets } from './budget.js';
import { prologueInto } from '../state-store.js';
import type { AllocationContext, Meter } from './passes.js';

export interface SearchUnit {
  block: number;
  unit: 'attention' | 'ffn';
  roles: string[];
  params: number;
  /** the last probe pass's levels [c − r, c, c + r] (clipped to t ± δ and the bounds) and the held-out score (KL or NLL) at each */
  levels: number[];
  losses: number[];
  /** its fit f(s) = a (s − c)² + b (s − c) */
  a: number;
  b: number;
  /** the chosen level */
  sparsity: number;
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

/**
 * Paired differences to − from over the same windows: their mean, sample standard deviation and count (the standard
 * error of the mean is sd / √n). Used by the guard below and by the allocation table's test-window comparison.
 */
export function pairedDifference(from: number[], to: number[]): { mean: number; sd: number; n: number } {
  const diff = from.map((f, w) => to[w]! - f);
  const n = diff.length;
  const mean = diff.reduce((a, b) => a + b, 0) / n;
  const sd = Math.sqrt(diff.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
  return { mean, sd, n };
}

/**
 * Which measured profile wins: the lowest mean held-out loss (ties: the earlier, uniform = rounds[0] first), and a
 * profile k > 0 only if its paired gain over uniform, d̄ = mean_w (L₀(w) − L_k(w)), exceeds guard · s_d / √n (s_d the
 * sample standard deviation of the n per-window differences). guard 0: the lowest mean alone.
 */
export function chooseMeasuredProfile(rounds: Pick<SearchRound, 'heldOutLoss' | 'windowLosses'>[], guard: number): number {
  let best = 0;
  rounds.forEach((r, k) => {
    if (r.heldOutLoss < rounds[best]!.heldOutLoss) best = k;
  });
  if (best === 0 || guard === 0) return best;
  if (rounds[0]!.windowLosses.length < 2) return best;
  const { mean, sd, n } = pairedDifference(rounds[best]!.windowLosses, rounds[0]!.windowLosses); // the gain L₀(w) − L_k(w)
  return mean > (guard * sd) / Math.sqrt(n) ? best : 0;
}

/** One probe pass: the centre profile it ran around, its measured held-out loss, and the fits. */
export interface SearchRound {
  /** the probe radius r of this pass (0: a measuring pass without probes) */
  radius: number;
  /** the centre profile's held-out loss (mean over windows) and its per-window values */
  heldOutLoss: number;
  windowLosses: number[];
  /** each unit's centre level, in `units` order */
  centre: number[];
  /** Σ_u f_u(s_u) the fits of this pass predict for the next profile (null for the measuring pass) */
  predictedLossChange: number | null;
}

export interface SearchDetails {
  metric: 'kl' | 'nll';
  maxDeviation: number;
  /** --search-guard: standard errors of the paired held-out gain a profile needed to beat uniform */
  guard: number;
  /** the deviation used: min(maxDeviation, (1 − t) / 2) */
  deviation: number;
  heldOutWindows: number;
  /** --search-data: where the held-out windows came from (absent: the calibration text, after the prune's windows) */
  heldOutData?: string;
  probeMethod: Method;
  /** the passes in order: rounds[0] around uniform, …, the last one measuring the last choice */
  rounds: SearchRound[];
  /** index into rounds of the measured profile chosen (0 = uniform: no profile beat it on the held-out windows) */
  chosenRound: number;
  /** the units with the chosen levels, and the fits of the last probe pass */
  units: SearchUnit[];
  /** Σ_u f_u(s_u): the loss change the first pass's fits predicted for its choice (additive model) */
  predictedLossChange: number;
}

export async function searchAllocation(
  ctx: AllocationContext, linears: BudgetLinear[], target: number, search: { maxDeviation: number; heldOut: number; metric: 'kl' | 'nll'; rounds: number; guard: number; data?: string }, meter: Meter,
): Promise<{ targets: LinearTargets; details: SearchDetails }> {
  const { layout, selected, o, progress } = ctx;
  const family = layout.family;
  const probeMethod: Method = o.method;
  const deviation = searchDeviation(target, search.maxDeviation);
  const boxLo = Math.max(SPARSITY_BOUNDS.min, target - deviation);
  const boxHi = Math.min(SPARSITY_BOUNDS.max, target + deviation);
  const ffnRoles = new Set(family.ffnRoles.global);
  // the units, in block order: attention projections, then the FFN
  const units: SearchUnit[] = [];
  for (const block of layout.blocks) {
    if (!selected.has(block.index)) continue;
    const groups: [SearchUnit['unit'], string[]][] = [
      ['attention', block.linears.filter((l) => !ffnRoles.has(l.role)).map((l) => l.role)],
      ['ffn', block.linears.filter((l) => ffnRoles.has(l.role)).map((l) => l.role)],
    ];
    for (const [unit, roles] of groups) {
      if (roles.length === 0) continue;
      const params = linears.filter((l) => l.block === block.index && roles.includes(l.role)).reduce((a, l) => a + l.params, 0);
      units.push({ block: block.index, unit, roles, params, levels: [], losses: [], a: 0, b: 0, sparsity: target });
    }
  }
  const runner = await BlockRunner.open(OnnxModel.load(ctx.onnxFile));
  const rounds: SearchRound[] = [];
  try {
    const heldStart: BlockState[] = [];
    for (const w of ctx.heldOut) heldStart.push(await runner.prologue(w, 1, o.seqlen));
    const heldIds = ctx.heldOut;

    /** The states run from block `from` to the end (the current weights). */
    const runToEnd = async (start: BlockState[], from: number): Promise<BlockState[]> => {
      let states = start;
      for (let j = from; j < runner.numBlocks; j++) {
        const next: BlockState[] = [];
        for (const s of states) next.push((await runner.runBlock(j, s)).state);
        meter.blockForwards += states.length;
        states = next;
      }
      return states;
    };
    // the dense model's next-token log-probs of the held-out windows, once: the probes' reference
    // (memory: held-out windows × seqlen × vocab floats)
    const denseLogProbs: Float32Array[] = [];
    if (search.metric === 'kl') {
      for (const s of await runToEnd(heldStart, 0)) {
        const logits = await runner.epilogue(s);
        denseLogProbs.push(await logSoftmaxInPlace(logits, logits.length / o.seqlen));
      }
    }

    /**
     * The score of the held-out states `held` (at block `from`'s input) run to the end, per window: the mean KL(dense ‖
     * probe) of the next-token distributions (metric kl), or the mean next-token NLL of the text (metric nll).
     */
    const heldOutLosses = async (held: BlockState[], from: number): Promise<number[]> => {
      meter.probes++;
      const states = await runToEnd(held, from);
      const out: number[] = [];
      for (const [k, s] of states.entries()) {
        const logits = await runner.epilogue(s);
        const vocab = logits.length / o.seqlen;
        if (search.metric === 'kl') {
          const rows = await rowsKl(denseLogProbs[k]!, logits, vocab);
          out.push(rows.reduce((a, v) => a + v, 0) / o.seqlen);
        } else {
          const ids = heldIds[k]!;
          const targets = new Int32Array(o.seqlen).fill(-1);
          for (let t = 0; t + 1 < o.seqlen; t++) targets[t] = Number(ids[t + 1]!);
          const rows = await rowsNll(logits, vocab, targets);
          let total = 0;
          for (let t = 0; t + 1 < o.seqlen; t++) total += rows[t]!;
          out.push(total / (o.seqlen - 1));
        }
      }
      return out;
    };
    const mean = (v: number[]) => v.reduce((a, x) => a + x, 0) / v.length;

    /**
     * One sequential pass with every unit at its centre level; radius > 0: probe each unit at centre ± radius (inside
     * the box t ± δ) and fit its curve. Returns the centre profile's held-out losses per window.
     */
    const pass = async (centre: number[], radius: number): Promise<number[]> => {
      const calib = ctx.newStore();
      let end: number[] = [];
      try {
        if (probeMethod !== 'magnitude') await prologueInto(runner, ctx.windows, o.seqlen, calib);
        let held = heldStart;
        const last = Math.max(...selected);
        for (const block of layout.blocks) {
          const i = block.index;
          if (i > last) break;
          if (selected.has(i)) {
            const blockUnits = units.map((u, k) => ({ u, k })).filter(({ u }) => u.block === i);
            const levelOf = new Map(blockUnits.flatMap(({ u, k }) => u.roles.map((r) => [r, centre[k]!] as const)));
            progress.log(`search: block ${i} — ${radius > 0 ? `probing ${probeMethod} at ±${fmt(radius)} around` : 'measuring'} ${blockUnits.map(({ k }) => fmt(centre[k]!)).join(' / ')}`);
            let stats: BlockStatistics | null = null;
            if (probeMethod !== 'magnitude') {
              const collector = new BlockStatisticsCollector(block, probeMethod, probeMethod === 'sparsellm' ? family.ffnRoles.input : null);
              for (let k = 0; k < calib.count; k++) {
                const s = await calib.get(k);
                const r = await runner.runBlock(i, s, { capture: true });
                await collector.add(r.captures, s.batch, s.seqlen);
                meter.blockForwards += s.batch;
              }
              stats = collector;
              if (probeMethod === 'sparsellm') {
                // the collector hands its FFN input out once; the probes' joint solves all read it (read-only)
                const ffn = collector.ffnInput();
                stats = {
                  hessian: (role) => collector.hessian(role), scaler: (role) => collector.scaler(role),
                  weightQuadratic: (role) => collector.weightQuadratic(role), sequences: collector.sequences, ffnInput: () => ffn,
                };
              }
            }
            const dense = runner.getBlockWeights(i);
            // SparseLLM's OPT FFN solve reads fc1/fc2's biases: the probes must solve exactly as the prune will
            const biases = runner.getBlockBiases(i);
            const solve = async (part: DecoderBlock, level: (role: string) => number) => {
              meter.solves += part.linears.filter((l) => !(probeMethod === 'sparsellm' && ffnRoles.has(l.role))).length + (probeMethod === 'sparsellm' && part.linears.some((l) => ffnRoles.has(l.role)) ? 1 : 0);
              const r = await pruneBlock(part, family, dense, biases, stats, o, (role) => ({ sparsity: level(role) }), async () => null);
              return r.weights;
            };
            const base = await solve(block, (role) => levelOf.get(role)!);
            await runner.setBlockWeights(i, base);
            if (radius > 0 || i === last) {
              const L0w = await heldOutLosses(held, i);
              if (i === last) end = L0w;
              const L0 = mean(L0w);
              if (radius > 0) {
                for (const { u, k } of blockUnits) {
                  const c = centre[k]!;
                  const part = { ...block, linears: block.linears.filter((l) => u.roles.includes(l.role)) };
                  const lossAt = async (level: number): Promise<number | null> => {
                    if (Math.abs(level - c) < 1e-12) return null;
                    await runner.setBlockWeights(i, await solve(part, () => level));
                    const L = mean(await heldOutLosses(held, i));
                    await runner.setBlockWeights(i, new Map(u.roles.map((r) => [r, base.get(r)!])));
                    return L;
                  };
                  const lo = Math.max(boxLo, c - radius), hi = Math.min(boxHi, c + radius);
                  const Lm = await lossAt(lo), Lp = await lossAt(hi);
                  const fit = fitQuadratic(Lm === null ? null : lo - c, Lm === null ? null : Lm - L0, Lp === null ? null : hi - c, Lp === null ? null : Lp - L0, radius);
                  Object.assign(u, { levels: [lo, c, hi], losses: [Lm ?? L0, L0, Lp ?? L0], ...fit });
                }
              }
            }
          }
          // block i (pruned at its centre levels, or dense when not selected) makes the next block's inputs
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
      }
      return end;
    };

    let centre = units.map(() => target);
    for (let r = 0; r <= search.rounds; r++) {
      const radius = r === search.rounds ? 0 : r === 0 ? deviation : deviation / 2;
      const windowLosses = await pass(centre, radius);
      const round: SearchRound = { radius, heldOutLoss: mean(windowLosses), windowLosses, centre, predictedLossChange: null };
      rounds.push(round);
      progress.log(`search: pass ${r + 1}: held-out ${search.metric} of its centre profile ${round.heldOutLoss.toPrecision(5)}`);
      if (radius === 0) break;
      const next = allocateQuadratic(units.map((u, k) => ({ params: u.params, a: u.a, b: u.b, lo: u.levels[0]!, hi: u.levels[2]!, centre: centre[k]! })), target);
      round.predictedLossChange = units.reduce((acc, u, k) => acc + u.a * (next[k]! - centre[k]!) ** 2 + u.b * (next[k]! - centre[k]!), 0);
      centre = next;
    }
  } finally {
    await runner.dispose();
  }
  const chosenRound = chooseMeasuredProfile(rounds, search.guard);
  units.forEach((u, k) => (u.sparsity = rounds[chosenRound]!.centre[k]!));
  const targets: LinearTargets = new Map();
  for (const u of units) {
    if (!targets.has(u.block)) targets.set(u.block, new Map());
    for (const r of u.roles) targets.get(u.block)!.set(r, u.sparsity);
  }
  return {
    targets,
    details: {
      metric: search.metric, maxDeviation: search.maxDeviation, guard: search.guard, deviation, heldOutWindows: ctx.heldOut.length, ...(search.data !== undefined ? { heldOutData: search.data } : {}), probeMethod,
      rounds, chosenRound, units, predictedLossChange: rounds[0]!.predictedLossChange ?? 0,
    },
  };
}

const fmt = (v: number) => `${(v * 100).toFixed(1)}%`;
