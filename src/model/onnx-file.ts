// ONNX model file I/O: load a .onnx with its external data, read/replace initializers as float32,
// and save with large float tensors in an external data file beside the model.
//
// Weight bytes are read lazily (positional fs.readSync at the external offset), so a model whose
// data file exceeds 2 GiB never passes through a single Buffer or protobuf. Replaced tensors are
// held in memory (in their original dtype) until save(), unless the model streams them
// (streamReplacedTo): then each replaced tensor is written at once, at the offset save() will give
// it, into the output's external data file, and read back from there; memory does not grow with
// the number of replaced tensors.
import { closeSync, existsSync, fstatSync, fsyncSync, openSync, readFileSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  ModelProtoSchema, StringStringEntryProtoSchema, TensorProtoSchema, TensorProto_DataLocation, TensorProto_DataType,
  type GraphProto, type ModelProto, type TensorProto,
} from 'onnx-buf';
import { UserError } from '../errors.js';
import { bfloat16ArrayToFloat32, float32ToBfloat16Array, float32ToHalfArray, halfArrayToFloat32 } from './float16.js';

const DT = TensorProto_DataType;

/** Bytes per element of the fixed-size ONNX dtypes we handle. */
const ELEMENT_BYTES: Partial<Record<number, number>> = {
  [DT.FLOAT]: 4, [DT.UINT8]: 1, [DT.INT8]: 1, [DT.UINT16]: 2, [DT.INT16]: 2, [DT.INT32]: 4, [DT.INT64]: 8,
  [DT.BOOL]: 1, [DT.FLOAT16]: 2, [DT.DOUBLE]: 8, [DT.UINT32]: 4, [DT.UINT64]: 8, [DT.BFLOAT16]: 2,
};

const FLOAT_TYPES = new Set<number>([DT.FLOAT, DT.FLOAT16, DT.BFLOAT16, DT.DOUBLE]);

/** ONNX elem type -> onnxruntime tensor type string (the ones a decoder LM uses). */
export const ORT_TYPE_OF: Partial<Record<number, string>> = {
  [DT.FLOAT]: 'float32', [DT.FLOAT16]: 'float16', [DT.DOUBLE]: 'float64', [DT.INT64]: 'int64', [DT.INT32]: 'int32',
  [DT.BOOL]: 'bool', [DT.UINT8]: 'uint8', [DT.INT8]: 'int8', [DT.BFLOAT16]: 'bfloat16',
};

export function dtypeName(dataType: number): string {
  return ORT_TYPE_OF[dataType] ?? TensorProto_DataType[dataType]?.toLowerCase() ?? `dtype${dataType}`;
}

export interface SaveOptions {
  /** File name of the external data, beside the model (default: derived from the output name). */
  externalDataName?: string;
  /** Float tensors of at least this many bytes go to external data (default 1024). */
  sizeThreshold?: number;
}

interface ExternalRef { file: string; offset: number; length: number }

/** Where save() puts one tensor in the external data file. */
export interface DataSlot { offset: number; length: number }

/** An open external data file that replaced tensors are written into as soon as they are replaced. */
interface ReplacementStream { dataPath: string; threshold: number; fd: number; layout: Map<string, DataSlot> }

export class OnnxModel {
  /** Replaced initializers: name -> little-endian bytes in the tensor's own dtype. */
  private readonly replaced = new Map<string, Uint8Array>();
  private readonly initializers = new Map<string, TensorProto>();
  /** Replaced initializers whose bytes are in the stream's data file (not in memory). */
  private readonly streamed = new Set<string>();
  private stream: ReplacementStream | null = null;
  /** Large float initializers stored inline in the .onnx itself: read from the file when needed, not kept. */
  private readonly inlineSlots = new Map<string, DataSlot>();

  private constructor(readonly path: string, readonly proto: ModelProto) {
    for (const t of this.graph.initializer) this.initializers.set(t.name, t);
  }

  /** Parse `path` and check that every external data reference points inside an existing file. */
  static load(path: string): OnnxModel {
    if (!existsSync(path)) throw new UserError(`model file not found: ${path}`);
    if (!statSync(path).isFile()) throw new UserError(`not a file: ${path}`);
    if (statSync(path).size > 2 ** 31 - 1) throw new UserError(`${path} is over 2 GiB: not a valid ONNX protobuf (large weights must be in external data)`);
    let proto: ModelProto;
    const file = readFileSync(path);
    try {
      proto = fromBinary(ModelProtoSchema, file);
    } catch (e) {
      throw new UserError(`${path} is not a valid ONNX model (truncated or not ONNX: ${(e as Error).message})`);
    }
    if (!proto.graph || proto.graph.node.length === 0) throw new UserError(`${path} is not an ONNX model with a graph (empty or not ONNX)`);
    const model = new OnnxModel(resolve(path), proto);
    model.checkExternalData();
    model.detachInlineWeights(file);
    return model;
  }

  get graph(): GraphProto {
    return this.proto.graph!;
  }

  get dir(): string {
    return dirname(this.path);
  }

  /** Names of the external data files this model reads (relative to the model folder). */
  get externalDataFiles(): string[] {
    const files = new Set<string>();
    for (const t of this.initializers.values()) if (isExternal(t)) files.add(externalEntry(t, 'location')!);
    return [...files];
  }

  hasInitializer(name: string): boolean {
    return this.initializers.has(name);
  }

  initializer(name: string): TensorProto {
    const t = this.initializers.get(name);
    if (!t) throw new Error(`no initializer named ${name}`);
    return t;
  }

  dims(name: string): number[] {
    return this.initializer(name).dims.map(Number);
  }

  dataType(name: string): number {
    return this.initializer(name).dataType;
  }

  isReplaced(name: string): boolean {
    return this.replaced.has(name) || this.streamed.has(name);
  }

  /**
   * Where save(out, { sizeThreshold }) puts each float tensor of at least `threshold` bytes in the
   * external data file: in initializer order, each at a 64-byte-aligned offset (friendly to mmap).
   */
  externalDataLayout(threshold = DEFAULT_SIZE_THRESHOLD): Map<string, DataSlot> {
    const layout = new Map<string, DataSlot>();
    let offset = 0;
    for (const t of this.graph.initializer) {
      if (!FLOAT_TYPES.has(t.dataType) || byteLength(t) < threshold) continue;
      offset = Math.ceil(offset / 64) * 64;
      layout.set(t.name, { offset, length: byteLength(t) });
      offset += byteLength(t);
    }
    return layout;
  }

  /**
   * From now on, each tensor replaced by writeFloat32 that save() would put in external data is written at
   * once into `dataPath`, at its final offset (externalDataLayout), and dropped from memory. save() to the
   * model file whose external data is `dataPath` then fills in the other tensors in place. With `keep`, an
   * existing file is kept (a resume: its tensors named later by markStreamed); otherwise it is truncated.
   */
  streamReplacedTo(dataPath: string, options: { threshold?: number; keep?: boolean } = {}): void {
    if (this.stream) throw new Error('streamReplacedTo: already streaming');
    if (this.replaced.size > 0) throw new Error('streamReplacedTo: tensors were replaced before streaming started');
    const path = resolve(dataPath);
    const inputs = [this.path, ...this.externalDataFiles.map((f) => resolve(this.dir, f))];
    if (inputs.includes(path)) throw new UserError(`refusing to overwrite the input model's file ${path}: choose another output path`);
    const threshold = options.threshold ?? DEFAULT_SIZE_THRESHOLD;
    const fd = openSync(path, options.keep && existsSync(path) ? 'r+' : 'w+');
    this.stream = { dataPath: path, threshold, fd, layout: this.externalDataLayout(threshold) };
  }

  /** Tensors already written to the stream's data file by an earlier (interrupted) run: they read from there. */
  markStreamed(names: Iterable<string>, what: string): void {
    const s = this.stream;
    if (!s) throw new Error('markStreamed: not streaming');
    const size = fstatSync(s.fd).size;
    for (const name of names) {
      const slot = s.layout.get(name);
      if (!slot) throw new Error(`markStreamed: ${name} is not in the external data layout`);
      if (slot.offset + slot.length > size) throw new UserError(`${what} is damaged: ${s.dataPath} ends at byte ${size}, before ${name} (bytes up to ${slot.offset + slot.length}): rerun without --resume (add --force)`);
      this.streamed.add(name);
    }
  }

  /** Flushes the streamed tensors to disk (before a checkpoint names them as written). */
  syncStream(): void {
    if (this.stream) fsyncSync(this.stream.fd);
  }

  closeStream(): void {
    if (this.stream) closeSync(this.stream.fd);
    this.stream = null;
  }

  /** The tensor's data as little-endian bytes in its own dtype (replacements applied). */
  readBytes(name: string): Uint8Array {
    const replaced = this.replaced.get(name);
    if (replaced) return replaced;
    if (this.streamed.has(name)) {
      const s = this.stream!;
      const slot = s.layout.get(name)!;
      return readAt(s.fd, s.dataPath, name, slot.offset, slot.length);
    }
    const inline = this.inlineSlots.get(name);
    if (inline) {
      const fd = openSync(this.path, 'r');
      try {
        return readAt(fd, this.path, name, inline.offset, inline.length);
      } finally {
        closeSync(fd);
      }
    }
    const t = this.initializer(name);
    if (isExternal(t)) return this.readExternal(t);
    return inlineBytes(t);
  }

  /** The tensor's values as float32 (fp16 / bf16 / fp64 converted). */
  readFloat32(name: string): Float32Array {
    const t = this.initializer(name);
    const bytes = this.readBytes(name);
    const n = elementCount(t);
    switch (t.dataType) {
      case DT.FLOAT: return new Float32Array(copyAligned(bytes).buffer, 0, n);
      case DT.FLOAT16: return halfArrayToFloat32(new Uint16Array(copyAligned(bytes).buffer, 0, n));
      case DT.BFLOAT16: return bfloat16ArrayToFloat32(new Uint16Array(copyAligned(bytes).buffer, 0, n));
      case DT.DOUBLE: return Float32Array.from(new Float64Array(copyAligned(bytes).buffer, 0, n));
      default: throw new Error(`initializer ${name} has non-float dtype ${dtypeName(t.dataType)}`);
    }
  }

  /** Replace a float tensor's values (same element count); stored in the tensor's original dtype. */
  writeFloat32(name: string, values: Float32Array): void {
    const t = this.initializer(name);
    const n = elementCount(t);
    if (values.length !== n) throw new Error(`writeFloat32(${name}): got ${values.length} values, tensor has ${n}`);
    let typed: ArrayBufferView;
    switch (t.dataType) {
      case DT.FLOAT: typed = Float32Array.from(values); break;
      case DT.FLOAT16: typed = float32ToHalfArray(values); break;
      case DT.BFLOAT16: typed = float32ToBfloat16Array(values); break;
      case DT.DOUBLE: typed = Float64Array.from(values); break;
      default: throw new Error(`initializer ${name} has non-float dtype ${dtypeName(t.dataType)}`);
    }
    this.writeStored(name, typed);
  }

  /**
   * Replace a tensor's bytes with values already in its own dtype (same byte length). The array is taken over, not
   * copied: the caller must not change it afterwards.
   */
  writeStored(name: string, typed: ArrayBufferView): void {
    const t = this.initializer(name);
    if (typed.byteLength !== byteLength(t)) throw new Error(`writeStored(${name}): got ${typed.byteLength} bytes, tensor has ${byteLength(t)}`);
    const bytes = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
    const slot = this.stream?.layout.get(name);
    if (slot) {
      writeAll(this.stream!.fd, bytes, slot.offset);
      this.streamed.add(name);
      this.replaced.delete(name);
    } else {
      this.replaced.set(name, bytes);
    }
  }

  /** Forgets an in-memory replacement: the tensor reads its original bytes again (a streamed tensor cannot be undone). */
  discardReplacement(name: string): void {
    if (this.streamed.has(name)) throw new Error(`discardReplacement(${name}): it was streamed to the output already`);
    this.replaced.delete(name);
  }

  /** A self-contained copy of one initializer with its (current) bytes inline as raw_data. */
  inlineInitializer(name: string): TensorProto {
    const t = this.initializer(name);
    if (this.inlineSlots.has(name) && !this.isReplaced(name)) return { ...t, rawData: this.readBytes(name) as Uint8Array<ArrayBuffer> };
    if (!isExternal(t) && !this.isReplaced(name)) return t;
    return create(TensorProtoSchema, { name: t.name, dims: t.dims, dataType: t.dataType, rawData: this.readBytes(name) as Uint8Array<ArrayBuffer> });
  }

  /**
   * Write the model to `outPath` (+ one external data file beside it). Float initializers of at
   * least `sizeThreshold` bytes go to external data with a relative location; the rest stay inline.
   * The input files are never written to.
   */
  save(outPath: string, options: SaveOptions = {}): void {
    const threshold = options.sizeThreshold ?? DEFAULT_SIZE_THRESHOLD;
    const out = resolve(outPath);
    const dataName = options.externalDataName ?? this.defaultExternalDataName(basename(out));
    const dataPath = join(dirname(out), dataName);
    const inputs = [this.path, ...this.externalDataFiles.map((f) => resolve(this.dir, f))];
    for (const p of [out, dataPath]) {
      if (inputs.includes(p)) throw new UserError(`refusing to overwrite the input model's file ${p}: choose another output path`);
    }
    // Saving into the stream's own file: the streamed tensors are already in place, the others are filled in.
    const inPlace = this.stream?.dataPath === dataPath;
    if (inPlace && this.stream!.threshold !== threshold) throw new Error(`save: the streamed data file ${dataPath} has another layout (threshold ${this.stream!.threshold}, not ${threshold})`);
    const layout = inPlace ? this.stream!.layout : this.externalDataLayout(threshold);

    let fd: number | undefined = inPlace ? this.stream!.fd : undefined;
    const initializer: TensorProto[] = [];
    try {
      for (const t of this.graph.initializer) {
        const slot = layout.get(t.name);
        if (!slot) {
          initializer.push(isExternal(t) || this.isReplaced(t.name) || this.inlineSlots.has(t.name) ? this.inlineInitializer(t.name) : t);
          continue;
        }
        if (!(inPlace && this.streamed.has(t.name))) {
          const bytes = this.readBytes(t.name);
          fd ??= openSync(dataPath, 'w');
          writeAll(fd, bytes, slot.offset);
        }
        initializer.push(create(TensorProtoSchema, {
          name: t.name, dims: t.dims, dataType: t.dataType, docString: t.docString,
          dataLocation: TensorProto_DataLocation.EXTERNAL,
          externalData: [
            create(StringStringEntryProtoSchema, { key: 'location', value: dataName }),
            create(StringStringEntryProtoSchema, { key: 'offset', value: String(slot.offset) }),
            create(StringStringEntryProtoSchema, { key: 'length', value: String(slot.length) }),
          ],
        }));
      }
      if (inPlace) fsyncSync(fd!);
    } finally {
      if (fd !== undefined && !inPlace) closeSync(fd);
    }
    const copy: ModelProto = { ...this.proto, graph: { ...this.graph, initializer } };
    writeFileSync(out, toBinary(ModelProtoSchema, copy));
  }

  /** Name of the external data file save(outPath) writes beside `outPath` by default. */
  externalDataNameFor(outPath: string): string {
    return this.defaultExternalDataName(basename(resolve(outPath)));
  }

  /** `<out>.onnx_data`, or the input's own naming style (e.g. `<out>.data` for `model.onnx.data`). */
  private defaultExternalDataName(outFile: string): string {
    const inFile = basename(this.path);
    const styled = this.externalDataFiles.find((f) => f.startsWith(inFile) && f.length > inFile.length);
    const suffix = styled ? styled.slice(inFile.length).replace(/^(_data)_\d+$/, '$1') : '_data';
    return outFile + suffix;
  }

  private externalRef(t: TensorProto): ExternalRef {
    const location = externalEntry(t, 'location');
    if (!location) throw new UserError(`${this.path}: tensor ${t.name} is EXTERNAL but has no location`);
    const offset = Number(externalEntry(t, 'offset') ?? 0);
    const length = Number(externalEntry(t, 'length') ?? byteLength(t));
    return { file: resolve(this.dir, location), offset, length };
  }

  /**
   * The parsed protobuf's bytes fields are views into the file's buffer. Large inline float initializers are dropped
   * and remembered by their position in the .onnx (read back positionally); every other view is copied, so the
   * file's buffer is released once loading is done and a model with inline weights does not stay resident.
   */
  private detachInlineWeights(file: Buffer): void {
    for (const t of this.graph.initializer) {
      if (isExternal(t) || !FLOAT_TYPES.has(t.dataType) || t.rawData.byteLength < DEFAULT_SIZE_THRESHOLD || t.rawData.buffer !== file.buffer) continue;
      this.inlineSlots.set(t.name, { offset: t.rawData.byteOffset - file.byteOffset, length: t.rawData.byteLength });
      t.rawData = new Uint8Array(0);
    }
    const copyViews = (value: unknown): void => {
      if (Array.isArray(value)) {
        value.forEach((v, k) => (v instanceof Uint8Array ? v.buffer === file.buffer && (value[k] = v.slice()) : copyViews(v)));
      } else if (value && typeof value === 'object' && !ArrayBuffer.isView(value)) {
        const o = value as Record<string, unknown>;
        for (const [k, v] of Object.entries(o)) {
          if (v instanceof Uint8Array) {
            if (v.buffer === file.buffer) o[k] = v.slice();
          } else copyViews(v);
        }
      }
    };
    copyViews(this.proto);
  }

  private checkExternalData(): void {
    const sizes = new Map<string, number>();
    for (const t of this.initializers.values()) {
      if (!isExternal(t)) continue;
      const ref = this.externalRef(t);
      if (!sizes.has(ref.file)) {
        if (!existsSync(ref.file)) throw new UserError(`external data file missing: ${ref.file} (needed by ${this.path}; keep it beside the model)`);
        sizes.set(ref.file, statSync(ref.file).size);
      }
      if (ref.offset + ref.length > sizes.get(ref.file)!) {
        throw new UserError(`external data file ${ref.file} is truncated: tensor ${t.name} needs bytes up to ${ref.offset + ref.length}, file has ${sizes.get(ref.file)}`);
      }
    }
  }

  private readExternal(t: TensorProto): Uint8Array {
    const ref = this.externalRef(t);
    const fd = openSync(ref.file, 'r');
    try {
      return readAt(fd, ref.file, t.name, ref.offset, ref.length);
    } finally {
      closeSync(fd);
    }
  }
}

const DEFAULT_SIZE_THRESHOLD = 1024;

/** `length` bytes at `offset` of an open file, by positional reads (at most 1 GiB each). */
function readAt(fd: number, file: string, tensor: string, offset: number, length: number): Uint8Array {
  if (offset + length > fstatSync(fd).size) throw new UserError(`external data file ${file} is truncated (tensor ${tensor})`);
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const chunk = Math.min(length - done, 1 << 30);
    const n = readSync(fd, buf, done, chunk, offset + done);
    if (n <= 0) throw new UserError(`external data file ${file} ended early (tensor ${tensor})`);
    done += n;
  }
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

function writeAll(fd: number, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.byteLength) {
    const chunk = Math.min(bytes.byteLength - done, 1 << 30);
    done += writeSync(fd, bytes, done, chunk, position + done);
  }
}

export function isExternal(t: TensorProto): boolean {
  return t.dataLocation === TensorProto_DataLocation.EXTERNAL;
}

function externalEntry(t: TensorProto, key: string): string | undefined {
  return t.externalData.find((e) => e.key === key)?.value;
}

export function elementCount(t: TensorProto): number {
  return t.dims.reduce((a, d) => a * Number(d), 1);
}

function byteLength(t: TensorProto): number {
  const size = ELEMENT_BYTES[t.dataType];
  if (size === undefined) return isExternal(t) ? 0 : t.rawData.byteLength;
  return elementCount(t) * size;
}

/** A copy with its own 8-byte-aligned ArrayBuffer (raw_data views into the file can be unaligned). */
function copyAligned(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(new ArrayBuffer(Math.ceil(bytes.byteLength / 8) * 8), 0, bytes.byteLength);
  out.set(bytes);
  return out;
}

/** Bytes of an inline tensor, from raw_data or from the typed repeated fields. */
function inlineBytes(t: TensorProto): Uint8Array {
  if (t.rawData.byteLength > 0 || elementCount(t) === 0) return t.rawData;
  const view = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  switch (t.dataType) {
    case DT.FLOAT: return view(Float32Array.from(t.floatData));
    case DT.DOUBLE: return view(Float64Array.from(t.doubleData));
    case DT.INT64: return view(BigInt64Array.from(t.int64Data));
    case DT.UINT64: return view(BigUint64Array.from(t.uint64Data));
    case DT.UINT32: return view(Uint32Array.from(t.uint64Data, Number));
    case DT.INT32: return view(Int32Array.from(t.int32Data));
    case DT.FLOAT16: case DT.BFLOAT16: case DT.UINT16: return view(Uint16Array.from(t.int32Data));
    case DT.INT16: return view(Int16Array.from(t.int32Data));
    case DT.INT8: return view(Int8Array.from(t.int32Data));
    case DT.UINT8: case DT.BOOL: return view(Uint8Array.from(t.int32Data));
    default: throw new Error(`tensor ${t.name}: unsupported dtype ${dtypeName(t.dataType)}`);
  }
}
