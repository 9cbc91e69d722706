// A linear layer's weight in PyTorch orientation. ONNX MatMul stores W as [in, out] (y = x @ W);
// solvers work on [out, in] row-major (y = W x), so these helpers transpose on the way in and out.
import { TensorProto_DataType } from 'onnx-buf';
import type { LinearLayer } from './decoder-layout.js';
import { halfOfFloatBits, halfToFloat32Table } from './float16.js';
import type { OnnxModel } from './onnx-file.js';

/** out[c * rows + r] = src[r * cols + c]: [rows, cols] -> [cols, rows]. */
export function transpose(src: Float32Array, rows: number, cols: number): Float32Array {
  if (src.length !== rows * cols) throw new Error(`transpose: ${src.length} values is not ${rows}x${cols}`);
  return transposeInto(src, new Float32Array(src.length), rows, cols, null);
}

/** transpose(halfArrayToFloat32(src)) in one pass, without the intermediate float32 copy. */
export function transposeHalf(src: Uint16Array, rows: number, cols: number): Float32Array {
  if (src.length !== rows * cols) throw new Error(`transpose: ${src.length} values is not ${rows}x${cols}`);
  return transposeInto(src, new Float32Array(src.length), rows, cols, halfToFloat32Table());
}

/** float32ToHalfArray(transpose(src)) in one pass, without the transposed float32 copy. */
export function transposeToHalf(src: Float32Array, rows: number, cols: number): Uint16Array {
  if (src.length !== rows * cols) throw new Error(`transpose: ${src.length} values is not ${rows}x${cols}`);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  forEachTileRow(rows, cols, (r, c0, c1) => {
    const base = r * cols;
    for (let c = c0; c < c1; c++) out[c * rows + r] = halfOfFloatBits(bits[base + c]!, src[base + c]!);
  });
  return out;
}

function transposeInto(src: Float32Array | Uint16Array, out: Float32Array, rows: number, cols: number, table: Float32Array | null): Float32Array {
  forEachTileRow(rows, cols, (r, c0, c1) => {
    const base = r * cols;
    if (table) for (let c = c0; c < c1; c++) out[c * rows + r] = table[src[base + c]!]!;
    else for (let c = c0; c < c1; c++) out[c * rows + r] = src[base + c]!;
  });
  return out;
}

/**
 * Visits row r's columns [c0, c1) of a [rows, cols] matrix in 64 × 64 tiles, for the transposes above: a plain loop
 * writes one cache line per value once the matrix outgrows the cache.
 */
function forEachTileRow(rows: number, cols: number, visit: (r: number, c0: number, c1: number) => void): void {
  const T = 64;
  for (let r0 = 0; r0 < rows; r0 += T) {
    const r1 = Math.min(rows, r0 + T);
    for (let c0 = 0; c0 < cols; c0 += T) {
      const c1 = Math.min(cols, c0 + T);
      for (let r = r0; r < r1; r++) visit(r, c0, c1);
    }
  }
}

/**
 * The layer's weight as [out, in] row-major float32 (converted from fp16 if stored so). An fp16 weight is decoded and
 * transposed in one pass, without a float32 copy in between (4 bytes per parameter of garbage until the collector runs;
 * the LLaMA-7B-shaped SparseGPT peak RSS was the same with and without it: 4158 and 4163 MB).
 */
export function readLinearWeight(model: OnnxModel, linear: LinearLayer): Float32Array {
  if (model.dataType(linear.weightName) === TensorProto_DataType.FLOAT16) {
    const bytes = model.readBytes(linear.weightName);
    const half = bytes.byteOffset % 2 === 0 ? new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2) : new Uint16Array(new Uint8Array(bytes).buffer); // a copy: a Buffer's slice() is a view of its pool
    return transposeHalf(half, linear.inFeatures, linear.outFeatures);
  }
  return transpose(model.readFloat32(linear.weightName), linear.inFeatures, linear.outFeatures);
}

/**
 * Replace the layer's weight from [out, in] row-major float32; stored back in its original dtype. float32 and fp16
 * are transposed straight into the stored array (the only copy: a 7B block's garbage would otherwise be 6 bytes per
 * parameter); other dtypes go through writeFloat32's conversion.
 */
export function writeLinearWeight(model: OnnxModel, linear: LinearLayer, weightOutIn: Float32Array): void {
  const expected = linear.outFeatures * linear.inFeatures;
  if (weightOutIn.length !== expected) {
    throw new Error(`block ${linear.block} ${linear.role}: expected [${linear.outFeatures}, ${linear.inFeatures}] = ${expected} values, got ${weightOutIn.length}`);
  }
  const dtype = model.dataType(linear.weightName);
  if (dtype === TensorProto_DataType.FLOAT16) model.writeStored(linear.weightName, transposeToHalf(weightOutIn, linear.outFeatures, linear.inFeatures));
  else if (dtype === TensorProto_DataType.FLOAT) model.writeStored(linear.weightName, transpose(weightOutIn, linear.outFeatures, linear.inFeatures));
  else model.writeFloat32(linear.weightName, transpose(weightOutIn, linear.outFeatures, linear.inFeatures));
}
