/**
 * One prune in its own process, for `npm run bench`: runs the pipeline (runPrune, silent progress) and prints one
 * JSON line {report, maxRssKb, estimateBytes} on stdout. maxRssKb is process.resourceUsage().maxRSS (the peak resident
 * set of this process, everything included: Node, onnxruntime, OpenBLAS buffers). Nothing is added to the CLI.
 *   node --import tsx bench/child-prune.ts '<json of ChildPruneArgs>'
 */
import { sparsitySpec, type Method, type PruneOptions } from '../src/pipeline/options.js';
import { createProgress } from '../src/pipeline/progress.js';
import { runPrune, type PruneReport } from '../src/pipeline/prune.js';

export interface ChildPruneArgs {
  model: string;
  method: Method;
  sparsity?: number;
  prunen?: number;
  prunem?: number;
  nsamples: number;
  seqlen: number;
  out: string;
  eval?: string[];
  calib?: string;
}

export interface ChildPruneResult {
  report: PruneReport;
  maxRssKb: number;
  /** the pipeline's own pre-run peak-memory estimate (report.memoryEstimate, src/pipeline/memory.ts), for comparison */
  estimateBytes: number;
}

const a = JSON.parse(process.argv[2] ?? '{}') as ChildPruneArgs;
const options: PruneOptions = {
  model: a.model,
  method: a.method,
  spec: sparsitySpec(a.sparsity, a.prunen, a.prunem),
  calib: a.calib ?? 'tinystories',
  nsamples: a.nsamples,
  seqlen: a.seqlen,
  seed: 0,
  layers: 'all',
  sparsellm: {},
  out: a.out,
  force: true,
  resume: false,
  eval: a.eval ?? [],
  quiet: true,
};
const report = await runPrune(options, createProgress(false));
const maxRssKb = process.resourceUsage().maxRSS;
const estimateBytes = report.memoryEstimate?.bytes ?? 0;
const result: ChildPruneResult = { report: { ...report, layers: report.layers.map((l) => ({ ...l })) }, maxRssKb, estimateBytes };
process.stdout.write(`${JSON.stringify(result)}\n`);
