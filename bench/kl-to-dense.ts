// `npm run kl-to-dense -- DENSE MODEL...`: how far each pruned model is from the dense one on the test windows, next
// to its NLL there. Per dataset, over the first --max-windows windows of --seqlen tokens (the evaluation protocol of
// src/pipeline/evaluate.ts): the mean next-token NLL and the mean KL(dense ‖ model) of the next-token distributions,
// per predicted token. A diagnostic for the allocation table (README, issue 17: a profile closer to the dense model in
// KL need not have the lower perplexity); nothing here feeds a prune.
// With --temperatures T1,T2,...: each model's perplexity and KL(dense ‖ model) with its logits divided by each T, and
// the mean entropy of its next-token distribution (nats). A set on which even the dense model's perplexity falls for
// some T > 1 is one where the dense model is overconfident, so a model closer to it can have the higher perplexity
// there. --split names another split of the datasets than their test split (e.g. ptb's valid, text no prune sees).
//
//   npm run kl-to-dense -- ../shared/models/tiny-wikitext-opt out/uniform-90 out/search-90
//   npm run kl-to-dense -- --temperatures 1,1.1,1.2,1.3,1.5 ../shared/models/tiny-wikitext-opt out/uniform-90 out/search-90
//   npm run kl-to-dense -- --dataset ptb --split valid --max-windows 16 --temperatures 1,1.05,1.1 DENSE out/uniform-90
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { evalTokens, resolveDataset } from '../src/data/datasets.js';
import { evaluationWindows, logitsAtTemperature, logSoftmaxInPlace, rowsKl, rowsNll } from '../src/data/perplexity.js';
import { loadTokenizer } from '../src/data/tokenizer.js';
import { FullModelSession } from '../src/model/full-session.js';
import { resolveModelFile } from '../src/model/model-path.js';

const root = resolve(import.meta.dirname, '..');
const shared = process.env.SPARSELLM_SHARED ?? join(root, '..', 'shared');
const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    dataset: { type: 'string', default: 'ptb,wikitext2' },
    seqlen: { type: 'string', default: '512' },
    'max-windows': { type: 'string', default: '64' },
    'data-dir': { type: 'string', default: join(shared, 'data') },
    temperatures: { type: 'string' },
    /** the datasets' split to score (default: each one's evaluation split, i.e. test) */
    split: { type: 'string' },
  },
});
const [dense, ...models] = positionals;
if (!dense || models.length === 0) throw new Error('usage: npm run kl-to-dense -- DENSE MODEL [MODEL...]');
const L = Number(args.seqlen), maxWindows = Number(args['max-windows']);
const temperatures = args.temperatures ? args.temperatures.split(',').map(Number) : [];
if (temperatures.some((t) => !(t > 0))) throw new Error('--temperatures: positive numbers, e.g. 1,1.1,1.2');

/** Σ over the rows of the next-token distribution's entropy −Σ p log p, from log-probabilities [rows, vocab]. */
function entropySum(logProbs: Float32Array, rows: number, vocab: number): number {
  let total = 0;
  for (let r = 0; r < rows; r++) {
    for (let v = r * vocab, end = v + vocab; v < end; v++) total -= Math.exp(logProbs[v]!) * logProbs[v]!;
  }
  return total;
}
const tok = loadTokenizer(resolveModelFile(dense));
const sessions = [];
for (const m of [dense, ...models]) sessions.push(await FullModelSession.open(resolveModelFile(m), { threads: 2 }));
try {
  for (const name of args.dataset!.split(',')) {
    const def = resolveDataset(name);
    const ids = await evalTokens(args.split ? { ...def, evalSplit: args.split } : def, tok, L, args['data-dir']);
    const nll = sessions.map(() => 0), kl = sessions.map(() => 0), entropy = sessions.map(() => 0);
    const nllAt = sessions.map(() => temperatures.map(() => 0)), klAt = sessions.map(() => temperatures.map(() => 0));
    let windows = 0;
    for (const { total, input, targets } of evaluationWindows(ids, L, { maxWindows })) {
      windows = total;
      const ref = await sessions[0]!.logits(input, 1, L);
      const vocab = ref.length / L;
      const refLogProbs = await logSoftmaxInPlace(Float32Array.from(ref), vocab);
      for (const [m, session] of sessions.entries()) {
        const logits = m === 0 ? ref : await session.logits(input, 1, L);
        const rowNll = await rowsNll(logits, vocab, targets);
        for (let s = 0; s < L - 1; s++) nll[m] += rowNll[s]!;
        for (const [t, T] of temperatures.entries()) {
          const scaled = logitsAtTemperature(logits, T);
          const rowNllAt = await rowsNll(scaled, vocab, targets);
          const rowKlAt = await rowsKl(refLogProbs, scaled, vocab);
          for (let s = 0; s < L - 1; s++) {
            nllAt[m]![t] += rowNllAt[s]!;
            klAt[m]![t] += rowKlAt[s]!;
          }
        }
        if (temperatures.length > 0) {
          const logProbs = m === 0 ? refLogProbs : await logSoftmaxInPlace(Float32Array.from(logits), vocab);
          entropy[m] += entropySum(logProbs, L - 1, vocab);
        }
        if (m === 0) continue; // the dense model's KL to itself is 0
        const rowKl = await rowsKl(refLogProbs, logits, vocab);
        for (let s = 0; s < L - 1; s++) kl[m] += rowKl[s]!;
      }
    }
    const tokens = windows * (L - 1);
    console.log(`${name}${args.split ? ` ${args.split}` : ''} (${windows} windows of ${L}):`);
    for (const [m, path] of [dense, ...models].entries()) {
      const klText = m === 0 ? '' : `, KL to dense ${(kl[m]! / tokens).toFixed(4)}`;
      console.log(`  ${m === 0 ? 'dense' : path}: NLL ${(nll[m]! / tokens).toFixed(4)} (ppl ${Math.exp(nll[m]! / tokens).toFixed(1)})${klText}`);
      if (temperatures.length === 0) continue;
      const ppl = nllAt[m]!.map((x) => Math.exp(x / tokens));
      const klT = klAt[m]!.map((x) => x / tokens);
      const best = ppl.indexOf(Math.min(...ppl)), closest = klT.indexOf(Math.min(...klT));
      console.log(`    entropy ${(entropy[m]! / tokens).toFixed(3)}; ppl at T = ${temperatures.map((T, t) => `${T}: ${ppl[t]!.toFixed(1)}`).join(', ')}; lowest at T = ${temperatures[best]}`);
      console.log(`    KL to dense at T = ${temperatures.map((T, t) => `${T}: ${klT[t]!.toFixed(4)}`).join(', ')}; lowest at T = ${temperatures[closest]}`);
    }
  }
} finally {
  for (const s of sessions) await s.release();
}
