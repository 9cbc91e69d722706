// safetensors reader and writer (src/convert/safetensors.ts) against the format's definition, and the LLaMA-3
// RoPE frequency scaling against its closed form. No shared data needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsCheckpoint, readSafetensorsHeader, writeSafetensorsCheckpoint } from '../src/convert/safetensors.js';
import { parseByteSize } from '../src/convert/export-safetensors.js';
import { ropeInverseFrequencies } from '../src/convert/builders/llama.js';
import { matmulNodeOf } from '../src/convert/builders/common.js';
import { isUserError } from '../src/errors.js';
import { gaussian, mulberry32 } from './helpers.js';

const dir = () => mkdtempSync(join(tmpdir(), 'sparsellm-st-'));

/** A hand-made file: the format written byte by byte (8-byte LE header length, JSON, data), independent of the writer. */
function handMade(path: string, tensors: Record<string, { dtype: string; shape: number[]; bytes: Uint8Array }>): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] };
    offset += t.bytes.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, ...Object.values(tensors).map((t) => Buffer.from(t.bytes))]));
}

test('reader: F32, F16 and BF16 tensors of a hand-made file decode to their exact values', () => {
  const d = dir();
  // 1.5 = 0x3FC0 in bf16 and 0x3E00 in fp16; -2 = 0xC000 in both; 0.099609375 = 0x3DCC (bf16) exactly
  const f32 = new Float32Array([1, -2.5, 3.25, 1e-8]);
  handMade(join(d, 'model.safetensors'), {
    a: { dtype: 'F32', shape: [2, 2], bytes: new Uint8Array(f32.buffer) },
    b: { dtype: 'F16', shape: [2], bytes: new Uint8Array(new Uint16Array([0x3e00, 0xc000]).buffer) },
    c: { dtype: 'BF16', shape: [2], bytes: new Uint8Array(new Uint16Array([0x3fc0, 0x3dcc]).buffer) },
  });
  const ck = SafetensorsCheckpoint.open(d);
  assert.deepEqual(ck.names.sort(), ['a', 'b', 'c']);
  assert.deepEqual([...ck.readFloat32('a')], [...f32]);
  assert.deepEqual([...ck.readFloat32('b')], [1.5, -2]);
  assert.deepEqual([...ck.readFloat32('c')], [1.5, 0.099609375]);
  assert.deepEqual(ck.info('a').shape, [2, 2]);
});

test('writer: one file under the shard limit, n shards + index above it; every tensor reads back (F32 exact, BF16/F16 rounded)', () => {
  const rand = gaussian(mulberry32(3));
  const tensors = [[3, 5], [7], [4, 4], [2, 9]].map((shape, k) => ({ name: `t${k}`, shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, rand) }));
  const input = tensors.map((t) => ({ name: t.name, shape: t.shape, values: () => t.data }));
  const one = dir();
  assert.deepEqual(writeSafetensorsCheckpoint(one, input, { dtype: 'F32' }), ['model.safetensors']);
  const ck = SafetensorsCheckpoint.open(one);
  for (const t of tensors) assert.deepEqual([...ck.readFloat32(t.name)], [...t.data]);
  // header padded to 8 bytes, metadata format "pt" (transformers refuses files without it)
  const raw = readFileSync(join(one, 'model.safetensors'));
  const n = Number(raw.readBigUInt64LE(0));
  assert.equal(n % 8, 0);
  assert.equal(JSON.parse(raw.subarray(8, 8 + n).toString()).__metadata__.format, 'pt');

  // 60 + 28 bytes fit a 100-byte shard, the 64-byte tensor starts the second, then 72 bytes the third (bf16: half)
  for (const [dtype, max, shards] of [['F32', 100, 3], ['BF16', 70, 2], ['F16', 1e9, 1]] as const) {
    const d = dir();
    const files = writeSafetensorsCheckpoint(d, input, { dtype, maxShardBytes: max });
    assert.equal(files.filter((f) => f.endsWith('.safetensors')).length, shards, `${dtype}: ${files}`);
    if (shards > 1) {
      const index = JSON.parse(readFileSync(join(d, 'model.safetensors.index.json'), 'utf8'));
      assert.equal(index.weight_map.t0, `model-00001-of-0000${shards}.safetensors`);
      assert.equal(index.metadata.total_size, tensors.reduce((a, t) => a + t.data.length * (dtype === 'F32' ? 4 : 2), 0));
    }
    const back = SafetensorsCheckpoint.open(d);
    assert.equal(back.dtype, dtype);
    for (const t of tensors) {
      const v = back.readFloat32(t.name);
      const rel = dtype === 'BF16' ? 2 ** -8 : 2 ** -11; // half an ulp of the 8- / 11-bit significand
      t.data.forEach((x, k) => assert.ok(Math.abs(v[k]! - x) <= rel * Math.abs(x) + 1e-7, `${dtype} ${t.name}[${k}]: ${v[k]} vs ${x}`));
    }
  }
});

test('reader: corrupt headers and truncated files give one-line UserErrors', () => {
  const d = dir();
  const path = join(d, 'model.safetensors');
  const cases: [string, Buffer][] = [
    ['header length', Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), Buffer.from('{}')])],
    ['not JSON', (() => { const b = Buffer.alloc(8); b.writeBigUInt64LE(4n); return Buffer.concat([b, Buffer.from('{"a:')]); })()],
    ['truncated', (() => {
      const json = Buffer.from(JSON.stringify({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }));
      const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(json.length));
      return Buffer.concat([b, json, Buffer.alloc(8)]);
    })()],
    ['shape needs', (() => {
      const json = Buffer.from(JSON.stringify({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 16] } }));
      const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(json.length));
      return Buffer.concat([b, json, Buffer.alloc(16)]);
    })()],
    ['shorter than', Buffer.from([1, 2, 3])],
  ];
  for (const [why, bytes] of cases) {
    writeFileSync(path, bytes);
    assert.throws(() => readSafetensorsHeader(path), (e: unknown) => isUserError(e) && !e.message.includes('\n') && e.message.includes(why), why);
  }
});

test('--max-shard-size parses decimal and binary units', () => {
  assert.equal(parseByteSize('5GB'), 5e9);
  assert.equal(parseByteSize('300KiB'), 300 * 1024);
  assert.equal(parseByteSize('1000'), 1000);
  assert.throws(() => parseByteSize('five'), isUserError);
});

test('module scope of a Linear, as torch.onnx names it', () => {
  assert.equal(matmulNodeOf('model.layers.12.self_attn.q_proj.weight'), '/model/layers.12/self_attn/q_proj/MatMul');
  assert.equal(matmulNodeOf('model.decoder.layers.3.fc1.weight'), '/model/decoder/layers.3/fc1/MatMul');
  assert.equal(matmulNodeOf('lm_head.weight'), '/lm_head/MatMul');
});

test('RoPE frequencies: θ^(−2i/d) without scaling; llama3 scaling keeps high frequencies, divides low ones by factor, interpolates between', () => {
  const plain = ropeInverseFrequencies(8, 10000, null, 'cfg');
  // closed form, float32 as transformers computes it
  plain.forEach((f, i) => assert.ok(Math.abs(f - 10000 ** (-(2 * i) / 8)) < 1e-7 * f, `${i}`));
  // LLaMA-3.1's published rope_scaling
  const scaling = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
  const base = ropeInverseFrequencies(128, 500000, null, 'cfg');
  const scaled = ropeInverseFrequencies(128, 500000, scaling, 'cfg');
  let kept = 0, divided = 0, between = 0;
  base.forEach((f, i) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < 8192 / 4) { assert.equal(scaled[i], f); kept++; }
    else if (wavelen > 8192 / 1) { assert.ok(Math.abs(scaled[i]! - f / 8) < 1e-12); divided++; }
    else {
      const s = (8192 / wavelen - 1) / (4 - 1); // the smooth factor
      assert.ok(Math.abs(scaled[i]! - ((1 - s) * f / 8 + s * f)) < 1e-12);
      assert.ok(scaled[i]! < f && scaled[i]! > f / 8);
      between++;
    }
  });
  assert.ok(kept > 0 && divided > 0 && between > 0, `${kept} kept, ${divided} divided, ${between} interpolated`);
  assert.throws(() => ropeInverseFrequencies(8, 10000, { rope_type: 'yarn', factor: 4 }, 'cfg'), (e: unknown) => isUserError(e) && /yarn/.test(e.message));
});
