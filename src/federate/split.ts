// `federate simulate`: one calibration text cut into N private shares, one per simulated client (disjoint).
// - iid: the text's non-empty lines, shuffled with the seed and dealt round-robin (every share a random sample);
// - documents: whole documents (split at the separator, `<|endoftext|>` lines by default), shuffled with the seed
//   and dealt round-robin, so no document is cut;
// - contiguous: the documents in file order, cut into N consecutive runs of about equal length (a non-IID split
//   when the text drifts in topic); a text without separators is cut at line boundaries instead.
import { UserError } from '../errors.js';
import { splitDocuments } from '../data/datasets.js';
import { seededRandom } from './sampling.js';

export const SPLIT_MODES = ['iid', 'documents', 'contiguous'] as const;
export type SplitMode = (typeof SPLIT_MODES)[number];

export const DEFAULT_DOC_SEPARATOR = '<|endoftext|>';

function shuffled<T>(items: T[], seed: number): T[] {
  const rand = seededRandom(seed);
  const a = [...items];
  for (let j = a.length - 1; j > 0; j--) {
    const r = Math.floor(rand() * (j + 1));
    [a[j], a[r]] = [a[r]!, a[j]!];
  }
  return a;
}

/** Consecutive runs of `units`, N of them, each about total/N characters (every run non-empty). */
function contiguousRuns(units: string[], n: number): string[][] {
  const total = units.reduce((s, u) => s + u.length, 0);
  const runs: string[][] = [];
  let k = 0;
  let acc = 0;
  for (let i = 0; i < n; i++) {
    const run: string[] = [];
    const target = (total * (i + 1)) / n;
    // leave at least one unit for each later run
    while (k < units.length - (n - 1 - i) && (run.length === 0 || acc + units[k]!.length / 2 <= target)) {
      acc += units[k]!.length;
      run.push(units[k++]!);
    }
    runs.push(run);
  }
  while (k < units.length) runs[n - 1]!.push(units[k++]!);
  return runs;
}

/** The N shares of `text`, each as the text of one client's private calibration file. */
export function splitCalibration(text: string, clients: number, mode: SplitMode, seed = 0, separator = DEFAULT_DOC_SEPARATOR): string[] {
  if (!Number.isInteger(clients) || clients < 1) throw new UserError(`--clients must be a positive integer, got ${clients}`);
  const docs = splitDocuments(text, separator);
  const joinDocs = (d: string[]) => `${d.join(`\n${separator}\n`)}\n`;
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '' && l.trim() !== separator);
  if (mode === 'iid') {
    if (lines.length < clients) throw new UserError(`--split iid: the text has ${lines.length} non-empty lines, fewer than --clients ${clients}`);
    const deck = shuffled(lines, seed);
    return Array.from({ length: clients }, (_, i) => `${deck.filter((_, j) => j % clients === i).join('\n')}\n`);
  }
  if (mode === 'documents') {
    if (docs.length < clients) throw new UserError(`--split documents: the text has ${docs.length} document(s) (separated by ${separator} lines), fewer than --clients ${clients}; use --split iid or contiguous`);
    const deck = shuffled(docs, seed);
    return Array.from({ length: clients }, (_, i) => joinDocs(deck.filter((_, j) => j % clients === i)));
  }
  if (docs.length >= clients) return contiguousRuns(docs, clients).map(joinDocs);
  if (lines.length < clients) throw new UserError(`--split contiguous: the text has ${lines.length} non-empty lines, fewer than --clients ${clients}`);
  return contiguousRuns(lines, clients).map((run) => `${run.join('\n')}\n`);
}
