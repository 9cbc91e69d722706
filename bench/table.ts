// `npm run results`: the README's results table, measured by the tool itself on the bundled stories260K:
// dense, then magnitude / Wanda / SparseGPT / SparseLLM at 50 %, 70 %, 90 % and 2:4, perplexity on the
// TinyStories sample (per document) and on WikiText-2 test (512-token windows, the whole set).
// Each row is the CLI command printed above the table, run in-process. Writes bench/results-table.{json,md}.
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { evaluateDatasets } from '../src/pipeline/evaluate.js';
import type { Method, SparsitySpec } from '../src/pipeline/options.js';
import { createProgress } from '../src/pipeline/progress.js';
import { runPrune } from '../src/pipeline/prune.js';

const root = resolve(import.meta.dirname, '..');
const model = join(root, 'models', 'stories260K');
const evals = ['tinystories', 'wikitext2'];
const settings: [string, SparsitySpec][] = [['50%', { sparsity: 0.5 }], ['70%', { sparsity: 0.7 }], ['90%', { sparsity: 0.9 }], ['2:4', { prunen: 2, prunem: 4 }]];
const methods: Method[] = ['magnitude', 'wanda', 'sparsegpt', 'sparsellm'];
const command = 'sparsellm prune --model stories260K --method METHOD --sparsity S (or --prunen 2 --prunem 4) --calib tinystories --nsamples 32 --seqlen 128 --eval tinystories,wikitext2 --eval-seqlen 512';

const fmt = (x: number) => (x >= 1e4 ? x.toExponential(2) : x.toFixed(2));
const dense = await evaluateDatasets(join(model, 'onnx', 'model.onnx'), evals, { seqlen: 512 });
const rows: { method: string; setting: string; ppl: Record<string, number>; seconds: number }[] = [];
rows.push({ method: 'dense', setting: '0%', ppl: Object.fromEntries(evals.map((e) => [e, dense[e]!.perplexity])), seconds: 0 });
for (const [label, spec] of settings) {
  for (const method of methods) {
    const r = await runPrune({
      model, method, spec, calib: 'tinystories', nsamples: 32, seqlen: 128, seed: 0, layers: 'all',
      out: join(tmpdir(), `sparsellm-table-${process.pid}`), force: true, resume: false, eval: evals, evalSeqlen: 512, quiet: true,
    }, createProgress(false));
    rows.push({ method, setting: label, ppl: Object.fromEntries(evals.map((e) => [e, r.perplexity![e]!.perplexity])), seconds: r.timings.total! - r.timings.eval! });
    console.log(label, method.padEnd(10), evals.map((e) => `${e} ${fmt(rows.at(-1)!.ppl[e]!)}`).join('  '));
  }
}
const md = [
  `Measured ${new Date().toISOString().slice(0, 10)} on 2 CPU cores with \`npm run results\`; each row is \`${command}\`.`,
  `TinyStories: the 5-story sample scored per document (${dense.tinystories!.predictedTokens} predicted tokens); WikiText-2: raw test, ${dense.wikitext2!.windows} windows of 512 tokens.`,
  '',
  '| method | sparsity | TinyStories ppl | WikiText-2 ppl | prune s |',
  '|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.method} | ${r.setting} | ${fmt(r.ppl.tinystories!)} | ${fmt(r.ppl.wikitext2!)} | ${r.method === 'dense' ? '-' : r.seconds.toFixed(1)} |`),
].join('\n');
writeFileSync(join(root, 'bench', 'results-table.json'), `${JSON.stringify(rows, null, 2)}\n`);
writeFileSync(join(root, 'bench', 'results-table.md'), `${md}\n`);
console.log(md);
