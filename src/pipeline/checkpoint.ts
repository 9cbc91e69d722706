// Checkpoints of a long prune, for --resume. The pruned weights themselves are not copied: each finished block's
// weights are already in the output's external data file, written in place as the block finishes
// (OnnxModel.streamReplacedTo). The checkpoint is a small index beside it, `<out>.partial/.checkpoint/manifest.json`,
// naming the finished blocks and that data file; it is updated (atomically: temp file + rename) only after the block's
// bytes are flushed to disk, so a run killed at any moment resumes from the last finished block. The key ties a
// checkpoint to the exact model and arguments, so a resume with different settings is refused rather than mixed.
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

/** Manifest format: 2 = weights in the output's data file (format 1 kept a float32 copy per block). */
const FORMAT = 2;

interface Manifest {
  format: number;
  key: string;
  /** The data file the finished blocks' weights are in, relative to `<out>.partial`. */
  dataFile: string;
  /** Solver (OpenBLAS) threads of the run: SparseGPT's blocked sums depend on it, so a resume uses the same count. */
  threads?: number;
  /** the run's allocation report (its profile): a resume prunes the remaining blocks with the same targets */
  allocation?: unknown;
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

  /**
   * `dataFile` (relative to `partialDir`): the file the weights stream into. `flush` makes the streamed bytes durable;
   * it runs before each manifest update.
   */
  constructor(partialDir: string, key: string, resume: boolean, dataFile: string, private readonly flush: () => void) {
    this.dir = join(partialDir, '.checkpoint');
    const manifestPath = join(this.dir, 'manifest.json');
    if (resume && existsSync(manifestPath)) {
      const m = JSON.parse(readFileSync(manifestPath, 'utf8')) as Manifest;
      if (m.key !== key) throw new UserError(`the checkpoint in ${this.dir} was made with another model or other settings: rerun with the same arguments, or without --resume (add --force) to start over`);
      if (m.format !== FORMAT || m.dataFile !== dataFile) throw new UserError(`the checkpoint in ${this.dir} was made by another version of sparsellm: rerun without --resume (add --force) to start over`);
      this.manifest = m;
      // Same solver thread count as the interrupted run, so the result is byte-identical to an uninterrupted one.
      if (m.threads !== undefined && m.threads !== solverThreads()) {
        native().setThreads(m.threads);
      }
    } else {
      this.manifest = { format: FORMAT, key, dataFile, threads: solverThreads(), blocks: [] };
    }
    mkdirSync(this.dir, { recursive: true });
  }

  get finished(): CheckpointBlock[] {
    return this.manifest.blocks;
  }

  get allocation(): unknown {
    return this.manifest.allocation;
  }

  saveAllocation(allocation: unknown): void {
    this.manifest.allocation = allocation;
    writeAtomic(join(this.dir, 'manifest.json'), JSON.stringify(this.manifest));
  }

  /** The finished block's weights are in the data file: flush it, then name the block in the index. */
  save(entry: CheckpointBlock): void {
    this.flush();
    this.manifest.blocks.push(entry);
    writeAtomic(join(this.dir, 'manifest.json'), JSON.stringify(this.manifest));
  }
}
