// What the converter needs from a checkpoint's weights, whatever their file format (safetensors, PyTorch .bin):
// tensor names, dtype and shape from the headers alone, and one tensor's values at a time.
import { basename } from 'node:path';
import { UserError } from '../errors.js';

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
