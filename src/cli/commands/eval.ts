// `sparsellm eval`: perplexity of an ONNX model on WikiText-2, PTB, C4, TinyStories or the user's own file,
// with the reference protocol (ALGORITHMS.md §0.4) or per document (--per-document).
import { SingleBar } from 'cli-progress';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { evalDocuments, evalTokens, resolveDataset } from '../../data/datasets.js';
import { documentPerplexity, windowPerplexity, type PerplexityResult } from '../../data/perplexity.js';
import { loadTokenizer } from '../../data/tokenizer.js';
import { UserError } from '../../errors.js';
import { resolveModelArgument } from '../../hub/registry.js';
import { FullModelSession, resolveOnnxPath } from '../../model/full-session.js';

interface EvalArgs {
  model: string;
  dataset: string;
  seqlen?: number;
  batch: number;
  perDocument: boolean;
  docSeparator?: string;
  dataDir?: string;
  maxWindows?: number;
  threads?: number;
  json: boolean;
  quiet: boolean;
}

/** Reference window length: the model's positions (OPT: max_position_embeddings), capped at 2048. */
export function chooseSeqlen(requested: number | undefined, maxPositions: number | undefined): number {
  if (requested !== undefined) {
    if (!Number.isInteger(requested) || requested < 2) throw new UserError(`--seqlen must be an integer ≥ 2, got ${requested}`);
    if (maxPositions !== undefined && requested > maxPositions) {
      throw new UserError(`--seqlen ${requested} is longer than the model's ${maxPositions} positions`);
    }
    return requested;
  }
  return Math.min(maxPositions ?? 2048, 2048);
}

function progressBar(label: string, quiet: boolean): { update(done: number, total: number): void; stop(): void } {
  if (quiet) return { update() {}, stop() {} };
  const bar = new SingleBar({
    format: `${label} [{bar}] {value}/{total} batches | ETA {eta_formatted}`,
    stream: process.stderr,
    hideCursor: true,
    clearOnComplete: true,
  });
  let started = false;
  return {
    update(done, total) {
      if (!started) { bar.start(total, 0); started = true; }
      bar.update(done);
    },
    stop() { if (started) bar.stop(); },
  };
}

async function handler(argv: ArgumentsCamelCase<EvalArgs>): Promise<void> {
  if (!Number.isInteger(argv.batch) || argv.batch < 1) throw new UserError(`--batch must be a positive integer, got ${argv.batch}`);
  if (argv.maxWindows !== undefined && (!Number.isInteger(argv.maxWindows) || argv.maxWindows < 1)) {
    throw new UserError(`--max-windows must be a positive integer, got ${argv.maxWindows}`);
  }
  const names = argv.dataset.split(',').map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new UserError('--dataset is empty: name wikitext2, ptb, c4, tinystories or a .txt/.jsonl file');
  const defs = names.map((n) => resolveDataset(n, { docSeparator: argv.docSeparator }));
  const onnx = resolveOnnxPath(await resolveModelArgument(argv.model));
  const tok = loadTokenizer(onnx);
  const session = await FullModelSession.open(onnx, { threads: argv.threads });
  const seqlen = chooseSeqlen(argv.seqlen, session.maxPositions);
  const model = (ids: BigInt64Array, b: number, l: number) => session.logits(ids, b, l);
  const results: Record<string, PerplexityResult & { mode: string }> = {};
  try {
    for (const [k, def] of defs.entries()) {
      const name = names[k]!;
      const perDoc = argv.perDocument || def.evalMode === 'per-document';
      const bar = progressBar(name, argv.quiet);
      const opts = { seqlen, batch: argv.batch, maxWindows: argv.maxWindows, onProgress: bar.update };
      try {
        if (perDoc) {
          const docs = (await evalDocuments(def, argv.dataDir)).map((d) => tok.encode(d));
          if (!docs.some((d) => d.length >= 2)) throw new UserError(`${name} has no document with text to score`);
          results[name] = { ...(await documentPerplexity(docs, model, opts)), mode: 'per-document' };
        } else {
          const ids = await evalTokens(def, tok, seqlen, argv.dataDir);
          if (ids.length < seqlen) throw new UserError(`${name} has ${ids.length} tokens, fewer than one window of ${seqlen}; use a shorter --seqlen or --per-document`);
          results[name] = { ...(await windowPerplexity(ids, model, opts)), mode: 'windows' };
        }
      } finally {
        bar.stop();
      }
    }
  } finally {
    await session.release();
  }
  if (argv.json) {
    const pick = (f: (r: PerplexityResult & { mode: string }) => number) => Object.fromEntries(Object.entries(results).map(([n, r]) => [n, f(r)]));
    const out = { perplexity: pick((r) => r.perplexity), tokens: pick((r) => r.mode === 'windows' ? r.tokens : r.predictedTokens), windows: pick((r) => r.windows) };
    process.stdout.write(`${JSON.stringify(out)}\n`);
    return;
  }
  printTable(results, seqlen);
}

function printTable(results: Record<string, PerplexityResult & { mode: string }>, seqlen: number): void {
  const rows = [['dataset', 'mode', 'seqlen', 'windows', 'tokens', 'perplexity', 'time']];
  for (const [name, r] of Object.entries(results)) {
    rows.push([
      name, r.mode, String(seqlen), String(r.windows), String(r.mode === 'windows' ? r.tokens : r.predictedTokens),
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
      .option('dataset', { type: 'string', default: 'wikitext2', describe: 'comma-separated: wikitext2, ptb, c4, tinystories, or a .txt / .jsonl file' })
      .option('seqlen', { type: 'number', describe: 'window length (default: the model\'s positions, at most 2048)' })
      .option('batch', { type: 'number', default: 1, describe: 'windows per model run' })
      .option('per-document', { type: 'boolean', default: false, describe: 'score each document on its own with BOS (own files; default for tinystories)' })
      .option('doc-separator', { type: 'string', describe: 'document separator for --per-document (default <|endoftext|>)' })
      .option('data-dir', { type: 'string', describe: 'folder with the dataset files (also $SPARSELLM_DATA)' })
      .option('max-windows', { type: 'number', describe: 'evaluate only the first N windows (quick look; not the reference number)' })
      .option('threads', { type: 'number', describe: 'onnxruntime intra-op threads' })
      .option('json', { type: 'boolean', default: false, describe: 'print {"perplexity": {...}, "tokens": {...}, "windows": {...}} on stdout' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress bar' }) as unknown as Argv<EvalArgs>,
  handler,
};
