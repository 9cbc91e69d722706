// Calibration statistics of one decoder block, gathered from the dense forward pass with hooks:
// - one SparseGPT Hessian per distinct linear input (q/k/v share theirs, as do gate/up), H = (2/n) Σ XᵀX;
// - one Wanda scaler per distinct input, Σ x² / n (per input channel);
// - for SparseLLM, the FFN's input activations X (token-major), kept whole for the global updates (the captured
//   chunks are released as they are concatenated);
// - per linear, Σ ‖W x‖² over the tokens (summed inside onnxruntime), for the report's error column (layer-error.ts).
// A linear whose Hessian serves only that column (SparseLLM's output layer with the output refit on: the solver builds
// its own Gram from the sparse activations) gets it from every REPORT_HESSIAN_ROW_STRIDE-th token row: its f x f SYRK
// was about a tenth of a SparseLLM prune; its error is then an estimate over that subsample, numerator and denominator
// both (weightQuadratic is NaN for it, so layer-error.ts forms tr(W H Wᵀ) from the same H).
// The Hessians and scalers are accumulated per statistics group (memory.ts statisticsGroupSize): the captured inputs of
// the forward batches of one group are gathered and added at once, so they do not depend on the forward batch size.
import { HessianAccumulator } from '../native/hessian.js';
import { WandaScaler } from '../native/wanda.js';
import type { DecoderBlock } from '../model/index.js';
import { UserError } from '../errors.js';
import { REPORT_HESSIAN_ROW_STRIDE, type Method } from './options.js';

export interface BlockStatistics {
  hessian(role: string): HessianAccumulator;
  scaler(role: string): Float32Array;
  /** FFN input rows [tokens, hidden] (SparseLLM only). */
  ffnInput(): { X: Float32Array; tokens: number };
  /** tr(W H Wᵀ) = (2/n) Σ_t ‖W x_t‖² in the Hessian's scaling, for the dense W (NaN when the pass did not sum it). */
  weightQuadratic(role: string): number;
  sequences: number;
}

/**
 * The statistics groups' gathering buffers, lent to one block's collector after another: a fresh buffer per block
 * pays its page faults again (88 MB a block on the d=768 bench model, about 3 ms per MB on the benchmark VMs). The
 * memory estimate counts them as alive throughout (memory.ts, captures).
 */
export class GroupBuffers {
  private readonly buffers: Float32Array[] = [];

  /** The k-th buffer of a collector, at least `length` values (its contents are left over from the last use). */
  take(k: number, length: number): Float32Array {
    const b = this.buffers[k];
    if (b && b.length >= length) return b.subarray(0, length);
    this.buffers[k] = new Float32Array(length);
    return this.buffers[k]!;
  }
}

export class BlockStatisticsCollector implements BlockStatistics {
  private readonly hessians = new Map<string, HessianAccumulator>();
  private readonly scalers = new Map<string, WandaScaler>();
  private readonly ffnChunks: Float32Array[] = [];
  private ffnTaken = false;
  private readonly inputOf: Map<string, string>;
  private readonly outputSquares = new Map<string, number>();
  /** inputs whose Hessian is accumulated from a row subsample (every linear reading them is report-only) */
  private readonly subsampled = new Set<string>();
  /** captured inputs of the statistics group being gathered (input name -> [group tokens, in]) */
  private pending: Map<string, { buffer: Float32Array; columns: number }> | null = null;
  private pendingSequences = 0;
  private pendingRows = 0;
  sequences = 0;

  constructor(
    private readonly block: DecoderBlock,
    private readonly method: Method,
    /** Role whose input is the FFN input (fc1 / up_proj), when SparseLLM keeps activations. */
    private readonly ffnInputRole: string | null,
    /**
     * Sequences accumulated together (statisticsGroupSize); the batches given to add() must not straddle two groups.
     * Unset: each add() is its own group. With a group, call finish() after the last add().
     */
    private readonly groupSequences?: number,
    /** roles whose Hessian only feeds the report's error column (see the header) */
    reportOnlyRoles: ReadonlySet<string> = new Set(),
    /** gathering buffers reused from earlier blocks (default: this collector's own) */
    private readonly groupBuffers: GroupBuffers = new GroupBuffers(),
  ) {
    this.inputOf = new Map(block.linears.map((l) => [l.role, l.inputName]));
    for (const l of block.linears)
      if (reportOnlyRoles.has(l.role) && block.linears.every((m) => m.inputName !== l.inputName || reportOnlyRoles.has(m.role)))
        this.subsampled.add(l.inputName);
    for (const l of block.linears) {
      if (method === 'wanda') {
        if (!this.scalers.has(l.inputName)) this.scalers.set(l.inputName, new WandaScaler(l.inFeatures));
      } else if (!this.hessians.has(l.inputName)) {
        this.hessians.set(l.inputName, new HessianAccumulator(l.inFeatures));
      }
    }
  }

  /** Adds one forward batch of captured linear inputs (role -> [batch·seqlen, in]). */
  async add(captures: Map<string, Float32Array>, batch: number, seqlen: number, outputSquares?: Map<string, number>): Promise<void> {
    for (const [role, v] of outputSquares ?? []) this.outputSquares.set(role, (this.outputSquares.get(role) ?? 0) + v);
    const inputs = this.distinctInputs(captures);
    if (this.groupSequences === undefined || (this.pendingSequences === 0 && batch >= this.groupSequences)) {
      for (const [name, X] of inputs) await this.accumulate(name, X, batch * seqlen, batch);
    } else {
      if (this.pendingSequences + batch > this.groupSequences) throw new Error(`block ${this.block.index}: a batch of ${batch} sequences straddles two statistics groups of ${this.groupSequences}`);
      this.pending ??= new Map([...inputs].map(([name, X], k) => {
        const columns = X.length / (batch * seqlen);
        return [name, { buffer: this.groupBuffers.take(k, this.groupSequences! * seqlen * columns), columns }];
      }));
      for (const [name, X] of inputs) {
        const p = this.pending.get(name)!;
        p.buffer.set(X, this.pendingRows * p.columns);
      }
      this.pendingSequences += batch;
      this.pendingRows += batch * seqlen;
      if (this.pendingSequences === this.groupSequences) await this.flush();
    }
    if (this.ffnInputRole) this.ffnChunks.push(captures.get(this.ffnInputRole)!);
    this.sequences += batch;
  }

  /** Accumulates the last (partial) statistics group and drops the gathering buffers: call after the last add(). */
  async finish(): Promise<void> {
    if (this.pendingSequences > 0) await this.flush();
    this.pending = null;
  }

  private async flush(): Promise<void> {
    for (const [name, { buffer, columns }] of this.pending!) {
      await this.accumulate(name, buffer.subarray(0, this.pendingRows * columns), this.pendingRows, this.pendingSequences);
    }
    this.pendingSequences = 0;
    this.pendingRows = 0;
  }

  /** The captured input of each distinct linear input (q/k/v share one), by input name. */
  private distinctInputs(captures: Map<string, Float32Array>): Map<string, Float32Array> {
    const inputs = new Map<string, Float32Array>();
    for (const l of this.block.linears) {
      if (inputs.has(l.inputName)) continue;
      const X = captures.get(l.role);
      if (!X) throw new Error(`no captured input for ${l.role} in block ${this.block.index}`);
      inputs.set(l.inputName, X);
    }
    return inputs;
  }

  private async accumulate(inputName: string, X: Float32Array, rows: number, sequences: number): Promise<void> {
    if (this.method === 'wanda') await this.scalers.get(inputName)!.add(X, rows, sequences);
    else if (this.subsampled.has(inputName)) await this.addRowSubsample(inputName, X, rows, X.length / rows, sequences);
    else await this.hessians.get(inputName)!.add(X, rows, sequences);
  }

  /** Rows 0, k, 2k, … of these rows (a statistics group or forward batch: whole sequences, so the same rows either way) (k = REPORT_HESSIAN_ROW_STRIDE) into the input's Hessian. */
  private async addRowSubsample(input: string, X: Float32Array, rows: number, columns: number, sequences: number): Promise<void> {
    const kept = Math.ceil(rows / REPORT_HESSIAN_ROW_STRIDE);
    const sub = new Float32Array(kept * columns);
    for (let r = 0; r < kept; r++) sub.set(X.subarray(r * REPORT_HESSIAN_ROW_STRIDE * columns, (r * REPORT_HESSIAN_ROW_STRIDE + 1) * columns), r * columns);
    await this.hessians.get(input)!.add(sub, kept, sequences);
  }

  weightQuadratic(role: string): number {
    // a subsampled Hessian is paired with tr(W H Wᵀ) from itself, not with the full-token sum
    if (this.subsampled.has(this.inputOf.get(role)!)) return NaN;
    const s = this.outputSquares.get(role);
    return s === undefined || this.sequences === 0 ? NaN : (2 / this.sequences) * s;
  }

  hessian(role: string): HessianAccumulator {
    this.assertFinished();
    const h = this.hessians.get(this.inputOf.get(role)!)!;
    // NaN/Inf inputs (or inputs too large for float32 squares) show on the diagonal
    this.checkFinite(role, h.H, h.columns + 1);
    return h;
  }

  scaler(role: string): Float32Array {
    this.assertFinished();
    const s = this.scalers.get(this.inputOf.get(role)!)!.scaler;
    this.checkFinite(role, s, 1);
    return s;
  }

  private assertFinished(): void {
    if (this.pendingSequences > 0) throw new Error(`block ${this.block.index}: statistics read before finish()`);
  }

  /** A solver fed non-finite statistics fails obscurely or writes NaN weights: stop with the layer's name instead. */
  private checkFinite(role: string, values: Float32Array, stride: number): void {
    for (let k = 0; k < values.length; k += stride) {
      if (!Number.isFinite(values[k]!)) {
        throw new UserError(
          `block ${this.block.index} ${role}: its calibration inputs overflow (NaN or Inf in their statistics), so the model breaks down on the calibration text in float32; check the model's weights, or use --method magnitude`,
        );
      }
    }
  }

  /** Concatenates the FFN input chunks and releases them (each is dropped as soon as it is copied): call once. */
  ffnInput(): { X: Float32Array; tokens: number } {
    if (this.ffnTaken) throw new Error(`block ${this.block.index}: the FFN input was already taken`);
    this.ffnTaken = true;
    const hidden = this.block.linears.find((l) => l.role === this.ffnInputRole)!.inFeatures;
    const total = this.ffnChunks.reduce((s, c) => s + c.length, 0);
    const X = new Float32Array(total);
    let at = 0;
    for (let c = this.ffnChunks.shift(); c; c = this.ffnChunks.shift()) {
      X.set(c, at);
      at += c.length;
    }
    return { X, tokens: total / hidden };
  }
}
