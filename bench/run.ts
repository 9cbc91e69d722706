/**
 * `npm run bench` — where the time and memory of a prune go, and how the cost grows.
 *   npm run bench               default (~12–15 min on 2 cores, the SparseGPT floor of bench/floor.ts included)
 *   npm run bench -- --quick    smoke check (~1–2 min)
 *   npm run bench -- --full     larger sizes (OPT-125m-shaped 768×12, nsamples/seqlen sweeps on d=512; ~1 h)
 *   npm run bench -- --depth    only peak RSS against depth (d=512, 4 and 24 blocks; bench/depth.ts, ~3 min)
 *   npm run bench -- --sparsellm-solve [--before-addon PATH]   only the SparseLLM solve of one d=768 block, peak RSS,
 *                               and before/after against another build of the addon (bench/sparsellm-solve.ts)
 *   npm run bench -- --scale    real sizes: RSS against depth 4..32 blocks, an OPT-1.3b-shaped fp16 prune (bench/scale.ts; hours)
 *   npm run bench -- --sparsellm-model [--before-tree DIR]   SparseLLM 70 % on the whole d=768 model, against an
 *                               earlier checkout in the same run (bench/sparsellm-model.ts)
 *   npm run bench -- --torch    sparsellm against the PyTorch reference flow (bench/torch-reference/reference.py) on the d=768 model (bench/torch-compare.ts)
 *   npm run bench -- --floor    SparseGPT on the d=768 model beside its floor (2 plain passes + SYRKs at the SGEMM rate; bench/floor.ts)
 *   --keep                      keep the pruned outputs (temp dir) instead of deleting them
 *
 * Every prune runs in its own process (bench/child-prune.ts → runPrune) so that its peak RSS is its own. Models:
 * stories260K (bundled LLaMA) and OPT-shaped models with random weights generated in a temp dir (bench/opt-model.ts).
 * Writes bench/results.json, bench/results.svg and bench/RESULTS.md, and prints the tables.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveModelArgument } from '../src/hub/registry.js';
import { resolveModelFile } from '../src/model/index.js';
import { native } from '../src/native/addon.js';
import { evaluateDatasets } from '../src/pipeline/evaluate.js';
import type { Method } from '../src/pipeline/options.js';
import type { ChildPruneArgs, ChildPruneResult } from './child-prune.js';
import { benchKernels, type KernelResults } from './kernels.js';
import { DEPTH_BEGIN, DEPTH_END, FLOOR_BEGIN, FLOOR_END, SCALE_BEGIN, SCALE_END, TORCH_BEGIN, TORCH_END, WHOLE_BEGIN, WHOLE_END } from './depth-section.js';
import { SOLVE_BEGIN, SOLVE_END } from './solve-section.js';
import { generateOptModel, modelName, type OptShape } from './opt-model.js';
import { barPanel, layout, linePanel, PALETTE, stackedBarPanel, type Panel, type Series } from '../src/report/svg.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const METHODS: Method[] = ['magnitude', 'wanda', 'sparsegpt', 'sparsellm'];
const PHASES = ['calibration', 'statistics', 'solve', 'rerun', 'export', 'other'] as const;
type Phase = (typeof PHASES)[number];

type Mode = 'quick' | 'default' | 'full';
const argv = process.argv.slice(2);
const mode: Mode = argv.includes('--quick') ? 'quick' : argv.includes('--full') ? 'full' : 'default';
const keep = argv.includes('--keep');
if (argv.includes('--depth')) {
  await import('./depth.js');
  process.exit(0);
}
if (argv.includes('--sparsellm-solve')) {
  await import('./sparsellm-solve.js');
  process.exit(0);
}
if (argv.includes('--sparsellm-model')) {
  await import('./sparsellm-model.js');
  process.exit(0);
}
if (argv.includes('--floor')) {
  await import('./floor.js');
  process.exit(0);
}
if (argv.includes('--torch')) {
  await import('./torch-compare.js');
  process.exit(0);
}
if (argv.includes('--scale')) {
  await import('./scale.js');
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------------------------
// Plan

interface Spec { label: string; sparsity?: number; prunen?: number; prunem?: number }
const S50: Spec = { label: '50%', sparsity: 0.5 };
const SPECS: Spec[] = [S50, { label: '70%', sparsity: 0.7 }, { label: '90%', sparsity: 0.9 }, { label: '2:4', prunen: 2, prunem: 4 }];

interface Sweep {
  name: 'nsamples' | 'seqlen' | 'hidden' | 'layers';
  /** model for a value of the swept variable */
  model: (v: number) => OptShape;
  nsamples: (v: number) => number;
  seqlen: (v: number) => number;
  values: number[];
  methods: Method[];
  describe: string;
  cap?: Partial<Record<Method, number>>;
}

interface Plan {
  hidden: number[];
  /** largest hidden size per method (default: all) */
  hiddenCap?: Partial<Record<Method, number>>;
  hiddenLayers: number;
  hiddenNs: number;
  hiddenSeq: number;
  /** extra per-method model (full: OPT-125m-shaped) */
  big?: { shape: OptShape; nsamples: number; seqlen: number };
  stories: { nsamples: number; seqlen: number; specs: Spec[] };
  sweepHidden: number;
  nsamples: number[];
  nsamplesMethods: Method[];
  seqlens: number[];
  seqlenNs: number;
  seqlenMethods: Method[];
  layers: number[];
  layersHidden: number;
  kernels: { hidden: number; tokens: number; ortShapes: [number, number][]; sparsellm: boolean };
}

const PLANS: Record<Mode, Plan> = {
  quick: {
    hidden: [64, 128, 256], hiddenLayers: 2, hiddenNs: 16, hiddenSeq: 128,
    stories: { nsamples: 16, seqlen: 128, specs: [S50, SPECS[3]!] },
    sweepHidden: 128, nsamples: [8, 16, 32], nsamplesMethods: ['sparsegpt'], seqlens: [128, 256, 512], seqlenNs: 8, seqlenMethods: ['sparsegpt'],
    layers: [2, 4], layersHidden: 128,
    kernels: { hidden: 256, tokens: 512, ortShapes: [[4, 128]], sparsellm: false },
  },
  default: {
    hidden: [64, 128, 256, 512, 768], hiddenCap: { sparsellm: 512 }, hiddenLayers: 2, hiddenNs: 16, hiddenSeq: 128,
    stories: { nsamples: 32, seqlen: 128, specs: SPECS },
    sweepHidden: 256, nsamples: [8, 16, 32, 64, 128], nsamplesMethods: ['sparsegpt', 'sparsellm'],
    seqlens: [128, 256, 512, 1024, 2048], seqlenNs: 8, seqlenMethods: ['sparsegpt'],
    layers: [2, 4, 8, 12], layersHidden: 256,
    kernels: { hidden: 768, tokens: 2048, ortShapes: [[16, 128], [2, 1024]], sparsellm: false },
  },
  full: {
    hidden: [64, 128, 256, 384, 512, 768], hiddenLayers: 2, hiddenNs: 16, hiddenSeq: 128,
    big: { shape: { hidden: 768, layers: 12 }, nsamples: 32, seqlen: 128 },
    stories: { nsamples: 64, seqlen: 256, specs: SPECS },
    sweepHidden: 512, nsamples: [8, 16, 32, 64, 128], nsamplesMethods: ['wanda', 'sparsegpt', 'sparsellm'],
    seqlens: [128, 256, 512, 1024, 2048], seqlenNs: 16, seqlenMethods: ['sparsegpt', 'sparsellm'],
    layers: [2, 4, 8, 12], layersHidden: 768,
    kernels: { hidden: 768, tokens: 2048, ortShapes: [[16, 128], [2, 1024]], sparsellm: true },
  },
};
const plan = PLANS[mode];

function sweeps(p: Plan): Sweep[] {
  const L = p.hiddenLayers;
  return [
    { name: 'hidden', values: p.hidden, methods: METHODS, cap: p.hiddenCap, model: (h) => ({ hidden: h, layers: L }), nsamples: () => p.hiddenNs, seqlen: () => p.hiddenSeq,
      describe: `OPT-shaped, ${L} layers, ffn 4d, ${p.hiddenNs}×${p.hiddenSeq} calibration tokens` },
    { name: 'nsamples', values: p.nsamples, methods: p.nsamplesMethods, model: () => ({ hidden: p.sweepHidden, layers: L }), nsamples: (v) => v, seqlen: () => p.hiddenSeq,
      describe: `${modelName({ hidden: p.sweepHidden, layers: L })}, seqlen ${p.hiddenSeq}` },
    { name: 'seqlen', values: p.seqlens, methods: p.seqlenMethods, model: () => ({ hidden: p.sweepHidden, layers: L }), nsamples: () => p.seqlenNs, seqlen: (v) => v,
      describe: `${modelName({ hidden: p.sweepHidden, layers: L })} (2048 positions), nsamples ${p.seqlenNs}` },
    { name: 'layers', values: p.layers, methods: ['sparsegpt'], model: (v) => ({ hidden: p.layersHidden, layers: v }), nsamples: () => p.hiddenNs, seqlen: () => p.hiddenSeq,
      describe: `OPT-shaped d=${p.layersHidden}, ${p.hiddenNs}×${p.hiddenSeq} tokens` },
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// Running prunes in child processes

interface RunRecord {
  model: string;
  method: Method;
  spec: string;
  nsamples: number;
  seqlen: number;
  tokens: number;
  hidden: number;
  layers: number;
  linearParams: number;
  phases: Record<Phase, number>;
  /** Σ per-linear solver seconds from the report (the kernels); solve − solver = relative-error products, copies */
  solverKernels: number;
  /** report total − eval (the prune itself, model load to export) */
  prune: number;
  eval: number;
  /** process wall − report total: Node start, tsx, imports, onnxruntime load, report printing */
  startup: number;
  wall: number;
  maxRssMb: number;
  estimateMb: number;
  sparsity: number;
  perplexity?: number;
}

const childScript = join(here, 'child-prune.ts');
const outRoot = mkdtempSync(join(tmpdir(), 'sparsellm-bench-out-'));
const modelsDir = join(tmpdir(), 'sparsellm-bench-models-v1');
mkdirSync(modelsDir, { recursive: true });
const memo = new Map<string, RunRecord>();
let runCount = 0;
const started = performance.now();
const elapsed = () => `${((performance.now() - started) / 1000).toFixed(0)}s`;

function runChild(args: ChildPruneArgs): Promise<{ result: ChildPruneResult; wall: number }> {
  return new Promise((resolveP, reject) => {
    const t = performance.now();
    const child = spawn(process.execPath, ['--import', 'tsx', childScript, JSON.stringify(args)], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const wall = (performance.now() - t) / 1000;
      const line = out.trim().split('\n').pop() ?? '';
      if (code !== 0 || !line.startsWith('{')) return reject(new Error(`prune ${JSON.stringify(args)} failed (exit ${code}):\n${err.slice(-2000)}`));
      resolveP({ result: JSON.parse(line) as ChildPruneResult, wall });
    });
  });
}

interface ModelRef { path: string; name: string; hidden: number; layers: number; linearParams: number }

function optModel(shape: OptShape): ModelRef {
  const m = generateOptModel(modelsDir, shape);
  return { path: m.dir, name: modelName(shape), hidden: m.shape.hidden, layers: m.shape.layers, linearParams: m.linearParams };
}

const STORIES: ModelRef = { path: 'stories260K', name: 'stories260K', hidden: 64, layers: 5, linearParams: 5 * (4 * 64 * 64 + 3 * 64 * 172) };

/**
 * Calibration text of the generated (random-weight) models: the embedded tinystories sample has only ~1.8k tokens,
 * fewer than one 2048 window, so it is repeated; the content does not matter for timing.
 */
function longCalibrationText(): string {
  const p = join(outRoot, 'calibration-long.txt');
  const sample = readFileSync(join(root, 'calibration', 'data', 'tinystories_sample.txt'), 'utf8');
  writeFileSync(p, Array(12).fill(sample).join('\n'));
  return p;
}
let longCalib: string | undefined;
const failures: string[] = [];

async function prune(model: ModelRef, method: Method, spec: Spec, nsamples: number, seqlen: number, evalSet?: string): Promise<RunRecord | undefined> {
  const key = JSON.stringify([model.path, method, spec.label, nsamples, seqlen, evalSet ?? '']);
  const hit = memo.get(key);
  if (hit) return hit;
  const out = join(outRoot, `run-${++runCount}`);
  const calib = model === STORIES ? 'tinystories' : (longCalib ??= longCalibrationText());
  let child: Awaited<ReturnType<typeof runChild>>;
  try {
    child = await runChild({ model: model.path, method, sparsity: spec.sparsity, prunen: spec.prunen, prunem: spec.prunem, nsamples, seqlen, out, eval: evalSet ? [evalSet] : [], calib });
  } catch (e) {
    const msg = `${method} ${spec.label} ${model.name} ${nsamples}×${seqlen}: ${(e as Error).message.split('\n').find((l) => /Error/.test(l)) ?? (e as Error).message.slice(0, 200)}`;
    failures.push(msg);
    process.stderr.write(`[${elapsed()}] FAILED ${msg}\n`);
    return undefined;
  } finally {
    if (!keep) rmSync(out, { recursive: true, force: true });
  }
  const { result, wall } = child;
  const t = result.report.timings as Record<string, number>;
  const phases = {} as Record<Phase, number>;
  let named = 0;
  for (const p of PHASES) if (p !== 'other') named += phases[p] = t[p] ?? 0;
  phases.other = Math.max(0, t.total! - named - (t.eval ?? 0));
  const rec: RunRecord = {
    model: model.name, method, spec: spec.label, nsamples, seqlen, tokens: nsamples * seqlen, hidden: model.hidden, layers: model.layers,
    linearParams: model.linearParams, phases, solverKernels: result.report.layers.reduce((s, l) => s + l.seconds, 0),
    prune: t.total! - (t.eval ?? 0), eval: t.eval ?? 0, startup: Math.max(0, wall - t.total!), wall,
    maxRssMb: result.maxRssKb / 1024, estimateMb: result.estimateBytes / 2 ** 20, sparsity: result.report.sparsity.overall,
    perplexity: evalSet ? result.report.perplexity?.[evalSet]?.perplexity : undefined,
  };
  memo.set(key, rec);
  process.stderr.write(
    `[${elapsed()}] ${method.padEnd(9)} ${spec.label.padEnd(3)} ${model.name.padEnd(20)} ${String(nsamples).padStart(3)}×${String(seqlen).padEnd(4)} ` +
      `prune ${rec.prune.toFixed(1).padStart(6)} s  peak RSS ${rec.maxRssMb.toFixed(0).padStart(5)} MB${rec.perplexity ? `  ppl ${rec.perplexity.toFixed(2)}` : ''}\n`,
  );
  return rec;
}

// ---------------------------------------------------------------------------------------------------------------
// Analysis

/** Least-squares slope of log y against log x (null when fewer than 2 usable points). */
function slope(points: [number, number][]): number | null {
  const p = points.filter(([x, y]) => x > 0 && y > 0);
  if (p.length < 2) return null;
  const lx = p.map(([x]) => Math.log(x)), ly = p.map(([, y]) => Math.log(y));
  const mx = lx.reduce((a, b) => a + b, 0) / p.length, my = ly.reduce((a, b) => a + b, 0) / p.length;
  let sxy = 0, sxx = 0;
  for (let i = 0; i < p.length; i++) {
    sxy += (lx[i]! - mx) * (ly[i]! - my);
    sxx += (lx[i]! - mx) ** 2;
  }
  return sxx > 0 ? sxy / sxx : null;
}

const FIT_PHASES = ['calibration', 'statistics', 'solve', 'rerun', 'export', 'prune', 'maxRss'] as const;
type FitPhase = (typeof FIT_PHASES)[number];
const valueOf = (r: RunRecord, p: FitPhase) => (p === 'prune' ? r.prune : p === 'maxRss' ? r.maxRssMb : r.phases[p]);

interface Exponents {
  sweep: string;
  method: Method;
  range: string;
  /** phase → [slope over all points, slope over the largest three] */
  slopes: Record<FitPhase, [number | null, number | null]>;
}

function fitSweep(sw: Sweep, runs: Map<number, RunRecord>, method: Method): Exponents {
  const xs = [...runs.keys()].sort((a, b) => a - b);
  const slopes = {} as Exponents['slopes'];
  for (const p of FIT_PHASES) {
    // phases under 20 ms are timer noise (e.g. magnitude has no calibration)
    const pts = xs.map((x) => [x, valueOf(runs.get(x)!, p)] as [number, number]).filter(([, y]) => p === 'maxRss' || y >= 0.02);
    slopes[p] = [pts.length === xs.length ? slope(pts) : null, xs.length >= 4 && pts.length === xs.length ? slope(pts.slice(-3)) : null];
  }
  return { sweep: sw.name, method, range: `${xs[0]}→${xs.at(-1)}`, slopes };
}

// ---------------------------------------------------------------------------------------------------------------
// Tables (console text and Markdown from the same rows)

interface Table { title: string; head: string[]; rows: string[][]; note?: string }

function textTable(t: Table): string {
  const w = t.head.map((h, i) => Math.max(h.length, ...t.rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  return [`\n${t.title}`, line(t.head), line(w.map((n) => '-'.repeat(n))), ...t.rows.map(line), ...(t.note ? [t.note] : [])].join('\n');
}

function mdTable(t: Table): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  return [`### ${t.title}`, '', `| ${t.head.map(esc).join(' | ')} |`, `|${t.head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...t.rows.map((r) => `| ${r.map(esc).join(' | ')} |`), '', ...(t.note ? [t.note, ''] : [])].join('\n');
}

const s1 = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const pct = (a: number, b: number) => (b > 0 ? `${((a / b) * 100).toFixed(0)}%` : '-');
const ex = (v: number | null) => (v === null ? '-' : v.toFixed(2));

function largestPhase(r: RunRecord): [Phase, number] {
  const [p, v] = PHASES.map((q) => [q, r.phases[q]] as [Phase, number]).sort((a, b) => b[1] - a[1])[0]!;
  return [p, v / r.prune];
}

function phaseTable(title: string, runs: RunRecord[], note?: string): Table {
  return {
    title,
    head: ['model', 'method', 'tokens', 'calib s', 'stats s', 'solve s', '(kernels)', 'rerun s', 'export s', 'other s', 'prune s', 'startup s', 'peak RSS MB', 'estimate MB', 'largest phase'],
    rows: runs.map((r) => {
      const [p, share] = largestPhase(r);
      return [r.model, `${r.method} ${r.spec}`, `${r.nsamples}×${r.seqlen}`, s1(r.phases.calibration), s1(r.phases.statistics), s1(r.phases.solve), s1(r.solverKernels),
        s1(r.phases.rerun), s1(r.phases.export), s1(r.phases.other), s1(r.prune), s1(r.startup), r.maxRssMb.toFixed(0), r.estimateMb ? r.estimateMb.toFixed(0) : '-',
        `${p} ${(share * 100).toFixed(0)}%`];
    }),
    note,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Main

function machine() {
  let model = cpus()[0]?.model ?? 'unknown';
  try {
    const out = readFileSync('/proc/cpuinfo', 'utf8');
    model = /model name\s*:\s*(.+)/.exec(out)?.[1] ?? model;
  } catch { /* not Linux */ }
  return {
    cpu: model.trim(), cores: cpus().length, memoryGb: +(totalmem() / 2 ** 30).toFixed(1), node: process.version,
    blasThreads: native().getThreads(), blasCore: native().blasCore(), ortIntraOpThreads: Number(process.env.SPARSELLM_THREADS) || 2,
    SPARSELLM_THREADS: process.env.SPARSELLM_THREADS ?? null, OPENBLAS_NUM_THREADS: process.env.OPENBLAS_NUM_THREADS ?? null,
    OPENBLAS_CORETYPE: process.env.OPENBLAS_CORETYPE ?? null,
    loadAverageAtStart: loadavg().map((v) => +v.toFixed(2)),
  };
}

async function main(): Promise<void> {
  const meta = { mode, date: new Date().toISOString(), ...machine() };
  process.stderr.write(`sparsellm bench (${mode}) on ${meta.cpu}, ${meta.cores} cores, load ${meta.loadAverageAtStart.join(' ')}; BLAS threads ${meta.blasThreads} (${meta.blasCore} kernels), ORT intra-op ${meta.ortIntraOpThreads}\n`);
  process.stderr.write(`generated models: ${modelsDir}; pruned outputs: ${outRoot}\n`);

  // 3. Kernel rates first (short, single process).
  process.stderr.write(`[${elapsed()}] kernels: SGEMM, Hessian, onnxruntime block forward, solvers (bench/solvers.ts)\n`);
  const kernels: KernelResults = await benchKernels({ modelsDir, ...plan.kernels });

  // 1 + 4. stories260K: every method × sparsity, with per-document perplexity on tinystories; the dense baseline.
  const storiesPath = resolveModelFile(await resolveModelArgument('stories260K'));
  const dense = await evaluateDatasets(storiesPath, ['tinystories']);
  const storiesRuns: RunRecord[] = [];
  for (const spec of plan.stories.specs) for (const m of METHODS) {
    const r = await prune(STORIES, m, spec, plan.stories.nsamples, plan.stories.seqlen, 'tinystories');
    if (r) storiesRuns.push(r);
  }

  // 1 + 2. Sweeps (hidden = the per-method table on growing OPT-shaped models).
  const sweepResults: { sweep: Sweep; runs: RunRecord[]; exponents: Exponents[] }[] = [];
  for (const sw of sweeps(plan)) {
    const runs: RunRecord[] = [];
    const exps: Exponents[] = [];
    for (const m of sw.methods) {
      const byValue = new Map<number, RunRecord>();
      for (const v of sw.values) {
        if (v > (sw.cap?.[m] ?? Infinity)) continue;
        const r = await prune(optModel(sw.model(v)), m, S50, sw.nsamples(v), sw.seqlen(v));
        if (!r) continue;
        byValue.set(v, r);
        runs.push(r);
      }
      exps.push(fitSweep(sw, byValue, m));
    }
    sweepResults.push({ sweep: sw, runs, exponents: exps });
  }
  const bigRuns: RunRecord[] = [];
  if (plan.big) for (const m of METHODS) {
    const r = await prune(optModel(plan.big.shape), m, S50, plan.big.nsamples, plan.big.seqlen);
    if (r) bigRuns.push(r);
  }

  // ----- tables
  const tables: Table[] = [];
  const hiddenSweep = sweepResults.find((s) => s.sweep.name === 'hidden')!;
  const perMethod = [...storiesRuns.filter((r) => r.spec === '50%'), ...hiddenSweep.runs.slice().sort((a, b) => a.hidden - b.hidden || METHODS.indexOf(a.method) - METHODS.indexOf(b.method)), ...bigRuns];
  tables.push(phaseTable('1. Phase split per method (50% unstructured), seconds; peak RSS of the prune process', perMethod,
    'calib = calibration forward passes (prologue); stats = dense block pass with hooks + Hessian/scaler accumulation; solve = pruning incl. relative-error products and weight copies, ' +
      '(kernels) = the solver calls alone (Σ of per-linear seconds in the report); rerun = pruned block forward for the next block; other = model load, checks, memory estimate; ' +
      'prune = report total − eval; startup = process wall − report total (Node, tsx, imports); estimate = the pipeline\'s own pre-run peak-memory estimate.'));

  for (const { sweep, runs, exponents } of sweepResults) {
    if (sweep.name === 'hidden') continue;
    tables.push(phaseTable(`2. Sweep over ${sweep.name} (${sweep.describe})`, runs));
  }
  tables.push({
    title: '2. Fitted exponents: slope of log(time) vs log(size); "all" = every point, "top3" = the three largest sizes',
    head: ['sweep', 'method', 'range', ...FIT_PHASES.map((p) => `${p === 'maxRss' ? 'peak RSS' : p} all/top3`)],
    rows: sweepResults.flatMap(({ exponents }) => exponents.map((e) => [e.sweep, e.method, e.range, ...FIT_PHASES.map((p) => `${ex(e.slopes[p][0])} / ${ex(e.slopes[p][1])}`)])),
    note: 'Phases under 20 ms at any size are left out (-). Small sizes are dominated by fixed costs (session creation, process work), so "top3" is closer to the asymptotic growth.',
  });

  const sgemmRef = kernels.rows.find((r) => r.kernel.startsWith('SGEMM'))!.gflops;
  tables.push({
    title: `3. Kernel rates in this run (BLAS threads ${kernels.blasThreads}, ORT intra-op threads ${kernels.ortThreads})`,
    head: ['kernel', 'shape', 'time ms', 'GFLOP', 'GFLOP/s', '% of SGEMM'],
    rows: [
      ...kernels.rows.map((r) => [r.kernel, r.shape, (r.seconds * 1e3).toFixed(1), r.gflop.toFixed(2), r.gflops.toFixed(1), pct(r.gflops, sgemmRef)]),
      ...kernels.solvers.rows.filter((r) => r.gflop > 0).map((r) => [`solver ${r.solver}`, `${r.layer}, N=${kernels.solvers.tokens}`, (r.seconds * 1e3).toFixed(1), r.gflop.toFixed(2), r.gflops.toFixed(1), pct(r.gflops, r.sgemmGflops)]),
      ...kernels.solvers.rows.filter((r) => r.gflop === 0).map((r) => [`solver ${r.solver}`, r.layer, (r.seconds * 1e3).toFixed(1), '-', '-', '-']),
    ],
    note: `% of SGEMM: against the first SGEMM row (${sgemmRef.toFixed(1)} GFLOP/s); solver rows against the SGEMM rate bench/solvers.ts measured for that layer in the same run.`,
  });

  const denseP = dense.tinystories!.perplexity;
  tables.push({
    title: `4. stories260K perplexity on tinystories (per document), ${plan.stories.nsamples}×${plan.stories.seqlen} calibration tokens; dense ${denseP.toFixed(2)}`,
    head: ['method', ...plan.stories.specs.map((s) => `ppl ${s.label}`), ...plan.stories.specs.map((s) => `prune s ${s.label}`)],
    rows: METHODS.map((m) => {
      const rs = plan.stories.specs.map((s) => storiesRuns.find((r) => r.method === m && r.spec === s.label));
      return [m, ...rs.map((r) => (r?.perplexity ?? NaN).toFixed(2)), ...rs.map((r) => (r ? s1(r.prune) : '-'))];
    }),
  });

  // 5. Largest cost.
  const all = [...perMethod];
  const sums = Object.fromEntries(PHASES.map((p) => [p, all.reduce((s, r) => s + r.phases[p], 0)])) as Record<Phase, number>;
  const grand = all.reduce((s, r) => s + r.prune, 0);
  const [topPhase, topSum] = Object.entries(sums).sort((a, b) => b[1] - a[1])[0] as [Phase, number];
  const costliest = all.slice().sort((a, b) => b.prune - a.prune)[0]!;
  const [cp, cshare] = largestPhase(costliest);
  const largest = {
    phase: topPhase, share: topSum / grand, seconds: topSum, ofSeconds: grand,
    costliestRun: { model: costliest.model, method: costliest.method, prune: costliest.prune, phase: cp, share: cshare },
  };
  const finalLine = `Largest cost: ${topPhase} — ${(largest.share * 100).toFixed(0)}% of the prune time of the per-method runs (${s1(topSum)} of ${s1(grand)} s); ` +
    `the costliest run, ${costliest.method} on ${costliest.model} (${s1(costliest.prune)} s), spends ${(cshare * 100).toFixed(0)}% in ${cp}.`;

  const totalSeconds = (performance.now() - started) / 1000;
  const metaEnd = { ...meta, loadAverageAtEnd: loadavg().map((v) => +v.toFixed(2)), benchSeconds: +totalSeconds.toFixed(1), childProcesses: runCount };

  // ----- outputs
  for (const t of tables) console.log(textTable(t));
  console.log(`\nbench ${mode}: ${runCount} prunes in child processes, ${totalSeconds.toFixed(0)} s; load average ${meta.loadAverageAtStart.join(' ')} → ${metaEnd.loadAverageAtEnd.join(' ')}`);
  console.log(finalLine);
  // SparseGPT on the d=768 model beside its floor (bench/floor.ts; its own process, it writes its RESULTS.md section)
  if (mode !== 'quick') {
    process.stderr.write(`[${elapsed()}] SparseGPT floor on the d=768 model (bench/floor.ts)\n`);
    const floor = spawnSync(process.execPath, ['--import', 'tsx', join(here, 'floor.ts')], { stdio: ['ignore', 'inherit', 'inherit'] });
    if (floor.status !== 0) failures.push(`bench/floor.ts exited ${floor.status}`);
  }
  for (const f of failures) console.log(`FAILED: ${f}`);

  const results = {
    meta: metaEnd, plan: { ...plan, sweeps: sweeps(plan).map(({ name, values, methods, describe }) => ({ name, values, methods, describe })) },
    densePerplexity: { stories260K: denseP }, runs: [...memo.values()], perMethod, stories: storiesRuns,
    sweeps: sweepResults.map(({ sweep, runs, exponents }) => ({ name: sweep.name, describe: sweep.describe, runs, exponents })),
    bigModel: bigRuns, kernels, largest, finalLine, failures,
  };
  writeFileSync(join(here, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(here, 'results.svg'), chart(results.sweeps, perMethod, storiesRuns, kernels, denseP, metaEnd));
  // the sections other scripts write are kept as they are: depth (`-- --depth`), the SparseLLM solve
  // (`-- --sparsellm-solve`), SparseLLM on the whole d=768 model (`-- --sparsellm-model`), real sizes (`-- --scale`)
  // and the SparseGPT floor (written just above by bench/floor.ts)
  const oldMd = existsSync(join(here, 'RESULTS.md')) ? readFileSync(join(here, 'RESULTS.md'), 'utf8') : '';
  const kept = ([[DEPTH_BEGIN, DEPTH_END], [SOLVE_BEGIN, SOLVE_END], [WHOLE_BEGIN, WHOLE_END], [SCALE_BEGIN, SCALE_END], [FLOOR_BEGIN, FLOOR_END], [TORCH_BEGIN, TORCH_END]] as const).map(([b, e]) => {
    const [i0, i1] = [oldMd.indexOf(b), oldMd.indexOf(e)];
    return i0 >= 0 && i1 > i0 ? `\n${oldMd.slice(i0, i1 + e.length)}\n` : '';
  });
  writeFileSync(join(here, 'RESULTS.md'), markdown(tables, metaEnd, finalLine) + kept.join(''));
  process.stderr.write(`wrote bench/results.json, bench/results.svg, bench/RESULTS.md\n`);
  if (!keep) rmSync(outRoot, { recursive: true, force: true });
}

function markdown(tables: Table[], meta: ReturnType<typeof machine> & { mode: Mode; date: string; loadAverageAtEnd: number[]; benchSeconds: number; childProcesses: number }, finalLine: string): string {
  return [
    '# sparsellm benchmark results',
    '',
    `Latest \`npm run bench${meta.mode === 'default' ? '' : ` -- --${meta.mode}`}\` (${meta.mode} size), ${meta.date}: ${meta.childProcesses} prunes, each in its own process, ${(meta.benchSeconds / 60).toFixed(1)} min in all.`,
    '',
    `**Machine:** ${meta.cpu}, ${meta.cores} cores, ${meta.memoryGb} GB, Node ${meta.node}. Threads: OpenBLAS ${meta.blasThreads} (${meta.blasCore} kernels), onnxruntime intra-op ${meta.ortIntraOpThreads} ` +
      `(SPARSELLM_THREADS=${meta.SPARSELLM_THREADS ?? 'unset'}, OPENBLAS_NUM_THREADS=${meta.OPENBLAS_NUM_THREADS ?? 'unset'}, OPENBLAS_CORETYPE=${meta.OPENBLAS_CORETYPE ?? 'unset'}).`,
    '',
    `**Noise:** the machine was shared with other work during this run (load average ${meta.loadAverageAtStart.join(' / ')} at the start, ${meta.loadAverageAtEnd.join(' / ')} at the end, on ${meta.cores} cores), ` +
      'so absolute times are inflated and noisy (often ±30% run to run); ratios within one run (phase shares, exponents, % of SGEMM) are more trustworthy than the seconds.',
    '',
    'Models: stories260K (the bundled LLaMA, 5 layers, d=64) and OPT-shaped models with random weights (N(0, 0.02²)) generated by `bench/opt-model.ts` in the layout of tiny-random-opt ' +
      '(named `opt-h<hidden>-l<layers>-p<positions>`, ffn = 4·hidden, head dim 64 from d=256 up, vocab 512 with the stories260K tokenizer). ' +
      'Calibration: `tinystories` for stories260K; for the generated models its sample text repeated 12× (the embedded set has ~1.8k tokens, less than one 2048 window). ' +
      (meta.mode === 'default' ? 'SparseLLM stops at d=512 in the hidden sweep and the SparseLLM solver row of bench/solvers.ts is left out, to keep the default under 10 min (both are in `--full`). ' : '') +
      'Peak RSS is `process.resourceUsage().maxRSS` of the prune process (Node + onnxruntime + OpenBLAS, everything).',
    '',
    '![charts](results.svg)',
    '',
    ...tables.map(mdTable),
    `**${finalLine}**`,
    ...(failures.length ? ['', 'Failed runs:', ...failures.map((f) => `- ${f}`)] : []),
    '',
    'Raw figures: [results.json](results.json). Reproduce: `npm run bench` (or `-- --quick`, `-- --full`).',
    '',
  ].join('\n');
}

function chart(
  sweepsOut: { name: string; describe: string; runs: RunRecord[]; exponents: Exponents[] }[], perMethod: RunRecord[], storiesRuns: RunRecord[],
  kernels: KernelResults, denseP: number, meta: { mode: Mode; cpu: string; cores: number; loadAverageAtStart: number[]; date: string },
): string {
  const panels: Panel[] = [];
  const phaseColors = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#bab0ac'];
  panels.push(stackedBarPanel({
    title: '1. Where prune time goes (share of prune wall time)', partNames: [...PHASES], colors: phaseColors,
    rows: perMethod.map((r) => ({ label: `${r.model} ${r.method}`, parts: PHASES.map((p) => r.phases[p]), note: `${s1(r.prune)} s` })),
  }));
  panels.push(barPanel({
    title: '1. Peak RSS of the prune process', unit: 'MB',
    rows: perMethod.map((r) => ({ label: `${r.model} ${r.method}`, value: Math.round(r.maxRssMb), color: PALETTE[METHODS.indexOf(r.method)] })),
  }));
  const exps = (name: string, m: Method, p: FitPhase) => sweepsOut.find((s) => s.name === name)?.exponents.find((e) => e.method === m)?.slopes[p][0];
  const hidden = sweepsOut.find((s) => s.name === 'hidden')!;
  panels.push(linePanel({
    title: '2. Prune time vs hidden size (2 layers)', xlabel: 'hidden size d (log)', ylabel: 'seconds (log)', xlog: true, ylog: true,
    series: METHODS.map((m, k) => ({ name: `${m} (k=${ex(exps('hidden', m, 'prune') ?? null)})`, color: PALETTE[k], points: hidden.runs.filter((r) => r.method === m).map((r) => [r.hidden, r.prune] as [number, number]) })),
  }));
  const phaseSeries = (name: string, m: Method, x: (r: RunRecord) => number): Series[] => {
    const runs = sweepsOut.find((s) => s.name === name)!.runs.filter((r) => r.method === m);
    return (['calibration', 'statistics', 'solve', 'rerun', 'prune'] as const).map((p, k) => ({
      name: `${p} (k=${ex(exps(name, m, p) ?? null)})`, color: [...phaseColors.slice(0, 4), '#000'][k], dash: p === 'prune',
      points: runs.map((r) => [x(r), valueOf(r, p)] as [number, number]).filter(([, y]) => y > 0),
    }));
  };
  panels.push(linePanel({ title: '2. SparseGPT phases vs hidden size', xlabel: 'hidden size d (log)', ylabel: 'seconds (log)', xlog: true, ylog: true, series: phaseSeries('hidden', 'sparsegpt', (r) => r.hidden) }));
  for (const name of ['nsamples', 'seqlen'] as const) {
    const sw = sweepsOut.find((s) => s.name === name)!;
    const m: Method = sw.runs.some((r) => r.method === 'sparsellm') ? 'sparsellm' : 'sparsegpt';
    const series = [...phaseSeries(name, 'sparsegpt', (r) => (name === 'nsamples' ? r.nsamples : r.seqlen))];
    if (m === 'sparsellm') series.push({ name: `SparseLLM prune (k=${ex(exps(name, 'sparsellm', 'prune') ?? null)})`, color: PALETTE[4], dash: true, points: sw.runs.filter((r) => r.method === 'sparsellm').map((r) => [name === 'nsamples' ? r.nsamples : r.seqlen, r.prune]) });
    panels.push(linePanel({ title: `2. SparseGPT phases vs ${name} (${sw.describe.split(',')[0].split(' ')[0]})`, xlabel: `${name} (log)`, ylabel: 'seconds (log)', xlog: true, ylog: true, series }));
  }
  {
    const sw = sweepsOut.find((s) => s.name === 'nsamples')!;
    const sq = sweepsOut.find((s) => s.name === 'seqlen')!;
    const series: Series[] = [];
    for (const [k, m] of METHODS.entries()) {
      const a = sw.runs.filter((r) => r.method === m), b = sq.runs.filter((r) => r.method === m);
      if (a.length) series.push({ name: `${m} (nsamples)`, color: PALETTE[k], points: a.map((r) => [r.tokens, r.maxRssMb]) });
      if (b.length) series.push({ name: `${m} (seqlen)`, color: PALETTE[k], dash: true, points: b.map((r) => [r.tokens, r.maxRssMb]) });
    }
    panels.push(linePanel({ title: '2. Peak RSS vs calibration tokens', xlabel: 'nsamples × seqlen (log)', ylabel: 'MB', xlog: true, yZero: true, series }));
  }
  {
    const sgemm = kernels.rows.find((r) => r.kernel.startsWith('SGEMM'))!;
    const rows = [
      ...kernels.rows.map((r) => ({ label: `${r.kernel.replace(' (OpenBLAS)', '').replace('onnxruntime', 'ORT')} ${r.shape.replace('OPT ', '')}`, value: +r.gflops.toFixed(1), color: r.kernel.startsWith('SGEMM') ? '#555' : r.kernel.startsWith('onnx') ? PALETTE[1] : PALETTE[2] })),
      ...kernels.solvers.rows.filter((r) => r.gflop > 0).map((r) => ({ label: `${r.solver} ${r.layer.split(' ')[0]}`, value: +r.gflops.toFixed(1), color: PALETTE[0] })),
    ];
    panels.push(barPanel({ title: `3. GFLOP/s in this run (SGEMM ${sgemm.gflops.toFixed(0)})`, unit: '', rows }));
  }
  {
    const specs = [...new Set(storiesRuns.map((r) => r.spec))];
    panels.push(linePanel({
      title: `4. stories260K perplexity (tinystories; dense ${denseP.toFixed(1)})`, xlabel: 'sparsity', ylabel: 'perplexity (log)', ylog: true, xCategories: specs,
      series: [
        ...METHODS.map((m, k) => ({ name: m, color: PALETTE[k], points: specs.map((s, i) => [i, storiesRuns.find((r) => r.method === m && r.spec === s)?.perplexity ?? NaN] as [number, number]).filter(([, y]) => Number.isFinite(y)) })),
        { name: 'dense', color: '#000', dash: true, points: specs.map((_, i) => [i, denseP] as [number, number]) },
      ],
    }));
  }
  return layout(
    `sparsellm bench (${meta.mode}) — where prune time and memory go`,
    `${meta.date.slice(0, 16)} · ${meta.cpu}, ${meta.cores} cores, load ${meta.loadAverageAtStart.join('/')} at start (shared machine: noisy) · k = fitted exponent (all points)`,
    panels,
  );
}

await main();
