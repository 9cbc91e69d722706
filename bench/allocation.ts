// `npm run allocation-table`: uniform vs OWL vs search (issue 17) on tiny-wikitext-opt (../shared) and the bundled
// stories260K, at 70 / 80 / 90 % total sparsity, with SparseGPT and SparseLLM. Every prune calibrates on PTB *train*
// (--nsamples windows of --seqlen tokens, seed 0; the search's held-out probe windows are drawn after them from the
// same train text) and is scored with the repository's protocol (src/pipeline/evaluate.ts) on the *test* splits of
// WikiText-2 and PTB, which neither the prune nor the search sees: windows of the model's positions (512 for both
// models), the first --max-windows of each
// (every cell of a row is scored on the same windows).
// Each prune runs in its own process (bench/child-prune.ts), so its CPU seconds are its own. Results are cached in
// bench/allocation/results.json (one entry per model/method/sparsity/allocation; a rerun skips what is there unless
// --fresh), and bench/allocation/results.md is rewritten after every prune.
//
//   npm run allocation-table
//   npm run allocation-table -- --model stories260K --method sparsegpt --sparsity 0.8 --max-windows 8
//   npm run allocation-table -- --table-only        # results.md from the cached results.json
//   npm run allocation-table -- --max-windows 64 --out bench/allocation/windows-64   # a re-score in its own folder
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { ChildPruneArgs, ChildPruneResult } from './child-prune.js';
import { SEARCH_DEFAULTS, type Allocation, type Method } from '../src/pipeline/options.js';
import { pairedDifference, type SearchDetails } from '../src/pipeline/allocation/search.js';

const root = resolve(import.meta.dirname, '..');
const shared = process.env.SPARSELLM_SHARED ?? join(root, '..', 'shared');
const MODELS: Record<string, string> = {
  stories260K: join(root, 'models', 'stories260K'),
  'tiny-wikitext-opt': join(shared, 'models', 'tiny-wikitext-opt'),
};
const { values: args } = parseArgs({
  options: {
    model: { type: 'string', multiple: true },
    method: { type: 'string', default: 'sparsegpt,sparsellm' },
    sparsity: { type: 'string', default: '0.7,0.8,0.9' },
    allocation: { type: 'string', default: 'uniform,owl,search' },
    nsamples: { type: 'string', default: '32' },
    seqlen: { type: 'string', default: '256' },
    'max-windows': { type: 'string', default: '8' },
    /** --search-guard for the search rows (default: the CLI's) */
    'search-guard': { type: 'string' },
    /** --search-held-out, --search-metric and --search-data for the search rows (default: the CLI's), e.g. a probe variant in its own --out */
    'search-held-out': { type: 'string' },
    'search-metric': { type: 'string' },
    'search-data': { type: 'string' },
    /** folder of results.json / results.md (default bench/allocation); e.g. a re-score on more test windows */
    out: { type: 'string' },
    fresh: { type: 'boolean', default: false },
    /** rewrite results.md from results.json without pruning */
    'table-only': { type: 'boolean', default: false },
  },
});
const models = args.model ?? Object.keys(MODELS);
const methods = args.method!.split(',') as Method[];
const sparsities = args.sparsity!.split(',').map(Number);
const allocations = args.allocation!.split(',') as Allocation[];
const nsamples = Number(args.nsamples), seqlen = Number(args.seqlen), maxWindows = Number(args['max-windows']);
const EVAL = ['wikitext2', 'ptb'];

interface Row {
  model: string;
  method: Method;
  sparsity: number;
  allocation: Allocation;
  perplexity: Record<string, number>;
  windows: Record<string, number>;
  /** each test window's mean NLL (nats), per dataset: the paired differences between allocations on the same windows */
  windowNll?: Record<string, number[]>;
  overall: number;
  /** the prune's wall seconds without evaluation, and the allocation's own part of them */
  pruneSeconds: number;
  allocationSeconds: number;
  allocationPasses: number;
  probes: number;
  cpuSeconds: number;
  load: number;
  /** the search's probe score (kl / nll) */
  searchMetric?: string;
  /** the search's measured held-out score of each pass's centre profile (uniform first, the last measured choice last), and the chosen pass */
  searchRoundLosses?: number[];
  /** each measured profile's per-window held-out losses (the paired differences a significance guard would use) */
  searchWindowLosses?: number[][];
  searchChosenRound?: number;
  /** per-block mean target (the profile, averaged over each block's linears by weight count) */
  blockSparsity: number[];
  /** the chosen profile as the report gives it, replayable with --sparsity-profile */
  profile?: unknown;
}

const outDir = resolve(args.out ?? join(root, 'bench', 'allocation'));
const resultsPath = join(outDir, 'results.json');
mkdirSync(outDir, { recursive: true });
const key = (r: Pick<Row, 'model' | 'method' | 'sparsity' | 'allocation'>) => `${r.model}|${r.method}|${r.sparsity}|${r.allocation}`;
// the search rows' settings other than the CLI defaults (they key results.json: another probe, other rows)
const probe = {
  ...(args['search-guard'] === undefined ? {} : { searchGuard: Number(args['search-guard']) }),
  ...(args['search-held-out'] === undefined ? {} : { searchHeldOut: Number(args['search-held-out']) }),
  ...(args['search-metric'] === undefined ? {} : { searchMetric: args['search-metric'] as 'kl' | 'nll' }),
  ...(args['search-data'] === undefined ? {} : { searchData: resolve(args['search-data']) }),
};
const settings = { nsamples, seqlen, calib: 'ptb', maxWindows, eval: EVAL, ...probe };
let saved: { settings: typeof settings; rows: Row[] } = existsSync(resultsPath) && !args.fresh ? JSON.parse(readFileSync(resultsPath, 'utf8')) : { settings, rows: [] };
if (JSON.stringify(saved.settings) !== JSON.stringify(settings)) saved = { settings, rows: [] };
const done = new Map(saved.rows.map((r) => [key(r), r]));

function prune(model: string, method: Method, sparsity: number, allocation: Allocation): Row {
  const out = join(tmpdir(), `sparsellm-allocation-${process.pid}`);
  const a: ChildPruneArgs = {
    model: MODELS[model]!, method, sparsity, nsamples, seqlen, out, calib: 'ptb', eval: EVAL, evalMaxWindows: maxWindows, allocation: { allocation, ...(allocation === 'search' ? probe : {}) },
  };
  const child = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'bench', 'child-prune.ts'), JSON.stringify(a)], { encoding: 'utf8', maxBuffer: 1 << 28 });
  rmSync(out, { recursive: true, force: true });
  if (child.status !== 0) throw new Error(`${model} ${method} ${sparsity} ${allocation}: ${child.stderr}`);
  const r = JSON.parse(child.stdout.trim().split('\n').pop()!) as ChildPruneResult;
  const rep = r.report;
  const blocks = [...new Set(rep.layers.map((l) => l.block))].sort((x, y) => x - y);
  const targetOfLinear = (b: number, role: string) => {
    const p = rep.allocation!.profile.blocks.find((x) => x.block === b)!;
    return p.roles?.[role] ?? p.sparsity!;
  };
  return {
    model, method, sparsity, allocation,
    perplexity: Object.fromEntries(Object.entries(rep.perplexity ?? {}).map(([n, p]) => [n, p.perplexity])),
    windows: Object.fromEntries(Object.entries(rep.perplexity ?? {}).map(([n, p]) => [n, p.windows])),
    windowNll: Object.fromEntries(Object.entries(rep.perplexity ?? {}).map(([n, p]) => [n, p.windowNll ?? []])),
    overall: rep.sparsity.overall,
    pruneSeconds: (rep.timings.total ?? 0) - rep.timings.eval,
    allocationSeconds: rep.allocation!.cost.seconds,
    allocationPasses: rep.allocation!.cost.passes,
    probes: rep.allocation!.cost.probes,
    cpuSeconds: r.cpuSeconds,
    ...(rep.allocation!.search ? searchSummary(rep.allocation!.search as SearchDetails) : {}),
    load: loadavg()[0]!,
    profile: rep.allocation!.profile,
    blockSparsity: blocks.map((b) => {
      const ls = rep.layers.filter((l) => l.block === b);
      return ls.reduce((s, l) => s + l.in * l.out * targetOfLinear(b, l.role), 0) / ls.reduce((s, l) => s + l.in * l.out, 0);
    }),
  };
}

function searchSummary(d: SearchDetails): Pick<Row, 'searchMetric' | 'searchRoundLosses' | 'searchWindowLosses' | 'searchChosenRound'> {
  return { searchMetric: d.metric, searchRoundLosses: d.rounds.map((r) => r.heldOutLoss), searchWindowLosses: d.rounds.map((r) => r.windowLosses), searchChosenRound: d.chosenRound };
}

/** b − a over the same test windows: mean per-window NLL difference (nats; its sign is that of the perplexity change) and its standard error */
function paired(a: number[] | undefined, b: number[] | undefined): { mean: number; se: number } | undefined {
  if (!a?.length || a.length !== b?.length) return undefined;
  const { mean, sd, n } = pairedDifference(a, b);
  return { mean, se: sd / Math.sqrt(n) };
}

const f1 = (v: number | undefined) => (v === undefined ? '—' : v >= 1000 ? v.toFixed(0) : v.toFixed(1));

function markdown(rows: Row[]): string {
  const lines = [
    '# Non-uniform sparsity: uniform vs OWL vs search',
    '',
    `Written by \`npm run allocation-table\` (bench/allocation.ts). Calibration: PTB train, ${nsamples} × ${seqlen} tokens, seed 0`,
    `(search: + its held-out probe windows, ${probe.searchData ? `drawn from ${probe.searchData} (--search-data)` : 'drawn after them from PTB train'}). Perplexity: WikiText-2 test and PTB test, windows of the model's 512 positions,`,
    `the first ${maxWindows} of each (never seen by the prune or the search). OWL: M = 5, λ = 0.08; search: δ = min(0.1, (1 − t)/2), ${probe.searchHeldOut ?? SEARCH_DEFAULTS.heldOut} held-out windows, ${(probe.searchMetric ?? SEARCH_DEFAULTS.metric) === 'kl' ? 'KL to the dense model' : 'NLL of the held-out text'},`,
    `2 probe passes (around uniform, then around the first choice) and a measuring pass; probes prune with the run's method; the measured best wins if it beats uniform by ${probe.searchGuard ?? SEARCH_DEFAULTS.guard} standard errors of the paired held-out gain (--search-guard).`,
    'Best of each row in bold. "sparsity" = measured zeros over all pruned linears (uniform / owl / search).',
    '',
    '| model | method | target | WikiText-2 uniform | owl | search | PTB uniform | owl | search | sparsity (u / o / s) | prune s (u / o / s) | search: own s, passes, probes |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|',
  ];
  for (const model of models) for (const method of methods) for (const s of sparsities) {
    const cell = (a: Allocation) => rows.find((r) => r.model === model && r.method === method && r.sparsity === s && r.allocation === a);
    const cells = allocations.map(cell);
    if (cells.every((c) => !c)) continue;
    const ppl = (ds: string) => {
      const vals = cells.map((c) => c?.perplexity[ds]);
      const best = Math.min(...vals.filter((v): v is number => v !== undefined));
      return vals.map((v) => (v === undefined ? '—' : v === best ? `**${f1(v)}**` : f1(v)));
    };
    const search = cell('search');
    lines.push(`| ${model} | ${method} | ${(s * 100).toFixed(0)}% | ${ppl('wikitext2').join(' | ')} | ${ppl('ptb').join(' | ')} | ${cells.map((c) => (c ? (c.overall * 100).toFixed(2) : '—')).join(' / ')} | ${cells.map((c) => (c ? c.pruneSeconds.toFixed(0) : '—')).join(' / ')} | ${search ? `${search.allocationSeconds.toFixed(0)} s, ${search.allocationPasses.toFixed(1)}, ${search.probes}` : '—'} |`);
  }
  lines.push('', 'Per-block targets chosen (mean over each block\'s linears, weighted by size):', '', '| model | method | target | owl | search |', '|---|---|---:|---|---|');
  for (const model of models) for (const method of methods) for (const s of sparsities) {
    const c = (a: Allocation) => rows.find((r) => r.model === model && r.method === method && r.sparsity === s && r.allocation === a)?.blockSparsity.map((v) => (v * 100).toFixed(1)).join(' ') ?? '—';
    if (c('owl') === '—' && c('search') === '—') continue;
    lines.push(`| ${model} | ${method} | ${(s * 100).toFixed(0)}% | ${c('owl')} | ${c('search')} |`);
  }
  lines.push('', "The search's held-out KL (PTB-train windows, never the test windows) of each measured profile: uniform, the first pass's choice, the second's; the chosen one in bold:", '', '| model | method | target | uniform | pass 1 choice | pass 2 choice |', '|---|---|---:|---:|---:|---:|');
  for (const model of models) for (const method of methods) for (const s of sparsities) {
    const r = rows.find((x) => x.model === model && x.method === method && x.sparsity === s && x.allocation === 'search');
    if (!r?.searchRoundLosses) continue;
    lines.push(`| ${model} | ${method} | ${(s * 100).toFixed(0)}% | ${r.searchRoundLosses.map((v, k) => (k === r.searchChosenRound ? `**${v.toPrecision(4)}**` : v.toPrecision(4))).join(' | ')} |`);
  }
  const pairedLines: string[] = [];
  for (const model of models) for (const method of methods) for (const s of sparsities) {
    const at = (a: Allocation) => rows.find((x) => x.model === model && x.method === method && x.sparsity === s && x.allocation === a);
    const u = at('uniform');
    const cellOf = (a: Allocation, ds: string) => {
      const p = paired(u?.windowNll?.[ds], at(a)?.windowNll?.[ds]);
      if (!p) return '—';
      if (p.se === 0 && p.mean === 0) return 'same model';
      const signed = (v: number, digits: number) => `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(digits)}`;
      return `${signed(p.mean, 4)} ± ${p.se.toFixed(4)} (${signed(p.mean / p.se, 1)})`;
    };
    const cells = ['owl', 'search'].flatMap((a) => EVAL.map((ds) => cellOf(a as Allocation, ds)));
    if (cells.every((c) => c === '—')) continue;
    pairedLines.push(`| ${model} | ${method} | ${(s * 100).toFixed(0)}% | ${cells.join(' | ')} |`);
  }
  if (pairedLines.length) {
    lines.push('', 'Against uniform on the same test windows: mean per-window NLL difference in nats (negative = lower perplexity than uniform) ± its standard error over the windows, and their ratio in brackets:', '',
      '| model | method | target | owl WikiText-2 | owl PTB | search WikiText-2 | search PTB |', '|---|---|---:|---:|---:|---:|---:|', ...pairedLines);
  }
  const loads = rows.map((r) => r.load);
  lines.push('', `Machine: 2 cores shared with other jobs; load average during the runs ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}, so the seconds are indicative only.`, '');
  return lines.join('\n');
}

const write = () => {
  const rows = [...done.values()];
  writeFileSync(resultsPath, `${JSON.stringify({ settings, rows }, null, 1)}\n`);
  writeFileSync(join(outDir, 'results.md'), markdown(rows));
};
for (const model of models) for (const method of methods) for (const s of sparsities) for (const allocation of allocations) {
  if (args['table-only']) break;
  const k = key({ model, method, sparsity: s, allocation });
  if (done.has(k)) continue;
  const t0 = performance.now();
  const row = prune(model, method, s, allocation);
  done.set(k, row);
  write();
  process.stderr.write(`${k}: wikitext2 ${f1(row.perplexity.wikitext2)}, ptb ${f1(row.perplexity.ptb)}, sparsity ${(row.overall * 100).toFixed(2)}% (${((performance.now() - t0) / 1000).toFixed(0)} s, load ${row.load.toFixed(1)})\n`);
}
write();
