// Sparsity profiles: explicit per-block or per-matrix targets (--sparsity-profile FILE), read and checked against
// the model, and written by every run (the report's `allocation.profile` and sparsity-profile.json beside the model)
// so that a run's allocation replays exactly.
//
// {
//   "format": "sparsellm-sparsity-profile", "version": 1,
//   "blocks": [ { "block": 0, "sparsity": 0.75 },                                   // every linear of block 0
//               { "block": 1, "sparsity": 0.8, "roles": { "q_proj": 0.7 } } ]      // roles override the block's value
// }
// A sparsellm-report.json is accepted too: its `allocation.profile` is read.
import { readFileSync } from 'node:fs';
import { UserError } from '../../errors.js';
import type { Bounds, BudgetLinear, LinearTargets } from './budget.js';

export const PROFILE_FORMAT = 'sparsellm-sparsity-profile';

export interface ProfileBlock {
  block: number;
  /** every pruned linear of the block not named in `roles` */
  sparsity?: number;
  /** per-matrix targets by role (q_proj, fc1, ...) */
  roles?: Record<string, number>;
}

export interface SparsityProfile {
  format: typeof PROFILE_FORMAT;
  version: 1;
  /** how it was made (uniform, owl, search, profile) and the total it gives; informational when read */
  allocation?: string;
  target?: number;
  blocks: ProfileBlock[];
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Reads and checks the file's shape (not yet against a model). */
export function readProfile(path: string, bounds: Bounds): SparsityProfile {
  const fail = (why: string): never => {
    throw new UserError(`--sparsity-profile ${path}: ${why}`);
  };
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    fail(err.code === 'ENOENT' ? 'no such file' : err.code ? `cannot read it (${err.code})` : `not JSON (${err.message})`);
  }
  // a run's report: take its saved profile
  if (isRecord(json) && json.tool === 'sparsellm' && isRecord(json.allocation)) json = json.allocation.profile;
  if (!isRecord(json) || json.format !== PROFILE_FORMAT) fail(`not a sparsity profile (want {"format": "${PROFILE_FORMAT}", "version": 1, "blocks": [...]} or a sparsellm-report.json)`);
  const p = json as Record<string, unknown>;
  if (p.version !== 1) fail(`version ${String(p.version)} is not supported (want 1)`);
  if (!Array.isArray(p.blocks) || p.blocks.length === 0) fail('"blocks" must be a non-empty list');
  const level = (v: unknown, where: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v)) return fail(`${where} is not a number`);
    if (v < bounds.min || v > bounds.max) return fail(`${where} = ${v} is outside the per-layer bounds [${bounds.min}, ${bounds.max}]`);
    return v;
  };
  const seen = new Set<number>();
  const blocks = (p.blocks as unknown[]).map((b, k): ProfileBlock => {
    if (!isRecord(b)) return fail(`blocks[${k}] is not an object`);
    if (!Number.isInteger(b.block) || (b.block as number) < 0) return fail(`blocks[${k}].block must be a block index (integer ≥ 0)`);
    const block = b.block as number;
    if (seen.has(block)) fail(`block ${block} is given twice`);
    seen.add(block);
    const out: ProfileBlock = { block };
    if (b.sparsity !== undefined) out.sparsity = level(b.sparsity, `block ${block} sparsity`);
    if (b.roles !== undefined) {
      if (!isRecord(b.roles)) fail(`block ${block} roles must be an object of role: sparsity`);
      out.roles = Object.fromEntries(Object.entries(b.roles as Record<string, unknown>).map(([r, v]) => [r, level(v, `block ${block} ${r}`)]));
    }
    if (out.sparsity === undefined && out.roles === undefined) fail(`block ${block} has neither "sparsity" nor "roles"`);
    return out;
  });
  return { format: PROFILE_FORMAT, version: 1, blocks, ...(typeof p.allocation === 'string' ? { allocation: p.allocation } : {}), ...(typeof p.target === 'number' ? { target: p.target } : {}) };
}

/** The profile's target for every pruned linear; refuses blocks or roles the run does not prune, and gaps. */
export function profileTargets(profile: SparsityProfile, linears: BudgetLinear[], source = 'the sparsity profile'): LinearTargets {
  const byBlock = new Map<number, BudgetLinear[]>();
  for (const l of linears) byBlock.set(l.block, [...(byBlock.get(l.block) ?? []), l]);
  const targets: LinearTargets = new Map();
  for (const b of profile.blocks) {
    const ls = byBlock.get(b.block);
    if (!ls) throw new UserError(`${source} gives block ${b.block}, which this run does not prune (pruned blocks: ${[...byBlock.keys()].join(', ')})`);
    for (const role of Object.keys(b.roles ?? {})) {
      if (!ls.some((l) => l.role === role)) throw new UserError(`${source} gives block ${b.block} role ${role}, which the block does not have (roles: ${ls.map((l) => l.role).join(', ')})`);
    }
    const m = new Map<string, number>();
    for (const l of ls) {
      const s = b.roles?.[l.role] ?? b.sparsity;
      if (s === undefined) throw new UserError(`${source} has no target for block ${b.block} ${l.role}: give it in "roles" or a block "sparsity"`);
      m.set(l.role, s);
    }
    targets.set(b.block, m);
  }
  const missing = [...byBlock.keys()].filter((i) => !targets.has(i));
  if (missing.length) throw new UserError(`${source} has no target for block${missing.length > 1 ? 's' : ''} ${missing.join(', ')}, which this run prunes: give every pruned block (or narrow --layers)`);
  return targets;
}

/**
 * The profile a run used: per block, its common value when all its linears share one, else every role's value.
 * The values are the exact doubles the solvers got, so replaying it gives the same targets bit for bit.
 */
export function profileOf(targets: LinearTargets, allocation: string, total: number): SparsityProfile {
  const blocks: ProfileBlock[] = [...targets.entries()].sort((a, b) => a[0] - b[0]).map(([block, roles]) => {
    const values = [...roles.values()];
    return values.every((v) => v === values[0]) ? { block, sparsity: values[0]! } : { block, roles: Object.fromEntries(roles) };
  });
  return { format: PROFILE_FORMAT, version: 1, allocation, target: total, blocks };
}
