/**
 * Generates LLaMA-shaped Hugging Face checkpoints with random weights for the benchmark (`npm run bench -- --scale`):
 * config.json (model_type llama), fp16 safetensors sharded at 5 GB with their index, as the hub ships them, and the
 * stories260K SentencePiece tokenizer (vocab 512, so the embedded `tinystories` calibration set works). The tensor list
 * and shapes come from sparsellm's own converter (src/convert/builders/llama.ts), and each tensor is produced and written
 * one at a time (src/convert/safetensors.ts), so a 7B checkpoint never sits in memory. sparsellm's converter then makes
 * the ONNX from it, which exercises the converter at that size too.
 */
import { copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { llamaConverter } from '../src/convert/builders/llama.js';
import { writeSafetensorsCheckpoint } from '../src/convert/safetensors.js';
import { float32ToHalfArray } from '../src/model/float16.js';
import { normal } from './opt-model.js';

const POOL = 2 ** 24 - 3;

export interface LlamaShape {
  hidden: number;
  layers: number;
  ffn: number;
  heads: number;
  /** default heads (no grouped-query attention, as LLaMA-1/2 7B) */
  kvHeads?: number;
  /** default 512 (the stories260K tokenizer) */
  vocab?: number;
  /** default 2048 */
  maxPositions?: number;
  seed?: number;
}

export const LLAMA_7B: LlamaShape = { hidden: 4096, layers: 32, ffn: 11008, heads: 32 };

const TOKENIZER_FROM = join(dirname(fileURLToPath(import.meta.url)), '..', 'models', 'stories260K');

export function llamaName(s: LlamaShape): string {
  return `llama-h${s.hidden}-l${s.layers}-f${s.ffn}-a${s.heads}${s.kvHeads && s.kvHeads !== s.heads ? `-kv${s.kvHeads}` : ''}-fp16`;
}

/**
 * Writes the checkpoint folder under `root` (skipped when it is already complete). Returns its folder and the number of
 * parameters of the blocks' linears.
 */
export function generateLlamaCheckpoint(root: string, s: LlamaShape): { dir: string; linearParams: number; params: number } {
  const dir = join(root, llamaName(s));
  const config = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: s.hidden, intermediate_size: s.ffn, num_hidden_layers: s.layers,
    num_attention_heads: s.heads, num_key_value_heads: s.kvHeads ?? s.heads, vocab_size: s.vocab ?? 512, max_position_embeddings: s.maxPositions ?? 2048,
    rms_norm_eps: 1e-5, rope_theta: 10000.0, rope_scaling: null, hidden_act: 'silu', attention_bias: false, mlp_bias: false,
    tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'float16',
    _note: 'sparsellm bench: random weights (normal, std 0.02; norms 1), stories260K tokenizer; a timing fixture, not a language model',
  };
  const params = llamaConverter.parameters(llamaConverter.parseConfig(config, 'bench'));
  const count = (p: { shape: number[] }) => p.shape.reduce((a, d) => a * d, 1);
  const linearParams = params.filter((p) => p.kind === 'linear' && p.name.startsWith('model.layers.')).reduce((a, p) => a + count(p), 0);
  const result = { dir, linearParams, params: params.reduce((a, p) => a + count(p), 0) };
  const done = join(dir, '.complete');
  if (existsSync(done)) return result;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  // RMSNorm weights 1, everything else N(0, 0.02²) values in fp16, copied out of one pool of 2²⁴ − 3 values (a prime
  // length, so rows of 4096 or 11008 do not line up with it) from a pseudo-random start per tensor: drawing and encoding
  // 6.5 G values one by one takes most of an hour in JS, copying them a minute.
  const seed = (s.seed ?? 1) * 1000;
  const pool = float32ToHalfArray(normal(POOL, seed, 0.02));
  const one = float32ToHalfArray(Float32Array.of(1))[0]!;
  const tensors = params.map((p, k) => ({
    name: p.name, shape: p.shape, values: () => { throw new Error('bytes only'); },
    bytes: () => {
      const out = new Uint16Array(count(p));
      if (p.name.endsWith('norm.weight')) out.fill(one);
      else for (let at = 0, from = (k * 7919 * 4099) % POOL; at < out.length; from = 0) {
        const n = Math.min(out.length - at, POOL - from);
        out.set(pool.subarray(from, from + n), at);
        at += n;
      }
      return new Uint8Array(out.buffer);
    },
  }));
  writeSafetensorsCheckpoint(dir, tensors, { dtype: 'F16' });
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  for (const file of ['tokenizer.model', 'tokenizer_config.json']) copyFileSync(join(TOKENIZER_FROM, file), join(dir, file));
  writeFileSync(done, '');
  return result;
}
