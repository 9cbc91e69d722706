// The CUDA path on a machine without a GPU: the CPU build reports "built without CUDA", device resolution
// falls back to the CPU (or refuses --device cuda with a UserError), and — when native/build-cuda exists —
// the CUDA build loads, reports the missing driver and rejects GPU calls instead of crashing. Its dlopen
// search for cuBLAS / cuSOLVER is exercised with stub libraries. (Numerical checks need a GPU:
// scripts/verify-cuda.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../src/native/addon.js';
import { cudaAddonPath, cudaInfo, resolveDevice, type CudaInfo } from '../src/native/device.js';
import { UserError } from '../src/errors.js';
import { optFamily } from '../src/model/families/opt.js';
import { sparseLlmOptions } from '../src/pipeline/options.js';

const gpuInfo = (over: Partial<CudaInfo>): CudaInfo => ({
  built: true,
  available: true,
  devices: [{ name: 'NVIDIA H100 80GB HBM3', memory: 85e9, cc: '9.0' }],
  cublas: true,
  cusolver: true,
  ...over,
});

test('the CPU build exports cudaInfo() = {available: false, reason: "built without CUDA"}', () => {
  const f = native().cudaInfo as (() => CudaInfo) | undefined;
  assert.equal(typeof f, 'function');
  const info = f!();
  if (info.built) {
    // native/build was compiled with CUDA: it must still answer with a consistent report.
    assert.equal(typeof info.available, 'boolean');
    if (!info.available) assert.ok(info.reason && info.reason.length > 0);
    return;
  }
  assert.deepEqual(info, { built: false, available: false, reason: 'built without CUDA', devices: [], cublas: false, cusolver: false });
});

test("resolveDevice('auto') picks the CPU and says why when CUDA is unavailable", (t) => {
  const info = cudaInfo();
  if (info.available) return t.skip('a GPU is available here');
  const r = resolveDevice('auto');
  assert.equal(r.device, 'cpu');
  assert.match(r.line, /^device: cpu \(CUDA unavailable: .+\)$/);
  assert.ok(r.line.includes(info.reason!));
  if (!cudaAddonPath()) assert.equal(r.line, 'device: cpu (CUDA unavailable: built without CUDA)');
});

test("resolveDevice('cuda') throws a one-line UserError when CUDA is unavailable", (t) => {
  if (cudaInfo().available) return t.skip('a GPU is available here');
  assert.throws(
    () => resolveDevice('cuda'),
    (e: unknown) => e instanceof UserError && /^--device cuda: CUDA unavailable \(.+\)/.test(e.message) && !e.message.includes('\n'),
  );
});

test('resolveDevice decision table (injected reports)', () => {
  assert.equal(resolveDevice('cpu', gpuInfo({})).device, 'cpu');
  assert.equal(resolveDevice('cpu', gpuInfo({})).line, 'device: cpu (requested)');
  const auto = resolveDevice('auto', gpuInfo({}));
  assert.equal(auto.device, 'cuda');
  assert.equal(auto.line, 'device: cuda (NVIDIA H100 80GB HBM3, 79.2 GiB, cc 9.0; cuBLAS, cuSOLVER)');
  const noBlas = resolveDevice('auto', gpuInfo({ cublas: false, cublasReason: 'cuBLAS not found' }));
  assert.deepEqual([noBlas.device, noBlas.line], ['cpu', 'device: cpu (GPU found but cuBLAS missing: cuBLAS not found)']);
  // explicit cuda without cuBLAS: the built-in kernels run
  const forced = resolveDevice('cuda', gpuInfo({ cublas: false, cusolver: false }));
  assert.equal(forced.device, 'cuda');
  assert.match(forced.line, /no cuBLAS: built-in GEMM kernels, no cuSOLVER: Cholesky on the CPU/);
  const off = gpuInfo({ available: false, reason: 'no CUDA device found', devices: [] });
  assert.equal(resolveDevice('auto', off).line, 'device: cpu (CUDA unavailable: no CUDA device found)');
  assert.throws(() => resolveDevice('cuda', off), UserError);
  assert.throws(() => resolveDevice('tpu' as never, off), UserError);
});

test('SPARSELLM_DEVICE=cpu turns the CUDA path off', () => {
  const saved = process.env.SPARSELLM_DEVICE;
  process.env.SPARSELLM_DEVICE = 'cpu';
  try {
    const info = cudaInfo();
    assert.equal(info.available, false);
    assert.equal(info.reason, 'SPARSELLM_DEVICE=cpu');
    assert.equal(resolveDevice('auto').device, 'cpu');
  } finally {
    if (saved === undefined) delete process.env.SPARSELLM_DEVICE;
    else process.env.SPARSELLM_DEVICE = saved;
  }
});

// ---- the CUDA build (native/build-cuda), each scenario in a child process -----------------------------

const cudaPath = cudaAddonPath();

/** Runs `body` (CommonJS, `addon` bound to the CUDA build) in a child node and returns its JSON output. */
function child(body: string, env: NodeJS.ProcessEnv = {}): unknown {
  const script = `const addon = require(${JSON.stringify(cudaPath)});\n(async () => {\n${body}\n})().catch((e) => { console.error(e); process.exit(3); });`;
  const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `child exited with ${r.status} (signal ${r.signal}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

test('the CUDA build loads here and fails gracefully without a GPU', { skip: !cudaPath && 'native/build-cuda not built' }, () => {
  const out = child(`
    const info = addon.cudaInfo();
    const results = {};
    const H = new Float32Array(16), X = new Float32Array(8);
    try { await addon.cudaHessianAccumulate(H, X, 2, 4, 0, 1); results.hessian = 'resolved'; } catch (e) { results.hessian = e.message; }
    try { await addon.cudaSparseGptPrune(new Float32Array(8), 2, 4, Float32Array.from({length: 16}, (_, i) => i % 5 === 0 ? 1 : 0), { sparsity: 0.5, percdamp: 0.01, blocksize: 128, accumulateDamping: false, doublePrecision: false }); results.sparsegpt = 'resolved'; } catch (e) { results.sparsegpt = e.message; }
    try { await addon.cudaReluZUpdate(new Float32Array(4), new Float32Array(4), new Float32Array(4), 1, 1); results.relu = 'resolved'; } catch (e) { results.relu = e.message; }
    // SparseLLM with its inner SparseGPT prunes on the GPU (N 16, d 4, ffn 8): the first prune needs the GPU
    const x = (n, k) => Float32Array.from({ length: n }, (_, i) => Math.sin(k * (i + 1)));
    const eye = Float32Array.from({ length: 16 }, (_, i) => (i % 5 === 0 ? 1 : 0));
    try { await addon.cudaSparsellmOpt(x(64, 1), x(32, 2), x(8, 3), x(32, 4), x(4, 5), eye, null, 16, 4, 8, 1, ${JSON.stringify(sparseLlmOptions(optFamily, { sparsity: 0.5 }))}); results.sparsellm = 'resolved'; } catch (e) { results.sparsellm = e.message; }
    try { addon.cudaSparseGptPrune(new Float32Array(7), 2, 4, H, { sparsity: 0.5, percdamp: 0.01, blocksize: 128, accumulateDamping: false, doublePrecision: false }); results.sizes = 'accepted'; } catch (e) { results.sizes = e.constructor.name + ': ' + e.message; }
    try { addon.cudaSparseGptPrune(new Float32Array(8), 2, 4, H, { prunen: 2, prunem: 4, percdamp: 0.01, blocksize: 6, accumulateDamping: false, doublePrecision: false }); results.nm = 'accepted'; } catch (e) { results.nm = e.constructor.name + ': ' + e.message; }
    try { addon.cudaSparseGptPrune(new Float32Array(8), 2, 4, H, { sparsity: 0.5, blocksize: 128, accumulateDamping: false, doublePrecision: false }); results.missing = 'accepted'; } catch (e) { results.missing = e.constructor.name + ': ' + e.message; }
    results.hasCpuSolvers = typeof addon.hessianAccumulate === 'function';
    console.log(JSON.stringify({ info, results }));
  `) as { info: CudaInfo; results: Record<string, string | boolean> };
  const { info, results } = out;
  assert.equal(info.built, true);
  assert.equal(typeof info.cublas, 'boolean');
  assert.equal(typeof info.cusolver, 'boolean');
  assert.ok(info.runtimeVersion! >= 12000, `runtimeVersion ${info.runtimeVersion}`);
  assert.equal(results.sizes, 'RangeError: W must hold rows*cols floats');
  assert.equal(results.nm, 'RangeError: blocksize must be a multiple of prunem');
  assert.equal(results.missing, 'TypeError: option percdamp is missing'); // no defaults in the binding
  assert.equal(results.hasCpuSolvers, true);
  if (info.available) return; // on a GPU machine the calls ran: scripts/verify-cuda.ts checks the numbers
  assert.ok(info.reason && info.reason.length > 0);
  assert.deepEqual(info.devices, []);
  if (info.driverVersion === 0) assert.match(info.reason!, /cudaGetDeviceCount failed: cudaError\w+ .*no NVIDIA driver/);
  for (const k of ['hessian', 'sparsegpt', 'relu', 'sparsellm']) assert.equal(results[k], `CUDA unavailable: ${info.reason}`);
});

function haveCc(): boolean {
  return spawnSync('cc', ['--version']).status === 0;
}

test('cuBLAS / cuSOLVER are found with dlopen (stub libraries: explicit folder, pip-wheel layout, incomplete library)', { skip: (!cudaPath && 'native/build-cuda not built') || (!haveCc() && 'no C compiler') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'sparsellm-cuda-'));
  try {
    const blasSyms = ['cublasCreate_v2', 'cublasDestroy_v2', 'cublasSetStream_v2', 'cublasSgemm_v2', 'cublasSsyrk_v2', 'cublasSetMathMode'];
    const solverSyms = ['cusolverDnCreate', 'cusolverDnDestroy', 'cusolverDnSetStream', 'cusolverDnSpotrf_bufferSize', 'cusolverDnSpotrf', 'cusolverDnSpotrs'];
    const stub = (path: string, syms: string[]) => {
      mkdirSync(join(path, '..'), { recursive: true });
      const c = `${path}.c`;
      writeFileSync(c, syms.map((s) => `int ${s}(void) { return 1; }\n`).join(''));
      execFileSync('cc', ['-shared', '-fPIC', '-o', path, c]);
    };
    const flat = join(dir, 'flat');
    stub(join(flat, 'libcublas.so.12'), blasSyms);
    stub(join(flat, 'libcusolver.so.11'), solverSyms);
    const site = join(dir, 'venv', 'lib', 'python3.11', 'site-packages', 'nvidia');
    stub(join(site, 'cublas', 'lib', 'libcublas.so.12'), blasSyms);
    stub(join(site, 'cusolver', 'lib', 'libcusolver.so.11'), solverSyms);
    const broken = join(dir, 'broken');
    stub(join(broken, 'libcublas.so.13'), blasSyms.filter((s) => s !== 'cublasSsyrk_v2'));

    const probe = (env: NodeJS.ProcessEnv) => child('console.log(JSON.stringify(addon.cudaInfo()));', env) as CudaInfo;
    const baseEnv = { LD_LIBRARY_PATH: '', SPARSELLM_CUDA_LIBDIR: '', VIRTUAL_ENV: '' };
    const baseline = probe(baseEnv);

    const explicit = probe({ ...baseEnv, SPARSELLM_CUDA_LIBDIR: flat });
    assert.equal(explicit.cublas, true, explicit.cublasReason);
    assert.equal(explicit.cusolver, true, explicit.cusolverReason);
    assert.equal(explicit.cublasPath, join(flat, 'libcublas.so.12'));
    assert.equal(explicit.cusolverPath, join(flat, 'libcusolver.so.11'));
    if (!explicit.available) assert.ok(explicit.reason); // libraries found, still no GPU

    const wheel = probe({ ...baseEnv, VIRTUAL_ENV: join(dir, 'venv') });
    assert.equal(wheel.cublas, true, wheel.cublasReason);
    assert.equal(wheel.cusolver, true, wheel.cusolverReason);
    if (!baseline.cublas) assert.equal(wheel.cublasPath, join(site, 'cublas', 'lib', 'libcublas.so.12'));

    // An incomplete newer library is reported (it is tried first) — unless a real cuBLAS is found elsewhere.
    const bad = probe({ ...baseEnv, SPARSELLM_CUDA_LIBDIR: broken });
    if (!baseline.cublas) {
      assert.equal(bad.cublas, false);
      assert.match(bad.cublasReason!, /lacks cublasSsyrk_v2/);
    }

    if (!baseline.cublas) {
      assert.match(baseline.cublasReason!, /^cuBLAS not found \(libcublas\.so\.13\/libcublas\.so\.12\); .*LD_LIBRARY_PATH/);
      assert.match(baseline.cusolverReason!, /^cuSOLVER not found/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
