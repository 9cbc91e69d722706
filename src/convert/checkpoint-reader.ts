// What the converter needs from a checkpoint's weights, whatever their file format (safetensors, PyTorch .bin):
// tensor names, dtype and shape from the headers alone, and one tensor's values at a time.
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import { basename, join } from 'node:path';
import { UserError } from '../errors.js';
import { bfloat16ArrayToFloat32, halfArrayToFloat32 } from '../model/float16.js';

/** The float dtypes a checkpoint uses, with their element sizes (safetensors' names). */
export const FLOAT_DTYPES = { F32: 4, F16: 2, BF16: 2 } as const;
export type FloatDtype = keyof typeof FLOAT_DTYPES;

export interface CheckpointTensor {
  name: string;
  dtype: string;
  shape: number[];
  /** The file holding it. */
  file: string;
}

export interface CheckpointReader {
  /** The weight files read (for messages). */
  readonly files: string[];
  readonly names: string[];
  has(name: string): boolean;
  /** Name, dtype, shape; a one-line UserError for an unknown name. */
  info(name: string): CheckpointTensor;
  /** The float dtype most bytes have (the checkpoint's dtype). */
  readonly dtype: FloatDtype;
  /** One tensor's values as float32 (F16 / BF16 widened exactly), read from disk on each call. */
  readFloat32(name: string): Float32Array;
}

export const elementCount = (shape: number[]) => shape.reduce((a, d) => a * d, 1);

/** The dtype holding most bytes among `tensors`, refused unless it is a float dtype. */
export function dominantDtype(tensors: Iterable<CheckpointTensor>, files: string[], bytesOf: (t: CheckpointTensor) => number): FloatDtype {
  const count = new Map<string, number>();
  for (const t of tensors) count.set(t.dtype, (count.get(t.dtype) ?? 0) + bytesOf(t));
  const top = [...count.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
  if (!top || !(top in FLOAT_DTYPES)) throw new UserError(`checkpoint in ${files.map((f) => basename(f)).join(', ')} holds ${top ?? 'no'} tensors: only F32, F16 and BF16 checkpoints are supported`);
  return top as FloatDtype;
}

/** A tensor whose bytes lie at an absolute offset of its file. */
export interface StoredTensor extends CheckpointTensor {
  begin: number;
}

/**
 * The tensors of `folder`'s single weight file, or of its shards through their index (`weight_map`: tensor name ->
 * shard file), with the checks every format shares: valid index, every shard present, each tensor where the index says.
 */
export function openTensorTable<T extends StoredTensor>(
  folder: string, indexFile: string, singleFile: string, readHeader: (file: string) => T[],
): { files: string[]; tensors: Map<string, T> } {
  const index = join(folder, indexFile);
  if (!existsSync(index)) {
    const files = [join(folder, singleFile)];
    return { files, tensors: new Map(readHeader(files[0]!).map((t) => [t.name, t])) };
  }
  let weightMap: Record<string, string>;
  try {
    weightMap = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map: Record<string, string> }).weight_map;
  } catch {
    throw new UserError(`${index} is not valid JSON: re-download it`);
  }
  if (!weightMap || typeof weightMap !== 'object') throw new UserError(`${index} has no weight_map: re-download it`);
  const files = [...new Set(Object.values(weightMap))].map((f) => join(folder, f));
  const missing = files.filter((f) => !existsSync(f));
  if (missing.length) throw new UserError(`${index} lists ${missing.map((f) => basename(f)).join(', ')}, missing from ${folder}: download every shard`);
  const tensors = new Map<string, T>();
  for (const f of files) for (const t of readHeader(f)) tensors.set(t.name, t);
  const notFound = Object.entries(weightMap).find(([name, f]) => tensors.get(name)?.file !== join(folder, f));
  if (notFound) throw new UserError(`${index} puts ${notFound[0]} in ${notFound[1]}, which does not hold it: the shards do not match their index`);
  return { files, tensors };
}

/**
 * A checkpoint as a table of stored tensors, read one at a time with positional reads. The formats differ only in
 * how their headers are parsed (and so how a tensor's byte length is recorded).
 */
export class TensorTableCheckpoint<T extends StoredTensor> implements CheckpointReader {
  protected constructor(readonly files: string[], private readonly tensors: Map<string, T>, private readonly byteLength: (t: T) => number) {}

  get names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): T {
    const t = this.tensors.get(name);
    if (!t) throw new UserError(`the checkpoint has no tensor ${name}`);
    return t;
  }

  /** The float dtype most bytes have (the checkpoint's dtype). */
  get dtype(): FloatDtype {
    return dominantDtype(this.tensors.values(), this.files, (t) => this.byteLength(t as T));
  }

  /** The tensor's raw bytes, in an 8-byte-aligned buffer. */
  readBytes(name: string): Uint8Array {
    const t = this.info(name);
    const length = this.byteLength(t);
    const buf = new Uint8Array(new ArrayBuffer(Math.ceil(length / 8) * 8), 0, length);
    const fd = openSync(t.file, 'r');
    try {
      let done = 0;
      while (done < length) {
        const n = readSync(fd, buf, done, Math.min(length - done, 1 << 30), t.begin + done);
        if (n <= 0) throw new UserError(`${t.file} ended early while reading ${name}: truncated file`);
        done += n;
      }
    } finally {
      closeSync(fd);
    }
    return buf;
  }

  /** The tensor's values as float32 (F16 / BF16 widened exactly). */
  readFloat32(name: string): Float32Array {
    const t = this.info(name);
    if (!(t.dtype in FLOAT_DTYPES)) throw new UserError(`tensor ${name} has dtype ${t.dtype}: only F32, F16 and BF16 weights are supported`);
    const bytes = this.readBytes(name);
    const n = elementCount(t.shape);
    if (t.dtype === 'F32') return new Float32Array(bytes.buffer, 0, n);
    const half = new Uint16Array(bytes.buffer, 0, n);
    return t.dtype === 'F16' ? halfArrayToFloat32(half) : bfloat16ArrayToFloat32(half);
  }
}
