// The budget arithmetic of a non-uniform allocation: targets per pruned linear, their parameter-weighted total
// (Σ n_l s_l / Σ n_l, n_l = in·out), the per-layer bounds, and a shift that makes the total exactly the target.
import { SPARSITY_BOUNDS } from '../options.js';

/** One pruned linear as the allocation sees it. */
export interface BudgetLinear {
  block: number;
  role: string;
  /** its weight count, in·out */
  params: number;
}

/** Per-layer bounds of a target: [min, max] (default SPARSITY_BOUNDS). */
export interface Bounds {
  min: number;
  max: number;
}

/** block -> role -> target sparsity of every pruned linear. */
export type LinearTargets = Map<number, Map<string, number>>;

export function targetOf(targets: LinearTargets, block: number, role: string): number {
  const s = targets.get(block)?.get(role);
  if (s === undefined) throw new Error(`no sparsity target for block ${block} ${role}`);
  return s;
}

/** Every linear at the same sparsity (today's behaviour). */
export function uniformTargets(linears: BudgetLinear[], sparsity: number): LinearTargets {
  const t: LinearTargets = new Map();
  for (const l of linears) {
    if (!t.has(l.block)) t.set(l.block, new Map());
    t.get(l.block)!.set(l.role, sparsity);
  }
  return t;
}

/** Σ n_l s_l / Σ n_l: the fraction of all pruned weights the targets remove. */
export function totalSparsity(linears: BudgetLinear[], targets: LinearTargets): number {
  let zeros = 0, total = 0;
  for (const l of linears) {
    zeros += l.params * targetOf(targets, l.block, l.role);
    total += l.params;
  }
  return total ? zeros / total : 0;
}

export const clamp = (v: number, b: Bounds) => Math.min(b.max, Math.max(b.min, v));

/**
 * The weighted mean of clamp(value_k + c) as a function of the shift c is continuous and non-decreasing; this finds
 * the c that makes it `target` by bisection (to 1e-12 in c), so Σ w_k clamp(v_k + c) = target · Σ w_k. The target
 * must lie within the bounds. Used by OWL (its scores centred on the target) and the search (its levels).
 */
export function shiftToBudget(values: number[], weights: number[], target: number, bounds: Bounds = SPARSITY_BOUNDS): number[] {
  if (!(target >= bounds.min && target <= bounds.max)) throw new RangeError(`target ${target} is outside the bounds [${bounds.min}, ${bounds.max}]`);
  const W = weights.reduce((a, b) => a + b, 0);
  const mean = (c: number) => values.reduce((a, v, k) => a + weights[k]! * clamp(v + c, bounds), 0) / W;
  const span = Math.max(0, ...values.map((v) => Math.abs(v))) + (bounds.max - bounds.min) + 1;
  let lo = -span, hi = span;
  for (let it = 0; it < 200 && hi - lo > 1e-13; it++) {
    const mid = (lo + hi) / 2;
    if (mean(mid) < target) lo = mid;
    else hi = mid;
  }
  const c = (lo + hi) / 2;
  return values.map((v) => clamp(v + c, bounds));
}

/**
 * Solves min Σ_u f_u(s_u) subject to Σ_u n_u s_u = target · Σ_u n_u and lo_u ≤ s_u ≤ hi_u, for convex quadratics
 * f_u(s) = a_u (s − c_u)² + b_u (s − c_u) (a_u > 0) around each unit's centre c_u (default: the target): the Lagrange
 * condition f_u'(s_u) = λ n_u gives s_u = clamp(c_u + (λ n_u − b_u) / (2 a_u), lo_u, hi_u), whose weighted total is
 * continuous and increasing in λ; λ is found by bisection. The budget must be reachable within the bounds.
 * Returns the levels s_u.
 */
export function allocateQuadratic(units: { params: number; a: number; b: number; lo: number; hi: number; centre?: number }[], target: number): number[] {
  const N = units.reduce((s, u) => s + u.params, 0);
  const want = target * N;
  const centre = (u: (typeof units)[number]) => u.centre ?? target;
  const levels = (lambda: number) => units.map((u) => Math.min(u.hi, Math.max(u.lo, centre(u) + (lambda * u.params - u.b) / (2 * u.a))));
  const total = (lambda: number) => levels(lambda).reduce((s, v, k) => s + v * units[k]!.params, 0);
  const reach = (side: 'lo' | 'hi') => units.reduce((s, u) => s + u[side] * u.params, 0);
  if (units.some((u) => !(u.a > 0) || !(u.lo <= u.hi)) || reach('lo') > want * (1 + 1e-12) || reach('hi') < want * (1 - 1e-12)) {
    throw new RangeError('allocateQuadratic: every unit needs a > 0 and lo ≤ hi, and the budget must lie within Σ n lo … Σ n hi');
  }
  // bracket λ: grow until the totals straddle the budget
  let lo = -1, hi = 1;
  while (total(lo) > want && lo > -1e300) lo *= 2;
  while (total(hi) < want && hi < 1e300) hi *= 2;
  for (let it = 0; it < 400; it++) {
    const mid = (lo + hi) / 2;
    if (mid === lo || mid === hi) break;
    if (total(mid) < want) lo = mid;
    else hi = mid;
  }
  // the last step: the units strictly inside their bounds absorb the remaining rounding of λ exactly
  const s = levels((lo + hi) / 2);
  const rest = want - s.reduce((acc, v, k) => acc + v * units[k]!.params, 0);
  const free = s.map((v, k) => (v > units[k]!.lo && v < units[k]!.hi ? units[k]!.params : 0));
  const F = free.reduce((a, b) => a + b, 0);
  if (F > 0) for (let k = 0; k < s.length; k++) if (free[k]) s[k] = Math.min(units[k]!.hi, Math.max(units[k]!.lo, s[k]! + rest / F));
  return s;
}
