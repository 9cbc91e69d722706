// The federate benchmarks' calibration split (bench/federate.ts, bench/federate-diagnose.ts): PTB train cut into N
// disjoint client texts, written as files.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { splitRows, resolveDataset } from '../src/data/datasets.js';
import { DEFAULT_DOC_SEPARATOR, splitCalibration } from '../src/federate/split.js';

export type BenchSplit = 'documents' | 'contiguous';

/**
 * PTB train cut into `n` disjoint client texts, one file each under `dir`.
 * - documents (default): PTB marks no article boundaries, so its lines are grouped into passages of `passageLines`
 *   consecutive sentences (20 ≈ the mean WSJ article: the treebank's ~49k sentences are ~2.5k articles); the
 *   passages are the documents, dealt to the clients by `federate simulate --split documents`'s own code
 *   (src/federate/split.ts: shuffled with the seed, round-robin). Every client then holds passages from all over
 *   the corpus, as in the paper, where each client draws its own random segments from the same C4 shard.
 * - contiguous: N consecutive runs of lines (non-IID by WSJ section).
 * A passage's lines are joined by PTB's own join (a space); passages are separated by `<|endoftext|>` lines.
 */
export async function ptbClientTexts(n: number, dir: string, seed: number, split: BenchSplit, passageLines: number): Promise<string[]> {
  const rows = await splitRows(resolveDataset('ptb'), 'train');
  mkdirSync(dir, { recursive: true });
  let shares: string[];
  if (split === 'documents') {
    const passages: string[] = [];
    for (let k = 0; k < rows.length; k += passageLines) passages.push(rows.slice(k, k + passageLines).join(' '));
    shares = splitCalibration(passages.join(`\n${DEFAULT_DOC_SEPARATOR}\n`), n, 'documents', seed);
  } else {
    shares = Array.from({ length: n }, (_, i) => rows.slice(Math.floor((i * rows.length) / n), Math.floor(((i + 1) * rows.length) / n)).join(' '));
  }
  return shares.map((text, i) => {
    const file = join(dir, `client-${i}.txt`);
    writeFileSync(file, text);
    return file;
  });
}
