/**
 * Where the hooked dense pass's time goes (issue 16), for one block of the bench's OPT-125m-shaped model (d=768):
 * per micro-batch of 8 × 512 tokens, in one process and interleaved so that other load hits every variant alike:
 *   plain forward (as the re-run), forward with captures, Hessian SYRKs alone, forward + captures + SYRKs (the
 *   statistics pass), and the SGEMM rate. SPARSELLM_PROFILE_SPIN=0 sets onnxruntime's intra-op spinning off.
 *   node --import tsx bench/profile-stats.ts [rounds]
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockRunner, type BlockState } from '../src/model/index.js';
import { native } from '../src/native/addon.js';
import { HessianAccumulator } from '../src/native/hessian.js';
import { generateOptModel } from './opt-model.js';

const rounds = Number(process.argv[2] ?? 3);
const g = generateOptModel(join(tmpdir(), 'sparsellm-bench-models-v1'), { hidden: 768, layers: 12 });
const runner = await BlockRunner.open(join(g.dir, 'onnx', 'model.onnx'));
const batch = 8, seqlen = 512;
const ids = new BigInt64Array(batch * seqlen).map((_, k) => BigInt((k * 7919) % 500 + 3));
const state: BlockState = await runner.prologue(ids, batch, seqlen);
const block = runner.block(0);
const inputs = [...new Map(block.linears.map((l) => [l.inputName, l])).values()];
const sec = (t: number) => (performance.now() - t) / 1000;
const acc = new Map(inputs.map((l) => [l.inputName, new HessianAccumulator(l.inFeatures)]));
await runner.runBlock(0, state, { capture: true }); // session built
const times: Record<string, number[]> = { plain: [], capture: [], syrk: [], stats: [], sgemm: [] };
let syrkFlop = 0;
for (let r = 0; r < rounds; r++) {
  let t = performance.now();
  await runner.runBlock(0, state);
  times.plain!.push(sec(t));
  t = performance.now();
  const { captures } = await runner.runBlock(0, state, { capture: true });
  times.capture!.push(sec(t));
  t = performance.now();
  syrkFlop = 0;
  for (const l of inputs) {
    await acc.get(l.inputName)!.add(captures.get(l.role)!, batch * seqlen, batch);
    syrkFlop += batch * seqlen * l.inFeatures * l.inFeatures;
  }
  times.syrk!.push(sec(t));
  t = performance.now();
  const c2 = (await runner.runBlock(0, state, { capture: true })).captures;
  for (const l of inputs) await acc.get(l.inputName)!.add(c2.get(l.role)!, batch * seqlen, batch);
  times.stats!.push(sec(t));
  const n = 768, k = 4096;
  const A = new Float32Array(k * n).fill(0.01), B = new Float32Array(n * n).fill(0.01), C = new Float32Array(k * n);
  t = performance.now();
  await native().sgemm(A, B, C, k, n, n);
  times.sgemm!.push(sec(t));
}
const med = (v: number[]) => v.slice().sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
const sgemmRate = (2 * 4096 * 768 * 768) / med(times.sgemm!) / 1e9;
console.log(`per micro-batch of ${batch}×${seqlen} (median of ${rounds}): plain ${med(times.plain!).toFixed(3)} s, capture ${med(times.capture!).toFixed(3)} s, ` +
  `SYRKs ${med(times.syrk!).toFixed(3)} s (${(syrkFlop / med(times.syrk!) / 1e9).toFixed(1)} GFLOP/s), stats pass ${med(times.stats!).toFixed(3)} s; ` +
  `SGEMM ${sgemmRate.toFixed(1)} GFLOP/s → SYRK floor ${(syrkFlop / sgemmRate / 1e9).toFixed(3)} s`);
console.log(JSON.stringify(times));
await runner.dispose();
