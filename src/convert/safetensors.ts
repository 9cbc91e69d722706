// safetensors checkpoints, read and written without loading a whole model into memory.
//
// Format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N, N bytes of JSON
// `{"__metadata__": {...}, "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}`, then the
// tensor bytes; offsets are relative to the first byte after the header. Big checkpoints are split into shards
// `model-0000k-of-0000n.safetensors` listed by `model.safetensors.index.json` (`weight_map`: tensor -> shard file).
// Reads are positional (fs.readSync at the tensor's offset), one tensor at a time.
import { closeSync, existsSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { float32ToBfloat16Array, float32ToHalfArray } from '../model/float16.js';
import { FLOAT_DTYPES, TensorTableCheckpoint, openTensorTable, type FloatDtype } from './checkpoint-reader.js';

export { FLOAT_DTYPES, type FloatDtype };
const ALL_DTYPE_BYTES: Record<string, number> = { ...FLOAT_DTYPES, F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** The HF config names (`torch_dtype` / `dtype`) of the float dtypes. */
export const TORCH_DTYPE_OF: Record<FloatDtype, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

export interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
  file: string;
}

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

/** Parse one .safetensors file's header; throws a one-line UserError on anything malformed. */
export function readSafetensorsHeader(file: string): TensorInfo[] {
  if (!existsSync(file)) throw new UserError(`safetensors file missing: ${file}`);
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const corrupt = (why: string) => new UserError(`${file} is not a valid safetensors file (${why}): re-download it`);
    if (size < 8) throw corrupt('shorter than its 8-byte header length');
    const lenBuf = Buffer.alloc(8);
    readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen < 2 || headerLen > 100_000_000 || 8 + headerLen > size) throw corrupt(`header length ${headerLen} does not fit a ${size}-byte file`);
    const headerBuf = Buffer.alloc(headerLen);
    readSync(fd, headerBuf, 0, headerLen, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(headerBuf.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw corrupt('header is not JSON');
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) throw corrupt('header is not a JSON object');
    const dataStart = 8 + headerLen;
    const tensors: TensorInfo[] = [];
    for (const [name, v] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const bytes = typeof e?.dtype === 'string' ? ALL_DTYPE_BYTES[e.dtype] : undefined;
      if (bytes === undefined) throw corrupt(`tensor ${name} has dtype ${JSON.stringify(e?.dtype)}`);
      const shape = e.shape, offsets = e.data_offsets;
      if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw corrupt(`tensor ${name} has a bad shape`);
      if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)) throw corrupt(`tensor ${name} has bad data_offsets`);
      const [b, en] = offsets as [number, number];
      const want = (shape as number[]).reduce((a, d) => a * d, 1) * bytes;
      if (en - b !== want) throw corrupt(`tensor ${name} spans ${en - b} bytes, its shape needs ${want}`);
      if (dataStart + en > size) throw corrupt(`tensor ${name} ends at byte ${dataStart + en}, past the end of the file (${size}): truncated`);
      tensors.push({ name, dtype: e.dtype as string, shape: shape as number[], begin: dataStart + b, end: dataStart + en, file });
    }
    return tensors;
  } finally {
    closeSync(fd);
  }
}

/** A checkpoint's tensors (one file or shards), read one at a time. */
export class SafetensorsCheckpoint extends TensorTableCheckpoint<TensorInfo> {
  /** Open `folder`'s model.safetensors, or its shards through model.safetensors.index.json. */
  static open(folder: string): SafetensorsCheckpoint {
    const { files, tensors } = openTensorTable(folder, INDEX_FILE, SINGLE_FILE, readSafetensorsHeader);
    return new SafetensorsCheckpoint(files, tensors, (t) => t.end - t.begin);
  }
}

/** float32 values -> little-endian bytes of `dtype`. */
export function encodeFloats(values: Float32Array, dtype: FloatDtype): Uint8Array {
  const typed = dtype === 'F32' ? values : dtype === 'F16' ? float32ToHalfArray(values) : float32ToBfloat16Array(values);
  return new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
}

/**
 * One tensor to write: its name, shape, and a function producing its float32 values when its turn comes (or, `bytes`,
 * its data already encoded in the checkpoint's dtype).
 */
export interface TensorToWrite {
  name: string;
  shape: number[];
  values: () => Float32Array;
  bytes?: () => Uint8Array;
}

export interface WriteOptions {
  dtype: FloatDtype;
  /** Largest shard in bytes (tensor data); hub checkpoints use 5 GB. A larger single tensor gets a shard of its own. */
  maxShardBytes?: number;
}

export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

/**
 * Write tensors as a HF checkpoint into `folder`: `model.safetensors`, or shards `model-0000k-of-0000n.safetensors`
 * plus `model.safetensors.index.json` when the data exceeds `maxShardBytes`. Tensors are produced and written one
 * at a time. Returns the files written.
 */
export function writeSafetensorsCheckpoint(folder: string, tensors: TensorToWrite[], options: WriteOptions): string[] {
  const bytesPer = FLOAT_DTYPES[options.dtype];
  const max = options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  const size = (t: TensorToWrite) => t.shape.reduce((a, d) => a * d, 1) * bytesPer;
  const shards: TensorToWrite[][] = [];
  let current: TensorToWrite[] = [], currentBytes = 0;
  for (const t of tensors) {
    if (current.length && currentBytes + size(t) > max) {
      shards.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(t);
    currentBytes += size(t);
  }
  if (current.length) shards.push(current);
  const n = shards.length;
  const pad = (k: number) => String(k).padStart(5, '0');
  const names = n === 1 ? [SINGLE_FILE] : shards.map((_, k) => `model-${pad(k + 1)}-of-${pad(n)}.safetensors`);
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  shards.forEach((shard, k) => {
    const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    let offset = 0;
    for (const t of shard) {
      header[t.name] = { dtype: options.dtype, shape: t.shape, data_offsets: [offset, offset + size(t)] };
      offset += size(t);
      weightMap[t.name] = names[k]!;
    }
    totalSize += offset;
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8); // data starts 8-byte aligned, as the reference writer does
    const headerBytes = Buffer.from(json, 'utf8');
    const fd = openSync(join(folder, names[k]!), 'w');
    try {
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(headerBytes.length));
      let pos = writeAllAt(fd, len, 0);
      pos = writeAllAt(fd, headerBytes, pos);
      for (const t of shard) {
        const data = t.bytes ? t.bytes() : encodeFloats(t.values(), options.dtype);
        if (data.byteLength !== size(t)) throw new Error(`tensor ${t.name}: ${data.byteLength} bytes for shape [${t.shape}]`);
        pos = writeAllAt(fd, data, pos);
      }
    } finally {
      closeSync(fd);
    }
  });
  if (n > 1) {
    const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
    const fd = openSync(join(folder, INDEX_FILE), 'w');
    try {
      writeAllAt(fd, Buffer.from(`${JSON.stringify(index, null, 2)}\n`), 0);
    } finally {
      closeSync(fd);
    }
    return [...names, INDEX_FILE];
  }
  return names;
}

function writeAllAt(fd: number, bytes: Uint8Array, position: number): number {
  let done = 0;
  while (done < bytes.byteLength) done += writeSync(fd, bytes, done, Math.min(bytes.byteLength - done, 1 << 30), position + done);
  return position + done;
}
