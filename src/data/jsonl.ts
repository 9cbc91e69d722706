/**
 * JSON-lines documents (C4 shards, the user's .jsonl), optionally gzipped, with random access by index.
 * The C4 train shard is ~800 MB uncompressed (356k documents), more than fits in one JS string, so large
 * files are decompressed once into a cache file and read back by byte offset; small ones stay in memory.
 * Row order is the file's line order, as in `load_dataset('json'/'allenai/c4', data_files=...)`; blank lines are skipped.
 */
import { closeSync, createReadStream, createWriteStream, existsSync, mkdirSync, openSync, readSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { UserError } from '../errors.js';
import { hfHome } from './sources.js';

export interface DocumentStore {
  readonly count: number;
  /** The `field` of document i (0-based). */
  get(i: number): string;
  close(): void;
}

const IN_MEMORY_LIMIT = 64 * 1024 * 1024;

/** Streams the (decompressed) bytes of `path`. */
function byteStream(path: string): NodeJS.ReadableStream {
  const raw = createReadStream(path);
  return path.endsWith('.gz') ? raw.pipe(createGunzip()) : raw;
}

function fieldOf(line: string, field: string, path: string, index: number): string {
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch {
    throw new UserError(`${path}: line ${index + 1} is not valid JSON`);
  }
  const v = (obj as Record<string, unknown>)?.[field];
  if (typeof v !== 'string') throw new UserError(`${path}: line ${index + 1} has no string field "${field}"`);
  return v;
}

/** The first `n` documents only (C4 validation: 1100), without reading the rest of the file. */
export async function readFirstDocuments(path: string, n: number, field = 'text'): Promise<string[]> {
  const docs: string[] = [];
  let pending = '';
  const stream = byteStream(path);
  for await (const chunk of stream) {
    const lines = (pending + (chunk as Buffer).toString('utf8')).split('\n');
    pending = lines.pop()!;
    for (const l of lines) if (l.trim() && docs.length < n) docs.push(fieldOf(l, field, path, docs.length));
    if (docs.length >= n) break;
  }
  if (docs.length < n && pending.trim()) docs.push(fieldOf(pending, field, path, docs.length));
  (stream as unknown as { destroy?: () => void }).destroy?.();
  return docs;
}

/** All documents, with random access. Big gzipped files are decompressed into $HF_HOME/sparsellm/jsonl once. */
export async function openDocuments(path: string, field = 'text'): Promise<DocumentStore> {
  const size = statSync(path).size;
  const big = path.endsWith('.gz') ? size * 3 > IN_MEMORY_LIMIT : size > IN_MEMORY_LIMIT;
  if (!big) {
    const chunks: Buffer[] = [];
    for await (const c of byteStream(path)) chunks.push(c as Buffer);
    const buf = Buffer.concat(chunks);
    const scanner = new LineScanner();
    scanner.push(buf);
    const { starts, ends } = scanner.finish();
    return {
      count: starts.length,
      get: (i) => fieldOf(buf.subarray(starts[i]!, ends[i]!).toString('utf8'), field, path, i),
      close: () => {},
    };
  }
  const plain = path.endsWith('.gz') ? await decompressedCopy(path) : path;
  const { starts, ends } = await new Promise<{ starts: number[]; ends: number[] }>((res, rej) => {
    const scanner = new LineScanner();
    createReadStream(plain).on('data', (c) => scanner.push(c as Buffer)).on('end', () => res(scanner.finish())).on('error', rej);
  });
  const fd = openSync(plain, 'r');
  return {
    count: starts.length,
    get: (i) => {
      const len = ends[i]! - starts[i]!;
      const b = Buffer.allocUnsafe(len);
      readSync(fd, b, 0, len, starts[i]!);
      return fieldOf(b.toString('utf8'), field, path, i);
    },
    close: () => closeSync(fd),
  };
}

async function decompressedCopy(gz: string): Promise<string> {
  const dir = join(hfHome(), 'sparsellm', 'jsonl');
  const out = join(dir, basename(gz).replace(/\.gz$/, ''));
  const done = `${out}.complete`;
  if (existsSync(out) && existsSync(done) && statSync(done).mtimeMs >= statSync(gz).mtimeMs) return out;
  mkdirSync(dir, { recursive: true });
  process.stderr.write(`sparsellm: decompressing ${gz} to ${out} (once)\n`);
  await new Promise<void>((res, rej) => {
    byteStream(gz).pipe(createWriteStream(`${out}.partial`)).on('finish', () => res()).on('error', rej);
  });
  renameSync(`${out}.partial`, out);
  writeFileSync(done, '');
  return out;
}

/** Byte ranges of the non-blank lines of a byte stream, fed chunk by chunk. */
class LineScanner {
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  private pos = 0;
  private lineStart = 0;
  private blank = true;

  push(chunk: Buffer): void {
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (b === 10) {
        this.endLine(this.pos + i);
        this.lineStart = this.pos + i + 1;
        this.blank = true;
      } else if (b !== 32 && b !== 13 && b !== 9) this.blank = false;
    }
    this.pos += chunk.length;
  }

  private endLine(end: number): void {
    if (!this.blank) {
      this.starts.push(this.lineStart);
      this.ends.push(end);
    }
  }

  finish(): { starts: number[]; ends: number[] } {
    this.endLine(this.pos);
    return { starts: this.starts, ends: this.ends };
  }
}
