// FedSpaLLM client step (PAPERS.md §2.1, §2.4 Eq. 4.22): a client prunes the decoder blocks the server assigned it, on
// the dense model it holds, with its own private calibration text, through the ordinary sequential pipeline
// (pruneToMemory: the same code as `sparsellm prune --layers`). Blocks it was not assigned run dense, which is Eq. 4.22's
// W'_i[j] = W_j^dense for j ∉ L_i. Only the masked weights M_i ⊙ W_i of the assigned blocks' linears come back, in the
// initializer's own layout and dtype rounding: exactly what the upload carries. Nothing is written to disk.
import { UserError } from '../errors.js';
import { METHODS, sparsitySpec, type Device, type Method } from '../pipeline/options.js';
import type { Progress } from '../pipeline/progress.js';
import { pruneToMemory, type PrunedTensor } from '../pipeline/prune.js';

export interface LocalPruneRequest {
  /** the dense model the client holds (ONNX file or folder) */
  model: string;
  /** the client's private calibration text: a .txt/.jsonl file, or a dataset name */
  calib: string;
  /** the decoder blocks the server assigned (0-based) */
  blocks: number[];
  method: Method;
  /** unstructured target sparsity of every pruned linear, in [0, 1) */
  sparsity: number;
  nsamples: number;
  /** default: the pipeline's (the model's positions, at most 2048) */
  seqlen?: number;
  seed: number;
  /** tokenizer folder or file when the model folder has none */
  tokenizer?: string;
  dataDir?: string;
  device?: Device;
}

/** One assigned linear's pruned weight (M_i ⊙ W_i): initializer name, block, role, the initializer's dims and values. */
export type UploadTensor = PrunedTensor;

export interface LocalPruneResult {
  /** the assigned blocks' linears, block by block in the model's order */
  tensors: UploadTensor[];
  /** wall time of the local prune */
  seconds: number;
}

/** Checks the assignment (non-empty, distinct non-negative integers); the range is checked against the model. */
function layersArgument(blocks: readonly number[]): string {
  if (blocks.length === 0) throw new UserError('no blocks assigned: a client prunes at least one decoder block');
  for (const b of blocks) if (!Number.isInteger(b) || b < 0) throw new UserError(`assigned block ${b} is not a block index (a non-negative integer)`);
  if (new Set(blocks).size !== blocks.length) throw new UserError(`assigned blocks ${blocks.join(',')} name a block twice`);
  return [...blocks].sort((a, b) => a - b).join(',');
}

export async function pruneAssignedBlocks(req: LocalPruneRequest, progress: Progress): Promise<LocalPruneResult> {
  if (!METHODS.includes(req.method)) throw new UserError(`unknown method ${req.method}: use ${METHODS.join(', ')}`);
  const t0 = performance.now();
  const result = await pruneToMemory(
    {
      model: req.model,
      method: req.method,
      spec: sparsitySpec(req.sparsity, undefined, undefined),
      calib: req.calib,
      nsamples: req.nsamples,
      seqlen: req.seqlen,
      seed: req.seed,
      layers: layersArgument(req.blocks),
      tokenizer: req.tokenizer,
      dataDir: req.dataDir,
      device: req.device,
      quiet: true,
    },
    progress,
  );
  return { tensors: result.tensors, seconds: (performance.now() - t0) / 1000 };
}
