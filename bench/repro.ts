// `npm run repro`: does SparseLLM beat SparseGPT where the paper says it does (PAPERS.md §3.3, Table 4.1)?
// Prunes tiny-wikitext-opt (and stories260K, the LLaMA path) with SparseGPT and SparseLLM at 70 %, 80 %, 90 % and
// 2:4, calibrated on PTB train (16 windows × 256 tokens, seed 0) and on the real C4 samples, evaluates PTB test and
// WikiText-2 test in 512-token windows, and writes bench/repro/<model>.{json,md}.
//
//   npm run repro                       # default: both models, first 24 eval windows per dataset
//   npm run repro -- --full             # whole test sets (slow on 2 cores: ~750 windows per model)
//   npm run repro -- --model tiny-wikitext-opt --settings 0.9 --max-windows 8
//   npm run repro -- --sweep            # α/β/γ and fc2-update sweep at 80 % (the paper's Table D.5 in spirit)
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { evaluateDatasets } from '../src/pipeline/evaluate.js';
import type { PruneOptions, SparseLlmSettings } from '../src/pipeline/options.js';
import { createProgress } from '../src/pipeline/progress.js';
import { runPrune } from '../src/pipeline/prune.js';
import { resolveModelFile } from '../src/model/index.js';

const root = resolve(import.meta.dirname, '..');
const shared = process.env.SPARSELLM_SHARED ?? join(root, '..', 'shared');
const { values: args } = parseArgs({
  options: {
    model: { type: 'string', multiple: true },
    settings: { type: 'string', default: '0.7,0.8,0.9,2:4' },
    calib: { type: 'string', default: 'ptb,c4' },
    'max-windows': { type: 'string', default: '24' },
    full: { type: 'boolean', default: false },
    sweep: { type: 'boolean', default: false },
    reference: { type: 'boolean', default: true },
    out: { type: 'string', default: join(root, 'bench', 'repro') },
  },
});

const MODELS: Record<string, { path: string; evals: string[] }> = {
  'tiny-wikitext-opt': { path: join(shared, 'models', 'tiny-wikitext-opt'), evals: ['ptb', 'wikitext2'] },
  stories260K: { path: join(shared, 'models', 'stories260K'), evals: ['ptb', 'wikitext2', 'tinystories'] },
};
const maxWindows = args.full ? undefined : Number(args['max-windows']);
const work = join(tmpdir(), `sparsellm-repro-${process.pid}`);
mkdirSync(work, { recursive: true });

/** The real C4 samples of ../shared/data/c4 as one .jsonl file (C4's own shard is not available offline). */
function c4SamplesFile(): string {
  const dir = join(shared, 'data', 'c4');
  const lines = [readFileSync(join(dir, 'c4-train.00000-of-01024.first5.json'), 'utf8').trim()];
  for (const f of readdirSync(join(dir, 'olmo_test_fixtures')).sort()) lines.push(gunzipSync(readFileSync(join(dir, 'olmo_test_fixtures', f))).toString('utf8').trim());
  const path = join(work, 'c4-samples.jsonl');
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}
const calibSets: Record<string, string> = { ptb: 'ptb', c4: c4SamplesFile() };

type Spec = PruneOptions['spec'];
function parseSetting(s: string): Spec {
  const m = /^(\d+):(\d+)$/.exec(s);
  return m ? { prunen: Number(m[1]), prunem: Number(m[2]) } : { sparsity: Number(s) };
}

interface Row {
  calib: string;
  setting: string;
  method: string;
  perplexity: Record<string, number>;
  pruneSeconds: number;
  /** SparseLLM: Eq. 4.5 objective after each epoch, per block; and the epoch kept per block */
  objective?: (number | null)[][];
  outputError?: number[][];
  chosenEpoch?: number[];
}

const VARIANTS: Record<string, { method: PruneOptions['method']; sparsellm?: SparseLlmSettings }> = {
  sparsegpt: { method: 'sparsegpt' },
  // lastEpochObjective: the last epoch's objective is printed below (the weights are the same without it)
  sparsellm: { method: 'sparsellm', sparsellm: { lastEpochObjective: true } },
  // the reference implementation's behaviour: fc2 stays fitted to the auxiliary p, last epoch returned
  'sparsellm-reference': { method: 'sparsellm', sparsellm: { outputRefit: false, keepBest: false } },
};

async function prune(modelPath: string, evals: string[], calib: string, spec: Spec, variant: string, extra: SparseLlmSettings = {}) {
  const v = VARIANTS[variant]!;
  const o: PruneOptions = {
    model: modelPath, method: v.method, spec, calib: calibSets[calib]!, nsamples: 16, seqlen: 256, seed: 0, layers: 'all',
    sparsellm: { ...v.sparsellm, ...extra }, // SparseGPT percdamp/blocksize: the defaults (src/pipeline/options.ts)
    out: join(work, 'pruned'), force: true, resume: false,
    eval: evals, evalSeqlen: 512, evalMaxWindows: maxWindows, quiet: true,
  };
  const r = await runPrune(o, createProgress(false));
  return {
    perplexity: Object.fromEntries(Object.entries(r.perplexity!).map(([k, p]) => [k, p.perplexity])),
    pruneSeconds: r.timings.total! - r.timings.eval!,
    objective: r.sparsellm.length ? r.sparsellm.map((b) => b.epochs.map((e) => e.objective)) : undefined,
    outputError: r.sparsellm.length ? r.sparsellm.map((b) => b.epochs.map((e) => e.outputError)) : undefined,
    chosenEpoch: r.sparsellm.length ? r.sparsellm.map((b) => b.chosenEpoch) : undefined,
  };
}

const fmt = (x: number) => (x >= 1e4 ? x.toExponential(2) : x.toFixed(2));

function markdown(name: string, dense: Record<string, number>, rows: Row[], evals: string[], sweep: Row[]): string {
  const out = [`### ${name}`, '', `Calibration 16 × 256 tokens (seed 0); evaluation in 512-token windows (${maxWindows ? `first ${maxWindows} windows of each test set` : 'whole test sets'}). Dense: ${evals.map((e) => `${e} ${fmt(dense[e]!)}`).join(', ')}.`, ''];
  out.push(`| calib | setting | method | ${evals.join(' | ')} | prune s |`, `|---|---|---|${evals.map(() => '---').join('|')}|---|`);
  for (const r of rows) out.push(`| ${r.calib} | ${r.setting} | ${r.method} | ${evals.map((e) => fmt(r.perplexity[e]!)).join(' | ')} | ${r.pruneSeconds.toFixed(1)} |`);
  const withObjective = rows.filter((r) => r.objective && r.method === 'sparsellm' && r.calib === 'ptb');
  if (withObjective.length) {
    out.push('', 'SparseLLM Eq. 4.5 objective after each epoch (block 0 … last), PTB calibration:', '');
    for (const r of withObjective) out.push(`- ${r.setting}: ${r.objective!.map((b) => b.map((v) => (v === null ? "—" : v.toExponential(3))).join(' → ')).join(' ; ')}`);
    out.push('', 'Epoch kept per block (lowest FFN output error on the calibration data; 0 = SparseGPT + output refit):', '');
    for (const r of withObjective) out.push(`- ${r.setting}: ${r.chosenEpoch!.join(', ')}`);
  }
  if (sweep.length) {
    out.push('', 'Sweep at 80 % (PTB calibration):', '', `| settings | ${evals.join(' | ')} |`, `|---|${evals.map(() => '---').join('|')}|`);
    for (const r of sweep) out.push(`| ${r.method} | ${evals.map((e) => fmt(r.perplexity[e]!)).join(' | ')} |`);
  }
  return `${out.join('\n')}\n`;
}

mkdirSync(args.out!, { recursive: true });
for (const name of args.model ?? Object.keys(MODELS)) {
  const m = MODELS[name];
  if (!m) throw new Error(`unknown model ${name}`);
  const t0 = performance.now();
  const denseResults = await evaluateDatasets(resolveModelFile(m.path), m.evals, { seqlen: 512, maxWindows });
  const dense = Object.fromEntries(Object.entries(denseResults).map(([k, p]) => [k, p.perplexity]));
  console.log(`${name} dense`, dense);
  const rows: Row[] = [];
  for (const calib of args.calib!.split(',')) {
    for (const setting of args.settings!.split(',')) {
      for (const variant of Object.keys(VARIANTS)) {
        if (variant === 'sparsellm-reference' && (!args.reference || calib !== 'ptb')) continue;
        const r = await prune(m.path, m.evals, calib, parseSetting(setting), variant);
        rows.push({ calib, setting, method: variant, ...r });
        console.log(name, calib, setting, variant.padEnd(20), Object.entries(r.perplexity).map(([k, v]) => `${k} ${fmt(v)}`).join('  '), `${r.pruneSeconds.toFixed(1)} s`);
      }
    }
  }
  const sweep: Row[] = [];
  if (args.sweep) {
    for (const abg of [0.01, 0.1, 1, 10]) {
      for (const fc2Update of ['gd', 'lstsq'] as const) {
        for (const outputRefit of [true, false]) {
          const label = `α=β=γ=${abg}, fc2 ${fc2Update}, refit ${outputRefit ? 'on' : 'off'}`;
          const r = await prune(m.path, m.evals, 'ptb', { sparsity: 0.8 }, 'sparsellm', { alpha: abg, beta: abg, gamma: abg, fc2Update, outputRefit });
          sweep.push({ calib: 'ptb', setting: '0.8', method: label, ...r });
          console.log(name, 'sweep', label, Object.entries(r.perplexity).map(([k, v]) => `${k} ${fmt(v)}`).join('  '));
        }
      }
    }
  }
  const result = { model: name, maxWindows: maxWindows ?? null, dense, rows, sweep, seconds: (performance.now() - t0) / 1000 };
  writeFileSync(join(args.out!, `${name}.json`), `${JSON.stringify(result, null, 2)}\n`);
  writeFileSync(join(args.out!, `${name}.md`), markdown(name, dense, rows, m.evals, sweep));
  console.log(`wrote ${join(args.out!, `${name}.md`)} (${result.seconds.toFixed(0)} s)`);
}
