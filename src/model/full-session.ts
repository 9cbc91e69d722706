/**
 * One onnxruntime-node session on a whole decoder-only model (optimum / genai layout), used for perplexity.
 * Feeds are built from the graph's declared inputs: input_ids (int64), attention_mask (ones), position_ids
 * (0..seqlen-1) when present, every `past_key_values.*` as an empty past [batch, kv_heads, 0, head_dim] of its
 * declared dtype, and `use_cache_branch` = false for merged decoders. Only `logits` is fetched; fp16 logits
 * are widened to Float32Array [batch, seqlen, vocab].
 */
import * as ort from 'onnxruntime-node';
import { UserError } from '../errors.js';
import { readModelConfig } from './model-config.js';

process.env.ORT_DISABLE_TELEMETRY ??= '1';

export interface FullModelOptions {
  /** intra-op threads (default: onnxruntime's choice, all cores). */
  threads?: number;
}

interface InputInfo { name: string; type: string; shape: (number | string)[] }

export class FullModelSession {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly inputs: InputInfo[],
    /** The model's positions (ModelConfig.maxPositions), when its config says. */
    readonly maxPositions: number | undefined,
    /** Vocabulary size from the logits shape, when static. */
    readonly vocabSize: number | undefined,
  ) {}

  static async open(onnxPath: string, opts: FullModelOptions = {}): Promise<FullModelSession> {
    const so: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: 'all', executionProviders: ['cpu'] };
    if (opts.threads) so.intraOpNumThreads = opts.threads;
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(onnxPath, so);
    } catch (e) {
      throw new UserError(`cannot load ${onnxPath} in onnxruntime: ${(e as Error).message.split('\n')[0]}`);
    }
    if (!session.outputNames.includes('logits')) throw new UserError(`${onnxPath} has no "logits" output (outputs: ${session.outputNames.join(', ')})`);
    const inputs = session.inputMetadata.map((m) => ({
      name: m.name,
      type: m.isTensor ? m.type : 'non-tensor',
      shape: m.isTensor ? [...m.shape] : [],
    }));
    if (!inputs.some((i) => i.name === 'input_ids')) throw new UserError(`${onnxPath} has no input_ids input: not a decoder-only LM export`);
    const maxPos = readModelConfig(onnxPath).config.maxPositions;
    const logitsMeta = session.outputMetadata.find((m) => m.name === 'logits');
    const vocabDim = logitsMeta?.isTensor ? logitsMeta.shape[2] : undefined;
    return new FullModelSession(session, inputs, typeof maxPos === 'number' ? maxPos : undefined, typeof vocabDim === 'number' ? vocabDim : undefined);
  }

  /** Logits [batch, seqlen, vocab] of `inputIds` (row-major batch × seqlen). */
  async logits(inputIds: BigInt64Array, batch: number, seqlen: number): Promise<Float32Array> {
    if (inputIds.length !== batch * seqlen) throw new Error(`input_ids has ${inputIds.length} values, expected ${batch}×${seqlen}`);
    const feeds: Record<string, ort.Tensor> = {};
    for (const inp of this.inputs) feeds[inp.name] = this.feed(inp, inputIds, batch, seqlen);
    const out = await this.session.run(feeds, ['logits']);
    const t = out.logits!;
    const raw = t.data;
    const data = raw instanceof Float32Array ? raw : raw instanceof Uint16Array ? halfToFloat(raw) : Float32Array.from(raw as ArrayLike<number>);
    for (const v of Object.values(out)) v.dispose?.();
    return data;
  }

  private feed(inp: InputInfo, ids: BigInt64Array, batch: number, seqlen: number): ort.Tensor {
    if (inp.name === 'input_ids') return new ort.Tensor('int64', ids, [batch, seqlen]);
    if (inp.name === 'attention_mask') return new ort.Tensor('int64', new BigInt64Array(batch * seqlen).fill(1n), [batch, seqlen]);
    if (inp.name === 'position_ids') {
      const pos = new BigInt64Array(batch * seqlen);
      for (let b = 0; b < batch; b++) for (let s = 0; s < seqlen; s++) pos[b * seqlen + s] = BigInt(s);
      return new ort.Tensor('int64', pos, [batch, seqlen]);
    }
    if (inp.name === 'use_cache_branch') return new ort.Tensor('bool', new Uint8Array([0]), [1]);
    if (inp.name.startsWith('past_key_values') || inp.name.startsWith('past_')) {
      // Empty past: batch first, the sequence axis (symbolic, "past_sequence_length") 0, fixed dims kept.
      const dims = inp.shape.map((d, k) => (typeof d === 'number' ? d : k === 0 ? batch : 0));
      if (inp.type === 'float16') return new ort.Tensor('float16', new Uint16Array(0), dims);
      if (inp.type === 'float32') return new ort.Tensor('float32', new Float32Array(0), dims);
      throw new UserError(`input ${inp.name} has unsupported type ${inp.type}`);
    }
    throw new UserError(`unexpected model input "${inp.name}": only input_ids, attention_mask, position_ids and past_key_values.* are supported`);
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** IEEE half → float, element-wise. */
export function halfToFloat(h: Uint16Array): Float32Array {
  const out = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) {
    const x = h[i]!;
    const sign = x & 0x8000 ? -1 : 1;
    const exp = (x >> 10) & 0x1f;
    const frac = x & 0x3ff;
    if (exp === 0) out[i] = sign * frac * 2 ** -24;
    else if (exp === 31) out[i] = frac ? NaN : sign * Infinity;
    else out[i] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return out;
}
