/**
 * One prune in its own process, for `npm run bench`: runs the pipeline (runPrune, silent progress) and prints one
 * JSON line {report, maxRssKb, estimateBytes} on stdout. maxRssKb is process.resourceUsage().maxRSS (the peak resident
 * set of this process, everything included: Node, onnxruntime, OpenBLAS buffers). Nothing is added to the CLI.
 *   node --import tsx bench/child-prune.ts '<json of ChildPruneArgs>'
 */
import { sparsitySpec, type AllocationSettings, type Method, type PruneOptions, type SparseLlmSettings } from '../src/pipeline/options.js';
import { createProgress, type Progress } from '../src/pipeline/progress.js';
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
  /** --layers (default 'all') */
  layers?: string;
  /** SparseLLM settings (e.g. { epochs: 2 }); defaults otherwise */
  sparsellm?: SparseLlmSettings;
  /** --allocation and its settings (bench/allocation.ts) */
  allocation?: AllocationSettings;
  /** score only the first N evaluation windows per dataset */
  evalMaxWindows?: number;
  /** sequences per onnxruntime block run (PruneOptions.forwardBatch; default: the pipeline's choice) */
  forwardBatch?: number;
}

export interface ChildPruneResult {
  report: PruneReport;
  maxRssKb: number;
  /** the pipeline's own pre-run peak-memory estimate (report.memoryEstimate, src/pipeline/memory.ts), for comparison */
  estimateBytes: number;
  /** per phase (calibration, statistics, solve, rerun, export): the largest resident set sampled during it, MB */
  phaseRssMb: Record<string, number>;
  /** user + system CPU seconds of the whole child process */
  cpuSeconds: number;
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
  layers: a.layers ?? 'all',
  sparsellm: a.sparsellm ?? {},
  out: a.out,
  force: true,
  resume: false,
  eval: a.eval ?? [],
  evalMaxWindows: a.evalMaxWindows,
  allocation: a.allocation,
  forwardBatch: a.forwardBatch,
  quiet: true,
};
// Resident set sampled at every progress call (and every 200 ms), the largest per phase. The phase is set by the
// progress labels: 'calibration', 'block i statistics', 'block i forward' (re-run); between a block's statistics and
// its re-run the solver runs; after the last block comes the export.
const phaseRssMb: Record<string, number> = {};
let phase = 'load';
const sample = () => {
  const mb = process.memoryUsage.rss() / 2 ** 20;
  phaseRssMb[phase] = Math.max(phaseRssMb[phase] ?? 0, mb);
};
const silent = createProgress(false);
const progress: Progress = {
  start: (label, total) => {
    sample();
    phase = label === 'calibration' ? 'calibration' : label.endsWith('statistics') ? 'statistics' : label.endsWith('forward') ? 'rerun' : phase;
    silent.start(label, total);
  },
  tick: (n, detail) => (sample(), silent.tick(n, detail)),
  stop: () => {
    sample();
    phase = phase === 'statistics' ? 'solve' : phase === 'rerun' ? 'export' : phase;
    silent.stop();
  },
  log: (line) => (sample(), silent.log(line)),
};
const timer = setInterval(sample, 200);
const report = await runPrune(options, progress);
clearInterval(timer);
sample();
const maxRssKb = process.resourceUsage().maxRSS;
const estimateBytes = report.memoryEstimate?.bytes ?? 0;
const cpu = process.cpuUsage();
const result: ChildPruneResult = { report: { ...report, layers: report.layers.map((l) => ({ ...l })) }, maxRssKb, estimateBytes, phaseRssMb, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
process.stdout.write(`${JSON.stringify(result)}\n`);
