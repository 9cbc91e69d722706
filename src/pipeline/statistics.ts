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

export class BlockStatisticsCollector implements BlockStatistics {
  private readonly hessians = new Map<string, HessianAccumulator>();
  private readonly scalers = new Map<string, WandaScaler>();
  private readonly ffnChunks: Float32Array[] = [];
  private ffnTaken = false;
  private readonly inputOf: Map<string, string>;
  private readonly outputSquares = new Map<string, number>();
  /** inputs whose Hessian is accumulated from a row subsample (every linear reading them is report-only) */
  private readonly subsampled = new Set<string>();
  sequences = 0;

  constructor(
    private readonly block: DecoderBlock,
    private readonly method: Method,
    /** Role whose input is the FFN input (fc1 / up_proj), when SparseLLM keeps activations. */
    private readonly ffnInputRole: string | null,
    /** roles whose Hessian only feeds the report's error column (see the header) */
    reportOnlyRoles: ReadonlySet<string> = new Set(),
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

  /** Adds one micro-batch of captured linear inputs (role -> [batch·seqlen, in]). */
  async add(captures: Map<string, Float32Array>, batch: number, seqlen: number, outputSquares?: Map<string, number>): Promise<void> {
    for (const [role, v] of outputSquares ?? []) this.outputSquares.set(role, (this.outputSquares.get(role) ?? 0) + v);
    const done = new Set<string>();
    for (const l of this.block.linears) {
      if (done.has(l.inputName)) continue;
      done.add(l.inputName);
      const X = captures.get(l.role);
      if (!X) throw new Error(`no captured input for ${l.role} in block ${this.block.index}`);
      if (this.method === 'wanda') await this.scalers.get(l.inputName)!.add(X, batch * seqlen, batch);
      else if (this.subsampled.has(l.inputName)) await this.addRowSubsample(l.inputName, X, batch * seqlen, l.inFeatures, batch);
      else await this.hessians.get(l.inputName)!.add(X, batch * seqlen, batch);
    }
    if (this.ffnInputRole) this.ffnChunks.push(captures.get(this.ffnInputRole)!);
    this.sequences += batch;
  }

  /** Rows 0, k, 2k, … of this micro-batch (k = REPORT_HESSIAN_ROW_STRIDE) into the input's Hessian. */
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
    const h = this.hessians.get(this.inputOf.get(role)!)!;
    // NaN/Inf inputs (or inputs too large for float32 squares) show on the diagonal
    this.checkFinite(role, h.H, h.columns + 1);
    return h;
  }

  scaler(role: string): Float32Array {
    const s = this.scalers.get(this.inputOf.get(role)!)!.scaler;
    this.checkFinite(role, s, 1);
    return s;
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
