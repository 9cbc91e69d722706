/**
 * Peak memory against depth (issue 16): OPT-shaped random models at d=512 (external data, fp32) with 4 and 24 blocks,
 * pruned with SparseGPT and with SparseLLM (2 epochs) at 50% on 8 × 256 tinystories tokens, each prune in its own process (bench/child-prune.ts,
 * process.resourceUsage().maxRSS). Prints the two peaks, the 20 extra blocks' linear weight bytes, and the growth as a
 * share of those bytes (target: at most 25%), writes them to bench/depth-results.json and rewrites the depth section
 * of bench/RESULTS.md (between its markers; `npm run bench` keeps that section).
 *   npm run bench -- --depth [--depth-rounds N]      (about 3 min a round on 2 cores; default 3 rounds)
 * One peak RSS varies from run to run by about ±40 MB at these sizes (when V8 collects the finished blocks'
 * arrays and how glibc's arenas fragment both depend on timing), which is 17 % of the extra blocks' weights; each
 * prune therefore runs N times, alternating the depths, and the growth is taken between the medians.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildPruneArgs, ChildPruneResult } from './child-prune.js';
import { DEPTH_BEGIN, DEPTH_END, median, writeResultsSection } from './depth-section.js';
import { generateOptModel } from './opt-model.js';

const here = dirname(fileURLToPath(import.meta.url));
const hidden = 512, depths = [4, 24], nsamples = 8, seqlen = 256;
const argv = process.argv.slice(2);
const rounds = argv.includes('--depth-rounds') ? Number(argv[argv.indexOf('--depth-rounds') + 1]) : 3;
if (!(Number.isInteger(rounds) && rounds >= 1)) throw new Error('--depth-rounds: a positive integer');
const modelsDir = join(tmpdir(), 'sparsellm-bench-models-v1');
mkdirSync(modelsDir, { recursive: true });
const outRoot = mkdtempSync(join(tmpdir(), 'sparsellm-bench-depth-'));

const methods = ['sparsegpt', 'sparsellm'] as const;
/** SparseLLM's epoch count does not change what it allocates; 2 keeps the run short */
const sparsellmEpochs = 2;
type Row = { method: (typeof methods)[number]; layers: number; linearBytes: number; maxRssMb: number; estimateMb: number; wallSeconds: number; round: number };
const rows: Row[] = [];
const load0 = loadavg().map((v) => v.toFixed(1));
try {
  for (let round = 0; round < rounds; round++) for (const method of methods) for (const layers of depths) {
    const g = generateOptModel(modelsDir, { hidden, layers });
    const args: ChildPruneArgs = { model: g.dir, method, sparsity: 0.5, nsamples, seqlen, out: join(outRoot, `l${layers}`), ...(method === 'sparsellm' ? { sparsellm: { epochs: sparsellmEpochs } } : {}) };
    const t = performance.now();
    const child = spawnSync(process.execPath, ['--import', 'tsx', join(here, 'child-prune.ts'), JSON.stringify(args)], { encoding: 'utf8', maxBuffer: 1 << 26 });
    if (child.status !== 0) throw new Error(`prune of ${g.dir} failed (exit ${child.status}):\n${child.stderr.slice(-2000)}`);
    const r = JSON.parse(child.stdout.trim().split('\n').pop()!) as ChildPruneResult;
    const row: Row = { method, layers, linearBytes: g.linearParams * 4, maxRssMb: r.maxRssKb / 1024, estimateMb: r.estimateBytes / 2 ** 20, wallSeconds: (performance.now() - t) / 1000, round };
    rows.push(row);
    console.log(`${method}, d=${hidden}, ${layers} blocks: peak RSS ${row.maxRssMb.toFixed(0)} MB (estimate ${row.estimateMb.toFixed(0)} MB), linear weights ${(row.linearBytes / 2 ** 20).toFixed(0)} MB, ${row.wallSeconds.toFixed(1)} s`);
  }
} finally {
  rmSync(outRoot, { recursive: true, force: true });
}
/** per method and depth: the median over the rounds (peak, estimate, wall) and every round's peak */
const summary = methods.flatMap((method) => depths.map((layers) => {
  const rs = rows.filter((r) => r.method === method && r.layers === layers);
  return { method, layers, linearBytes: rs[0]!.linearBytes, maxRssMb: median(rs.map((r) => r.maxRssMb)), peaksMb: rs.map((r) => r.maxRssMb),
    estimateMb: rs[0]!.estimateMb, wallSeconds: median(rs.map((r) => r.wallSeconds)) };
}));
const growth = methods.map((method) => {
  const [a, b] = summary.filter((r) => r.method === method) as [(typeof summary)[number], (typeof summary)[number]];
  const extraMb = (b.linearBytes - a.linearBytes) / 2 ** 20, growthMb = b.maxRssMb - a.maxRssMb;
  console.log(`${method}: growth ${growthMb.toFixed(0)} MB for ${extraMb.toFixed(0)} MB of extra linear weights: ${((100 * growthMb) / extraMb).toFixed(1)}% (target ≤ 25%)`);
  return { method, extraMb, growthMb, share: growthMb / extraMb };
});
writeFileSync(join(here, 'depth-results.json'), `${JSON.stringify({ date: new Date().toISOString(), hidden, nsamples, seqlen, sparsity: 0.5, sparsellmEpochs, rounds, rows, summary, growth }, null, 2)}\n`);

// Before streamed output (commit 330141a, the same script on this 2-core machine, 2026-12-04): replaced weights were held
// in memory until the export and the checkpoint wrote a float32 copy of each block.
const BEFORE = { rss4: 422, rss24: 669 };
const section = [
  DEPTH_BEGIN,
  '## Peak memory against depth (issue 16)',
  '',
  `OPT-shaped random models, d=${hidden}, fp32 external data, SparseGPT and SparseLLM (${sparsellmEpochs} epochs) 50%, ${nsamples} × ${seqlen} tinystories tokens, each prune in its own process (peak RSS = process.resourceUsage().maxRSS; wall times depend on other load on the machine and are not a speed figure; load average ${load0.join(' ')} at the start, ${loadavg().map((v) => v.toFixed(1)).join(' ')} at the end). Latest \`npm run bench -- --depth\`: ${new Date().toISOString().slice(0, 10)}.`,
  '',
  `${rounds} round(s), the depths alternating; the table gives the median peak and every round's peak.`,
  '',
  '| method | blocks | linear weights (MB) | peak RSS, median (MB) | each round (MB) | pre-run estimate (MB) | wall, median (s) |',
  '|---|---|---:|---:|---|---:|---:|',
  ...summary.map((r) => `| ${r.method} | ${r.layers} | ${(r.linearBytes / 2 ** 20).toFixed(0)} | ${r.maxRssMb.toFixed(0)} | ${r.peaksMb.map((v) => v.toFixed(0)).join(', ')} | ${r.estimateMb.toFixed(0)} | ${r.wallSeconds.toFixed(1)} |`),
  '',
  ...growth.map((g) => `${g.method}: 24 blocks use ${Math.abs(Math.round(g.growthMb))} MB ${g.growthMb < -0.5 ? 'less' : 'more'} than 4 blocks (medians), ${(100 * g.share).toFixed(1)}% of the 20 extra blocks' ${g.extraMb.toFixed(0)} MB of linear weights (target: at most 25%).`),
  '',
  `Before each finished block was streamed into the output's data file (commit 330141a), SparseGPT: ${BEFORE.rss4} MB and ${BEFORE.rss24} MB, +${BEFORE.rss24 - BEFORE.rss4} MB (${((100 * (BEFORE.rss24 - BEFORE.rss4)) / growth[0]!.extraMb).toFixed(0)}%).`,
  DEPTH_END,
].join('\n');
writeResultsSection(DEPTH_BEGIN, DEPTH_END, section);
console.log('wrote bench/depth-results.json and the depth section of bench/RESULTS.md');
