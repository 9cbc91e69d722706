// --allocation uniform (the default): every pruned linear at the run's sparsity, today's behaviour bit for bit.
import { uniformTargets, type BudgetLinear, type LinearTargets } from './budget.js';

export function uniformAllocation(linears: BudgetLinear[], target: number): LinearTargets {
  return uniformTargets(linears, target);
}
