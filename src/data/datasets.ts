/**
 * Named datasets (definitions in calibration/<name>.json) and the user's own .txt / .jsonl files, turned
 * into text exactly as the reference's `datautils.py` builds it (ALGORITHMS.md §0.2/§0.3):
 *   wikitext2: rows = lines of wiki.*.raw (non-blank rows keep their "\n", blank rows are ""),
 *              test joined with "\n\n", train with " ";
 *   ptb:       rows = lines stripped (HF ptb_text_only), train and test joined with " ";
 *   c4:        validation = first 1100 documents joined with " " (cut to 256 windows later);
 *              train = documents, sampled one by one (calibration.ts);
 *   tinystories / own .txt: stories separated by `<|endoftext|>` lines; own .jsonl: the `text` field of each line.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { UserError } from '../errors.js';
import { openDocuments, readFirstDocuments, type DocumentStore } from './jsonl.js';
import { locateFile, projectRoot, readTextFile, type FileSpec } from './sources.js';
import type { TextTokenizer } from './tokenizer.js';

export type DatasetFormat = 'wikitext-lines' | 'stripped-lines' | 'jsonl' | 'separated-documents' | 'text';

export interface SplitDef extends FileSpec {
  /** String placed between rows when the split is one text stream. */
  join?: string;
  /** "documents": sampled per document (C4 train), never joined. */
  mode?: 'documents';
  /** Use only the first N documents (C4 validation: 1100). */
  firstDocuments?: number;
  /** Cut the evaluation stream to this many windows (C4 validation: 256). */
  maxWindows?: number;
  /** An absolute path given by the user (own files); used as is. */
  file?: string;
  sha256?: string;
}

export interface DatasetDef {
  name: string;
  description: string;
  hub?: string;
  format: DatasetFormat;
  /** Document separator for 'separated-documents' (and per-document evaluation). */
  separator?: string;
  /** Default evaluation mode. */
  evalMode?: 'windows' | 'per-document';
  calibrationSplit: string;
  evalSplit: string;
  splits: Record<string, SplitDef>;
}

const definitionsDir = join(projectRoot, 'calibration');

/** Names of the datasets defined in calibration/*.json. */
export function knownDatasets(): string[] {
  return readdirSync(definitionsDir).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();
}

/** A named dataset, or the user's own .txt / .jsonl(.gz) file as a one-split dataset. */
export function resolveDataset(nameOrPath: string, opts: { docSeparator?: string } = {}): DatasetDef {
  const defPath = join(definitionsDir, `${nameOrPath}.json`);
  if (/^[\w-]+$/.test(nameOrPath) && existsSync(defPath)) {
    const def = JSON.parse(readFileSync(defPath, 'utf8')) as DatasetDef;
    if (opts.docSeparator !== undefined) def.separator = opts.docSeparator;
    return def;
  }
  if (existsSync(nameOrPath)) {
    const file = resolve(nameOrPath);
    const isJsonl = /\.jsonl?(\.gz)?$/i.test(file);
    if (!isJsonl && !/\.(txt|text|raw)(\.gz)?$/i.test(file) && extname(file) !== '') {
      throw new UserError(`dataset file ${nameOrPath}: use a .txt file (plain text) or a .jsonl file (a "text" field per line)`);
    }
    const split: SplitDef = { paths: [file], file, join: isJsonl ? ' ' : '\n\n' };
    return {
      name: basename(file),
      description: `your file ${file}`,
      format: isJsonl ? 'jsonl' : 'separated-documents',
      separator: opts.docSeparator ?? '<|endoftext|>',
      calibrationSplit: 'train',
      evalSplit: 'train',
      splits: { train: split },
    };
  }
  throw new UserError(
    `unknown dataset "${nameOrPath}": use ${knownDatasets().join(', ')} or the path of a .txt / .jsonl file`,
  );
}

function splitOf(def: DatasetDef, split: string): SplitDef {
  const s = def.splits[split];
  if (!s) throw new UserError(`${def.name} has no split "${split}" (it has ${Object.keys(def.splits).join(', ')})`);
  return s;
}

/** Local path of a split's file (may download; see sources.ts). */
export async function splitFile(def: DatasetDef, split: string, dataDir?: string): Promise<string> {
  const s = splitOf(def, split);
  if (s.file) return s.file;
  return locateFile(def.name, `${def.name} ${split} (${basename(s.paths[0]!)})`, s, dataDir);
}

/** Rows of a text file with Python's `for row in open(f)` semantics: universal newlines, "\n" kept. */
function pythonLines(text: string): string[] {
  const lines = text.replace(/\r\n?/g, '\n').split('\n').map((l) => `${l}\n`);
  const last = lines.pop()!; // the piece after the final "\n" (without its own newline)
  if (last !== '\n') lines.push(last.slice(0, -1));
  return lines;
}

/** The rows / documents of a split, as the reference's HF dataset would hold them. */
export async function splitRows(def: DatasetDef, split: string, dataDir?: string): Promise<string[]> {
  const s = splitOf(def, split);
  const path = await splitFile(def, split, dataDir);
  switch (def.format) {
    case 'wikitext-lines': // wikitext script: `yield {"text": row}` if row.strip() else {"text": ""}
      return pythonLines(readTextFile(path)).map((row) => (row.trim() ? row : ''));
    case 'stripped-lines': // ptb_text_only script: `line = line.strip()`
      return pythonLines(readTextFile(path)).map((row) => row.trim());
    case 'jsonl':
      if (s.firstDocuments !== undefined) return readFirstDocuments(path, s.firstDocuments);
      return allDocuments(await openDocuments(path));
    case 'separated-documents':
      return splitDocuments(readTextFile(path), def.separator ?? '<|endoftext|>');
    case 'text':
      return [readTextFile(path)];
  }
}

function allDocuments(store: DocumentStore): string[] {
  const out = Array.from({ length: store.count }, (_, i) => store.get(i));
  store.close();
  return out;
}

/** Documents separated by `separator` (e.g. `<|endoftext|>` lines), each stripped, empty ones dropped. */
export function splitDocuments(text: string, separator: string): string[] {
  const parts = separator ? text.split(separator) : [text];
  return parts.map((d) => d.trim()).filter((d) => d.length > 0);
}

/** A split as one text stream: rows joined by the split's join string. */
export async function splitText(def: DatasetDef, split: string, dataDir?: string): Promise<string> {
  return (await splitRows(def, split, dataDir)).join(splitOf(def, split).join ?? ' ');
}

/** Tokens of the evaluation split as one stream (one BOS at the start), cut to `maxWindows × seqlen` if set. */
export async function evalTokens(def: DatasetDef, tok: TextTokenizer, seqlen: number, dataDir?: string): Promise<Int32Array> {
  const ids = Int32Array.from(tok.encode(await splitText(def, def.evalSplit, dataDir)));
  const max = splitOf(def, def.evalSplit).maxWindows;
  return max !== undefined && ids.length > max * seqlen ? ids.subarray(0, max * seqlen) : ids;
}

/** Documents of the evaluation split, for per-document scoring. */
export async function evalDocuments(def: DatasetDef, dataDir?: string): Promise<string[]> {
  return splitRows(def, def.evalSplit, dataDir);
}
