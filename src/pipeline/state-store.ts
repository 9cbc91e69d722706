// The calibration activations between blocks (one BlockState per forward batch, memory.ts forwardBatchSize: hidden states,
// mask, position ids),
// held in memory or, with --offload DIR, streamed through one file per forward batch in a fresh folder under DIR: only
// the forward batch being run is in memory. Each block's re-run overwrites a forward batch's file with the next block's
// inputs. The folder is removed when the run ends (finished, failed or interrupted).
import { closeSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import type { BlockRunner, BlockState } from '../model/index.js';
import { statisticsGroupSize } from './memory.js';

export interface StateStore {
  readonly count: number;
  /** Appends the state of the next forward batch. */
  push(state: BlockState): Promise<void>;
  get(k: number): Promise<BlockState>;
  set(k: number, state: BlockState): Promise<void>;
  /** Drops every state (and the offload folder). */
  dispose(): void;
}

/**
 * Embeds calibration windows (token ids, `seqlen` each) into `states` through the model's prologue, in batches
 * of whole sequences; `afterBatch` runs after each (progress, interruption checks).
 */
export async function prologueInto(
  runner: BlockRunner, windows: BigInt64Array[], seqlen: number, states: StateStore,
  batchSize = statisticsGroupSize(windows.length, seqlen), afterBatch?: (sequences: number) => void,
): Promise<void> {
  for (let k = 0; k < windows.length; k += batchSize) {
    const chunk = windows.slice(k, k + batchSize);
    const ids = new BigInt64Array(chunk.length * seqlen);
    chunk.forEach((w, j) => ids.set(w, j * seqlen));
    await states.push(await runner.prologue(ids, chunk.length, seqlen));
    afterBatch?.(chunk.length);
  }
}

export class MemoryStateStore implements StateStore {
  private states: BlockState[] = [];
  get count(): number {
    return this.states.length;
  }
  async push(state: BlockState): Promise<void> {
    this.states.push(state);
  }
  async get(k: number): Promise<BlockState> {
    return this.states[k]!;
  }
  async set(k: number, state: BlockState): Promise<void> {
    this.states[k] = state;
  }
  dispose(): void {
    this.states = [];
  }
}

/** Typed-array constructors of the tensor types a state holds. */
const ARRAY_OF: Record<string, { new (b: ArrayBuffer, o: number, n: number): ArrayBufferView; BYTES_PER_ELEMENT: number }> = {
  float32: Float32Array, float16: Uint16Array, bfloat16: Uint16Array, int64: BigInt64Array, int32: Int32Array, bool: Uint8Array, uint8: Uint8Array, int8: Int8Array,
};

interface FileHeader {
  batch: number;
  seqlen: number;
  tensors: { name: string; type: string; dims: number[]; bytes: number }[];
}

/**
 * File layout of one state: 4-byte little-endian header length, the header as JSON (batch, seqlen, each tensor's
 * name, type, dims, byte length), then the tensors' raw bytes in header order. Bytes round-trip exactly.
 */
export class FileStateStore implements StateStore {
  readonly dir: string;
  private n = 0;

  constructor(parent: string) {
    mkdirSync(parent, { recursive: true });
    this.dir = mkdtempSync(join(parent, 'sparsellm-offload-'));
  }

  get count(): number {
    return this.n;
  }

  private file(k: number): string {
    return join(this.dir, `state-${k}.bin`);
  }

  async push(state: BlockState): Promise<void> {
    this.write(this.n, state);
    this.n++;
  }

  async set(k: number, state: BlockState): Promise<void> {
    if (k >= this.n) throw new RangeError(`offload: no state ${k} (have ${this.n})`);
    this.write(k, state);
  }

  async get(k: number): Promise<BlockState> {
    if (k >= this.n) throw new RangeError(`offload: no state ${k} (have ${this.n})`);
    const fd = openSync(this.file(k), 'r');
    try {
      const len = Buffer.alloc(4);
      readExactly(fd, len, 0);
      const headerBytes = Buffer.alloc(len.readUInt32LE(0));
      readExactly(fd, headerBytes, 4);
      const header = JSON.parse(headerBytes.toString('utf8')) as FileHeader;
      let at = 4 + headerBytes.length;
      const tensors = new Map<string, ort.Tensor>();
      for (const t of header.tensors) {
        const buf = new ArrayBuffer(t.bytes);
        readExactly(fd, new Uint8Array(buf), at);
        at += t.bytes;
        const Ctor = ARRAY_OF[t.type]!;
        const data = new Ctor(buf, 0, t.bytes / Ctor.BYTES_PER_ELEMENT);
        tensors.set(t.name, new ort.Tensor(t.type as 'float32', data as Float32Array, t.dims));
      }
      return { batch: header.batch, seqlen: header.seqlen, tensors };
    } finally {
      closeSync(fd);
    }
  }

  private write(k: number, state: BlockState): void {
    const parts: Uint8Array[] = [];
    const header: FileHeader = { batch: state.batch, seqlen: state.seqlen, tensors: [] };
    for (const [name, t] of state.tensors) {
      if (!ARRAY_OF[t.type]) throw new Error(`offload: cannot store tensor ${name} of type ${t.type}`);
      const v = t.data as ArrayBufferView;
      parts.push(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
      header.tensors.push({ name, type: t.type, dims: [...t.dims], bytes: v.byteLength });
    }
    const json = Buffer.from(JSON.stringify(header), 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(json.length, 0);
    const fd = openSync(this.file(k), 'w');
    try {
      for (const p of [len, json, ...parts]) {
        let off = 0;
        while (off < p.byteLength) off += writeSync(fd, p, off, p.byteLength - off);
      }
    } finally {
      closeSync(fd);
    }
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
    this.n = 0;
  }
}

function readExactly(fd: number, into: Uint8Array, position: number): void {
  let off = 0;
  while (off < into.byteLength) {
    const n = readSync(fd, into, off, into.byteLength - off, position + off);
    if (n === 0) throw new Error('offload: a state file ended early (was the offload folder changed during the run?)');
    off += n;
  }
}
