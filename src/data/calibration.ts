/**
 * Calibration windows with the reference semantics (ALGORITHMS.md §0.2/§0.3), produced one at a time:
 *   `random.seed(seed)` once, then per sample
 *   - text streams (wikitext2, ptb, tinystories, own files): the split tokenized as one string (one BOS),
 *     `i = randint(0, ntok - seqlen - 1)`, window `ids[i : i + seqlen]`;
 *   - document sets (C4 train): `j = randint(0, ndocs - 1)`, tokenize document j alone (with its BOS), redraw
 *     until it has strictly more than seqlen tokens (rejected draws consume random numbers too), then
 *     `i = randint(0, ntok - seqlen - 1)` inside that document.
 * Windows are BigInt64Array(seqlen), ready to feed as int64 `input_ids`.
 */
import { UserError } from '../errors.js';
import { calibrationTextWarning } from './calibration-check.js';
import { resolveDataset, splitFile, splitText, type DatasetDef } from './datasets.js';
import { openDocuments, type DocumentStore } from './jsonl.js';
import { PythonRandom } from './python-random.js';
import type { TextTokenizer } from './tokenizer.js';

export interface CalibrationOptions {
  nsamples: number;
  seqlen: number;
  /** `random.seed(seed)`; the references default to 0. */
  seed?: number;
  dataDir?: string;
  docSeparator?: string;
}

/** A prepared calibration source: the token stream or the document store, plus its size. */
export interface CalibrationSource {
  name: string;
  /** Tokens of the stream (text sets); undefined for document sets. */
  tokenCount?: number;
  /** Documents available (document sets). */
  documentCount?: number;
  windows(nsamples: number, seqlen: number, seed?: number): AsyncGenerator<BigInt64Array>;
  close(): void;
  /** Why the text does not look like natural text (calibration-check.ts), for a one-line warning. */
  warning?: string;
}

const tokenCache = new Map<string, Int32Array>();

export async function prepareCalibration(
  dataset: string | DatasetDef, tok: TextTokenizer, opts: { dataDir?: string; docSeparator?: string } = {},
): Promise<CalibrationSource> {
  const def = typeof dataset === 'string' ? resolveDataset(dataset, { docSeparator: opts.docSeparator }) : dataset;
  const split = def.splits[def.calibrationSplit];
  if (split?.mode === 'documents') {
    const store = await openDocuments(await splitFile(def, def.calibrationSplit, opts.dataDir));
    return documentSource(def.name, store, tok);
  }
  // Tokenizing a split (PTB train: 5 MB) takes seconds; repeated runs in one process (sweeps, benches) reuse it.
  const text = await splitText(def, def.calibrationSplit, opts.dataDir);
  const key = `${tok.source}\u0000${def.name}\u0000${text.length}\u0000${text.slice(0, 256)}`;
  let ids = tokenCache.get(key);
  if (!ids) {
    ids = Int32Array.from(tok.encode(text));
    tokenCache.clear(); // keep one split at most
    tokenCache.set(key, ids);
  }
  return { ...streamSource(def.name, ids), warning: calibrationTextWarning(text) };
}

/** The whole flow: prepare, then stream `nsamples` windows. */
export async function* calibrationWindows(
  dataset: string | DatasetDef, tok: TextTokenizer, opts: CalibrationOptions,
): AsyncGenerator<BigInt64Array> {
  const source = await prepareCalibration(dataset, tok, opts);
  try {
    yield* source.windows(opts.nsamples, opts.seqlen, opts.seed ?? 0);
  } finally {
    source.close();
  }
}

/** Number of calibration tokens of a text set (to check it before sampling). */
function checkArgs(nsamples: number, seqlen: number): void {
  if (!Number.isInteger(nsamples) || nsamples < 1) throw new UserError(`nsamples must be a positive integer, got ${nsamples}`);
  if (!Number.isInteger(seqlen) || seqlen < 1) throw new UserError(`seqlen must be a positive integer, got ${seqlen}`);
}

function toInt64(ids: ArrayLike<number>, start: number, len: number): BigInt64Array {
  const out = new BigInt64Array(len);
  for (let k = 0; k < len; k++) out[k] = BigInt(ids[start + k]!);
  return out;
}

/** Text stream: `i = randint(0, ntok - seqlen - 1)` per sample. */
export function streamSource(name: string, ids: Int32Array): CalibrationSource {
  return {
    name,
    tokenCount: ids.length,
    async *windows(nsamples, seqlen, seed = 0) {
      checkArgs(nsamples, seqlen);
      if (ids.length <= seqlen) {
        throw new UserError(`${name} has ${ids.length} tokens, fewer than one window of ${seqlen} (calibration needs at least ${seqlen + 1}); use a shorter --seqlen or more text`);
      }
      const rng = new PythonRandom(seed);
      for (let s = 0; s < nsamples; s++) {
        const i = rng.randint(0, ids.length - seqlen - 1);
        yield toInt64(ids, i, seqlen);
      }
    },
    close() {},
  };
}

/** Document set (C4): draw with rejection until a document has > seqlen tokens, then a window inside it. */
export function documentSource(name: string, store: DocumentStore, tok: TextTokenizer): CalibrationSource {
  const lengths = new Map<number, number>(); // doc index → token count, so rejected docs are tokenized once
  return {
    name,
    documentCount: store.count,
    async *windows(nsamples, seqlen, seed = 0) {
      checkArgs(nsamples, seqlen);
      if (store.count === 0) throw new UserError(`${name} has no documents`);
      const rng = new PythonRandom(seed);
      const maxDraws = 100 * store.count + 10_000;
      for (let s = 0; s < nsamples; s++) {
        let ids: number[] | undefined;
        for (let draws = 0; !ids; draws++) {
          if (draws >= maxDraws) {
            throw new UserError(`${name}: no document with more than ${seqlen} tokens found after ${draws} draws; use a shorter --seqlen`);
          }
          const j = rng.randint(0, store.count - 1);
          if ((lengths.get(j) ?? Infinity) <= seqlen) continue;
          const enc = tok.encode(store.get(j));
          lengths.set(j, enc.length);
          if (enc.length > seqlen) ids = enc;
        }
        const i = rng.randint(0, ids.length - seqlen - 1);
        yield toInt64(ids, i, seqlen);
      }
    },
    close: () => store.close(),
  };
}
