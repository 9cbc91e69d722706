/**
 * Perplexity (ALGORITHMS.md §0.4): non-overlapping windows `ids[k·L : (k+1)·L]` of the whole token stream,
 * the trailing remainder dropped, no context carried between windows; per window the mean cross-entropy of
 * the shifted targets (L−1 predictions); ppl = exp(mean over windows). Log-softmax accumulates in float64.
 *
 * Per-document mode (own files, TinyStories): each document (with its BOS) scored on its own; documents longer
 * than L are cut into windows overlapping by one token so every token after the BOS is predicted exactly once;
 * ppl = exp(total NLL / predicted tokens).
 *
 * The model is abstract (`LogitsProvider`), so the pruning pipeline can score an in-memory model too.
 */

import { native } from '../native/addon.js';

/** Logits [batch, seqlen, vocab] for row-major int64 input ids [batch, seqlen]. */
export type LogitsProvider = (inputIds: BigInt64Array, batch: number, seqlen: number) => Promise<Float32Array>;

export interface PerplexityOptions {
  seqlen: number;
  /** Windows (or document chunks) per model run. */
  batch?: number;
  /** Evaluate only the first N windows (tests, quick looks). */
  maxWindows?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface PerplexityResult {
  perplexity: number;
  /** Mean NLL in nats (over windows, or per token in per-document mode). */
  meanNll: number;
  /** Windows (window mode) or model rows (document chunks) evaluated. */
  windows: number;
  /** Tokens fed to the model (windows × seqlen, or document tokens). */
  tokens: number;
  /** Tokens predicted (targets scored). */
  predictedTokens: number;
  /** Window mode: each window's mean NLL in nats, in text order (meanNll is their mean), for paired comparisons of two models on the same windows. */
  windowNll?: number[];
  seconds: number;
}

/**
 * NLL of many rows at once in the native addon (same math as tokenNll, vectorised and off the JS thread):
 * targets[r] is the id to score at row r, or −1 to skip the row (its entry is NaN).
 */
export async function rowsNll(logits: Float32Array, vocab: number, targets: Int32Array): Promise<Float64Array> {
  const nll = new Float64Array(targets.length);
  await native().crossEntropyRows(logits, targets.length, vocab, targets, nll);
  return nll;
}

/** In place: each row of logits ([rows, vocab]) becomes its log-softmax (native, log-sum-exp in float64). */
export async function logSoftmaxInPlace(logits: Float32Array, vocab: number): Promise<Float32Array> {
  await native().logSoftmaxRows(logits, logits.length / vocab, vocab);
  return logits;
}

/** Per row r: KL(P_r ‖ softmax(logits[r])), with refLogProbs[r] = log P_r (from logSoftmaxInPlace); native, float64 sums. */
export async function rowsKl(refLogProbs: Float32Array, logits: Float32Array, vocab: number): Promise<Float64Array> {
  const kl = new Float64Array(logits.length / vocab);
  await native().klRows(refLogProbs, logits, kl.length, vocab, kl);
  return kl;
}

/** A copy of the logits divided by the temperature T (T > 1 softens the next-token distributions); used by diagnostics. */
export function logitsAtTemperature(logits: Float32Array, T: number): Float32Array {
  const out = new Float32Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! / T;
  return out;
}

/** −log softmax(logits[row])[target], computed in float64. */
export function tokenNll(logits: Float32Array, row: number, vocab: number, target: number): number {
  const base = row * vocab;
  let max = -Infinity;
  for (let v = 0; v < vocab; v++) if (logits[base + v]! > max) max = logits[base + v]!;
  let sum = 0;
  for (let v = 0; v < vocab; v++) sum += Math.exp(logits[base + v]! - max);
  return max + Math.log(sum) - logits[base + target]!;
}

function vocabOf(logits: Float32Array, rows: number): number {
  const vocab = logits.length / rows;
  if (!Number.isInteger(vocab) || vocab < 1) throw new Error(`logits of length ${logits.length} do not hold ${rows} rows`);
  return vocab;
}

/** The reference protocol's windows of one token stream: consecutive, non-overlapping windows of L tokens, at most
 * maxWindows of them. Each batch of b windows comes with its input ids [b, L] and its shifted targets (token s + 1 of
 * the window at row s; −1, not scored, at each window's last row). */
export function* evaluationWindows(ids: ArrayLike<number>, L: number, opts: { maxWindows?: number; batch?: number } = {}):
  Generator<{ first: number; count: number; total: number; input: BigInt64Array; targets: Int32Array }> {
  const batch = Math.max(1, opts.batch ?? 1);
  let total = Math.floor(ids.length / L);
  if (opts.maxWindows !== undefined) total = Math.min(total, opts.maxWindows);
  if (total < 1) throw new RangeError(`${ids.length} tokens are fewer than one window of ${L}`);
  for (let first = 0; first < total; first += batch) {
    const count = Math.min(batch, total - first);
    const input = new BigInt64Array(count * L);
    for (let k = 0; k < count * L; k++) input[k] = BigInt(ids[first * L + k]!);
    const targets = new Int32Array(count * L).fill(-1);
    for (let r = 0; r < count; r++) for (let s = 0; s < L - 1; s++) targets[r * L + s] = ids[(first + r) * L + s + 1]!;
    yield { first, count, total, input, targets };
  }
}

/** Reference window perplexity of one token stream. */
export async function windowPerplexity(ids: ArrayLike<number>, model: LogitsProvider, opts: PerplexityOptions): Promise<PerplexityResult> {
  const t0 = performance.now();
  const L = opts.seqlen;
  const windowNll: number[] = [];
  let n = 0;
  for (const { first, count, total, input, targets } of evaluationWindows(ids, L, opts)) {
    n = total;
    const logits = await model(input, count, L);
    const rowNll = await rowsNll(logits, vocabOf(logits, count * L), targets);
    for (let r = 0; r < count; r++) {
      let nll = 0;
      for (let s = 0; s < L - 1; s++) nll += rowNll[r * L + s]!;
      windowNll.push(nll / (L - 1)); // CrossEntropyLoss() mean over the window's L−1 shifted targets
    }
    opts.onProgress?.(first + count, total);
  }
  const meanNll = windowNll.reduce((a, b) => a + b, 0) / n;
  return {
    perplexity: Math.exp(meanNll), meanNll, windows: n, tokens: n * L, predictedTokens: n * (L - 1), windowNll,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** Cuts each document (ids starting with its BOS) into model rows of at most L tokens overlapping by one. */
export function documentChunks(docs: ArrayLike<number>[], L: number): number[][] {
  if (L < 2) throw new RangeError('seqlen must be at least 2');
  const chunks: number[][] = [];
  for (const d of docs) {
    for (let start = 0; start + 1 < d.length; start += L - 1) chunks.push(Array.from(d).slice(start, start + L));
  }
  return chunks;
}

/** Per-document perplexity: token-weighted mean NLL over all predicted tokens. */
export async function documentPerplexity(docs: ArrayLike<number>[], model: LogitsProvider, opts: PerplexityOptions): Promise<PerplexityResult> {
  const t0 = performance.now();
  const batch = Math.max(1, opts.batch ?? 1);
  // Longest first so a batch pads little. Right padding leaves a causal model's logits at real positions unchanged.
  const chunks = documentChunks(docs, opts.seqlen).sort((a, b) => b.length - a.length);
  if (chunks.length === 0) throw new RangeError('no document has two or more tokens');
  let nll = 0, predicted = 0, tokens = 0;
  for (let c0 = 0; c0 < chunks.length; c0 += batch) {
    const group = chunks.slice(c0, c0 + batch);
    const len = group[0]!.length;
    const input = new BigInt64Array(group.length * len);
    group.forEach((ch, r) => {
      for (let s = 0; s < len; s++) input[r * len + s] = BigInt(ch[Math.min(s, ch.length - 1)]!);
    });
    const logits = await model(input, group.length, len);
    const vocab = vocabOf(logits, group.length * len);
    const targets = new Int32Array(group.length * len).fill(-1);
    group.forEach((ch, r) => {
      for (let s = 0; s + 1 < ch.length; s++) targets[r * len + s] = ch[s + 1]!;
    });
    const rowNll = await rowsNll(logits, vocab, targets);
    group.forEach((ch, r) => {
      for (let s = 0; s + 1 < ch.length; s++) nll += rowNll[r * len + s]!;
      predicted += ch.length - 1;
      tokens += ch.length;
    });
    opts.onProgress?.(Math.min(c0 + batch, chunks.length), chunks.length);
  }
  const meanNll = nll / predicted;
  return {
    perplexity: Math.exp(meanNll), meanNll, windows: chunks.length, tokens, predictedTokens: predicted,
    seconds: (performance.now() - t0) / 1000,
  };
}
