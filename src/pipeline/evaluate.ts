// Perplexity of a written model on several datasets, with the reference protocol (windows) or per document;
// shared by `sparsellm eval` and `sparsellm prune --eval`.
import { evalDocuments, evalTokens, resolveDataset } from '../data/datasets.js';
import { documentPerplexity, windowPerplexity, type PerplexityResult } from '../data/perplexity.js';
import { loadTokenizer } from '../data/tokenizer.js';
import { UserError } from '../errors.js';
import { FullModelSession } from '../model/full-session.js';
import { defaultSeqlen } from './options.js';
import type { Progress } from './progress.js';

export type DatasetResult = PerplexityResult & { mode: 'windows' | 'per-document'; seqlen: number };
export type EvalResults = Record<string, DatasetResult>;

export interface EvaluateOptions {
  seqlen?: number;
  batch?: number;
  perDocument?: boolean;
  docSeparator?: string;
  dataDir?: string;
  maxWindows?: number;
  threads?: number;
  /** tokenizer folder or file, when the model folder has none */
  tokenizer?: string;
  progress?: Progress;
}

/** Reference window length: the model's positions, capped (defaultSeqlen); a requested one is checked against them. */
export function chooseSeqlen(requested: number | undefined, maxPositions: number | undefined): number {
  if (requested !== undefined) {
    if (!Number.isInteger(requested) || requested < 2) throw new UserError(`--seqlen must be an integer ≥ 2, got ${requested}`);
    if (maxPositions !== undefined && requested > maxPositions) {
      throw new UserError(`--seqlen ${requested} is longer than the model's ${maxPositions} positions`);
    }
    return requested;
  }
  return defaultSeqlen({ maxPositions });
}

export async function evaluateDatasets(onnxFile: string, names: string[], o: EvaluateOptions = {}): Promise<EvalResults> {
  if (names.length === 0) throw new UserError('no dataset to evaluate: name wikitext2, ptb, c4, tinystories or a .txt/.jsonl file');
  const defs = names.map((n) => resolveDataset(n, { docSeparator: o.docSeparator }));
  const tok = loadTokenizer(o.tokenizer ?? onnxFile);
  const session = await FullModelSession.open(onnxFile, { threads: o.threads });
  const seqlen = chooseSeqlen(o.seqlen, session.maxPositions);
  const model = (ids: BigInt64Array, b: number, l: number) => session.logits(ids, b, l);
  const results: EvalResults = {};
  try {
    for (const [k, def] of defs.entries()) {
      const name = names[k]!;
      const perDoc = o.perDocument || def.evalMode === 'per-document';
      let started = false;
      const onProgress = (done: number, total: number) => {
        if (!started) o.progress?.start(`eval ${name}`, total);
        started = true;
        o.progress?.tick(1);
      };
      const opts = { seqlen, batch: o.batch ?? 1, maxWindows: o.maxWindows, onProgress };
      try {
        if (perDoc) {
          const docs = (await evalDocuments(def, o.dataDir)).map((d) => tok.encode(d));
          if (!docs.some((d) => d.length >= 2)) throw new UserError(`${name} has no document with text to score`);
          results[name] = { ...(await documentPerplexity(docs, model, opts)), mode: 'per-document', seqlen };
        } else {
          const ids = await evalTokens(def, tok, seqlen, o.dataDir);
          if (ids.length < seqlen) throw new UserError(`${name} has ${ids.length} tokens, fewer than one window of ${seqlen}; use a shorter --seqlen or --per-document`);
          results[name] = { ...(await windowPerplexity(ids, model, opts)), mode: 'windows', seqlen };
        }
      } finally {
        o.progress?.stop();
      }
    }
  } finally {
    await session.release();
  }
  return results;
}

/** The `--json` shape of eval: {"perplexity": {...}, "tokens": {...}, "windows": {...}}. */
export function evalJson(results: EvalResults): { perplexity: Record<string, number>; tokens: Record<string, number>; windows: Record<string, number> } {
  const pick = (f: (r: DatasetResult) => number) => Object.fromEntries(Object.entries(results).map(([n, r]) => [n, f(r)]));
  return {
    perplexity: pick((r) => r.perplexity),
    tokens: pick((r) => (r.mode === 'windows' ? r.tokens : r.predictedTokens)),
    windows: pick((r) => r.windows),
  };
}
