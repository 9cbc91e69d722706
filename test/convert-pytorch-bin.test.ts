// PyTorch pytorch_model.bin checkpoints (src/convert/pytorch-bin.ts) against real torch.save output: the committed
// fixtures in test/fixtures/pytorch-bin were written by make.py there with torch 1.13 (Debian's python3-torch), and
// each comes with `<name>.expected.safetensors`, the same tensors written from tensor.numpy() bytes, an independent
// path from the zip + pickle the reader parses. Needs no torch and no shared data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertCheckpoint, openCheckpoint } from '../src/convert/convert.js';
import { PytorchBinCheckpoint, readPytorchBinHeader } from '../src/convert/pytorch-bin.js';
import { SafetensorsCheckpoint, readSafetensorsHeader } from '../src/convert/safetensors.js';
import { isUserError } from '../src/errors.js';
import { runCli } from './cli-helpers.js';
import { projectRoot } from './helpers.js';
import { onnxLogits } from './model-fixtures.js';

const FIXTURES = join(projectRoot, 'test', 'fixtures', 'pytorch-bin');
const work = mkdtempSync(join(tmpdir(), 'sparsellm-bin-'));
const expectedOf = (name: string) => join(FIXTURES, `${name}.expected.safetensors`);

/** Bitwise equality of two float32 arrays (NaN-safe, -0 ≠ +0). */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length), y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.every((v, i) => v === y[i]);
}

/** A folder holding `name`'s config.json and its expected tensors as model.safetensors. */
function safetensorsTwin(name: string): string {
  const dir = join(work, `${name}-safetensors`);
  if (existsSync(dir)) return dir;
  mkdirSync(dir);
  copyFileSync(join(FIXTURES, name, 'config.json'), join(dir, 'config.json'));
  copyFileSync(expectedOf(name), join(dir, 'model.safetensors'));
  return dir;
}

// mixed-dtypes-zip64: the same archive with zip64 records (as torch writes past 4 GB), same expected tensors
for (const [name, source] of [['opt-tiny', 'opt-tiny'], ['llama-tiny-sharded', 'llama-tiny-sharded'], ['mixed-dtypes', 'mixed-dtypes'], ['mixed-dtypes-zip64', 'mixed-dtypes']]) {
  test(`${name}: every tensor's name, dtype, shape and values equal torch's own bytes`, () => {
    const bin = PytorchBinCheckpoint.open(join(FIXTURES, name));
    const expected = readSafetensorsHeader(expectedOf(source));
    const reference = SafetensorsCheckpoint.open(safetensorsTwin(source));
    assert.deepEqual(bin.names.sort(), expected.map((t) => t.name).sort());
    for (const t of expected) {
      const got = bin.info(t.name);
      assert.equal(got.dtype, t.dtype, t.name);
      assert.deepEqual(got.shape, t.shape, t.name);
      if (t.dtype === 'I64') continue; // mixed-dtypes' position_ids: checked below
      assert.ok(sameBits(bin.readFloat32(t.name), reference.readFloat32(t.name)), `${t.name}: values differ`);
    }
    if (name === 'llama-tiny-sharded') assert.equal(bin.files.length, 2);
  });
}

test('mixed-dtypes covers fp16, bf16, a view at a storage offset, a 0-d tensor and an int64 buffer', () => {
  const bin = PytorchBinCheckpoint.open(join(FIXTURES, 'mixed-dtypes'));
  assert.deepEqual(['f32', 'f16', 'bf16'].map((n) => bin.info(n).dtype), ['F32', 'F16', 'BF16']);
  assert.deepEqual(bin.info('scalar').shape, []);
  assert.deepEqual([...bin.readFloat32('scalar')], [2.5]);
  // row_view = base[4:7]: the same storage as base, 4 rows of 6 further on
  assert.equal(bin.info('row_view').begin - bin.info('base').begin, 4 * 6 * 4);
  assert.ok(sameBits(bin.readFloat32('row_view'), bin.readFloat32('base').subarray(24, 42)));
  // an int64 buffer opens with the checkpoint but is refused as a weight
  assert.equal(bin.info('position_ids').dtype, 'I64');
  assert.equal(bin.dtype, 'F32');
  assert.throws(() => bin.readFloat32('position_ids'), (e: unknown) => isUserError(e) && /position_ids has dtype I64: only F32, F16 and BF16/.test(e.message));
});


for (const [name, withPositions] of [['opt-tiny', false], ['llama-tiny-sharded', true]] as const) {
  test(`${name}: converted from .bin, the ONNX gives the same logits as from the same weights in safetensors`, async () => {
    const fromBin = join(work, `${name}-bin-onnx`), fromSt = join(work, `${name}-st-onnx`);
    const report = convertCheckpoint(join(FIXTURES, name), fromBin);
    convertCheckpoint(safetensorsTwin(name), fromSt);
    assert.equal(report.sourceDtype, 'float32');
    assert.ok(readFileSync(join(fromBin, 'onnx', 'model.onnx_data')).equals(readFileSync(join(fromSt, 'onnx', 'model.onnx_data'))), 'weights differ');
    const ids = [1, 5, 9, 33, 63, 2, 17];
    const a = await onnxLogits(fromBin, ids, withPositions), b = await onnxLogits(fromSt, ids, withPositions);
    assert.equal(a.length, ids.length * 64);
    assert.ok(a.every(Number.isFinite) && a.some((v) => v !== 0));
    assert.ok(sameBits(a, b), 'logits differ');
  });
}

test('a folder with both formats reads the safetensors', () => {
  const dir = join(work, 'both');
  cpSync(join(FIXTURES, 'opt-tiny'), dir, { recursive: true });
  copyFileSync(expectedOf('opt-tiny'), join(dir, 'model.safetensors'));
  assert.ok(openCheckpoint(dir).checkpoint instanceof SafetensorsCheckpoint);
  rmSync(join(dir, 'model.safetensors'));
  assert.ok(openCheckpoint(dir).checkpoint instanceof PytorchBinCheckpoint);
});

// ---- crafted bad input ----

/** A zip of STORED (or, with `method`, claimed-compressed) entries, CRCs zero (the reader does not check them). */
function zip(entries: [string, Buffer][], method = 0): Buffer {
  const locals: Buffer[] = [], centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const n = Buffer.from(name);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0); local.writeUInt16LE(method, 8);
    local.writeUInt32LE(data.length, 18); local.writeUInt32LE(data.length, 22); local.writeUInt16LE(n.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0); central.writeUInt16LE(method, 10);
    central.writeUInt32LE(data.length, 20); central.writeUInt32LE(data.length, 24); central.writeUInt16LE(n.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, n, data);
    centrals.push(central, n);
    offset += 30 + n.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0); eocd.writeUInt16LE(entries.length, 8); eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cd.length, 12); eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, eocd]);
}

// protocol-2 pickles: `os.system('echo pwned')` (what a malicious .bin does), and a valid one-tensor state dict
const EVIL_PICKLE = Buffer.concat([Buffer.from([0x80, 0x02]), Buffer.from('cos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R.', 'latin1')]);

function binFolder(label: string, bin: Buffer): string {
  const dir = join(work, `bad-${label}`);
  mkdirSync(dir);
  copyFileSync(join(FIXTURES, 'opt-tiny', 'config.json'), join(dir, 'config.json'));
  writeFileSync(join(dir, 'pytorch_model.bin'), bin);
  return dir;
}

test('bad .bin files: one line each, exit 2, nothing written', async () => {
  const good = readFileSync(join(FIXTURES, 'opt-tiny', 'pytorch_model.bin'));
  const cases: [string, Buffer | (() => string), RegExp][] = [
    ['forbidden-global', zip([['archive/data.pkl', EVIL_PICKLE], ['archive/version', Buffer.from('3\n')]]), /refusing to unpickle os\.system/],
    ['truncated', good.subarray(0, good.length >> 1), /not a valid PyTorch checkpoint \(no zip end-of-central-directory record/],
    ['compressed', zip([['archive/data.pkl', Buffer.from([0x80, 0x02, 0x7d, 0x2e])]], 8), /compressed \(method 8\)/],
    ['legacy', Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]), /legacy \(pre-1\.6, non-zip\) format/],
    ['no-pickle', zip([['archive/version', Buffer.from('3\n')]]), /no <archive>\/data\.pkl entry/],
    ['unknown-opcode', zip([['archive/data.pkl', Buffer.from([0x80, 0x02, 0x7d, 0x47, 0, 0, 0, 0, 0, 0, 0, 0, 0x2e])]]), /opcode 0x47/],
    ['non-contiguous', () => { const d = join(work, 'bad-non-contiguous'); cpSync(join(FIXTURES, 'non-contiguous'), d, { recursive: true }); copyFileSync(join(FIXTURES, 'opt-tiny', 'config.json'), join(d, 'config.json')); return d; }, /tensor w is stored non-contiguously \(shape \[4,3\], strides \[1,4\]\)/],
    ['shards-without-index', () => { const d = join(work, 'bad-shards'); cpSync(join(FIXTURES, 'llama-tiny-sharded'), d, { recursive: true }); rmSync(join(d, 'pytorch_model.bin.index.json')); return d; }, /pytorch_model-00001-of-00002\.bin, pytorch_model-00002-of-00002\.bin but no pytorch_model\.bin\.index\.json/],
  ];
  for (const [label, make, pattern] of cases) {
    const dir = typeof make === 'function' ? make() : binFolder(label, make);
    const out = join(work, `out-${label}`);
    assert.throws(() => convertCheckpoint(dir, out), (e: unknown) => isUserError(e) && e.exitCode === 2 && pattern.test(e.message) && !e.message.includes('\n'), label);
    assert.ok(!existsSync(out) && !existsSync(`${out}.partial`), `${label}: nothing left behind`);
  }
  // from the command line: exit 2, one line on stderr, nothing on stdout, input untouched
  for (const label of ['forbidden-global', 'truncated']) {
    const dir = join(work, `bad-${label}`);
    const before = readdirSync(dir).map((f) => readFileSync(join(dir, f)));
    const r = await runCli(['convert', dir, '--out', join(work, `cli-${label}`)]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^sparsellm: [^\n]*pytorch_model\.bin[^\n]*\n$/, label);
    assert.equal(r.stdout, '');
    assert.ok(readdirSync(dir).every((f, i) => readFileSync(join(dir, f)).equals(before[i]!)), `${label}: input changed`);
    assert.ok(!existsSync(join(work, `cli-${label}`)));
  }
});

test('the header alone is read: a missing storage is found before any tensor is', () => {
  // the opt-tiny zip with its storage `data/0` renamed: the central directory no longer holds it
  const good = readFileSync(join(FIXTURES, 'opt-tiny', 'pytorch_model.bin'));
  const bad = Buffer.from(good);
  const from = Buffer.from('pytorch_model/data/0'), to = Buffer.from('pytorch_model/data/X');
  for (let at = bad.indexOf(from); at >= 0; at = bad.indexOf(from, at + 1)) if (!/\d/.test(String.fromCharCode(bad[at + from.length]!))) to.copy(bad, at); // not data/01…
  const dir = binFolder('missing-storage', bad);
  assert.throws(() => readPytorchBinHeader(join(dir, 'pytorch_model.bin')), /storage data\/0 is missing/);
});
