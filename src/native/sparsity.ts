/**
 * Sparsity spec shared by every solver.
 * - `{ sparsity }`: unstructured, 0 ≤ sparsity < 1.
 * - `{ prunen, prunem }`: N:M, **prunen = number PRUNED** in every group of `prunem` consecutive inputs of a row
 *   (SparseGPT/SparseLLM convention: "2:4" prunes 2 of 4, the paper's "3:4" prunes 3 of 4). Needs 0 < N < M and in % M == 0.
 */
export type SparsitySpec = { sparsity: number } | { prunen: number; prunem: number };

/** The spec as the bindings read it, every field present: N:M has sparsity 0, unstructured has prunen = prunem = 0. */
export function sparsityFields(spec: SparsitySpec): { sparsity: number; prunen: number; prunem: number } {
  return 'prunen' in spec ? { sparsity: 0, prunen: spec.prunen, prunem: spec.prunem } : { sparsity: spec.sparsity, prunen: 0, prunem: 0 };
}

/** Throws a RangeError unless the spec is valid for a matrix with `cols` inputs. */
export function checkSparsity(spec: SparsitySpec, cols: number): void {
  if ('prunen' in spec) {
    const { prunen: n, prunem: m } = spec;
    if (!Number.isInteger(n) || !Number.isInteger(m) || !(n > 0 && n < m))
      throw new RangeError(`N:M needs integers 0 < prunen < prunem (prunen = number pruned), got ${n}:${m}`);
    if (cols % m !== 0) throw new RangeError(`N:M needs the input count ${cols} to be a multiple of M = ${m}`);
  } else if (!(spec.sparsity >= 0 && spec.sparsity < 1)) {
    throw new RangeError(`sparsity must be in [0, 1), got ${spec.sparsity}`);
  }
}

export function checkLength(name: string, a: Float32Array, want: number, shape: string): void {
  if (!(a instanceof Float32Array)) throw new TypeError(`${name} must be a Float32Array`);
  if (a.length !== want) throw new RangeError(`${name} has ${a.length} values, expected ${shape} = ${want}`);
}

export function checkDim(name: string, v: number): void {
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${name} must be a positive integer, got ${v}`);
}
