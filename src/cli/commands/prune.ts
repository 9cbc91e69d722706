// `sparsellm prune`: parses the options and runs the pipeline (src/pipeline/prune.ts).
import { resolve } from 'node:path';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { parseByteSize } from '../../convert/export-safetensors.js';
import { UserError } from '../../errors.js';
import {
  ALLOCATIONS, DEFAULT_SPARSITY, METHODS, OWL_DEFAULTS, SEARCH_DEFAULTS, SPARSITY_BOUNDS, type AllocationSettings, PRUNE_DEFAULTS, SPARSEGPT_DEFAULTS, SPARSELLM_DEFAULTS, defaultNsamples, describeSpec, sparsitySpec,
  type Method, type PruneOptions,
} from '../../pipeline/options.js';
import { llamaFamily } from '../../model/families/llama.js';
import { optFamily } from '../../model/families/opt.js';
import { interruption, runPrune, type PruneReport } from '../../pipeline/prune.js';
import { createProgress, type Progress } from '../../pipeline/progress.js';
import { validatePruneArgs } from '../validate.js';
import { modelSource, modelSourceOptions } from '../hub-options.js';

/** The prune command's parsed arguments; the allocation options are the pipeline's own AllocationSettings. */
interface PruneArgs extends AllocationSettings {
  model: string;
  revision?: string;
  modelFile?: string;
  method: Method;
  sparsity?: number;
  prunen?: number;
  prunem?: number;
  calib: string;
  nsamples?: number;
  seqlen?: number;
  seed: number;
  layers: string;
  alpha?: number;
  beta?: number;
  gamma?: number;
  epochs?: number;
  fc2Update?: 'gd' | 'lstsq';
  referenceQuirks: boolean;
  outputRefit: boolean;
  keepBest: boolean;
  percdamp: number;
  blocksize: number;
  out: string;
  force: boolean;
  resume: boolean;
  eval?: string;
  evalSeqlen?: number;
  dataDir?: string;
  tokenizer?: string;
  docSeparator?: string;
  maxMemory?: number;
  offload?: string;
  device: 'cuda' | 'cpu' | 'auto';
  format: 'onnx' | 'safetensors' | 'both';
  maxShardSize?: string;
  json: boolean;
  quiet: boolean;
}

function positive(name: string, v: number | undefined, integer = true): void {
  if (v === undefined) return;
  if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) throw new UserError(`--${name} must be a positive ${integer ? 'integer' : 'number'}, got ${v}`);
}

async function handler(argv: ArgumentsCamelCase<PruneArgs>): Promise<void> {
  validatePruneArgs(argv);
  const spec = sparsitySpec(argv.sparsity, argv.prunen, argv.prunem);
  if (argv.nsamples !== undefined && (!Number.isInteger(argv.nsamples) || argv.nsamples < 1)) throw new UserError(`--nsamples must be a positive integer, got ${argv.nsamples}`);
  positive('seqlen', argv.seqlen);
  positive('epochs', argv.epochs);
  positive('blocksize', argv.blocksize);
  for (const k of ['alpha', 'beta', 'gamma', 'percdamp'] as const) positive(k, argv[k], false);
  if ('prunem' in spec && (argv.method === 'sparsegpt' || argv.method === 'sparsellm') && argv.blocksize % spec.prunem !== 0) throw new UserError(`--prunem ${spec.prunem} must divide SparseGPT's --blocksize ${argv.blocksize}: use M = 2, 4, 8, ... or pass a --blocksize that is a multiple of ${spec.prunem}`);

  const options: PruneOptions = {
    model: argv.model,
    modelSource: modelSource(argv),
    method: argv.method,
    spec,
    calib: argv.calib,
    nsamples: argv.nsamples ?? defaultNsamples(argv.method),
    seqlen: argv.seqlen,
    seed: argv.seed,
    docSeparator: argv.docSeparator,
    layers: argv.layers,
    percdamp: argv.percdamp,
    blocksize: argv.blocksize,
    sparsellm: { alpha: argv.alpha, beta: argv.beta, gamma: argv.gamma, epochs: argv.epochs, fc2Update: argv.fc2Update, referenceQuirks: argv.referenceQuirks, outputRefit: argv.outputRefit, keepBest: argv.keepBest },
    out: argv.out,
    force: argv.force,
    resume: argv.resume,
    eval: (argv.eval ?? '').split(',').map((s) => s.trim()).filter(Boolean),
    evalSeqlen: argv.evalSeqlen,
    dataDir: argv.dataDir,
    tokenizer: argv.tokenizer,
    quiet: argv.quiet || argv.json,
    maxMemoryGb: argv.maxMemory,
    offload: argv.offload,
    device: argv.device,
    format: argv.format,
    maxShardBytes: argv.maxShardSize === undefined ? undefined : parseByteSize(String(argv.maxShardSize)),
    allocation: { allocation: argv.allocation, owlM: argv.owlM, owlLambda: argv.owlLambda, searchDeviation: argv.searchDeviation, searchHeldOut: argv.searchHeldOut, searchRounds: argv.searchRounds, searchGuard: argv.searchGuard, searchMetric: argv.searchMetric, searchData: argv.searchData, sparsityProfile: argv.sparsityProfile },
  };
  // The header goes out with the first progress output, i.e. after runPrune's checks: a bad input prints one line.
  const bars = createProgress(!options.quiet);
  let header: string | undefined = `sparsellm prune: ${options.method}, ${argv.sparsityProfile !== undefined ? `sparsity profile ${argv.sparsityProfile}` : describeSpec(spec)}${argv.allocation && argv.allocation !== 'uniform' ? `, allocation ${argv.allocation}` : ''}, ${options.nsamples} × ${options.seqlen ?? 'default'} tokens of ${options.calib}`;
  const flushHeader = () => {
    if (header !== undefined) bars.log(header);
    header = undefined;
  };
  const progress: Progress = {
    start: (label, total) => (flushHeader(), bars.start(label, total)),
    tick: (n, detail) => bars.tick(n, detail),
    stop: () => bars.stop(),
    log: (line) => (flushHeader(), bars.log(line)),
  };

  const onSigint = () => {
    if (interruption.requested) {
      process.stderr.write(`sparsellm: interrupted: finished blocks are kept in ${resolve(argv.out)}.partial; rerun the same command with --resume to continue\n`);
      process.exit(130);
    }
    interruption.requested = true;
    // on a terminal, say at once that Ctrl-C was seen; the final message (one line) says how to resume
    if (process.stderr.isTTY) process.stderr.write('\nsparsellm: stopping after the current step (Ctrl-C again to quit at once)\n');
  };
  process.on('SIGINT', onSigint);
  let report: PruneReport;
  try {
    report = await runPrune(options, progress);
  } finally {
    process.off('SIGINT', onSigint);
    progress.stop();
  }
  if (argv.json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return;
  }
  printSummary(report);
}

function printSummary(r: PruneReport): void {
  const lines = [
    `pruned ${r.sparsity.prunedLayers} linear layers of ${r.model} with ${r.method}: ${(r.sparsity.overall * 100).toFixed(2)}% zeros (target ${(r.sparsity.target * 100).toFixed(1)}%)`,
    `output: ${r.output} (report: sparsellm-report.json beside it)`,
    `time: ${r.timings.total!.toFixed(1)} s (calibration ${r.timings.calibration!.toFixed(1)}, statistics ${r.timings.statistics!.toFixed(1)}, solve ${r.timings.solve!.toFixed(1)}, re-run ${r.timings.rerun!.toFixed(1)}, export ${r.timings.export!.toFixed(1)}, eval ${r.timings.eval!.toFixed(1)})`,
  ];
  for (const [name, p] of Object.entries(r.perplexity ?? {})) lines.push(`perplexity ${name}: ${p.perplexity.toFixed(3)} (${p.mode}, ${p.windows} windows)`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

export const pruneCommand: CommandModule<object, PruneArgs> = {
  command: 'prune',
  describe: 'Prune a model with magnitude, Wanda, SparseGPT or SparseLLM and export it as ONNX',
  builder: (y: Argv) =>
    y
      .option('model', { type: 'string', demandOption: true, describe: 'model folder, .onnx file, known name (opt-125m, stories260K, ...) or hub id' })
      .options(modelSourceOptions)
      .option('method', { choices: METHODS, default: PRUNE_DEFAULTS.method, describe: 'pruning method' })
      .option('sparsity', { type: 'number', describe: `fraction of weights to prune in each pruned layer, in [0, 1) (default ${DEFAULT_SPARSITY})` })
      .option('allocation', { choices: ALLOCATIONS, describe: `how the sparsity is spread over the layers: uniform (default), owl (outlier-weighted, per block) or search (measured held-out loss); total stays --sparsity` })
      .option('owl-m', { type: 'number', describe: `OWL: outlier threshold, × the block's mean Wanda score (default ${OWL_DEFAULTS.m})` })
      .option('owl-lambda', { type: 'number', describe: `OWL: block sparsities spread over target ± λ (default ${OWL_DEFAULTS.lambda})` })
      .option('search-deviation', { type: 'number', describe: `search: largest deviation of a unit's sparsity from the target (default ${SEARCH_DEFAULTS.maxDeviation})` })
      .option('search-held-out', { type: 'number', describe: `search: held-out calibration windows for its loss probes (default ${SEARCH_DEFAULTS.heldOut})` })
      .option('search-rounds', { type: 'number', describe: `search: probe passes, the first around uniform, each next around the last choice; the measured best profile wins (default ${SEARCH_DEFAULTS.rounds})` })
      .option('search-guard', { type: 'number', describe: `search: a profile other than uniform must beat it on the held-out windows by this many standard errors of the paired per-window gain (default ${SEARCH_DEFAULTS.guard}; 0: the lowest mean wins)` })
      .option('search-metric', { choices: ['kl', 'nll'] as const, describe: `search: probe score, KL to the dense model's next-token distributions or the held-out text's NLL (default ${SEARCH_DEFAULTS.metric})` })
      .option('search-data', { type: 'string', describe: 'search: the text its held-out probe windows come from, a --calib dataset name or file (default: the calibration text, windows after the prune\'s own)' })
      .option('sparsity-profile', { type: 'string', describe: `explicit per-block / per-matrix targets in [${SPARSITY_BOUNDS.min}, ${SPARSITY_BOUNDS.max}]: a profile JSON, or a sparsellm-report.json to replay its allocation` })
      .option('prunen', { type: 'number', describe: 'N:M sparsity: weights PRUNED in each group of --prunem (2 with --prunem 4 = 2:4)' })
      .option('prunem', { type: 'number', describe: 'N:M sparsity: group size M' })
      .option('calib', { type: 'string', default: PRUNE_DEFAULTS.calib, describe: 'calibration data: c4, wikitext2, ptb, tinystories or a .txt/.jsonl file' })
      .option('nsamples', { type: 'number', describe: `calibration sequences (default ${defaultNsamples('sparsegpt')}; ${defaultNsamples('sparsellm')} for sparsellm)` })
      .option('seqlen', { type: 'number', describe: `calibration sequence length (default: the model's positions, at most ${PRUNE_DEFAULTS.maxSeqlen})` })
      .option('seed', { type: 'number', default: PRUNE_DEFAULTS.seed, describe: 'seed of the calibration sampling (Python random semantics)' })
      .option('layers', { type: 'string', default: PRUNE_DEFAULTS.layers, describe: 'blocks to prune: all, first-half (the SparseLLM paper), last-half, or 0-11 / 0,2,5-7' })
      .option('alpha', { type: 'number', describe: `SparseLLM α (default ${optFamily.sparsellm.alpha} OPT, ${llamaFamily.sparsellm.alpha} LLaMA, as the reference)` })
      .option('beta', { type: 'number', describe: `SparseLLM β (default ${optFamily.sparsellm.beta} OPT, ${llamaFamily.sparsellm.beta} LLaMA)` })
      .option('gamma', { type: 'number', describe: `SparseLLM γ (default ${optFamily.sparsellm.gamma} OPT, ${llamaFamily.sparsellm.gamma} LLaMA)` })
      .option('epochs', { type: 'number', describe: `SparseLLM alternating epochs (default ${SPARSELLM_DEFAULTS.epochs})` })
      .option('fc2-update', { choices: ['gd', 'lstsq'] as const, describe: `SparseLLM OPT fc2 refit: gd (reference) or lstsq (closed form); default ${SPARSELLM_DEFAULTS.fc2Update}` })
      .option('reference-quirks', { type: 'boolean', default: SPARSELLM_DEFAULTS.referenceQuirks, describe: 'SparseLLM: reproduce the reference\'s fp16 casts and accumulated damping' })
      .option('output-refit', { type: 'boolean', default: SPARSELLM_DEFAULTS.outputRefit, describe: 'SparseLLM: refit fc2/down on the real sparse activations each epoch (--no-output-refit = reference)' })
      .option('keep-best', { type: 'boolean', default: SPARSELLM_DEFAULTS.keepBest, describe: 'SparseLLM: keep the epoch with the lowest FFN output error (--no-keep-best = reference: last epoch)' })
      .option('percdamp', { type: 'number', default: SPARSEGPT_DEFAULTS.percdamp, describe: 'SparseGPT damping, fraction of mean(diag H)' })
      .option('blocksize', { type: 'number', default: SPARSEGPT_DEFAULTS.blocksize, describe: 'SparseGPT lazy-update block size' })
      .option('out', { type: 'string', demandOption: true, describe: 'output folder (must not exist unless --force / --resume)' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing output folder' })
      .option('resume', { type: 'boolean', default: false, describe: 'continue an interrupted run from its last finished block' })
      .option('eval', { type: 'string', describe: 'evaluate the pruned model: wikitext2, ptb, c4, tinystories or a file (comma-separated)' })
      .option('eval-seqlen', { type: 'number', describe: `evaluation window (default: the model's positions, at most ${PRUNE_DEFAULTS.maxSeqlen})` })
      .option('tokenizer', { type: 'string', describe: 'tokenizer folder or file, when the model folder has none' })
      .option('data-dir', { type: 'string', describe: 'folder with dataset files (also $SPARSELLM_DATA)' })
      .option('doc-separator', { type: 'string', describe: 'document separator of your own text file (default <|endoftext|>)' })
      .option('max-memory', { type: 'number', describe: 'memory budget in GB for the pre-run estimate (default: available memory)' })
      .option('offload', { type: 'string', describe: 'stream the calibration activations between blocks through files in a fresh folder under DIR (removed at the end) instead of RAM' })
      .option('device', { choices: ['auto', 'cpu', 'cuda'] as const, default: PRUNE_DEFAULTS.device, describe: 'solver device: auto takes CUDA when a CUDA build finds a GPU (docs/CUDA.md)' })
      .option('format', { choices: ['onnx', 'safetensors', 'both'] as const, default: PRUNE_DEFAULTS.format, describe: 'output: ONNX (input layout), a Hugging Face safetensors checkpoint (transformers names, input dtype), or both' })
      .option('max-shard-size', { type: 'string', describe: 'safetensors shard size limit, e.g. 5GB (default, as the hub), 500MB' })
      .option('json', { type: 'boolean', default: false, describe: 'print the report as one JSON object on stdout' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress bars' }) as unknown as Argv<PruneArgs>,
  handler,
};
