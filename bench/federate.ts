// `npm run federate-table`: FedSpaLLM's claim (PAPERS.md §2.5–2.6), reproduced in process with the modules the
// `federate` server and clients use: each client prunes every block of the dense model on its own private share of the
// calibration text (src/federate/local-prune.ts), the server aggregates each matrix (src/federate/aggregate.ts) and
// writes the global model (src/federate/global-model.ts). Compared, at each sparsity and client count:
//   - standalone: each client's own pruned model, perplexity averaged over the clients (the paper's "Standalone" row);
//   - FedSpaLLM: ℓ0-norm averaging + mask expansion (Eqs. 4.18–4.20);
//   - plain mean (FedAvg-style): denser (union of the kept sets) and its kept weights shrunk by n_j / N.
//   - pooled (not federated): one prune on N × nsamples windows of all of PTB train (what sharing the data would give).
// Calibration: PTB train split by documents among the clients (see clientTexts; --split contiguous: the previous
// table's consecutive shares). Each client draws `--nsamples` windows of `--seqlen` tokens from its share; `--seed`
// lists repetitions (each deals the passages and draws the windows anew). Evaluation: the repository's protocol
// (src/pipeline/evaluate.ts: PTB test and WikiText-2 test as one token stream each, 512-token windows), on the first
// `--max-windows` windows (default 8 = 4096 tokens per dataset): every model of a row is scored on the same windows.
//
//   npm run federate-table -- --model tiny-wikitext-opt --out bench/federate/tiny-wikitext-opt
//   npm run federate-table -- --model stories260K --seed 0,1,2 --nsamples 2,16 --out bench/federate/stories260K
//   npm run federate-table -- --model stories260K --method wanda --seed 0,1,2 --nsamples 2,16 --out bench/federate/stories260K-wanda
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { aggregateMatrix, type AggregationRule } from '../src/federate/aggregate.js';
import { writeGlobalModel } from '../src/federate/global-model.js';
import { pruneAssignedBlocks, type UploadTensor } from '../src/federate/local-prune.js';
import { evalTokens, resolveDataset } from '../src/data/datasets.js';
import { ptbClientTexts } from './federate-data.js';
import { logitsAtTemperature, windowPerplexity } from '../src/data/perplexity.js';
import { loadTokenizer } from '../src/data/tokenizer.js';
import { FullModelSession } from '../src/model/full-session.js';
import { OnnxModel, analyzeDecoder, resolveModelFile } from '../src/model/index.js';
import { METHODS, type Method } from '../src/pipeline/options.js';
import { createProgress } from '../src/pipeline/progress.js';

const root = resolve(import.meta.dirname, '..');
const shared = process.env.SPARSELLM_SHARED ?? join(root, '..', 'shared');
const { values: args } = parseArgs({
  options: {
    model: { type: 'string', multiple: true },
    clients: { type: 'string', default: '4,8' },
    sparsity: { type: 'string', default: '0.7,0.8' },
    method: { type: 'string', default: 'sparsegpt' },
    nsamples: { type: 'string', default: '16' },
    split: { type: 'string', default: 'documents' },
    'passage-lines': { type: 'string', default: '20' },
    pooled: { type: 'boolean', default: true },
    seqlen: { type: 'string', default: '256' },
    'eval-seqlen': { type: 'string', default: '512' },
    'max-windows': { type: 'string', default: '8' },
    /** a diagnostic: every model (dense included) scored with its logits divided by T; 1 = the protocol */
    'eval-temperature': { type: 'string', default: '1' },
    seed: { type: 'string', default: '0' },
    /** keep the rows of `--out`'s results.json whose seed is not run now (same settings otherwise), so seeds can be added one run at a time */
    append: { type: 'boolean', default: false },
    /** run nothing: rewrite `--out`'s results.md from its results.json (after a change to the tables' layout) */
    render: { type: 'boolean', default: false },
    out: { type: 'string', default: join(root, 'bench', 'federate') },
  },
});

const MODELS: Record<string, string> = {
  'tiny-wikitext-opt': join(shared, 'models', 'tiny-wikitext-opt'),
  stories260K: join(shared, 'models', 'stories260K'),
};
const EVALS = ['ptb', 'wikitext2'];
const models = args.model ?? Object.keys(MODELS);
const clientCounts = args.clients.split(',').map(Number);
const sparsities = args.sparsity.split(',').map(Number);
const method = args.method as Method;
if (!METHODS.includes(method)) throw new Error(`--method ${method}: use ${METHODS.join(', ')}`);
const nsamplesList = args.nsamples.split(',').map(Number);
const splitMode = args.split as 'documents' | 'contiguous';
if (splitMode !== 'documents' && splitMode !== 'contiguous') throw new Error(`--split ${args.split}: use documents or contiguous`);
const passageLines = Number(args['passage-lines']);
const seqlen = Number(args.seqlen), evalSeqlen = Number(args['eval-seqlen']);
const maxWindows = Number(args['max-windows']);
const evalTemperature = Number(args['eval-temperature']);
if (!(evalTemperature > 0)) throw new Error(`--eval-temperature ${args['eval-temperature']}: a positive number`);
/** repetitions: each seed deals the passages and draws the calibration windows anew */
const seeds = args.seed.split(',').map(Number);
const work = join(tmpdir(), `sparsellm-federate-${process.pid}`);
mkdirSync(work, { recursive: true });
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const progress = createProgress(false);
const log = (line: string) => process.stderr.write(`${line}\n`);

type Perplexities = Record<string, number>;

/** The evaluation streams of one model, tokenized once (the protocol of evaluateDatasets' window mode). */
async function evalStreams(onnx: string): Promise<Record<string, Int32Array>> {
  const tok = loadTokenizer(onnx);
  const streams: Record<string, Int32Array> = {};
  for (const name of EVALS) streams[name] = (await evalTokens(resolveDataset(name), tok, evalSeqlen)).subarray(0, maxWindows * evalSeqlen);
  return streams;
}

async function perplexity(onnx: string, streams: Record<string, Int32Array>): Promise<Perplexities> {
  const session = await FullModelSession.open(onnx);
  try {
    const out: Perplexities = {};
    for (const [name, ids] of Object.entries(streams)) {
      const logits = async (x: BigInt64Array, b: number, l: number) => {
        const z = await session.logits(x, b, l);
        return evalTemperature === 1 ? z : logitsAtTemperature(z, evalTemperature);
      };
      out[name] = (await windowPerplexity(ids, logits, { seqlen: evalSeqlen, maxWindows })).perplexity;
    }
    return out;
  } finally {
    await session.release();
  }
}

/** Writes `dense` with `weights` put in (the server's writer), scores it, and removes it. */
async function scoreWeights(dense: string, weights: Map<string, Float32Array>, streams: Record<string, Int32Array>, tag: string): Promise<Perplexities> {
  const out = join(work, tag);
  const onnx = await writeGlobalModel(dense, weights, out, { tag }, { force: true });
  try {
    return await perplexity(onnx, streams);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/** PTB train cut into `n` disjoint client texts (bench/federate-data.ts; --split, --passage-lines). */
const clientTexts = (n: number, dir: string, seed: number) => ptbClientTexts(n, dir, seed, splitMode, passageLines);

interface MatrixStats {
  /** max over matrices of |zeros − ceil(s·d)| */
  maxOffTarget: number;
  /** zeros / weights over all pruned linears */
  sparsity: number;
  /** fraction of positions the clients disagree on (0 < C_j < N): what aggregation can change */
  split?: number;
  /** plain mean only: mean over its kept positions of n_j / N (how far the kept weights are shrunk) */
  keptScale?: number;
}

function aggregate(uploads: UploadTensor[][], rule: AggregationRule, s: number): { weights: Map<string, Float32Array>; stats: MatrixStats } {
  const weights = new Map<string, Float32Array>();
  let maxOffTarget = 0, zeros = 0, total = 0, keptScaleSum = 0, kept = 0, split = 0;
  for (let m = 0; m < uploads[0]!.length; m++) {
    const per = uploads.map((u) => u[m]!);
    for (let j = 0; j < per[0]!.values.length; j++) {
      let votes = 0;
      for (const t of per) if (t.values[j] === 0) votes++;
      if (votes > 0 && votes < per.length) split++;
    }
    const r = aggregateMatrix(per.map((t) => t.values), rule, s);
    weights.set(per[0]!.name, r.weights);
    const d = r.weights.length;
    maxOffTarget = Math.max(maxOffTarget, Math.abs(r.zeros - Math.ceil(s * d)));
    zeros += r.zeros;
    total += d;
    if (rule === 'mean') {
      for (let j = 0; j < d; j++) {
        if (r.weights[j] === 0) continue;
        let nj = 0;
        for (const t of per) if (t.values[j] !== 0) nj++;
        keptScaleSum += nj / per.length;
        kept++;
      }
    }
  }
  return { weights, stats: { maxOffTarget, sparsity: zeros / total, split: split / total, ...(rule === 'mean' ? { keptScale: keptScaleSum / kept } : {}) } };
}

function zeroStats(tensors: UploadTensor[], s: number): MatrixStats {
  let maxOffTarget = 0, zeros = 0, total = 0;
  for (const t of tensors) {
    let z = 0;
    for (const v of t.values) if (v === 0) z++;
    maxOffTarget = Math.max(maxOffTarget, Math.abs(z - Math.ceil(s * t.values.length)));
    zeros += z;
    total += t.values.length;
  }
  return { maxOffTarget, sparsity: zeros / total };
}

interface Row {
  clients: number;
  sparsity: number;
  /** calibration windows per client */
  nsamples: number;
  /** the repetition's seed (passage deal and calibration windows) */
  seed: number;
  standalone: { mean: Perplexities; min: Perplexities; max: Perplexities; perClient: Perplexities[]; stats: MatrixStats[] };
  fedspallm: { perplexity: Perplexities; stats: MatrixStats };
  mean: { perplexity: Perplexities; stats: MatrixStats };
  /** not federated: one prune on N × nsamples windows of all of PTB train (what pooling the clients' data would give) */
  pooled?: Perplexities;
  pruneSeconds: number[];
}

async function runModel(name: string): Promise<{ dense: Perplexities; rows: Row[] }> {
  const dense = MODELS[name]!;
  const onnx = resolveModelFile(dense);
  const blocks = analyzeDecoder(OnnxModel.load(onnx)).blocks.map((b) => b.index);
  const streams = await evalStreams(onnx);
  const densePpl = await perplexity(onnx, streams);
  log(`${name}: dense ${JSON.stringify(densePpl)}`);
  const rows: Row[] = [];
  for (const seed of seeds) for (const nsamples of nsamplesList) {
    for (const n of clientCounts) {
      const texts = await clientTexts(n, join(work, `${name}-${n}-clients`), seed);
      // uploads[s][client] = that client's pruned linears; a client prunes all its sparsities in a row (its text stays tokenized)
      const uploads = new Map<number, UploadTensor[][]>(sparsities.map((s) => [s, []]));
      const seconds = new Map<number, number[]>(sparsities.map((s) => [s, []]));
      for (const [i, calib] of texts.entries()) {
        for (const s of sparsities) {
          const r = await pruneAssignedBlocks({ model: dense, calib, blocks, method, sparsity: s, nsamples, seqlen, seed }, progress);
          uploads.get(s)!.push(r.tensors);
          seconds.get(s)!.push(r.seconds);
          log(`${name}: ${n} clients × ${nsamples} windows, client ${i}, ${s * 100} %: pruned in ${r.seconds.toFixed(1)} s`);
        }
      }
      for (const s of sparsities) {
        const ups = uploads.get(s)!;
        const perClient: Perplexities[] = [];
        for (const [i, tensors] of ups.entries()) perClient.push(await scoreWeights(dense, new Map(tensors.map((t) => [t.name, t.values])), streams, `standalone-${i}`));
        const over = (f: (xs: number[]) => number) => Object.fromEntries(EVALS.map((e) => [e, f(perClient.map((p) => p[e]!))]));
        const fed = aggregate(ups, 'fedspallm', s);
        const mean = aggregate(ups, 'mean', s);
        let pooled: Perplexities | undefined;
        if (args.pooled) {
          const r = await pruneAssignedBlocks({ model: dense, calib: 'ptb', blocks, method, sparsity: s, nsamples: n * nsamples, seqlen, seed }, progress);
          pooled = await scoreWeights(dense, new Map(r.tensors.map((t) => [t.name, t.values])), streams, 'pooled');
        }
        const row: Row = {
          clients: n, sparsity: s, nsamples, seed,
          standalone: {
            mean: over((xs) => xs.reduce((a, b) => a + b, 0) / xs.length), min: over((xs) => Math.min(...xs)), max: over((xs) => Math.max(...xs)),
            perClient, stats: ups.map((t) => zeroStats(t, s)),
          },
          fedspallm: { perplexity: await scoreWeights(dense, fed.weights, streams, 'fedspallm'), stats: fed.stats },
          mean: { perplexity: await scoreWeights(dense, mean.weights, streams, 'mean'), stats: mean.stats },
          pooled,
          pruneSeconds: seconds.get(s)!,
        };
        rows.push(row);
        log(`${name}: seed ${seed}, ${n} clients × ${nsamples}, ${s * 100} %: standalone ${fmt(row.standalone.mean)} (${fmt(row.standalone.min)} – ${fmt(row.standalone.max)}), FedSpaLLM ${fmt(row.fedspallm.perplexity)} (off target ≤ ${fed.stats.maxOffTarget}, split votes ${pct(fed.stats.split!)}), mean ${fmt(row.mean.perplexity)} (sparsity ${pct(mean.stats.sparsity)})${pooled ? `, pooled ${fmt(pooled)}` : ''}`);
      }
    }
  }
  return { dense: densePpl, rows };
}

const fmt = (p: Perplexities) => EVALS.map((e) => p[e]!.toFixed(1)).join(' / ');
const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
const lower = (base: Perplexities, x: Perplexities) => EVALS.map((e) => `${(((base[e]! - x[e]!) / base[e]!) * 100).toFixed(1)} %`).join(' / ');

function markdown(name: string, r: { dense: Perplexities; rows: Row[] }): string {
  const lines = [
    `**${name}** (dense PTB / WT2 ${fmt(r.dense)}${evalTemperature !== 1 ? `; every model scored with its logits divided by ${evalTemperature}, a diagnostic` : ''}):`,
    '',
    '| seed | windows/client | clients | sparsity | standalone: mean of clients (range) | FedSpaLLM | FedSpaLLM vs standalone mean | clients FedSpaLLM beats | pooled data (not federated) | plain mean | split votes | FedSpaLLM sparsity (max \\|zeros − ⌈s·d⌉\\|) | plain-mean sparsity, kept-weight scale |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const row of r.rows) {
    const beats = EVALS.map((e) => `${row.standalone.perClient.filter((p) => row.fedspallm.perplexity[e]! < p[e]!).length}/${row.clients}`).join(' / ');
    lines.push(
      `| ${row.seed} | ${row.nsamples} | ${row.clients} | ${row.sparsity * 100} % | ${fmt(row.standalone.mean)} (${EVALS.map((e) => `${row.standalone.min[e]!.toFixed(0)}–${row.standalone.max[e]!.toFixed(0)}`).join(' / ')}) | ` +
        `**${fmt(row.fedspallm.perplexity)}** | ${lower(row.standalone.mean, row.fedspallm.perplexity)} lower | ${beats} | ${row.pooled ? fmt(row.pooled) : '–'} | ${fmt(row.mean.perplexity)} | ${pct(row.fedspallm.stats.split!)} | ` +
        `${pct(row.fedspallm.stats.sparsity)} (${row.fedspallm.stats.maxOffTarget}) | ${pct(row.mean.stats.sparsity)}, ×${row.mean.stats.keptScale!.toFixed(2)} |`,
    );
  }
  const rowSeeds = new Set(r.rows.map((row) => row.seed));
  if (rowSeeds.size > 1) {
    lines.push('', `Over the ${rowSeeds.size} seeds (mean perplexities; the gain of each seed, PTB / WT2; plain mean: its perplexity, zeros and kept-weight scale, averaged over the seeds):`, '',
      '| windows/client | clients | sparsity | standalone mean | FedSpaLLM | FedSpaLLM vs standalone, per seed | seeds where FedSpaLLM is lower (PTB, WT2) | pooled data (not federated) | plain mean | plain-mean zeros, kept-weight scale |',
      '|---|---|---|---|---|---|---|---|---|---|');
    const groups = new Map<string, Row[]>();
    for (const row of r.rows) {
      const key = `${row.nsamples}|${row.clients}|${row.sparsity}`;
      groups.set(key, [...(groups.get(key) ?? []), row]);
    }
    for (const rows of groups.values()) {
      const avg = (f: (row: Row) => Perplexities) => Object.fromEntries(EVALS.map((e) => [e, rows.reduce((a, row) => a + f(row)[e]!, 0) / rows.length]));
      const wins = EVALS.map((e) => `${rows.filter((row) => row.fedspallm.perplexity[e]! < row.standalone.mean[e]!).length}/${rows.length}`).join(', ');
      const avgOf = (f: (row: Row) => number) => rows.reduce((a, row) => a + f(row), 0) / rows.length;
      const pooledRows = rows.every((row) => row.pooled) ? fmt(avg((row) => row.pooled!)) : '–';
      lines.push(`| ${rows[0]!.nsamples} | ${rows[0]!.clients} | ${rows[0]!.sparsity * 100} % | ${fmt(avg((row) => row.standalone.mean))} | ${fmt(avg((row) => row.fedspallm.perplexity))} | ` +
        `${rows.map((row) => lower(row.standalone.mean, row.fedspallm.perplexity)).join('; ')} | ${wins} | ${pooledRows} | ${fmt(avg((row) => row.mean.perplexity))} | ` +
        `${pct(avgOf((row) => row.mean.stats.sparsity))}, ×${avgOf((row) => row.mean.stats.keptScale!).toFixed(2)} |`);
    }
  }
  return lines.join('\n');
}

const settings = { method, clients: clientCounts, sparsities, nsamples: nsamplesList, seqlen, evalSeqlen, maxWindows, seeds, calib: splitMode === 'documents' ? `ptb train, passages of ${passageLines} lines dealt as documents (src/federate/split.ts)` : 'ptb train, contiguous disjoint shares', pooled: args.pooled, ...(evalTemperature !== 1 ? { evalTemperature } : {}) };
const resultsFile = join(args.out, 'results.json');
type Results = Record<string, { dense: Perplexities; rows: Row[] }>;
// --append: the earlier seeds' rows come back from the previous run, which must have used the same settings (checked before any work)
const previous = (args.append || args.render) && existsSync(resultsFile) ? (JSON.parse(readFileSync(resultsFile, 'utf8')) as { settings: typeof settings; results: Results; seconds: number }) : undefined;
if (args.render && !previous) throw new Error(`--render: no ${resultsFile}`);
if (previous && !args.render && JSON.stringify({ ...previous.settings, seeds: [] }) !== JSON.stringify({ ...settings, seeds: [] })) {
  throw new Error(`--append: ${resultsFile} was made with other settings: ${JSON.stringify(previous.settings)}`);
}
const t0 = performance.now();
const results: Results = {};
if (!args.render) for (const name of models) results[name] = await runModel(name);
mkdirSync(args.out, { recursive: true });
let seconds = (performance.now() - t0) / 1000;
if (previous && args.render) {
  Object.assign(results, previous.results);
  Object.assign(settings, previous.settings);
  seconds = previous.seconds;
} else if (previous) {
  for (const [name, r] of Object.entries(results)) {
    const old = previous.results[name];
    if (!old) continue;
    r.rows = [...old.rows.filter((row) => !seeds.includes(row.seed)), ...r.rows]
      .sort((a, b) => a.seed - b.seed || a.nsamples - b.nsamples || a.clients - b.clients || a.sparsity - b.sparsity);
  }
  for (const [name, r] of Object.entries(previous.results)) results[name] ??= r;
  settings.seeds = [...new Set([...previous.settings.seeds, ...seeds])].sort((a, b) => a - b);
  seconds += previous.seconds;
}
writeFileSync(resultsFile, `${JSON.stringify({ settings, results, seconds }, null, 2)}\n`);
const md = Object.entries(results).map(([n, r]) => markdown(n, r)).join('\n\n');
writeFileSync(join(args.out, 'results.md'), `${md}\n`);
process.stdout.write(`${md}\n\nthis run ${((performance.now() - t0) / 60000).toFixed(1)} min\n`);
