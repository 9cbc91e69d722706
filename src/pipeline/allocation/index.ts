// Spreads a run's sparsity budget over its pruned linears (issue 17): uniform (the default), owl (outlier-weighted
// layerwise sparsity), search (measured held-out loss around the uniformly pruned model), or an explicit profile.
// The allocators other than uniform/profile run their own passes over the calibration windows before the prune, on
// their own copy of the model (OnnxModel loaded again, weights read lazily); their cost is reported.
import type { DecoderLayout } from '../../model/index.js';
import { SPARSITY_BOUNDS, resolveAllocation, type ResolvedAllocation, type ResolvedPruneOptions } from '../options.js';
import { Meter, type AllocationContext, type AllocationCost } from './passes.js';
import { totalSparsity, type BudgetLinear, type LinearTargets } from './budget.js';
import { profileOf, profileTargets, readProfile, type SparsityProfile } from './profile.js';
import { uniformAllocation } from './uniform.js';
import { owlAllocation } from './owl.js';
import { searchAllocation } from './search.js';
import { UserError } from '../../errors.js';

export { targetOf, type LinearTargets } from './budget.js';
export type { AllocationContext, AllocationCost } from './passes.js';

export interface AllocationReport {
  method: ResolvedAllocation['allocation'];
  /** the run's target (the profile's own total for --sparsity-profile) */
  target: number;
  /** Σ n_l s_l / Σ n_l over the per-linear targets, before the solvers round to whole weights */
  planned: number;
  bounds: { min: number; max: number };
  profile: SparsityProfile;
  cost: AllocationCost;
  owl?: unknown;
  search?: unknown;
}

/** The pruned linears of a run (selected blocks), with their weight counts. */
export function budgetLinears(layout: DecoderLayout, selected: Set<number>): BudgetLinear[] {
  return layout.blocks.filter((b) => selected.has(b.index)).flatMap((b) => b.linears.map((l) => ({ block: b.index, role: l.role, params: l.inFeatures * l.outFeatures })));
}

/** Extra calibration windows an allocation draws after the prune's own (the search's held-out set). */
export function extraWindows(o: ResolvedPruneOptions): number {
  return resolveAllocation(o.allocation).allocation === 'search' ? resolveAllocation(o.allocation).search.heldOut : 0;
}

/** Whether the allocation reads calibration text even for magnitude pruning. */
export function allocationNeedsCalibration(o: ResolvedPruneOptions): boolean {
  const a = resolveAllocation(o.allocation).allocation;
  return a === 'owl' || a === 'search';
}

/** SparseLLM prunes each FFN jointly (one solve, one target): a profile must give its roles one value. */
export function assertJointFfn(targets: LinearTargets, ffnRoles: readonly string[], source: string): void {
  for (const [block, roles] of targets) {
    const values = ffnRoles.map((r) => roles.get(r)).filter((v) => v !== undefined);
    if (values.some((v) => v !== values[0])) {
      throw new UserError(`${source} gives block ${block}'s ${ffnRoles.join('/')} different targets, but SparseLLM prunes them jointly with one target: give them the same value (or use --method sparsegpt)`);
    }
  }
}

/** The run's per-linear targets and the allocation's report. `target`: the spec's sparsity (unstructured). */
export async function allocate(ctx: AllocationContext, target: number): Promise<{ targets: LinearTargets; report: AllocationReport }> {
  const a = resolveAllocation(ctx.o.allocation);
  const linears = budgetLinears(ctx.layout, ctx.selected);
  const meter = new Meter();
  let targets: LinearTargets;
  let details: Pick<AllocationReport, 'owl' | 'search'> = {};
  switch (a.allocation) {
    case 'uniform':
      targets = uniformAllocation(linears, target);
      break;
    case 'profile': {
      const source = `--sparsity-profile ${a.sparsityProfile}`;
      targets = profileTargets(readProfile(a.sparsityProfile!, SPARSITY_BOUNDS), linears, source);
      if (ctx.o.method === 'sparsellm') assertJointFfn(targets, ctx.layout.family.ffnRoles.global, source);
      target = totalSparsity(linears, targets);
      break;
    }
    case 'owl': {
      const r = await owlAllocation(ctx, linears, target, a.owl, meter);
      targets = r.targets;
      details = { owl: r.details };
      break;
    }
    case 'search': {
      const r = await searchAllocation(ctx, linears, target, a.search, meter);
      targets = r.targets;
      details = { search: r.details };
      break;
    }
    default:
      throw new Error(`allocation ${a.allocation} is not implemented`);
  }
  const planned = totalSparsity(linears, targets);
  return {
    targets,
    report: {
      method: a.allocation, target, planned, bounds: { ...SPARSITY_BOUNDS },
      profile: profileOf(targets, a.allocation, planned),
      cost: meter.cost(ctx.layout.blocks.length, Math.max(1, ctx.windows.length)),
      ...details,
    },
  };
}
