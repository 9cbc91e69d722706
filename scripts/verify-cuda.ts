// Verifies the CUDA path against the CPU one and times both. Run on a GPU machine, after
// `npm run build:native:cuda` (see docs/CUDA.md):
//
//   node --import tsx scripts/verify-cuda.ts            # checks + timings (768², 3072×768, 768×3072, 4096²)
//   node --import tsx scripts/verify-cuda.ts --large    # also 11008×4096 and 4096×11008 (LLaMA-7B MLP)
//   node --import tsx scripts/verify-cuda.ts --cpu-only # no GPU needed: checks the float64 JS reference
//                                                       # used below against the CPU SparseGPT
//
// Checks and tolerances (fp32 everywhere; W ~ N(0,1), X ~ N(0,1) with correlated columns):
//   - cudaHessianAccumulate vs CPU hessianAccumulate after two calls (running average):
//     ‖H_gpu − H_cpu‖_F / ‖H_cpu‖_F ≤ 1e-5, H_gpu exactly symmetric.
//   - cudaSparseGptPrune vs a float64 JS reference of ALGORITHMS.md §2.3 (small layers) and vs the CPU
//     sparsegptPrune (src/native/sparsegpt.ts, skipped when it is missing), unstructured 50% and 2:4:
//     mask mismatch ≤ 0.5% of the entries, ‖W_gpu − W_ref‖_F / ‖W_ref‖_F ≤ 2e-2, |loss − loss_ref| / loss_ref ≤ 2e-2,
//     plus the exact structure: every block holds ≥ int(rows·B·sparsity)+1 zeros (unstructured), every
//     group of M inputs of a row holds ≥ N zeros (N:M).
//   - cudaReluZUpdate / cudaSiluZUpdate vs JS: max relative error ≤ 1e-5.
// Exit code: 0 all checks passed, 1 a check failed, 2 CUDA unavailable (nothing verified).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../src/native/addon.js';
import { cudaAddon, cudaInfo, type CudaAddon } from '../src/native/device.js';
import { relativeError } from '../test/helpers.js';
import { SPARSEGPT_DEFAULTS, sparseGptOptions } from '../src/pipeline/options.js';
import { naiveSparseGpt, randn } from '../test/solver-util.js';

type CpuSparseGpt = (
  W: Float32Array, rows: number, cols: number, H: Float32Array, options: Record<string, unknown>,
) => Promise<{ loss: number; seconds: number }>;

const args = new Set(process.argv.slice(2));
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
let failures = 0;

function check(ok: boolean, what: string): void {
  console.log(`${ok ? 'PASS' : 'FAIL'}  ${what}`);
  if (!ok) failures++;
}

// ---- data ------------------------------------------------------------------------------------------

/** Tokens with correlated features (a few shared directions + noise), like real activations. */
function activations(rows: number, cols: number, seed: number): Float32Array {
  const X = randn(rows * cols, seed);
  const k = 8;
  const basis = randn(k * cols, seed + 1), coef = randn(rows * k, seed + 2);
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < k; j++) {
      const c = coef[r * k + j]!;
      for (let i = 0; i < cols; i++) X[r * cols + i]! += 0.5 * c * basis[j * cols + i]!;
    }
  return X;
}

function maskMismatch(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < b.length; i++) if ((a[i] === 0) !== (b[i] === 0)) n++;
  return n / b.length;
}

async function time<T>(f: () => Promise<T>, repeats = 1): Promise<{ value: T; ms: number }> {
  let best = Infinity, value!: T;
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    value = await f();
    best = Math.min(best, performance.now() - t0);
  }
  return { value, ms: best };
}

// ---- float64 reference of SparseGPT fasterprune (ALGORITHMS.md §2.3) -------------------------------

interface Spec { sparsity?: number; prunen?: number; prunem?: number; blocksize?: number; percdamp?: number }

/** The float64 reference SparseGPT of the test suite (test/solver-util.ts), with this script's spec options. */
function referenceSparseGpt(W0: Float32Array, rows: number, cols: number, H0: Float32Array, spec: Spec): { W: Float64Array; loss: number } {
  return naiveSparseGpt(W0, rows, cols, H0, spec, spec.percdamp ?? SPARSEGPT_DEFAULTS.percdamp, spec.blocksize ?? SPARSEGPT_DEFAULTS.blocksize);
}

/** Every option the bindings read (they take no defaults): the spec's, else the CLI defaults (sparseGptOptions in src/pipeline/options.ts). */
function bindingOptions(spec: Spec): object {
  return sparseGptOptions('prunen' in spec && spec.prunen ? { prunen: spec.prunen, prunem: spec.prunem!, ...spec } : { sparsity: spec.sparsity ?? 0, ...spec } as never);
}

function structureOk(W: ArrayLike<number>, rows: number, cols: number, spec: Spec): boolean {
  const B = spec.blocksize ?? SPARSEGPT_DEFAULTS.blocksize;
  if ((spec.prunen ?? 0) > 0) {
    for (let r = 0; r < rows; r++)
      for (let g = 0; g < cols; g += spec.prunem!) {
        let z = 0;
        for (let t = 0; t < spec.prunem!; t++) z += W[r * cols + g + t] === 0 ? 1 : 0;
        if (z < spec.prunen!) return false;
      }
    return true;
  }
  for (let i1 = 0; i1 < cols; i1 += B) {
    const cnt = Math.min(B, cols - i1);
    let z = 0;
    for (let r = 0; r < rows; r++) for (let j = 0; j < cnt; j++) z += W[r * cols + i1 + j] === 0 ? 1 : 0;
    if (z < Math.floor(rows * cnt * spec.sparsity!) + 1) return false;
  }
  return true;
}

function compare(label: string, W: ArrayLike<number>, loss: number, ref: ArrayLike<number>, refLoss: number): void {
  const mm = maskMismatch(W, ref), re = relativeError(W, ref), le = Math.abs(loss - refLoss) / Math.abs(refLoss || 1);
  console.log(`      ${label}: mask mismatch ${(100 * mm).toFixed(3)}%, rel. W error ${re.toExponential(2)}, loss ${loss.toPrecision(6)} vs ${refLoss.toPrecision(6)}`);
  check(mm <= 0.005 && re <= 2e-2 && le <= 2e-2, `${label} within tolerance (mask ≤ 0.5%, W ≤ 2e-2, loss ≤ 2e-2)`);
}

async function hessianOf(X: Float32Array, rows: number, cols: number): Promise<Float32Array> {
  const H = new Float32Array(cols * cols);
  await native().hessianAccumulate(H, X, rows, cols, 0, 1);
  return H;
}

const specs: Spec[] = [{ sparsity: 0.5 }, { prunen: 2, prunem: 4 }];
const specName = (s: Spec) => ((s.prunen ?? 0) > 0 ? `${s.prunen}:${s.prunem}` : `${s.sparsity! * 100}%`);

async function loadCpuSparseGpt(): Promise<CpuSparseGpt | undefined> {
  const p = join(root, 'src', 'native', 'sparsegpt.ts');
  if (!existsSync(p)) return undefined;
  try {
    const mod = (await import('../src/native/sparsegpt.js' as string)) as { sparsegptPrune?: CpuSparseGpt };
    return mod.sparsegptPrune;
  } catch (e) {
    console.log(`(CPU SparseGPT not usable: ${(e as Error).message.split('\n')[0]})`);
    return undefined;
  }
}

// ---- --cpu-only: validate the reference against the CPU solver (no GPU) ------------------------------

async function cpuOnly(): Promise<void> {
  const cpu = await loadCpuSparseGpt();
  if (!cpu) {
    console.log('src/native/sparsegpt.ts is missing: nothing to compare the reference with');
    process.exit(2);
  }
  for (const [rows, cols, bs] of [[48, 96, 32], [64, 128, 128], [40, 200, 64]] as const) {
    const X = activations(4 * cols, cols, cols), H = await hessianOf(X, 4 * cols, cols);
    for (const s of specs) {
      if ((s.prunen ?? 0) > 0 && cols % s.prunem! !== 0) continue;
      const spec = { ...s, blocksize: bs };
      const W = randn(rows * cols, rows + cols);
      const ref = referenceSparseGpt(W, rows, cols, H, spec);
      const got = await cpu(W, rows, cols, H, bindingOptions(spec) as Spec);
      console.log(`  ${rows}×${cols} bs ${bs} ${specName(s)}`);
      compare('CPU vs float64 reference', W, got.loss, ref.W, ref.loss);
      check(structureOk(W, rows, cols, spec), 'CPU result has the required zeros');
    }
  }
}

// ---- GPU verification --------------------------------------------------------------------------------

async function gpu(addon: CudaAddon): Promise<void> {
  const cpu = await loadCpuSparseGpt();
  if (!cpu) console.log('(src/native/sparsegpt.ts missing: comparing with the float64 reference only)');

  console.log('\n== Hessian (two running-average calls), GPU vs CPU ==');
  for (const [cols, rows] of [[129, 37], [768, 2048], [3072, 2048], [4096, 2048]] as const) {
    const X1 = activations(rows, cols, 1), X2 = activations(rows, cols, 2);
    const Hc = new Float32Array(cols * cols), Hg = new Float32Array(cols * cols);
    const tc = await time(async () => {
      Hc.fill(0);
      await native().hessianAccumulate(Hc, X1, rows, cols, 0, 1);
      await native().hessianAccumulate(Hc, X2, rows, cols, 1, 2);
    }, 2);
    let usedCublas = false;
    const tg = await time(async () => {
      Hg.fill(0);
      usedCublas = (await addon.cudaHessianAccumulate(Hg, X1, rows, cols, 0, 1)).cublas;
      await addon.cudaHessianAccumulate(Hg, X2, rows, cols, 1, 2);
    }, 3);
    let sym = true;
    for (let i = 0; i < cols && sym; i++) for (let j = 0; j < i; j++) if (Hg[i * cols + j] !== Hg[j * cols + i]) { sym = false; break; }
    const e = relativeError(Hg, Hc);
    check(e <= 1e-5 && sym, `H ${cols}×${cols} from 2×${rows} tokens: rel. error ${e.toExponential(2)}, symmetric ${sym} (${usedCublas ? 'cuBLAS SSYRK' : 'tiled kernel'}) — CPU ${tc.ms.toFixed(1)} ms, GPU ${tg.ms.toFixed(1)} ms incl. transfers`);
  }

  console.log('\n== SparseGPT, small layers vs the float64 reference (and the CPU solver) ==');
  for (const [rows, cols, bs] of [[48, 96, 32], [64, 128, 128], [40, 200, 64], [256, 384, 128]] as const) {
    const X = activations(4 * cols, cols, cols), H = await hessianOf(X, 4 * cols, cols);
    for (const s of specs) {
      if ((s.prunen ?? 0) > 0 && cols % s.prunem! !== 0) continue;
      const spec = { ...s, blocksize: bs };
      const W0 = randn(rows * cols, rows * cols);
      const ref = referenceSparseGpt(W0, rows, cols, H, spec);
      const Wg = Float32Array.from(W0);
      const Hcopy = Float32Array.from(H);
      const r = await addon.cudaSparseGptPrune(Wg, rows, cols, H, bindingOptions(spec));
      console.log(`  ${rows}×${cols} bs ${bs} ${specName(s)} (cholesky ${r.cholesky}, gemm ${r.gemm})`);
      compare('GPU vs float64 reference', Wg, r.loss, ref.W, ref.loss);
      check(structureOk(Wg, rows, cols, spec), 'GPU result has the required zeros');
      check(relativeError(H, Hcopy) === 0, 'H left unchanged');
      if (cpu) {
        const Wc = Float32Array.from(W0);
        const c = await cpu(Wc, rows, cols, H, bindingOptions(spec) as Spec);
        compare('GPU vs CPU solver', Wg, r.loss, Wc, c.loss);
      }
    }
  }
  // dead inputs: a zero column of X gives diag(H) = 0
  {
    const rows = 32, cols = 64;
    const X = activations(256, cols, 5);
    for (let t = 0; t < 256; t++) X[t * cols + 7] = 0;
    const H = await hessianOf(X, 256, cols);
    const W0 = randn(rows * cols, 9), Wg = Float32Array.from(W0);
    await addon.cudaSparseGptPrune(Wg, rows, cols, H, bindingOptions({ sparsity: 0.5, blocksize: 32 }));
    const ref = referenceSparseGpt(W0, rows, cols, H, { sparsity: 0.5, blocksize: 32 });
    let deadZero = true;
    for (let r = 0; r < rows; r++) deadZero &&= Wg[r * cols + 7] === 0;
    check(deadZero && maskMismatch(Wg, ref.W) <= 0.005, 'dead input column is zeroed and the rest matches the reference');
  }

  console.log('\n== SparseGPT timings (H from 2048 tokens; GPU incl. transfers, best of 3; CPU one run) ==');
  const layers: Array<[number, number]> = [[768, 768], [3072, 768], [768, 3072], [4096, 4096]];
  if (args.has('--large')) layers.push([11008, 4096], [4096, 11008]);
  for (const [rows, cols] of layers) {
    const X = activations(2048, cols, 3), H = await hessianOf(X, 2048, cols);
    const W0 = randn(rows * cols, 4);
    for (const s of specs) {
      const spec = { ...s, blocksize: 128 };
      let Wg = Float32Array.from(W0);
      let info = { cholesky: '', gemm: '', loss: 0 };
      const tg = await time(async () => {
        Wg = Float32Array.from(W0);
        info = await addon.cudaSparseGptPrune(Wg, rows, cols, H, bindingOptions(spec));
      }, 3);
      check(structureOk(Wg, rows, cols, spec), `${rows}×${cols} ${specName(s)}: structure`);
      let line = `  ${rows}×${cols} ${specName(s)}: GPU ${tg.ms.toFixed(1)} ms (cholesky ${info.cholesky}, gemm ${info.gemm})`;
      if (cpu) {
        const Wc = Float32Array.from(W0);
        const tc = await time(() => cpu(Wc, rows, cols, H, bindingOptions(spec) as Spec));
        line += `, CPU ${tc.ms.toFixed(1)} ms (×${(tc.ms / tg.ms).toFixed(1)})`;
        console.log(line);
        compare(`${rows}×${cols} ${specName(s)} GPU vs CPU`, Wg, info.loss, Wc, tc.value.loss);
      } else console.log(line);
    }
  }

  console.log('\n== SparseLLM elementwise z updates ==');
  {
    const n = 1 << 20, p = randn(n, 11), m = randn(n, 12), s = randn(n, 13), z = new Float32Array(n);
    const alpha = 0.1, gamma = 0.1;
    await addon.cudaReluZUpdate(z, p, m, alpha, gamma);
    let worst = 0;
    for (let i = 0; i < n; i++) {
      const sol1 = (gamma * p[i]! + alpha * m[i]!) / (gamma + alpha);
      const z1 = sol1 >= 0 ? sol1 : 0, z2 = m[i]! <= 0 ? m[i]! : 0;
      const f = (v: number) => gamma * (p[i]! - Math.max(v, 0)) ** 2 + alpha * (v - m[i]!) ** 2;
      const want = f(z1) <= f(z2) ? z1 : z2;
      worst = Math.max(worst, Math.abs(z[i]! - want) / Math.max(1, Math.abs(want)));
    }
    check(worst <= 1e-5, `ReLU z update: max rel. error ${worst.toExponential(2)}`);
    await addon.cudaSiluZUpdate(z, p, m, s, 5, 5);
    worst = 0;
    for (let i = 0; i < n; i++) {
      const sg = s[i]! / (1 + Math.exp(-s[i]!));
      const want = (5 * m[i]! + 5 * sg * p[i]!) / (5 + 5 * sg * sg);
      worst = Math.max(worst, Math.abs(z[i]! - want) / Math.max(1, Math.abs(want)));
    }
    check(worst <= 1e-5, `SiLU z update: max rel. error ${worst.toExponential(2)}`);
  }
}

async function main(): Promise<void> {
  if (args.has('--cpu-only')) {
    await cpuOnly();
  } else {
    const info = cudaInfo();
    console.log(JSON.stringify(info, null, 2));
    const addon = cudaAddon();
    if (!addon || !info.available) {
      console.log(`CUDA unavailable: ${info.reason}. Build with \`npm run build:native:cuda\` and run this on a GPU machine.`);
      process.exit(2);
    }
    if (!info.cublas) console.log(`note: ${info.cublasReason} — the built-in kernels are verified instead`);
    if (!info.cusolver) console.log(`note: ${info.cusolverReason} — the Cholesky runs on the CPU`);
    await gpu(addon);
  }
  console.log(failures ? `\n${failures} check(s) FAILED` : '\nall checks passed');
  process.exit(failures ? 1 : 0);
}

await main();
