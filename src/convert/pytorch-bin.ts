// PyTorch checkpoints (`pytorch_model.bin`, torch.save of a state dict), read without Python and without executing
// anything, one tensor at a time.
//
// Format (torch >= 1.6, torch/serialization.py `_save`): a zip archive, entries STORED (uncompressed), all under one
// folder `<archive>/`: `data.pkl` (the pickled state dict), `data/<key>` (one raw little-endian storage per key),
// `version`, and since torch 1.12 `byteorder`. In data.pkl each tensor is
//   torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
// where `storage` is a persistent id ('storage', torch.FloatStorage, key, location, numel) naming `data/<key>`.
// The zip is read from its central directory (zip64 included, as torch writes files over 4 GB) with positional reads;
// data.pkl is read by a restricted unpickler that knows only the opcodes and globals torch.save emits for a state
// dict and refuses everything else, so no pickle can make it call anything. The pre-1.6 format (a bare pickle
// stream followed by raw storages) is refused. Sharded checkpoints: `pytorch_model-0000k-of-0000n.bin` listed by
// `pytorch_model.bin.index.json` (`weight_map`: tensor -> shard file).
import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import { UserError } from '../errors.js';
import { TensorTableCheckpoint, elementCount, openTensorTable, type CheckpointTensor } from './checkpoint-reader.js';

export const BIN_SINGLE_FILE = 'pytorch_model.bin';
export const BIN_INDEX_FILE = 'pytorch_model.bin.index.json';

/**
 * torch's storage classes -> safetensors dtype names and element sizes. Weights are F32 / F16 / BF16; the integer
 * and bool ones are named so a checkpoint holding an unused buffer (e.g. an int64 `position_ids`) still opens: only
 * the tensors the converter reads must be float (checked by name in convert.ts).
 */
const STORAGE_DTYPES: Record<string, { dtype: string; bytes: number }> = {
  FloatStorage: { dtype: 'F32', bytes: 4 }, HalfStorage: { dtype: 'F16', bytes: 2 }, BFloat16Storage: { dtype: 'BF16', bytes: 2 },
  DoubleStorage: { dtype: 'F64', bytes: 8 }, LongStorage: { dtype: 'I64', bytes: 8 }, IntStorage: { dtype: 'I32', bytes: 4 },
  ShortStorage: { dtype: 'I16', bytes: 2 }, CharStorage: { dtype: 'I8', bytes: 1 }, ByteStorage: { dtype: 'U8', bytes: 1 }, BoolStorage: { dtype: 'BOOL', bytes: 1 },
};

export interface BinTensorInfo extends CheckpointTensor {
  /** Absolute byte offset of the first element in `file`, and the tensor's byte length. */
  begin: number;
  byteLength: number;
}

// ---------------------------------------------------------------------------------------------------------- zip

interface ZipEntry {
  name: string;
  method: number;
  size: number;
  /** Absolute offset of the entry's local header. */
  headerOffset: number;
}

function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n <= 0) break;
    done += n;
  }
  return done === length ? buf : buf.subarray(0, done);
}

/** The zip's central directory: every entry's name, compression method, size and local-header offset. */
function readZipDirectory(fd: number, fileSize: number, corrupt: (why: string) => UserError): ZipEntry[] {
  // End of central directory record (22 bytes + comment up to 65535), found by its signature from the end.
  const tailLength = Math.min(fileSize, 22 + 65535);
  const tail = readAt(fd, fileSize - tailLength, tailLength);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) if (tail.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  if (eocd < 0) throw corrupt('no zip end-of-central-directory record: truncated or not a zip');
  let entries = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (entries === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // zip64: a locator just before the EOCD points at the zip64 EOCD record, which holds 8-byte fields
    const locatorAt = fileSize - tailLength + eocd - 20;
    const locator = locatorAt >= 0 ? readAt(fd, locatorAt, 20) : Buffer.alloc(0);
    if (locator.length < 20 || locator.readUInt32LE(0) !== 0x07064b50) throw corrupt('zip64 locator missing');
    const record = readAt(fd, Number(locator.readBigUInt64LE(8)), 56);
    if (record.length < 56 || record.readUInt32LE(0) !== 0x06064b50) throw corrupt('zip64 end-of-central-directory record missing');
    entries = Number(record.readBigUInt64LE(32));
    cdSize = Number(record.readBigUInt64LE(40));
    cdOffset = Number(record.readBigUInt64LE(48));
  }
  if (cdOffset + cdSize > fileSize || cdSize > 1 << 30) throw corrupt(`central directory (${cdSize} bytes at ${cdOffset}) does not fit the ${fileSize}-byte file`);
  const cd = readAt(fd, cdOffset, cdSize);
  const out: ZipEntry[] = [];
  let p = 0;
  for (let k = 0; k < entries; k++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== 0x02014b50) throw corrupt(`central directory entry ${k} is damaged`);
    const method = cd.readUInt16LE(p + 10);
    let size = cd.readUInt32LE(p + 24);
    let compressed = cd.readUInt32LE(p + 20);
    const nameLength = cd.readUInt16LE(p + 28), extraLength = cd.readUInt16LE(p + 30), commentLength = cd.readUInt16LE(p + 32);
    let headerOffset = cd.readUInt32LE(p + 42);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLength);
    // zip64 extended information (extra field 0x0001): the 8-byte values of the fields saturated above, in order
    let e = p + 46 + nameLength;
    const extraEnd = e + extraLength;
    while (e + 4 <= extraEnd) {
      const id = cd.readUInt16LE(e), len = cd.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        if (size === 0xffffffff) { size = Number(cd.readBigUInt64LE(q)); q += 8; }
        if (compressed === 0xffffffff) { compressed = Number(cd.readBigUInt64LE(q)); q += 8; }
        if (headerOffset === 0xffffffff) headerOffset = Number(cd.readBigUInt64LE(q));
      }
      e += 4 + len;
    }
    if (method === 0 && compressed !== size) throw corrupt(`entry ${name} is stored with ${compressed} bytes for ${size}`);
    out.push({ name, method, size, headerOffset });
    p = extraEnd + commentLength;
  }
  return out;
}

/** Absolute offset of a STORED entry's data (after its local header), checked against the file size. */
function entryDataOffset(fd: number, fileSize: number, entry: ZipEntry, corrupt: (why: string) => UserError, file: string): number {
  if (entry.method !== 0) throw new UserError(`${file}: zip entry ${entry.name} is compressed (method ${entry.method}); sparsellm reads only the uncompressed archives torch.save writes: re-save it with torch.save`);
  const local = readAt(fd, entry.headerOffset, 30);
  if (local.length < 30 || local.readUInt32LE(0) !== 0x04034b50) throw corrupt(`local header of ${entry.name} is damaged`);
  const start = entry.headerOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
  if (start + entry.size > fileSize) throw corrupt(`entry ${entry.name} ends past the end of the file: truncated`);
  return start;
}

// ------------------------------------------------------------------------------------------------- unpickler

/** A persistent id `('storage', <storage class>, key, location, numel)`. */
interface StorageRef { kind: 'storage'; dtype: string; bytes: number; key: string }
interface TensorRef { kind: 'tensor'; storage: StorageRef; offset: number; shape: number[]; stride: number[] }
interface Global { kind: 'global'; module: string; name: string }
interface PickleDict { kind: 'dict'; entries: Map<unknown, unknown> }
const MARK = Symbol('mark');

/** The callables and classes torch.save's state-dict pickles name; anything else is refused before it is used. */
const ALLOWED_GLOBALS = new Set([
  'collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_parameter',
  ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`),
]);

/**
 * Unpickle torch.save's data.pkl for a state dict: returns the top-level dict's tensors. Only the opcodes such a
 * pickle uses are known (protocol 2, and FRAME / MEMOIZE / STACK_GLOBAL of protocol 4); globals are whitelisted.
 */
export function unpickleStateDict(data: Uint8Array, where: string): Map<string, TensorRef> {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const fail = (why: string) => new UserError(`${where}: ${why}`);
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  let p = 0;
  const need = (n: number) => {
    if (p + n > buf.length) throw fail('data.pkl ends early: truncated or damaged checkpoint');
  };
  const pop = () => {
    if (stack.length === 0) throw fail('data.pkl pops an empty stack: damaged checkpoint');
    return stack.pop();
  };
  const popMark = (): unknown[] => {
    const at = stack.lastIndexOf(MARK);
    if (at < 0) throw fail('data.pkl has no MARK where one is needed: damaged checkpoint');
    const items = stack.slice(at + 1);
    stack.length = at;
    return items;
  };
  const line = () => {
    const end = buf.indexOf(0x0a, p);
    if (end < 0) throw fail('data.pkl ends inside a GLOBAL: damaged checkpoint');
    const s = buf.toString('utf8', p, end);
    p = end + 1;
    return s;
  };
  const global = (module: string, name: string): Global => {
    const full = `${module}.${name}`;
    if (!ALLOWED_GLOBALS.has(full)) throw fail(`refusing to unpickle ${full}: a PyTorch state dict holds only tensors (this file may run code when loaded by Python)`);
    return { kind: 'global', module, name };
  };
  const asDict = (v: unknown, op: string): PickleDict => {
    if (!v || (v as PickleDict).kind !== 'dict') throw fail(`data.pkl applies ${op} to something that is not a dict`);
    return v as PickleDict;
  };
  const intList = (v: unknown, what: string): number[] => {
    if (!Array.isArray(v) || !v.every((x) => Number.isSafeInteger(x) && (x as number) >= 0)) throw fail(`a tensor's ${what} is not a tuple of integers`);
    return v as number[];
  };
  const call = (fn: unknown, args: unknown): unknown => {
    const g = fn as Global;
    if (!g || g.kind !== 'global') throw fail('data.pkl calls something that is not a whitelisted global');
    if (!Array.isArray(args)) throw fail(`data.pkl calls ${g.module}.${g.name} without an argument tuple`);
    switch (`${g.module}.${g.name}`) {
      case 'collections.OrderedDict':
        if (args.length !== 0) throw fail('data.pkl builds an OrderedDict from arguments; torch.save does not');
        return { kind: 'dict', entries: new Map() } satisfies PickleDict;
      case 'torch._utils._rebuild_tensor_v2': {
        const [storage, offset, size, stride] = args as [StorageRef, unknown, unknown, unknown];
        if (!storage || storage.kind !== 'storage') throw fail('_rebuild_tensor_v2 is given no storage');
        if (!Number.isSafeInteger(offset) || (offset as number) < 0) throw fail('_rebuild_tensor_v2 is given a bad storage offset');
        return { kind: 'tensor', storage, offset: offset as number, shape: intList(size, 'size'), stride: intList(stride, 'stride') } satisfies TensorRef;
      }
      case 'torch._utils._rebuild_parameter': {
        const t = args[0] as TensorRef;
        if (!t || t.kind !== 'tensor') throw fail('_rebuild_parameter is given no tensor');
        return t;
      }
      default:
        throw fail(`refusing to call ${g.module}.${g.name} from data.pkl`);
    }
  };

  for (;;) {
    need(1);
    const op = buf[p++]!;
    switch (op) {
      case 0x80: need(1); p += 1; break; // PROTO
      case 0x95: need(8); p += 8; break; // FRAME: a length hint only
      case 0x7d: stack.push({ kind: 'dict', entries: new Map() } satisfies PickleDict); break; // EMPTY_DICT '}'
      case 0x29: stack.push([]); break; // EMPTY_TUPLE ')'
      case 0x5d: stack.push([]); break; // EMPTY_LIST ']'
      case 0x28: stack.push(MARK); break; // MARK '('
      case 0x74: stack.push(popMark()); break; // TUPLE 't'
      case 0x85: stack.push([pop()]); break; // TUPLE1
      case 0x86: { const b = pop(), a = pop(); stack.push([a, b]); break; } // TUPLE2
      case 0x87: { const c = pop(), b = pop(), a = pop(); stack.push([a, b, c]); break; } // TUPLE3
      case 0x58: { need(4); const n = buf.readUInt32LE(p); p += 4; need(n); stack.push(buf.toString('utf8', p, p + n)); p += n; break; } // BINUNICODE 'X'
      case 0x8c: { need(1); const n = buf[p++]!; need(n); stack.push(buf.toString('utf8', p, p + n)); p += n; break; } // SHORT_BINUNICODE
      case 0x4a: need(4); stack.push(buf.readInt32LE(p)); p += 4; break; // BININT 'J'
      case 0x4b: need(1); stack.push(buf[p++]!); break; // BININT1 'K'
      case 0x4d: need(2); stack.push(buf.readUInt16LE(p)); p += 2; break; // BININT2 'M'
      case 0x8a: { // LONG1: n-byte little-endian two's complement
        need(1);
        const n = buf[p++]!;
        need(n);
        if (n > 8) throw fail('data.pkl holds an integer wider than 64 bits');
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(buf[p + i]!);
        if (n > 0 && buf[p + n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        p += n;
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) throw fail('data.pkl holds an integer beyond 2^53');
        stack.push(Number(v));
        break;
      }
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4e: stack.push(null); break; // NONE 'N'
      case 0x63: { const module = line(); stack.push(global(module, line())); break; } // GLOBAL 'c'
      case 0x93: { const name = pop(), module = pop(); if (typeof module !== 'string' || typeof name !== 'string') throw fail('STACK_GLOBAL without two strings'); stack.push(global(module, name)); break; }
      case 0x51: { // BINPERSID 'Q': ('storage', storage class, key, location, numel)
        const pid = pop() as unknown[];
        if (!Array.isArray(pid) || pid[0] !== 'storage' || typeof pid[2] !== 'string') throw fail('data.pkl has a persistent id that is not a storage');
        const cls = pid[1] as Global;
        const type = cls?.kind === 'global' && cls.module === 'torch' ? STORAGE_DTYPES[cls.name] : undefined;
        if (!type) throw fail('data.pkl has a storage without a torch storage class');
        stack.push({ kind: 'storage', ...type, key: pid[2] } satisfies StorageRef);
        break;
      }
      case 0x52: { const args = pop(); const fn = pop(); stack.push(call(fn, args)); break; } // REDUCE 'R'
      case 0x62: { // BUILD 'b': state for an OrderedDict (its `_metadata` attribute) or a tensor; neither is used
        pop();
        const obj = stack[stack.length - 1] as { kind?: string } | undefined;
        if (!obj || (obj.kind !== 'dict' && obj.kind !== 'tensor')) throw fail('data.pkl BUILDs something other than a dict or tensor');
        break;
      }
      case 0x73: { const v = pop(), k = pop(); asDict(stack[stack.length - 1], 'SETITEM').entries.set(k, v); break; } // SETITEM 's'
      case 0x75: { // SETITEMS 'u'
        const items = popMark();
        const d = asDict(stack[stack.length - 1], 'SETITEMS');
        for (let i = 0; i + 1 < items.length; i += 2) d.entries.set(items[i], items[i + 1]);
        break;
      }
      case 0x61: { const v = pop(); const l = stack[stack.length - 1]; if (!Array.isArray(l)) throw fail('APPEND to a non-list'); l.push(v); break; } // APPEND 'a'
      case 0x65: { const items = popMark(); const l = stack[stack.length - 1]; if (!Array.isArray(l)) throw fail('APPENDS to a non-list'); l.push(...items); break; } // APPENDS 'e'
      case 0x71: need(1); memo.set(buf[p++]!, stack[stack.length - 1]); break; // BINPUT 'q'
      case 0x72: need(4); memo.set(buf.readUInt32LE(p), stack[stack.length - 1]); p += 4; break; // LONG_BINPUT 'r'
      case 0x94: memo.set(memo.size, stack[stack.length - 1]); break; // MEMOIZE
      case 0x68: { need(1); const k = buf[p++]!; if (!memo.has(k)) throw fail('BINGET of an unset memo slot'); stack.push(memo.get(k)); break; } // BINGET 'h'
      case 0x6a: { need(4); const k = buf.readUInt32LE(p); p += 4; if (!memo.has(k)) throw fail('LONG_BINGET of an unset memo slot'); stack.push(memo.get(k)); break; } // LONG_BINGET 'j'
      case 0x2e: { // STOP '.'
        const top = asDict(pop(), 'the end of the pickle');
        const tensors = new Map<string, TensorRef>();
        for (const [k, v] of top.entries) {
          if (typeof k !== 'string') throw fail('the state dict has a key that is not a string');
          if (!v || (v as TensorRef).kind !== 'tensor') throw fail(`state dict entry ${k} is not a tensor`);
          tensors.set(k, v as TensorRef);
        }
        return tensors;
      }
      default:
        throw fail(`data.pkl uses pickle opcode 0x${op.toString(16).padStart(2, '0')}, which torch.save does not write for a state dict: refusing to unpickle it`);
    }
  }
}

// ------------------------------------------------------------------------------------------------- one file

/** Read one torch.save zip's tensor table (names, dtypes, shapes, byte ranges); no tensor data is read. */
export function readPytorchBinHeader(file: string): BinTensorInfo[] {
  if (!existsSync(file)) throw new UserError(`PyTorch checkpoint file missing: ${file}`);
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const corrupt = (why: string) => new UserError(`${file} is not a valid PyTorch checkpoint (${why}): re-download it`);
    const magic = readAt(fd, 0, 4);
    if (magic.length < 4) throw corrupt('shorter than a zip header');
    if (magic.readUInt32LE(0) !== 0x04034b50) {
      if (magic[0] === 0x80) throw new UserError(`${file} is in PyTorch's legacy (pre-1.6, non-zip) format, which sparsellm does not read: re-save it with torch >= 1.6 (torch.save) or as safetensors`);
      throw corrupt('not a zip archive');
    }
    const entries = readZipDirectory(fd, size, corrupt);
    const pkl = entries.find((e) => /^[^/]+\/data\.pkl$/.test(e.name));
    if (!pkl) throw corrupt('no <archive>/data.pkl entry');
    const prefix = pkl.name.slice(0, -'data.pkl'.length);
    const byName = new Map(entries.map((e) => [e.name, e]));
    const byteorder = byName.get(`${prefix}byteorder`);
    if (byteorder) {
      const order = readAt(fd, entryDataOffset(fd, size, byteorder, corrupt, file), byteorder.size).toString('utf8');
      if (order !== 'little') throw new UserError(`${file} was saved on a ${order}-endian machine; sparsellm reads little-endian checkpoints only`);
    }
    if (pkl.size > 1 << 30) throw corrupt(`data.pkl is ${pkl.size} bytes`);
    const tensors = unpickleStateDict(readAt(fd, entryDataOffset(fd, size, pkl, corrupt, file), pkl.size), file);
    const out: BinTensorInfo[] = [];
    for (const [name, t] of tensors) {
      // contiguous (row-major) strides: stride[i] = prod(shape[i+1..]); dims of size 1 may carry any stride
      let expected = 1;
      for (let i = t.shape.length - 1; i >= 0; i--) {
        if (t.shape.length !== t.stride.length || (t.shape[i]! !== 1 && t.stride[i] !== expected)) {
          throw new UserError(`${file}: tensor ${name} is stored non-contiguously (shape [${t.shape}], strides [${t.stride}]); sparsellm reads contiguous tensors only: re-save it with .contiguous()`);
        }
        expected *= t.shape[i]!;
      }
      const entry = byName.get(`${prefix}data/${t.storage.key}`);
      if (!entry) throw corrupt(`tensor ${name}'s storage data/${t.storage.key} is missing`);
      const bytesPer = t.storage.bytes;
      const begin = entryDataOffset(fd, size, entry, corrupt, file) + t.offset * bytesPer;
      const byteLength = elementCount(t.shape) * bytesPer;
      if ((t.offset * bytesPer) + byteLength > entry.size) throw corrupt(`tensor ${name} runs past the end of its storage data/${t.storage.key}`);
      out.push({ name, dtype: t.storage.dtype, shape: t.shape, file, begin, byteLength });
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

/** A PyTorch checkpoint's tensors (pytorch_model.bin, or shards through pytorch_model.bin.index.json). */
export class PytorchBinCheckpoint extends TensorTableCheckpoint<BinTensorInfo> {
  static open(folder: string): PytorchBinCheckpoint {
    const { files, tensors } = openTensorTable(folder, BIN_INDEX_FILE, BIN_SINGLE_FILE, readPytorchBinHeader);
    return new PytorchBinCheckpoint(files, tensors, (t) => t.byteLength);
  }
}
