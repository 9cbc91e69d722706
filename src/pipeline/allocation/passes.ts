// What the allocators' own passes share: their context (the run, the calibration windows), the prologue into a state
// store, and the meter of their cost.
import type { BlockRunner, DecoderLayout } from '../../model/index.js';
import { microBatchSize } from '../memory.js';
import type { ResolvedPruneOptions } from '../options.js';
import type { Progress } from '../progress.js';
import type { StateStore } from '../state-store.js';

/** What an allocator's own passes cost, beside the prune's timings. */
export interface AllocationCost {
  seconds: number;
  /** block forward runs × sequences (the prune itself does 2 per pruned block and calibration sequence) */
  blockForwards: number;
  /** blockForwards in units of one pass of the calibration set through every block */
  passes: number;
  /** solver calls (one per linear, or per SparseLLM FFN) */
  solves: number;
  /** held-out loss probes (search) */
  probes: number;
}

export interface AllocationContext {
  onnxFile: string;
  layout: DecoderLayout;
  selected: Set<number>;
  o: ResolvedPruneOptions & { seqlen: number };
  /** the prune's calibration windows */
  windows: BigInt64Array[];
  /** extra windows drawn after them (search's held-out probe set) */
  heldOut: BigInt64Array[];
  newStore: () => StateStore;
  progress: Progress;
}

/** Counts an allocator's work for its cost line. */
export class Meter {
  blockForwards = 0;
  solves = 0;
  probes = 0;
  private readonly t0 = performance.now();
  cost(numBlocks: number, nsamples: number): AllocationCost {
    return {
      seconds: (performance.now() - this.t0) / 1000,
      blockForwards: this.blockForwards,
      passes: this.blockForwards / (numBlocks * nsamples),
      solves: this.solves,
      probes: this.probes,
    };
  }
}

/** Embeds windows into states, micro-batched as the prune does. */
export async function prologueInto(runner: BlockRunner, windows: BigInt64Array[], seqlen: number, states: StateStore, batchSize = microBatchSize(windows.length, seqlen)): Promise<void> {
  for (let k = 0; k < windows.length; k += batchSize) {
    const chunk = windows.slice(k, k + batchSize);
    const ids = new BigInt64Array(chunk.length * seqlen);
    chunk.forEach((w, j) => ids.set(w, j * seqlen));
    await states.push(await runner.prologue(ids, chunk.length, seqlen));
  }
}

