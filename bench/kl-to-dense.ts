// `npm run kl-to-dense -- DENSE MODEL...`: how far each pruned model is from the dense one on the test windows, next
// to its NLL there. Per dataset, over the first --max-windows windows of --seqlen tokens (the evaluation protocol of
// src/pipeline/evaluate.ts): the mean next-token NLL and the mean KL(dense ‖ model) of the next-token distributions,
// per predicted token. A diagnostic for the allocation table (README, issue 17: a profile closer to the dense model in
// KL need not have the lower perplexity); nothing here feeds a prune.
//
//   npm run kl-to-dense -- ../shared/models/tiny-wikitext-opt out/uniform-90 out/search-90
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { evalTokens, resolveDataset } from '../src/data/datasets.js';
import { logSoftmaxInPlace, rowsKl, rowsNll } from '../src/data/perplexity.js';
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
  },
});
const [dense, ...models] = positionals;
if (!dense || models.length === 0) throw new Error('usage: npm run kl-to-dense -- DENSE MODEL [MODEL...]');
const L = Number(args.seqlen), maxWindows = Number(args['max-windows']);
const tok = loadTokenizer(resolveModelFile(dense));
const sessions = [];
for (const m of [dense, ...models]) sessions.push(await FullModelSession.open(resolveModelFile(m), { threads: 2 }));
try {
  for (const name of args.dataset!.split(',')) {
    const ids = await evalTokens(resolveDataset(name), tok, L, args['data-dir']);
    const windows = Math.min(maxWindows, Math.floor(ids.length / L));
    const nll = sessions.map(() => 0), kl = sessions.map(() => 0);
    for (let w = 0; w < windows; w++) {
      const input = new BigInt64Array(L);
      for (let k = 0; k < L; k++) input[k] = BigInt(ids[w * L + k]!);
      const targets = new Int32Array(L).fill(-1);
      for (let s = 0; s < L - 1; s++) targets[s] = ids[w * L + s + 1]!;
      const ref = await sessions[0]!.logits(input, 1, L);
      const vocab = ref.length / L;
      const refLogProbs = await logSoftmaxInPlace(Float32Array.from(ref), vocab);
      for (const [m, session] of sessions.entries()) {
        const logits = m === 0 ? ref : await session.logits(input, 1, L);
        const rowNll = await rowsNll(logits, vocab, targets);
        for (let s = 0; s < L - 1; s++) nll[m] += rowNll[s]!;
        if (m === 0) continue; // the dense model's KL to itself is 0
        const rowKl = await rowsKl(refLogProbs, logits, vocab);
        for (let s = 0; s < L - 1; s++) kl[m] += rowKl[s]!;
      }
    }
    const tokens = windows * (L - 1);
    console.log(`${name} (${windows} windows of ${L}):`);
    for (const [m, path] of [dense, ...models].entries()) {
      const klText = m === 0 ? '' : `, KL to dense ${(kl[m]! / tokens).toFixed(4)}`;
      console.log(`  ${m === 0 ? 'dense' : path}: NLL ${(nll[m]! / tokens).toFixed(4)} (ppl ${Math.exp(nll[m]! / tokens).toFixed(1)})${klText}`);
    }
  }
} finally {
  for (const s of sessions) await s.release();
}
