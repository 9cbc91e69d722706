// What the allocators' own passes share: their context (the run, the calibration windows) and the meter of their
// cost; they embed windows with prologueInto (state-store.ts), as the prune's calibration does.
import type { DecoderLayout } from '../../model/index.js';
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
