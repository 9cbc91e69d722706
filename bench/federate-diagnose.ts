// `npm run federate-diagnose`: where FedSpaLLM's global model gains or loses against the standalone clients, per matrix
// and per calibration size (issue 18). One client count, one sparsity, one seed; for each `--nsamples`:
//   - the N clients prune every block (src/federate/local-prune.ts, SparseGPT), the server's aggregation gives
//     FedSpaLLM (ℓ0 average + mask expansion, Eqs. 4.18–4.20) and, for the decomposition, the ℓ0 average alone
//     (no expansion: sparsity below target);
//   - per matrix: how much the clients disagree (split votes, ‖W_i − W_k‖), how far the global matrix is from each
//     client's, and the relative output error e(Ŵ) = tr(D H Dᵀ) / tr(W H Wᵀ), D = W − Ŵ (src/pipeline/layer-error.ts),
//     with H from the DENSE model's inputs on the evaluation windows (PTB test and WikiText-2 test): a held-out
//     proxy of each matrix's share of the perplexity change (the inputs are the dense ones, not the pruned prefix's);
//   - perplexity on the first `--eval-windows` 512-token windows (PTB / WT2), and the paired difference FedSpaLLM −
//     standalone-mean in mean NLL with its standard error over windows, so a gain or loss can be told from the noise
//     of the evaluation windows.
//
//   npm run federate-diagnose -- --model tiny-wikitext-opt --clients 4 --sparsity 0.8 --nsamples 1,4,16 --eval-windows 16 --kl-windows 4 --out bench/federate/diagnose-tiny-wikitext-opt
//   (23 min on 2 shared cores at load 9)
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { aggregateMatrix, l0Average } from '../src/federate/aggregate.js';
import { writeGlobalModel } from '../src/federate/global-model.js';
import { pruneAssignedBlocks, type UploadTensor } from '../src/federate/local-prune.js';
import { evalTokens, resolveDataset } from '../src/data/datasets.js';
import { evaluationWindows, rowsNll } from '../src/data/perplexity.js';
import { loadTokenizer } from '../src/data/tokenizer.js';
import { BlockRunner } from '../src/model/block-runner.js';
import { FullModelSession } from '../src/model/full-session.js';
import { OnnxModel, analyzeDecoder, resolveModelFile } from '../src/model/index.js';
import { transpose } from '../src/model/weights.js';
import { HessianAccumulator } from '../src/native/hessian.js';
import { logSoftmaxInPlace, rowsKl } from '../src/data/perplexity.js';
import { quadraticTrace } from '../src/pipeline/layer-error.js';
import { createProgress } from '../src/pipeline/progress.js';
import { ptbClientTexts } from './federate-data.js';

const root = resolve(import.meta.dirname, '..');
const shared = process.env.SPARSELLM_SHARED ?? join(root, '..', 'shared');
const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: 'tiny-wikitext-opt' },
    clients: { type: 'string', default: '4' },
    sparsity: { type: 'string', default: '0.8' },
    nsamples: { type: 'string', default: '1,4,16,64' },
    seqlen: { type: 'string', default: '256' },
    'eval-windows': { type: 'string', default: '32' },
    'kl-windows': { type: 'string', default: '8' },
    seed: { type: 'string', default: '0' },
    'no-pooled': { type: 'boolean', default: false },
    /** only the per-matrix table (no perplexity or KL: minutes instead of tens of minutes) */
    'matrices-only': { type: 'boolean', default: false },
    out: { type: 'string', default: join(root, 'bench', 'federate', 'diagnose') },
  },
});
const EVAL_SEQLEN = 512;
const EVALS = ['ptb', 'wikitext2'] as const;
type Ev = (typeof EVALS)[number];
interface Scores {
  nll: Record<Ev, number[]>;
  kl: Record<Ev, number[]>;
}
const modelDir = join(shared, 'models', args.model);
const n = Number(args.clients), s = Number(args.sparsity), seed = Number(args.seed), seqlen = Number(args.seqlen);
const evalWindows = Number(args['eval-windows']), klWindows = Number(args['kl-windows']);
const nsamplesList = args.nsamples.split(',').map(Number);
const work = join(tmpdir(), `sparsellm-federate-diagnose-${process.pid}`);
mkdirSync(work, { recursive: true });
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const progress = createProgress(false);
const log = (line: string) => process.stderr.write(`${line}\n`);

const onnx = resolveModelFile(modelDir);
const dense = OnnxModel.load(onnx);
const layout = analyzeDecoder(dense);
const blocks = layout.blocks.map((b) => b.index);
const linears = layout.blocks.flatMap((b) => b.linears);

// evaluation streams (the repository's window protocol, first `evalWindows` windows)
const tok = loadTokenizer(onnx);
const denseSession = await FullModelSession.open(onnx);
const streams = {} as Record<Ev, Int32Array>;
for (const e of EVALS) streams[e] = (await evalTokens(resolveDataset(e), tok, EVAL_SEQLEN)).subarray(0, evalWindows * EVAL_SEQLEN);

/** Per-window mean NLL (nats) of a model file on each evaluation stream, and on the first `klWindows` windows the mean
 * per-token KL(dense ‖ model) of the next-token distributions (how far the model moved from the dense one, with no
 * test labels involved). */
async function windowNlls(file: string): Promise<Scores> {
  const session = await FullModelSession.open(file);
  try {
    const out = { nll: {}, kl: {} } as Scores;
    for (const e of EVALS) {
      const ids = streams[e];
      out.nll[e] = [];
      out.kl[e] = [];
      for (const { first: w, input, targets } of evaluationWindows(ids, EVAL_SEQLEN)) {
        const logits = await session.logits(input, 1, EVAL_SEQLEN);
        const vocab = logits.length / EVAL_SEQLEN;
        const nll = await rowsNll(logits, vocab, targets);
        let sum = 0;
        for (let t = 0; t < EVAL_SEQLEN - 1; t++) sum += nll[t]!;
        out.nll[e].push(sum / (EVAL_SEQLEN - 1)); // the window protocol's mean over the L−1 shifted targets
        if (w < klWindows) out.kl[e].push((await rowsKl(await logSoftmaxInPlace(await denseSession.logits(input, 1, EVAL_SEQLEN), vocab), logits, vocab)).reduce((a, b) => a + b, 0) / EVAL_SEQLEN);
      }
    }
    return out;
  } finally {
    await session.release();
  }
}

async function scoreWeights(weights: Map<string, Float32Array>, tag: string): Promise<Scores> {
  const out = join(work, tag);
  const file = await writeGlobalModel(modelDir, weights, out, { tag }, { force: true });
  try {
    return await windowNlls(file);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

// Hessians of every linear's input, from the dense model on the evaluation windows (H = 2/n Σ XᵀX)
log(`${args.model}: dense Hessians on ${evalWindows} windows of PTB test and WT2 test`);
const hessians = {} as Record<Ev, Map<string, HessianAccumulator>>;
{
  const runner = await BlockRunner.open(onnx);
  try {
    for (const e of EVALS) {
      const acc = new Map(linears.map((l) => [l.weightName, new HessianAccumulator(l.inFeatures)]));
      const ids = streams[e];
      for (const { input } of evaluationWindows(ids, EVAL_SEQLEN)) {
        let state = await runner.prologue(input, 1, EVAL_SEQLEN);
        for (const b of layout.blocks) {
          const r = await runner.runBlock(b.index, state, { capture: true });
          for (const l of b.linears) await acc.get(l.weightName)!.add(r.captures.get(l.role)!, EVAL_SEQLEN, 1);
          state = r.state;
        }
      }
      hessians[e] = acc;
    }
  } finally {
    await runner.dispose();
  }
}
const denseW = new Map(linears.map((l) => [l.weightName, transpose(dense.readFloat32(l.weightName), l.inFeatures, l.outFeatures)]));
const denseTrace = {} as Record<Ev, Map<string, number>>;
for (const e of EVALS) {
  denseTrace[e] = new Map();
  for (const l of linears) denseTrace[e].set(l.weightName, await quadraticTrace(denseW.get(l.weightName)!, hessians[e].get(l.weightName)!.H, l.outFeatures, l.inFeatures));
}

/** e(Ŵ) = tr(D H Dᵀ) / tr(W H Wᵀ) for one linear; `values` in the initializer's layout [in, out]. */
async function layerError(e: Ev, name: string, values: Float32Array): Promise<number> {
  const l = linears.find((x) => x.weightName === name)!;
  const W = denseW.get(name)!;
  const P = transpose(values, l.inFeatures, l.outFeatures);
  const D = new Float32Array(W.length);
  for (let k = 0; k < W.length; k++) D[k] = W[k]! - P[k]!;
  return (await quadraticTrace(D, hessians[e].get(name)!.H, l.outFeatures, l.inFeatures)) / denseTrace[e].get(name)!;
}

const frob = (a: Float32Array, b: Float32Array) => {
  let d = 0, q = 0;
  for (let k = 0; k < a.length; k++) {
    d += (a[k]! - b[k]!) ** 2;
    q += b[k]! ** 2;
  }
  return Math.sqrt(d / q);
};
const f3 = (x: number) => x.toFixed(3);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

interface MatrixRow {
  name: string;
  block: number;
  role: string;
  /** 0 < C_j < N */
  split: number;
  /** mean over client pairs of ‖W_i − W_k‖ / ‖W_k‖ */
  clientSpread: number;
  /** mean over clients of ‖W_g − W_i‖ / ‖W_i‖ */
  globalToClient: number;
  /** of the global kept positions: the fraction every client kept */
  keptByAll: number;
  /** positions whose fate the vote tie rule decided: the vote group that mask expansion cut through (size, and how many of it it pruned) */
  tieGroup: number;
  tiePruned: number;
  /** e(Ŵ) per evaluation set: clients' mean, FedSpaLLM, ℓ0 average without expansion, pooled */
  error: Record<Ev, { clients: number; clientMin: number; fedspallm: number; l0Only: number; pooled?: number }>;
}

interface Setting {
  nsamples: number;
  tokensPerClient: number;
  /** per-window mean NLL of each model */
  /** absent with --matrices-only */
  scores?: { clients: Scores[]; fedspallm: Scores; l0Only: Scores; pooled?: Scores; dense: Scores };
  matrices: MatrixRow[];
}

/** Paired difference in mean NLL, model − standalone mean (mean over clients of each window's NLL), ± its standard error over windows. */
function paired(x: number[], clients: number[][]): { diff: number; se: number } {
  const d = x.map((v, w) => v - mean(clients.map((c) => c[w]!)));
  const m = mean(d);
  const se = Math.sqrt(d.reduce((a, v) => a + (v - m) ** 2, 0) / (d.length - 1) / d.length);
  return { diff: m, se };
}
const ppl = (nll: number[]) => Math.exp(mean(nll));
/** the paper's standalone row: the mean of the clients' perplexities */
const standalonePpl = (cs: Scores[], e: Ev) => mean(cs.map((c) => ppl(c.nll[e])));
const matricesOnly = args['matrices-only'];
const denseScores = matricesOnly ? undefined : await windowNlls(onnx);

const settings: Setting[] = [];
for (const nsamples of nsamplesList) {
  const texts = await ptbClientTexts(n, join(work, `clients-${n}`), seed, 'documents', 20);
  const uploads: UploadTensor[][] = [];
  for (const [i, calib] of texts.entries()) {
    const r = await pruneAssignedBlocks({ model: modelDir, calib, blocks, method: 'sparsegpt', sparsity: s, nsamples, seqlen, seed }, progress);
    uploads.push(r.tensors);
    log(`${args.model}: ${nsamples} windows, client ${i} pruned in ${r.seconds.toFixed(1)} s`);
  }
  const pooled = !args['no-pooled']
    ? (await pruneAssignedBlocks({ model: modelDir, calib: 'ptb', blocks, method: 'sparsegpt', sparsity: s, nsamples: n * nsamples, seqlen, seed }, progress)).tensors
    : undefined;
  const fed = new Map<string, Float32Array>();
  const l0 = new Map<string, Float32Array>();
  const matrices: MatrixRow[] = [];
  for (let m = 0; m < uploads[0]!.length; m++) {
    const per = uploads.map((u) => u[m]!);
    const name = per[0]!.name;
    const values = per.map((t) => t.values);
    const g = aggregateMatrix(values, 'fedspallm', s).weights;
    const { weights: l0w, votes } = l0Average(values);
    fed.set(name, g);
    l0.set(name, l0w);
    let split = 0, keptG = 0, keptAll = 0;
    // the vote count at which the global mask is cut: the most votes among the kept positions (the fewest among the pruned ones is at least that)
    let cut = -1;
    for (let j = 0; j < g.length; j++) {
      if (votes[j]! > 0 && votes[j]! < n) split++;
      if (g[j] !== 0) {
        keptG++;
        if (votes[j] === 0) keptAll++;
        cut = Math.max(cut, votes[j]!);
      }
    }
    let tieGroup = 0, tiePruned = 0;
    for (let j = 0; j < g.length; j++) {
      if (votes[j] !== cut || cut === n) continue;
      tieGroup++;
      if (g[j] === 0 && l0w[j] !== 0) tiePruned++;
    }
    if (tiePruned === 0) tieGroup = 0; // the cut fell between two vote counts: no tie decided anything
    const pairs: number[] = [];
    for (let i = 0; i < n; i++) for (let k = 0; k < n; k++) if (i !== k) pairs.push(frob(values[i]!, values[k]!));
    const error = {} as MatrixRow['error'];
    for (const e of EVALS) {
      const ce: number[] = [];
      for (const v of values) ce.push(await layerError(e, name, v));
      error[e] = {
        clients: mean(ce), clientMin: Math.min(...ce), fedspallm: await layerError(e, name, g), l0Only: await layerError(e, name, l0w),
        ...(pooled ? { pooled: await layerError(e, name, pooled[m]!.values) } : {}),
      };
    }
    matrices.push({
      name, block: per[0]!.block, role: per[0]!.role, split: split / g.length, clientSpread: mean(pairs),
      globalToClient: mean(values.map((v) => frob(g, v))), keptByAll: keptAll / keptG, tieGroup: tieGroup / g.length, tiePruned: tiePruned / g.length, error,
    });
  }
  const clients: Scores[] = [];
  if (!matricesOnly) for (const [i, u] of uploads.entries()) clients.push(await scoreWeights(new Map(u.map((t) => [t.name, t.values])), `client-${i}`));
  const setting: Setting = {
    nsamples, tokensPerClient: nsamples * seqlen, matrices,
    scores: matricesOnly ? undefined : {
      dense: denseScores!, clients, fedspallm: await scoreWeights(fed, 'fedspallm'), l0Only: await scoreWeights(l0, 'l0'),
      ...(pooled ? { pooled: await scoreWeights(new Map(pooled.map((t) => [t.name, t.values])), 'pooled') } : {}),
    },
  };
  settings.push(setting);
  if (!matricesOnly) log(summaryLine(setting));
}

function summaryLine(st: Setting): string {
  return `${st.nsamples} windows/client: ` + EVALS.map((e) => {
    const sc = st.scores!;
    const f = paired(sc.fedspallm.nll[e], sc.clients.map((c) => c.nll[e]));
    return `${e} standalone ${standalonePpl(sc.clients, e).toFixed(1)} FedSpaLLM ${ppl(sc.fedspallm.nll[e]).toFixed(1)} (ΔNLL ${f.diff.toFixed(4)} ± ${f.se.toFixed(4)}) ℓ0-only ${ppl(sc.l0Only.nll[e]).toFixed(1)}${sc.pooled ? ` pooled ${ppl(sc.pooled.nll[e]).toFixed(1)}` : ''}; KL clients ${mean(sc.clients.map((c) => mean(c.kl[e]))).toFixed(4)} FedSpaLLM ${mean(sc.fedspallm.kl[e]).toFixed(4)}`;
  }).join('; ');
}

const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
const lines: string[] = [
  `**${args.model}**, ${n} clients, ${s * 100} %, seed ${seed}, SparseGPT, PTB train split by documents; evaluation: the first ${evalWindows} windows of ${EVAL_SEQLEN} tokens of PTB test and WT2 test (dense: ${denseScores ? EVALS.map((e) => ppl(denseScores.nll[e]).toFixed(1)).join(' / ') : 'not scored'}); KL(dense ‖ model) per token on the first ${klWindows} windows.`,
];
if (!matricesOnly) lines.push(
  '',
  'Perplexity (the paper\'s standalone = mean of the clients\' perplexities), and FedSpaLLM − standalone in mean NLL per window (paired over the same windows; ± standard error over windows; negative = FedSpaLLM better):',
  '',
  '| windows/client (tokens) | set | standalone mean (range) | FedSpaLLM | ΔNLL FedSpaLLM − standalone | ℓ0 average, no expansion | pooled (N× data, not federated) | ΔNLL pooled − standalone | KL(dense ‖ ·): clients (best) | FedSpaLLM | ℓ0 only | pooled |',
  '|---|---|---|---|---|---|---|---|---|---|---|---|',
);
for (const st of settings) {
  if (!st.scores) continue;
  const sc = st.scores;
  for (const e of EVALS) {
    const cs = sc.clients.map((c) => ppl(c.nll[e]));
    const f = paired(sc.fedspallm.nll[e], sc.clients.map((c) => c.nll[e]));
    const p = sc.pooled ? paired(sc.pooled.nll[e], sc.clients.map((c) => c.nll[e])) : undefined;
    const kls = sc.clients.map((c) => mean(c.kl[e]));
    lines.push(`| ${st.nsamples} (${st.tokensPerClient}) | ${e} | ${standalonePpl(sc.clients, e).toFixed(1)} (${Math.min(...cs).toFixed(0)}–${Math.max(...cs).toFixed(0)}) | ${ppl(sc.fedspallm.nll[e]).toFixed(1)} | ${f.diff.toFixed(4)} ± ${f.se.toFixed(4)} | ${ppl(sc.l0Only.nll[e]).toFixed(1)} | ${sc.pooled ? ppl(sc.pooled.nll[e]).toFixed(1) : '–'} | ${p ? `${p.diff.toFixed(4)} ± ${p.se.toFixed(4)}` : '–'} | ` +
      `${f3(mean(kls))} (${f3(Math.min(...kls))}) | ${f3(mean(sc.fedspallm.kl[e]))} | ${f3(mean(sc.l0Only.kl[e]))} | ${sc.pooled ? f3(mean(sc.pooled.kl[e])) : '–'} |`);
  }
}
lines.push('', 'Per matrix: e(Ŵ) = ‖(W − Ŵ)X‖² / ‖WX‖² with X the dense model\'s inputs on the PTB test windows (WT2 in the second column of each pair), clients\' mean (best client), FedSpaLLM, ℓ0 average without expansion, pooled; split = positions the clients disagree on; spread = mean ‖W_i − W_k‖/‖W_k‖; global→client = mean ‖W_g − W_i‖/‖W_i‖; kept by all = fraction of the global kept positions that every client kept; tie group = the positions with the vote count at which mask expansion stopped, as a fraction of the matrix, and in brackets those of them it pruned (the ones the tie rule chose: smaller |ℓ0 mean| first).', '');
for (const st of settings) {
  lines.push(`${st.nsamples} windows/client:`, '', '| matrix | split | spread | global→client | kept by all | tie group (pruned by the tie rule) | e PTB: clients (best) | FedSpaLLM | ℓ0 only | pooled | e WT2: clients (best) | FedSpaLLM | ℓ0 only | pooled |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const m of st.matrices) {
    const cols = EVALS.map((e) => `${f3(m.error[e].clients)} (${f3(m.error[e].clientMin)}) | ${f3(m.error[e].fedspallm)} | ${f3(m.error[e].l0Only)} | ${m.error[e].pooled !== undefined ? f3(m.error[e].pooled!) : '–'}`).join(' | ');
    lines.push(`| ${m.block}.${m.role} | ${pct(m.split)} | ${f3(m.clientSpread)} | ${f3(m.globalToClient)} | ${pct(m.keptByAll)} | ${pct(m.tieGroup)} (${pct(m.tiePruned)}) | ${cols} |`);
  }
  const sum = (f: (m: MatrixRow) => number) => st.matrices.reduce((a, m) => a + f(m), 0);
  lines.push(`| **sum of e** | | | | | | ${EVALS.map((e) => `${f3(sum((m) => m.error[e].clients))} | ${f3(sum((m) => m.error[e].fedspallm))} | ${f3(sum((m) => m.error[e].l0Only))} | ${st.matrices[0]!.error[e].pooled !== undefined ? f3(sum((m) => m.error[e].pooled!)) : '–'}`).join(' | ')} |`, '');
}
await denseSession.release();
mkdirSync(args.out, { recursive: true });
writeFileSync(join(args.out, 'results.json'), `${JSON.stringify({ settings: { model: args.model, clients: n, sparsity: s, seed, seqlen, evalWindows }, results: settings }, null, 2)}\n`);
writeFileSync(join(args.out, 'results.md'), `${lines.join('\n')}\n`);
process.stdout.write(`${lines.join('\n')}\n`);
