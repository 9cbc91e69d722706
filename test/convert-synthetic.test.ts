// The graph builders against a naive float64 forward pass written here from transformers' modelling equations, on
// small random checkpoints with the variants the shared fixtures lack: OPT-350m's post-LayerNorm with
// project_in/project_out and an untied lm_head; LLaMA with llama3 RoPE scaling, GQA, head_dim ≠ hidden/heads and an
// untied lm_head; and their safetensors export gives the checkpoint back. Needs no shared data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertCheckpoint } from '../src/convert/convert.js';
import { ropeInverseFrequencies } from '../src/convert/builders/llama.js';
import { planSafetensorsExport, writeSafetensorsExport } from '../src/convert/export-safetensors.js';
import { SafetensorsCheckpoint, writeSafetensorsCheckpoint } from '../src/convert/safetensors.js';
import { BlockRunner, OnnxModel } from '../src/model/index.js';
import { gaussian, mulberry32 } from './helpers.js';
import { onnxLogits } from './model-fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'sparsellm-synthetic-'));
type Weights = Map<string, { shape: number[]; data: Float32Array }>;

function checkpoint(name: string, config: object, shapes: Record<string, number[]>, seed: number): { dir: string; w: Weights } {
  const rand = gaussian(mulberry32(seed));
  const w: Weights = new Map();
  for (const [n, shape] of Object.entries(shapes)) {
    const size = shape.reduce((a, b) => a * b, 1);
    // norm weights around 1, everything else N(0, 0.3²)
    const data = Float32Array.from({ length: size }, () => (/norm\.weight$/.test(n) ? 1 + 0.2 * rand() : 0.3 * rand()));
    w.set(n, { shape, data });
  }
  const dir = join(work, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  writeSafetensorsCheckpoint(dir, [...w].map(([n, t]) => ({ name: n, shape: t.shape, values: () => t.data })), { dtype: 'F32' });
  return { dir, w };
}

// ---- naive float64 linear algebra on row-major [rows][cols] arrays ----
type M = number[][];
const get = (w: Weights, n: string) => w.get(n)!;
const matrix = (w: Weights, n: string): M => { const t = get(w, n); return Array.from({ length: t.shape[0]! }, (_, r) => Array.from(t.data.subarray(r * t.shape[1]!, (r + 1) * t.shape[1]!))); };
const vec = (w: Weights, n: string) => Array.from(get(w, n).data);
/** x Wᵀ + b for each row of x (W is [out, in], transformers' nn.Linear). */
const lin = (x: M, W: M, b?: number[]) => x.map((row) => W.map((wr, o) => wr.reduce((s, v, i) => s + v * row[i]!, b ? b[o]! : 0)));
const add = (a: M, b: M) => a.map((r, i) => r.map((v, j) => v + b[i]![j]!));
const layerNorm = (x: M, g: number[], b: number[]) => x.map((r) => {
  const mean = r.reduce((s, v) => s + v, 0) / r.length;
  const variance = r.reduce((s, v) => s + (v - mean) ** 2, 0) / r.length;
  return r.map((v, j) => ((v - mean) / Math.sqrt(variance + 1e-5)) * g[j]! + b[j]!);
});
const rmsNorm = (x: M, g: number[], eps: number) => x.map((r) => {
  const ms = r.reduce((s, v) => s + v * v, 0) / r.length;
  return r.map((v, j) => (v / Math.sqrt(ms + eps)) * g[j]!);
});
/** Causal attention of one sequence: q [S][H·hd], k/v [S][KV·hd]; query head h reads kv head ⌊h / (H/KV)⌋. */
function attention(q: M, k: M, v: M, heads: number, kvHeads: number, hd: number, scale: number): M {
  const S = q.length, out: M = q.map(() => new Array(heads * hd).fill(0));
  for (let h = 0; h < heads; h++) {
    const kvh = Math.floor(h / (heads / kvHeads));
    for (let i = 0; i < S; i++) {
      const scores = Array.from({ length: i + 1 }, (_, j) => { let s = 0; for (let d = 0; d < hd; d++) s += q[i]![h * hd + d]! * k[j]![kvh * hd + d]!; return s * scale; });
      const m = Math.max(...scores), e = scores.map((s) => Math.exp(s - m)), z = e.reduce((a, b) => a + b, 0);
      for (let j = 0; j <= i; j++) for (let d = 0; d < hd; d++) out[i]![h * hd + d] += (e[j]! / z) * v[j]![kvh * hd + d]!;
    }
  }
  return out;
}


function assertClose(onnx: Float32Array, naive: M, label: string): void {
  const flat = naive.flat();
  assert.equal(onnx.length, flat.length);
  let m = 0;
  flat.forEach((v, i) => (m = Math.max(m, Math.abs(v - onnx[i]!))));
  console.log(`# ${label}: max |Δlogit| vs the float64 forward ${m.toExponential(2)}`);
  assert.ok(m < 1e-4, `${label}: ${m}`);
}

test('OPT-350m layout (post-LayerNorm, project_in/out, untied lm_head): ONNX logits = naive forward (1e-4), and the pipeline splits it', async () => {
  const H = 8, E = 6, F = 12, heads = 2, L = 2, V = 19, maxPos = 16, hd = H / heads;
  const config = { model_type: 'opt', hidden_size: H, word_embed_proj_dim: E, ffn_dim: F, num_attention_heads: heads, num_hidden_layers: L, vocab_size: V, max_position_embeddings: maxPos, do_layer_norm_before: false, activation_function: 'relu', enable_bias: true, tie_word_embeddings: false };
  const shapes: Record<string, number[]> = { 'model.decoder.embed_tokens.weight': [V, E], 'model.decoder.embed_positions.weight': [maxPos + 2, H], 'model.decoder.project_in.weight': [H, E], 'model.decoder.project_out.weight': [E, H], 'lm_head.weight': [V, E] };
  for (let i = 0; i < L; i++) {
    const b = `model.decoder.layers.${i}`;
    for (const r of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) Object.assign(shapes, { [`${b}.self_attn.${r}.weight`]: [H, H], [`${b}.self_attn.${r}.bias`]: [H] });
    Object.assign(shapes, { [`${b}.fc1.weight`]: [F, H], [`${b}.fc1.bias`]: [F], [`${b}.fc2.weight`]: [H, F], [`${b}.fc2.bias`]: [H] });
    for (const n of ['self_attn_layer_norm', 'final_layer_norm']) Object.assign(shapes, { [`${b}.${n}.weight`]: [H], [`${b}.${n}.bias`]: [H] });
  }
  const { dir, w } = checkpoint('opt350', config, shapes, 7);
  const ids = [2, 5, 11, 3, 17, 8];
  // transformers' OPTDecoder, do_layer_norm_before = false: no final_layer_norm, LayerNorm after each residual
  const E_ = matrix(w, 'model.decoder.embed_tokens.weight'), P_ = matrix(w, 'model.decoder.embed_positions.weight');
  let h = add(lin(ids.map((t) => E_[t]!), matrix(w, 'model.decoder.project_in.weight')), ids.map((_, p) => P_[p + 2]!));
  for (let i = 0; i < L; i++) {
    const b = `model.decoder.layers.${i}`, lw = (n: string) => matrix(w, `${b}.${n}.weight`), lb = (n: string) => vec(w, `${b}.${n}.bias`);
    const q = lin(h, lw('self_attn.q_proj'), lb('self_attn.q_proj')).map((r) => r.map((v) => v * hd ** -0.5));
    const ctx = attention(q, lin(h, lw('self_attn.k_proj'), lb('self_attn.k_proj')), lin(h, lw('self_attn.v_proj'), lb('self_attn.v_proj')), heads, heads, hd, 1);
    h = layerNorm(add(h, lin(ctx, lw('self_attn.out_proj'), lb('self_attn.out_proj'))), vec(w, `${b}.self_attn_layer_norm.weight`), lb('self_attn_layer_norm'));
    const act = lin(h, lw('fc1'), lb('fc1')).map((r) => r.map((v) => Math.max(0, v)));
    h = layerNorm(add(h, lin(act, lw('fc2'), lb('fc2'))), vec(w, `${b}.final_layer_norm.weight`), lb('final_layer_norm'));
  }
  const naive = lin(lin(h, matrix(w, 'model.decoder.project_out.weight')), matrix(w, 'lm_head.weight'));
  const out = join(work, 'opt350-onnx');
  convertCheckpoint(dir, out);
  assertClose(await onnxLogits(out, ids, false), naive, 'OPT post-LN + projections');
  // the block pipeline finds 2 blocks of 6 linears and reproduces the logits part by part
  const runner = await BlockRunner.open(join(out, 'onnx', 'model.onnx'));
  assert.deepEqual(runner.layout.blocks.map((b) => b.linears.map((l) => `${l.role}${l.biasName ? '+b' : ''}`).join(' ')), Array(L).fill('q_proj+b k_proj+b v_proj+b out_proj+b fc1+b fc2+b'));
  let st = await runner.prologue(BigInt64Array.from(ids.map(BigInt)), 1, ids.length);
  for (let i = 0; i < L; i++) st = (await runner.runBlock(i, st)).state;
  assertClose(await runner.epilogue(st), naive, 'OPT post-LN, block by block');
  await runner.dispose();
  assertExportsBack(out, w);
});

/** The converted ONNX exported as safetensors gives back exactly the checkpoint's tensors (names, shapes, values). */
function assertExportsBack(onnxFolder: string, w: Weights): void {
  const exported = join(onnxFolder, '..', `${onnxFolder.split('/').at(-1)}-st`);
  mkdirSync(exported);
  writeSafetensorsExport(planSafetensorsExport(OnnxModel.load(join(onnxFolder, 'onnx', 'model.onnx'))), exported);
  const back = SafetensorsCheckpoint.open(exported);
  assert.deepEqual(back.names.sort(), [...w.keys()].sort());
  for (const [n, t] of w) {
    assert.deepEqual(back.info(n).shape, t.shape, n);
    assert.deepEqual(back.readFloat32(n), t.data, n);
  }
}

test('LLaMA with llama3 RoPE scaling, GQA 4/2, head_dim 3·2 ≠ hidden/heads, untied lm_head: ONNX logits = naive forward (1e-4)', async () => {
  const H = 10, heads = 4, kv = 2, hd = 6, F = 14, L = 2, V = 23;
  const rope_scaling = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 };
  const config = { model_type: 'llama', hidden_size: H, num_attention_heads: heads, num_key_value_heads: kv, head_dim: hd, intermediate_size: F, num_hidden_layers: L, vocab_size: V, max_position_embeddings: 64, rms_norm_eps: 1e-6, rope_theta: 50, rope_scaling, tie_word_embeddings: false };
  const shapes: Record<string, number[]> = { 'model.embed_tokens.weight': [V, H], 'model.norm.weight': [H], 'lm_head.weight': [V, H] };
  for (let i = 0; i < L; i++) {
    const b = `model.layers.${i}`;
    Object.assign(shapes, {
      [`${b}.input_layernorm.weight`]: [H], [`${b}.post_attention_layernorm.weight`]: [H],
      [`${b}.self_attn.q_proj.weight`]: [heads * hd, H], [`${b}.self_attn.k_proj.weight`]: [kv * hd, H], [`${b}.self_attn.v_proj.weight`]: [kv * hd, H], [`${b}.self_attn.o_proj.weight`]: [H, heads * hd],
      [`${b}.mlp.gate_proj.weight`]: [F, H], [`${b}.mlp.up_proj.weight`]: [F, H], [`${b}.mlp.down_proj.weight`]: [H, F],
    });
  }
  const { dir, w } = checkpoint('llama3', config, shapes, 11);
  const ids = [1, 7, 22, 4, 9, 13, 2];
  const inv = ropeInverseFrequencies(hd, 50, rope_scaling, 'cfg');
  // rotate-half RoPE: (x₁, x₂) -> (x₁ cos − x₂ sin, x₂ cos + x₁ sin) per head, angle = position · inv_freq[j]
  const rope = (x: M, nh: number) => x.map((row, p) => row.map((v, c) => {
    const d = c % hd, j = d % (hd / 2), a = p * inv[j]!;
    const partner = row[c - d + (d < hd / 2 ? d + hd / 2 : d - hd / 2)]!;
    return d < hd / 2 ? v * Math.cos(a) - partner * Math.sin(a) : v * Math.cos(a) + partner * Math.sin(a);
  }).slice(0, nh * hd));
  const E_ = matrix(w, 'model.embed_tokens.weight');
  let h: M = ids.map((t) => E_[t]!);
  for (let i = 0; i < L; i++) {
    const b = `model.layers.${i}`, lw = (n: string) => matrix(w, `${b}.${n}.weight`);
    const x = rmsNorm(h, vec(w, `${b}.input_layernorm.weight`), 1e-6);
    const ctx = attention(rope(lin(x, lw('self_attn.q_proj')), heads), rope(lin(x, lw('self_attn.k_proj')), kv), lin(x, lw('self_attn.v_proj')), heads, kv, hd, 1 / Math.sqrt(hd));
    h = add(h, lin(ctx, lw('self_attn.o_proj')));
    const y = rmsNorm(h, vec(w, `${b}.post_attention_layernorm.weight`), 1e-6);
    const up = lin(y, lw('mlp.up_proj'));
    const act = lin(y, lw('mlp.gate_proj')).map((r, s) => r.map((g, k) => (g / (1 + Math.exp(-g))) * up[s]![k]!));
    h = add(h, lin(act, lw('mlp.down_proj')));
  }
  const naive = lin(rmsNorm(h, vec(w, 'model.norm.weight'), 1e-6), matrix(w, 'lm_head.weight'));
  const out = join(work, 'llama3-onnx');
  convertCheckpoint(dir, out);
  assertClose(await onnxLogits(out, ids, true), naive, 'LLaMA llama3-RoPE GQA untied');
  assertExportsBack(out, w);
});
