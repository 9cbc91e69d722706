// `sparsellm eval`: perplexity of an ONNX model on WikiText-2, PTB, C4, TinyStories or the user's own file,
// with the reference protocol (ALGORITHMS.md §0.4) or per document (--per-document).
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { UserError } from '../../errors.js';
import { resolveModelArgument } from '../../hub/registry.js';
import { resolveModelFile } from '../../model/model-path.js';
import { evaluateDatasets, evalJson, type EvalResults } from '../../pipeline/evaluate.js';
import { createProgress } from '../../pipeline/progress.js';
import { PRUNE_DEFAULTS } from '../../pipeline/options.js';
import { validateEvalArgs } from '../validate.js';
import { modelSource, modelSourceOptions } from '../hub-options.js';

interface EvalArgs {
  model: string;
  revision?: string;
  modelFile?: string;
  dataset: string;
  seqlen?: number;
  batch: number;
  perDocument: boolean;
  docSeparator?: string;
  dataDir?: string;
  tokenizer?: string;
  maxWindows?: number;
  threads?: number;
  json: boolean;
  quiet: boolean;
}

async function handler(argv: ArgumentsCamelCase<EvalArgs>): Promise<void> {
  validateEvalArgs(argv);
  if (!Number.isInteger(argv.batch) || argv.batch < 1) throw new UserError(`--batch must be a positive integer, got ${argv.batch}`);
  if (argv.maxWindows !== undefined && (!Number.isInteger(argv.maxWindows) || argv.maxWindows < 1)) {
    throw new UserError(`--max-windows must be a positive integer, got ${argv.maxWindows}`);
  }
  const names = argv.dataset.split(',').map((s) => s.trim()).filter(Boolean);
  const progress = createProgress(!argv.quiet && !argv.json);
  const onnx = resolveModelFile(await resolveModelArgument(argv.model, { ...modelSource(argv), progress }));
  const results = await evaluateDatasets(onnx, names, {
    seqlen: argv.seqlen, batch: argv.batch, perDocument: argv.perDocument, docSeparator: argv.docSeparator,
    dataDir: argv.dataDir, tokenizer: argv.tokenizer, maxWindows: argv.maxWindows, threads: argv.threads, progress,
  });
  if (argv.json) {
    process.stdout.write(`${JSON.stringify(evalJson(results))}\n`);
    return;
  }
  printTable(results);
}

function printTable(results: EvalResults): void {
  const rows = [['dataset', 'mode', 'seqlen', 'windows', 'tokens', 'perplexity', 'time']];
  for (const [name, r] of Object.entries(results)) {
    rows.push([
      name, r.mode, String(r.seqlen), String(r.windows), String(r.mode === 'windows' ? r.tokens : r.predictedTokens),
      r.perplexity < 1e5 ? r.perplexity.toFixed(3) : r.perplexity.toExponential(4), `${r.seconds.toFixed(1)} s`,
    ]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) process.stdout.write(`${r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ')}\n`);
}

export const evalCommand: CommandModule<object, EvalArgs> = {
  command: 'eval',
  describe: 'Perplexity of a model on WikiText-2, PTB, C4, TinyStories or your own text',
  builder: (y: Argv) =>
    y
      .option('model', { type: 'string', demandOption: true, describe: 'model folder (onnx/model.onnx), .onnx file, known name or hub id' })
      .options(modelSourceOptions)
      .option('dataset', { type: 'string', default: 'wikitext2', describe: 'comma-separated: wikitext2, ptb, c4, tinystories, or a .txt / .jsonl file' })
      .option('seqlen', { type: 'number', describe: `window length (default: the model's positions, at most ${PRUNE_DEFAULTS.maxSeqlen})` })
      .option('batch', { type: 'number', default: 1, describe: 'windows per model run' })
      .option('per-document', { type: 'boolean', default: false, describe: 'score each document on its own with BOS (own files; default for tinystories)' })
      .option('doc-separator', { type: 'string', describe: 'document separator for --per-document (default <|endoftext|>)' })
      .option('tokenizer', { type: 'string', describe: 'tokenizer folder or file, when the model folder has none' })
      .option('data-dir', { type: 'string', describe: 'folder with the dataset files (also $SPARSELLM_DATA)' })
      .option('max-windows', { type: 'number', describe: 'evaluate only the first N windows (quick look; not the reference number)' })
      .option('threads', { type: 'number', describe: 'onnxruntime intra-op threads' })
      .option('json', { type: 'boolean', default: false, describe: 'print {"perplexity": {...}, "tokens": {...}, "windows": {...}} on stdout' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress bar' }) as unknown as Argv<EvalArgs>,
  handler,
};
