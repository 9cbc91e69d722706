// Runs a decoder LM one part at a time: prologue -> block 0 -> ... -> block n-1 -> epilogue, each
// part an in-memory ONNX model built from the original graph (see graph-partition.ts) and run with
// onnxruntime-node (weights passed as in-memory external data). Only one part's session (hence one block's weights) is alive at a time.
import * as ort from 'onnxruntime-node';
import { create, toBinary } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema, AttributeProto_AttributeType, GraphProtoSchema, ModelProtoSchema, NodeProtoSchema, StringStringEntryProtoSchema, TensorProtoSchema, TensorProto_DataLocation,
  TensorProto_DataType, TensorShapeProto_DimensionSchema, ValueInfoProtoSchema, type ValueInfoProto,
} from 'onnx-buf';
import { analyzeDecoder, type DecoderBlock, type DecoderLayout } from './decoder-layout.js';
import { halfArrayToFloat32 } from './float16.js';
import { partitionGraph, type GraphPart, type GraphPartition } from './graph-partition.js';
import { ORT_TYPE_OF, OnnxModel, type SaveOptions } from './onnx-file.js';
import { readLinearWeight, writeLinearWeight } from './weights.js';

/** Activations between parts: every tensor a later part still needs, by name. */
export interface BlockState {
  batch: number;
  seqlen: number;
  tensors: Map<string, ort.Tensor>;
}

export interface BlockResult {
  state: BlockState;
  /** role -> data input of that linear, [batch*seqlen, in] float32 (empty unless capture was asked). */
  captures: Map<string, Float32Array>;
  /** role -> Σ ‖W x‖² over the run's tokens: the squared MatMul output before any bias (empty unless capture was asked). */
  outputSquares: Map<string, number>;
}

/** The scalar output that sums the squares of a linear's MatMul output (added to block parts, see buildPartModel). */
export function outputSquaresName(matmulOutput: string): string {
  return `sparsellm::sum_squares::${matmulOutput}`;
}

export interface BlockRunnerOptions {
  /** ORT intra-op threads (default: $SPARSELLM_THREADS or 2). */
  threads?: number;
  /** keep onnxruntime's CPU arena in block sessions (default true; see sessionMemory) */
  arena?: boolean;
}

const ONNX_TYPE_OF = new Map(Object.entries(ORT_TYPE_OF).map(([k, v]) => [v!, Number(k)]));

export function sessionOptions(threads?: number): ort.InferenceSession.SessionOptions {
  return {
    intraOpNumThreads: threads ?? (Number(process.env.SPARSELLM_THREADS) || 2),
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionProviders: ['cpu'],
  };
}

/**
 * Block sessions keep onnxruntime's CPU arena unless told not to (BlockRunnerOptions.arena). A fresh allocation pays
 * its first-touch page faults (about 3 ms per MB on the VMs this is benchmarked on), so handing the working memory back
 * after every run makes each run fault it in again; the arena keeps it, at up to twice a run's working memory (it grows
 * by doubling). On the d=768 bench model (SparseGPT, 32 × 512 tokens, one 44 MB sequence per run, bench/child-prune.ts,
 * 2026-12-05, idle): 51.4 s and peak RSS 622 MB with the arena, 62.0 s and 762 MB without it; at OPT-1.3b's width
 * (176 MB per run) 58 s and 2070 MB with it, 69 s and 1707 MB without. The pipeline turns it off where one run's
 * working memory exceeds the forward budget (memory.ts forwardArena). The arena lives only as long as a block's
 * session, which the pipeline releases before the solve. No pre-planned memory pattern (it would keep the largest
 * run's whole plan: 2004 MB at OPT-1.3b's width).
 */
const sessionMemory = (arena: boolean): ort.InferenceSession.SessionOptions => ({ enableCpuMemArena: arena, enableMemPattern: false });

export class BlockRunner {
  private active: { order: number; session: ort.InferenceSession } | null = null;

  private constructor(
    readonly model: OnnxModel,
    readonly layout: DecoderLayout,
    readonly partition: GraphPartition,
    private readonly options: BlockRunnerOptions,
  ) {}

  /** Analyze the model (an OnnxModel or a path to an .onnx file) and prepare the split. */
  static async open(model: OnnxModel | string, options: BlockRunnerOptions = {}): Promise<BlockRunner> {
    process.env.ORT_DISABLE_TELEMETRY ??= '1';
    const m = typeof model === 'string' ? OnnxModel.load(model) : model;
    const layout = analyzeDecoder(m);
    return new BlockRunner(m, layout, partitionGraph(m, layout.blocks.length), options);
  }

  get numBlocks(): number {
    return this.layout.blocks.length;
  }

  block(i: number): DecoderBlock {
    const b = this.layout.blocks[i];
    if (!b) throw new RangeError(`block ${i} out of range (model has ${this.numBlocks})`);
    return b;
  }

  /**
   * Embed a batch of token ids ([batch, seqlen] row-major). attentionMask defaults to all ones;
   * position_ids (when the model takes them) follow the mask; past key/values are empty.
   */
  async prologue(inputIds: BigInt64Array, batch: number, seqlen: number, attentionMask?: BigInt64Array): Promise<BlockState> {
    if (inputIds.length !== batch * seqlen) throw new Error(`prologue: ${inputIds.length} ids is not ${batch}x${seqlen}`);
    const state: BlockState = { batch, seqlen, tensors: decoderInputFeeds(this.model, inputIds, batch, seqlen, attentionMask) };
    const outputs = await this.run(this.partition.prologue, state);
    return this.advance(state, outputs, -1);
  }

  /** Run decoder block i. With capture, also return each linear's data input as [batch*seqlen, in] float32. */
  async runBlock(i: number, state: BlockState, opts: { capture?: boolean } = {}): Promise<BlockResult> {
    const block = this.block(i);
    const part = this.partition.blocks[i]!;
    const extra = opts.capture
      ? [...[...new Set(block.linears.map((l) => l.inputName))].filter((t) => !part.inputs.includes(t)), ...block.linears.map((l) => outputSquaresName(l.outputName))]
      : [];
    const outputs = await this.run(part, state, extra);
    const captures = new Map<string, Float32Array>();
    const outputSquares = new Map<string, number>();
    if (opts.capture) {
      for (const l of block.linears) {
        const t = outputs[l.inputName] ?? state.tensors.get(l.inputName)!;
        captures.set(l.role, toFloat32(t));
        outputSquares.set(l.role, Number((outputs[outputSquaresName(l.outputName)]!.data as Float32Array)[0]));
      }
    }
    for (const l of block.linears) delete outputs[outputSquaresName(l.outputName)];
    return { state: this.advance(state, outputs, i), captures, outputSquares };
  }

  /** Final norm + lm_head: logits [batch, seqlen, vocab] as float32. */
  async epilogue(state: BlockState): Promise<Float32Array> {
    const outputs = await this.run(this.partition.epilogue, state);
    return toFloat32(outputs[this.partition.logitsName]!);
  }

  /** Current weights of block i as role -> [out, in] float32. */
  getBlockWeights(i: number): Map<string, Float32Array> {
    return new Map(this.block(i).linears.map((l) => [l.role, readLinearWeight(this.model, l)]));
  }

  /** Biases of block i's linears that have one, role -> float32 (OPT's; LLaMA's linears have none). Pruning never changes them. */
  getBlockBiases(i: number): Map<string, Float32Array> {
    return new Map(this.block(i).linears.flatMap((l) => (l.biasName ? [[l.role, this.model.readFloat32(l.biasName)] as const] : [])));
  }

  /** Replace weights of block i (role -> [out, in] float32); later runs and saveModel() use them. */
  async setBlockWeights(i: number, weights: Map<string, Float32Array>): Promise<void> {
    const block = this.block(i);
    for (const [role, w] of weights) {
      const linear = block.linears.find((l) => l.role === role);
      if (!linear) throw new Error(`block ${i} has no linear ${role} (has ${block.linears.map((l) => l.role).join(', ')})`);
      writeLinearWeight(this.model, linear, w);
    }
    if (this.active?.order === i) await this.releaseSession();
  }

  /** Back to the model's original weights of block i (drops their in-memory replacements). */
  async restoreBlockWeights(i: number): Promise<void> {
    for (const l of this.block(i).linears) this.model.discardReplacement(l.weightName);
    if (this.active?.order === i) await this.releaseSession();
  }

  /** Write the model with all weight changes (see OnnxModel.save). */
  saveModel(outPath: string, options?: SaveOptions): void {
    this.model.save(outPath, options);
  }

  async dispose(): Promise<void> {
    await this.releaseSession();
  }

  /** Frees the current part's session (its weights and working memory); the next run creates it again. */
  async releaseSession(): Promise<void> {
    const s = this.active?.session;
    this.active = null;
    await s?.release();
  }

  /** Run one part on the state; returns its outputs by name (extra: more tensors to fetch). */
  private async run(part: GraphPart, state: BlockState, extra: string[] = []): Promise<Record<string, ort.Tensor>> {
    const feeds: Record<string, ort.Tensor> = {};
    for (const name of part.inputs) {
      const t = state.tensors.get(name);
      if (!t) throw new Error(`${part.label}: state lacks ${name} (run the parts in order)`);
      feeds[name] = t;
    }
    const session = await this.sessionFor(part, feeds);
    return session.run(feeds, [...part.outputs, ...extra]);
  }

  private async sessionFor(part: GraphPart, feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession> {
    if (this.active?.order === part.order) return this.active.session;
    await this.releaseSession();
    const block = part.order >= 0 && part.order < this.numBlocks ? this.layout.blocks[part.order] : undefined;
    const captureOutputs = block ? block.linears.map((l) => l.inputName).filter((t) => !part.inputs.includes(t)) : [];
    const { bytes, externalData } = buildPartModel(this.model, part, feeds, captureOutputs, block ? block.linears.map((l) => l.outputName) : []);
    const session = await ort.InferenceSession.create(bytes, { ...sessionOptions(this.options.threads), ...sessionMemory(this.options.arena ?? true), externalData });
    this.active = { order: part.order, session };
    return session;
  }

  /** Next state: earlier tensors still needed after part `order`, plus this part's outputs. */
  private advance(state: BlockState, outputs: Record<string, ort.Tensor>, order: number): BlockState {
    const tensors = new Map<string, ort.Tensor>();
    const keep = (name: string, t: ort.Tensor) => {
      if ((this.partition.lastUse.get(name) ?? -Infinity) > order) tensors.set(name, t);
    };
    for (const [name, t] of state.tensors) keep(name, t);
    for (const [name, t] of Object.entries(outputs)) keep(name, t);
    return { batch: state.batch, seqlen: state.seqlen, tensors };
  }
}

/**
 * In-memory ModelProto of one part: its nodes, typed inputs, named outputs, and initializers.
 * Large float initializers are not encoded into the protobuf: each is marked EXTERNAL and handed
 * to ORT as an in-memory external data buffer, so a part can exceed protobuf's 2 GB limit.
 */
function buildPartModel(model: OnnxModel, part: GraphPart, feeds: Record<string, ort.Tensor>, captureOutputs: string[], squaredOutputs: string[]): PartModel {
  const graphInputs = new Map(model.graph.input.map((i) => [i.name, i]));
  const input = part.inputs.map((name) => graphInputs.get(name) ?? valueInfoFromTensor(name, feeds[name]!));
  // Σ y² of each linear's MatMul output y, in float32 (Cast first: fp16 squares overflow), as one scalar output each
  const squareNodes = squaredOutputs.flatMap((y) => {
    const f = `${outputSquaresName(y)}::float`;
    return [
      create(NodeProtoSchema, { name: `${f}/Cast`, opType: 'Cast', input: [y], output: [f], attribute: [create(AttributeProtoSchema, { name: 'to', type: AttributeProto_AttributeType.INT, i: BigInt(TensorProto_DataType.FLOAT) })] }),
      create(NodeProtoSchema, { name: `${outputSquaresName(y)}/ReduceSumSquare`, opType: 'ReduceSumSquare', input: [f], output: [outputSquaresName(y)], attribute: [create(AttributeProtoSchema, { name: 'keepdims', type: AttributeProto_AttributeType.INT, i: 0n })] }),
    ];
  });
  const outputNames = [...new Set([...part.outputs, ...captureOutputs, ...squaredOutputs.map(outputSquaresName)])];
  const externalData: { path: string; data: Uint8Array }[] = [];
  const initializer = part.initializers.map((name) => {
    if (!isLargeFloat(model, name)) return model.inlineInitializer(name);
    const path = `w${externalData.length}.bin`;
    const data = model.readBytes(name);
    externalData.push({ path, data });
    const t = model.initializer(name);
    return create(TensorProtoSchema, {
      name, dims: t.dims, dataType: t.dataType, dataLocation: TensorProto_DataLocation.EXTERNAL,
      externalData: [
        create(StringStringEntryProtoSchema, { key: 'location', value: path }),
        create(StringStringEntryProtoSchema, { key: 'offset', value: '0' }),
        create(StringStringEntryProtoSchema, { key: 'length', value: String(data.byteLength) }),
      ],
    });
  });
  const graph = create(GraphProtoSchema, {
    name: `${model.graph.name || 'decoder'} ${part.label}`,
    node: [...part.nodes, ...squareNodes],
    initializer,
    input,
    output: outputNames.map((name) => create(ValueInfoProtoSchema, { name })),
  });
  const proto = create(ModelProtoSchema, {
    irVersion: model.proto.irVersion,
    opsetImport: model.proto.opsetImport,
    producerName: 'sparsellm',
    graph,
  });
  return { bytes: toBinary(ModelProtoSchema, proto), externalData };
}

interface PartModel {
  bytes: Uint8Array;
  externalData: { path: string; data: Uint8Array }[];
}

/** Float initializers of >= 1 KiB: passed to ORT as external data (small / shape tensors stay inline). */
function isLargeFloat(model: OnnxModel, name: string): boolean {
  const dt = model.dataType(name);
  const bytesPer = dt === TensorProto_DataType.FLOAT ? 4 : dt === TensorProto_DataType.FLOAT16 || dt === TensorProto_DataType.BFLOAT16 ? 2 : 0;
  return bytesPer > 0 && model.dims(name).reduce((a, d) => a * d, bytesPer) >= 1024;
}

function valueInfoFromTensor(name: string, t: ort.Tensor): ValueInfoProto {
  const elemType = ONNX_TYPE_OF.get(t.type);
  if (elemType === undefined) throw new Error(`tensor ${name}: unsupported type ${t.type}`);
  const dim = t.dims.map((_, k) => create(TensorShapeProto_DimensionSchema, { value: { case: 'dimParam', value: `${name}_d${k}` } }));
  return create(ValueInfoProtoSchema, { name, type: { value: { case: 'tensorType', value: { elemType, shape: { dim } } } } });
}

/** Feeds for every graph input of a decoder: ids, mask, position ids, empty past key/values. */
export function decoderInputFeeds(model: OnnxModel, inputIds: BigInt64Array, batch: number, seqlen: number, mask?: BigInt64Array): Map<string, ort.Tensor> {
  const attention = mask ?? new BigInt64Array(batch * seqlen).fill(1n);
  const feeds = new Map<string, ort.Tensor>();
  for (const vi of model.graph.input) {
    const name = vi.name;
    if (name === 'input_ids') feeds.set(name, new ort.Tensor('int64', inputIds, [batch, seqlen]));
    else if (name === 'attention_mask') feeds.set(name, new ort.Tensor('int64', attention, [batch, seqlen]));
    else if (name === 'position_ids') feeds.set(name, new ort.Tensor('int64', positionIds(attention, batch, seqlen), [batch, seqlen]));
    else feeds.set(name, emptyPast(vi, batch));
  }
  return feeds;
}

/** HF convention: cumulative sum of the mask minus one; padded positions get 1. */
function positionIds(mask: BigInt64Array, batch: number, seqlen: number): BigInt64Array {
  const out = new BigInt64Array(batch * seqlen);
  for (let b = 0; b < batch; b++) {
    let seen = 0n;
    for (let s = 0; s < seqlen; s++) {
      const i = b * seqlen + s;
      seen += mask[i]!;
      out[i] = mask[i] ? seen - 1n : 1n;
    }
  }
  return out;
}

/** A zero-length tensor for a past_key_values.* input: dim 0 = batch, symbolic dims = 0. */
function emptyPast(vi: ValueInfoProto, batch: number): ort.Tensor {
  if (vi.type?.value.case !== 'tensorType') throw new Error(`graph input ${vi.name} is not a tensor`);
  const { elemType, shape } = vi.type.value.value;
  const type = ORT_TYPE_OF[elemType];
  const dims = (shape?.dim ?? []).map((d, k) => (k === 0 ? batch : d.value.case === 'dimValue' ? Number(d.value.value) : 0));
  if (!dims.includes(0)) throw new Error(`graph input ${vi.name}: don't know how to fill it (expected input_ids, attention_mask, position_ids or past key/values)`);
  switch (type) {
    case 'float32': return new ort.Tensor('float32', new Float32Array(0), dims);
    case 'float16': return new ort.Tensor('float16', new Uint16Array(0), dims);
    default: throw new Error(`graph input ${vi.name}: unsupported past dtype ${type}`);
  }
}

/** Tensor data as float32 (fp16 converted; float32 returned without copying). */
export function toFloat32(t: ort.Tensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') return halfArrayToFloat32(t.data as Uint16Array);
  throw new Error(`expected a float tensor, got ${t.type}`);
}
