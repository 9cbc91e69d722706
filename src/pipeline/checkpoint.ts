// Checkpoints of a long prune, for --resume: after each finished block its pruned weights are written to
// `<out>.partial/.checkpoint/block-<i>.f32` and the manifest is updated (each write atomic: temp file + rename),
// so a run killed at any moment resumes from the last finished block. The key ties a checkpoint to the exact
// model and arguments, so a resume with different settings is refused rather than mixed.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { solverThreads, native } from '../native/addon.js';
import type { BlockPruneResult, LinearReport } from './prune-block.js';

export interface CheckpointBlock {
  index: number;
  roles: string[];
  linears: LinearReport[];
  sparsellm?: BlockPruneResult['sparsellm'];
  seconds: number;
}

interface Manifest {
  key: string;
  /** Solver (OpenBLAS) threads of the run: SparseGPT's blocked sums depend on it, so a resume uses the same count. */
  threads?: number;
  blocks: CheckpointBlock[];
}

export function checkpointKey(modelFile: string, settings: unknown): string {
  const st = statSync(modelFile);
  return createHash('sha256').update(JSON.stringify({ modelFile, size: st.size, mtime: st.mtimeMs, settings })).digest('hex').slice(0, 16);
}

function writeAtomic(path: string, data: string | Uint8Array): void {
  writeFileSync(`${path}.tmp`, data);
  renameSync(`${path}.tmp`, path);
}

export class Checkpoint {
  private readonly dir: string;
  private manifest: Manifest;

  constructor(partialDir: string, key: string, resume: boolean) {
    this.dir = join(partialDir, '.checkpoint');
    const manifestPath = join(this.dir, 'manifest.json');
    if (resume && existsSync(manifestPath)) {
      const m = JSON.parse(readFileSync(manifestPath, 'utf8')) as Manifest;
      if (m.key !== key) throw new UserError(`the checkpoint in ${this.dir} was made with another model or other settings: rerun with the same arguments, or without --resume (add --force) to start over`);
      this.manifest = m;
      // Same solver thread count as the interrupted run, so the result is byte-identical to an uninterrupted one.
      if (m.threads !== undefined && m.threads !== solverThreads()) {
        native().setThreads(m.threads);
      }
    } else {
      this.manifest = { key, threads: solverThreads(), blocks: [] };
    }
    mkdirSync(this.dir, { recursive: true });
  }

  get finished(): CheckpointBlock[] {
    return this.manifest.blocks;
  }

  /** Pruned weights of a finished block, role -> [out, in]. */
  weights(block: CheckpointBlock, sizes: Map<string, number>): Map<string, Float32Array> {
    const bytes = readFileSync(join(this.dir, `block-${block.index}.f32`));
    const all = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    const out = new Map<string, Float32Array>();
    let at = 0;
    for (const role of block.roles) {
      const n = sizes.get(role)!;
      out.set(role, all.slice(at, at + n));
      at += n;
    }
    if (at !== all.length) throw new UserError(`checkpoint of block ${block.index} is damaged: rerun without --resume (add --force)`);
    return out;
  }

  save(entry: CheckpointBlock, weights: Map<string, Float32Array>): void {
    const total = entry.roles.reduce((s, r) => s + weights.get(r)!.length, 0);
    const all = new Float32Array(total);
    let at = 0;
    for (const r of entry.roles) {
      all.set(weights.get(r)!, at);
      at += weights.get(r)!.length;
    }
    writeAtomic(join(this.dir, `block-${entry.index}.f32`), new Uint8Array(all.buffer));
    this.manifest.blocks.push(entry);
    writeAtomic(join(this.dir, 'manifest.json'), JSON.stringify(this.manifest));
  }
}
