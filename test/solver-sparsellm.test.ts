import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sparsellmLlama, sparsellmOpt, sparsellmSteps, sparsellmTokenBlockRows } from '../src/native/sparsellm.js';
import { sparsegptPrune } from '../src/native/sparsegpt.js';
import { llamaFamily } from '../src/model/families/llama.js';
import { optFamily } from '../src/model/families/opt.js';
import { SPARSELLM_DEFAULTS, sparseGptOptions, sparseLlmOptions } from '../src/pipeline/options.js';
import { correlatedX, hessian, inverse, llamaFfnError, optFfnError, randn } from './solver-util.js';

const relu = (v: number) => (v > 0 ? v : 0);
const silu = (v: number) => v / (1 + Math.exp(-v));

function optProblem(d: number, f: number, N: number) {
  const X = correlatedX(N, d, 1, 0.7);
  return {
    tokens: N, hidden: d, ffn: f, X, nsamples: 16, H1: hessian(X, N, d, 16),
    W1: randn(f * d, 2, 1 / Math.sqrt(d)), b1: randn(f, 3, 0.3), W2: randn(d * f, 4, 1 / Math.sqrt(f)), b2: randn(d, 5, 0.1),
  };
}
/** dense fc2 input ReLU(X W1ᵀ + b1) [N, f] */
function denseP(pr: ReturnType<typeof optProblem>): Float32Array {
  const { X, W1, b1, tokens: N, hidden: d, ffn: f } = pr;
  const P = new Float32Array(N * f);
  for (let t = 0; t < N; t++)
    for (let i = 0; i < f; i++) {
      let s = b1[i]!;
      for (let j = 0; j < d; j++) s += X[t * d + j]! * W1[i * d + j]!;
      P[t * f + i] = relu(s);
    }
  return P;
}

test('SparseLLM epoch 0 is exactly plain SparseGPT of fc1 and fc2 (local Hessians)', async () => {
  const pr = optProblem(32, 128, 512);
  const H2 = hessian(denseP(pr), pr.tokens, pr.ffn, pr.nsamples);
  const W1 = pr.W1.slice(), W2 = pr.W2.slice();
  await sparsegptPrune(W1, pr.ffn, pr.hidden, pr.H1, sparseGptOptions({ sparsity: 0.7 }));
  await sparsegptPrune(W2, pr.hidden, pr.ffn, H2, sparseGptOptions({ sparsity: 0.7 }));
  const a = { ...pr, W1: pr.W1.slice(), W2: pr.W2.slice(), H2 };
  const reference = sparseLlmOptions(optFamily, { sparsity: 0.7, epochs: 1, outputRefit: false });
  await sparsellmOpt(a, reference);
  assert.deepEqual(a.W1, W1);
  assert.deepEqual(a.W2, W2);
  // with the internally computed H2 (SYRK, different summation order) the masks agree almost everywhere
  const b = { ...pr, W1: pr.W1.slice(), W2: pr.W2.slice() };
  await sparsellmOpt(b, reference);
  assert.deepEqual(b.W1, W1);
  let diff = 0;
  for (let i = 0; i < W2.length; i++) diff += (b.W2[i] === 0) !== (W2[i] === 0) ? 1 : 0;
  assert.ok(diff <= W2.length * 0.002, `mask differences ${diff}`);
});

/** The weights of a SparseLLM run on a copy of the problem, and their output error recomputed here in float64. */
async function runOpt(pr: ReturnType<typeof optProblem>, o: Parameters<typeof sparseLlmOptions>[1]) {
  const w = { W1: pr.W1.slice(), W2: pr.W2.slice() };
  const r = await sparsellmOpt({ ...pr, ...w }, sparseLlmOptions(optFamily, o));
  const error = optFfnError(pr.X, pr.tokens, pr.hidden, pr.ffn, pr.b1, pr.b2, pr, w);
  return { r, w, error };
}

// The baseline the alternating epochs must beat is SparseGPT + output refit (epoch 0 alone, `epochs: 1`): keep-best
// would return exactly that if every later epoch were broken. Errors are recomputed from the returned weights.
// Measured at 86f702b on this problem (output error ‖Y − Ŷ‖²/‖Y‖², epochs 0..3): 70 %: 0.0780 0.0788 0.0733 0.0714;
// 90 %: 0.3534 0.3362 0.3171 0.3058 — the last epoch wins, 8.5 % / 13 % below epoch 0; bounds 5 % / 8 %.
test('SparseLLM OPT: a later epoch beats SparseGPT + refit (errors recomputed from the returned weights)', async () => {
  const pr = optProblem(48, 192, 2048);
  for (const [s, bound] of [[0.7, 0.95], [0.9, 0.92]] as const) {
    const base = await runOpt(pr, { sparsity: s, epochs: 1 });
    const full = await runOpt(pr, { sparsity: s, lastEpochObjective: true });
    assert.ok(Math.abs(full.error - full.r.outputError) <= 1e-3 * full.error, `reported ${full.r.outputError} vs recomputed ${full.error}`);
    assert.ok(full.r.chosenEpoch > 0, `s=${s}: epoch ${full.r.chosenEpoch} kept`);
    assert.ok(full.error < bound * base.error, `s=${s}: sparsellm ${full.error} vs SparseGPT + refit ${base.error}`);
    // and below plain SparseGPT of both layers (the independent binding, local Hessians)
    const H2 = hessian(denseP(pr), pr.tokens, pr.ffn, pr.nsamples);
    const g = { W1: pr.W1.slice(), W2: pr.W2.slice() };
    await sparsegptPrune(g.W1, pr.ffn, pr.hidden, pr.H1, sparseGptOptions({ sparsity: s }));
    await sparsegptPrune(g.W2, pr.hidden, pr.ffn, H2, sparseGptOptions({ sparsity: s }));
    const sgpt = optFfnError(pr.X, pr.tokens, pr.hidden, pr.ffn, pr.b1, pr.b2, pr, g);
    assert.ok(full.error < sgpt, `s=${s}: sparsellm ${full.error} vs sparsegpt ${sgpt}`);
    for (let e = 1; e < full.r.epochs.length; e++)
      assert.ok(full.r.epochs[e]!.objective! <= full.r.epochs[e - 1]!.objective! * (1 + 1e-6), `objective rose at epoch ${e}: ${full.r.epochs.map((x) => x.objective)}`);
    // sparsity of the returned weights (shared-threshold rule → at least int(numel·s))
    const z = (w: Float32Array) => w.reduce((n, v) => n + (v === 0 ? 1 : 0), 0);
    assert.ok(z(full.w.W1) >= Math.floor(full.w.W1.length * s) && z(full.w.W2) >= Math.floor(full.w.W2.length * s));
  }
});

// The last epoch's p, z (, s) updates feed no weight (the output refit's Gram gives its output error), so skipping them
// (the default) must return bit-identical weights, the same epoch and output errors, and only drop that epoch's objective.
test('SparseLLM: skipping the last epoch\'s p/z(/s) updates changes no weight (OPT and LLaMA)', async () => {
  const pr = optProblem(24, 96, 700);
  const skipped = await runOpt(pr, { sparsity: 0.7 });
  const traced = await runOpt(pr, { sparsity: 0.7, lastEpochObjective: true });
  assert.deepEqual(skipped.w.W1, traced.w.W1);
  assert.deepEqual(skipped.w.W2, traced.w.W2);
  assert.deepEqual(skipped.r.epochs.map((e) => e.outputError), traced.r.epochs.map((e) => e.outputError));
  assert.equal(skipped.r.chosenEpoch, traced.r.chosenEpoch);
  const last = skipped.r.epochs.length - 1;
  assert.equal(skipped.r.epochs[last]!.objective, null);
  assert.ok(Number.isFinite(traced.r.epochs[last]!.objective));
  for (let e = 0; e < last; e++) assert.equal(skipped.r.epochs[e]!.objective, traced.r.epochs[e]!.objective);
  const d = 16, f = 48, N = 400, X = correlatedX(N, d, 4, 0.7), Hx = hessian(X, N, d, 8);
  const dense = { Wg: randn(f * d, 2, 1 / Math.sqrt(d)), Wu: randn(f * d, 3, 1 / Math.sqrt(d)), Wd: randn(d * f, 4, 1 / Math.sqrt(f)) };
  const llama = async (lastEpochObjective: boolean) => {
    const w = { Wg: dense.Wg.slice(), Wu: dense.Wu.slice(), Wd: dense.Wd.slice() };
    const r = await sparsellmLlama({ tokens: N, hidden: d, ffn: f, X, Hx, nsamples: 8, ...w }, sparseLlmOptions(llamaFamily, { sparsity: 0.7, lastEpochObjective }));
    return { r, w };
  };
  const [a, b] = [await llama(false), await llama(true)];
  assert.deepEqual(a.w, b.w);
  assert.deepEqual(a.r.epochs.map((e) => e.outputError), b.r.epochs.map((e) => e.outputError));
  assert.equal(a.r.epochs.at(-1)!.objective, null);
});

test('p update (Eq. 4.6) is the minimiser: zero gradient and no perturbation decreases the objective', async () => {
  const N = 20, d = 6, f = 10, beta = 0.3, gamma = 0.7;
  const Y = randn(N * d, 1), W = randn(d * f, 2), act = randn(N * f, 3).map(relu), b = randn(d, 4);
  const P = new Float32Array(N * f);
  await sparsellmSteps.p(P, Y, W, act, N, d, f, beta, gamma, b);
  const obj = (p: ArrayLike<number>) => {
    let s = 0;
    for (let t = 0; t < N; t++) {
      for (let j = 0; j < d; j++) {
        let v = b[j]!;
        for (let i = 0; i < f; i++) v += W[j * f + i]! * p[t * f + i]!;
        s += beta * (Y[t * d + j]! - v) ** 2;
      }
      for (let i = 0; i < f; i++) s += gamma * (p[t * f + i]! - act[t * f + i]!) ** 2;
    }
    return s;
  };
  const f0 = obj(P);
  const g = randn(N * f, 9);
  for (const eps of [1e-2, 1e-3]) {
    const up = Float64Array.from(P, (v, i) => v + eps * g[i]!), dn = Float64Array.from(P, (v, i) => v - eps * g[i]!);
    const fu = obj(up), fd = obj(dn);
    assert.ok(fu >= f0 * (1 - 1e-6) && fd >= f0 * (1 - 1e-6), `perturbation decreased the objective ${f0} ${fu} ${fd}`);
    assert.ok(Math.abs(fu - fd) / (2 * eps) < 1e-2 * (1 + f0), 'directional derivative ≈ 0');
  }
});

// The solver evaluates Eq. 4.6 in the d×d Woodbury form p = act + Wᵀ(WWᵀ + (γ/β)I)⁻¹(y − b − W act), one token block at
// a time. Reference: the f×f form as printed, P = (γ act + β(Y − b)W)(βWᵀW + γI)⁻¹, in float64 with a Gauss-Jordan
// inverse. Tolerance 2e-5 of max|P|: float32 inputs, float32 GEMMs over f = 40 terms and a float32 K⁻¹ (cond(K) ≈ 20
// here), about 10× their rounding.
test('p update: the Woodbury d×d form in token blocks equals the direct f×f solve (float64)', async () => {
  const N = 37, d = 8, f = 40;
  const Y = randn(N * d, 11), W = randn(d * f, 12, 0.6), act = randn(N * f, 13).map(relu), b = randn(d, 14);
  for (const [beta, gamma] of [[0.1, 0.1], [5, 5], [0.3, 2]] as const) {
    const A = new Float64Array(f * f);
    for (let i = 0; i < f; i++)
      for (let k = 0; k < f; k++) {
        let s = i === k ? gamma : 0;
        for (let j = 0; j < d; j++) s += beta * W[j * f + i]! * W[j * f + k]!;
        A[i * f + k] = s;
      }
    const Ainv = inverse(A, f);
    const want = new Float64Array(N * f);
    for (let t = 0; t < N; t++) {
      const r = new Float64Array(f);
      for (let i = 0; i < f; i++) {
        let s = gamma * act[t * f + i]!;
        for (let j = 0; j < d; j++) s += beta * (Y[t * d + j]! - b[j]!) * W[j * f + i]!;
        r[i] = s;
      }
      for (let k = 0; k < f; k++) {
        let s = 0;
        for (let i = 0; i < f; i++) s += r[i]! * Ainv[i * f + k]!;
        want[t * f + k] = s;
      }
    }
    const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    for (const chunk of [0, 1, 5, 36, 37]) {
      const P = new Float32Array(N * f);
      await sparsellmSteps.p(P, Y, W, act, N, d, f, beta, gamma, b, chunk);
      let worst = 0;
      for (let i = 0; i < P.length; i++) worst = Math.max(worst, Math.abs(P[i]! - want[i]!));
      assert.ok(worst <= 2e-5 * scale, `β=${beta} γ=${gamma} chunk ${chunk}: max |P − P_ref| ${worst} of max |P| ${scale}`);
    }
  }
});

test('token-block rule: the requested rows, else max(256, ⌊2²²/ffn⌋), never more than the tokens (one owner, read by the memory estimate)', () => {
  // the rule written out independently: about 2²² floats (16 MB) per ffn-wide block, at least 256 rows
  for (const [tokens, ffn] of [[100_000, 1024], [100_000, 11008], [100_000, 100_000], [300, 1024], [1, 8]]) {
    const automatic = Math.min(tokens, Math.max(256, Math.floor(4_194_304 / ffn)));
    assert.equal(sparsellmTokenBlockRows(tokens, ffn), automatic, `${tokens} tokens, ffn ${ffn}`);
  }
  assert.equal(sparsellmTokenBlockRows(100_000, 1024), 4096);
  assert.equal(sparsellmTokenBlockRows(1000, 1024, 64), 64);
  assert.equal(sparsellmTokenBlockRows(10, 1024, 64), 10);
  assert.throws(() => sparsellmTokenBlockRows(-1, 8), /non-negative integers/);
});

// Blocking only regroups sums over tokens (Gram matrices, Xᵀz, AᵀY, the objective's terms), so every block size must
// give the one-block (unblocked) result up to float32 summation order: weights within 1e-4 relative with identical
// masks (fc2 is a least-squares solution: its conditioning amplifies the ~1e-7 reordering differences, 3e-5 measured), per-epoch objective and output error within 1e-5 relative; and the reported output error must match a float64
// recomputation from the returned weights (1e-4; the reported one is summed in float32 GEMMs).
test('SparseLLM in token blocks equals the unblocked solve (OPT and LLaMA; output error checked in float64)', async () => {
  const relDiff = (a: Float32Array, b: Float32Array) => {
    let n = 0, s = 0, masks = 0;
    for (let i = 0; i < a.length; i++) (n += (a[i]! - b[i]!) ** 2), (s += b[i]! ** 2), (masks += (a[i] === 0) !== (b[i] === 0) ? 1 : 0);
    return { rel: Math.sqrt(n / s), masks };
  };
  const close = (a: number, b: number, tol: number) => Math.abs(a - b) <= tol * Math.abs(b);
  const pr = optProblem(24, 96, 700);
  const opt = async (tokenChunk: number) => {
    const w = { W1: pr.W1.slice(), W2: pr.W2.slice() };
    const r = await sparsellmOpt({ ...pr, ...w }, sparseLlmOptions(optFamily, { sparsity: 0.7, tokenChunk, lastEpochObjective: true }));
    return { r, W: [w.W1, w.W2], error: optFfnError(pr.X, pr.tokens, pr.hidden, pr.ffn, pr.b1, pr.b2, pr, w) };
  };
  const d = 24, f = 72, N = 600, X = correlatedX(N, d, 4, 0.7), Hx = hessian(X, N, d, 8);
  const dense = { Wg: randn(f * d, 2, 1 / Math.sqrt(d)), Wu: randn(f * d, 3, 1 / Math.sqrt(d)), Wd: randn(d * f, 4, 1 / Math.sqrt(f)) };
  const llama = async (tokenChunk: number) => {
    const w = { Wg: dense.Wg.slice(), Wu: dense.Wu.slice(), Wd: dense.Wd.slice() };
    const r = await sparsellmLlama({ tokens: N, hidden: d, ffn: f, X, Hx, nsamples: 8, ...w }, sparseLlmOptions(llamaFamily, { sparsity: 0.7, tokenChunk, lastEpochObjective: true }));
    return { r, W: [w.Wg, w.Wu, w.Wd], error: llamaFfnError(X, N, d, f, dense, w) };
  };
  for (const [name, run, tokens] of [['opt', opt, pr.tokens], ['llama', llama, N]] as const) {
    const whole = await run(tokens);
    assert.ok(close(whole.r.outputError, whole.error, 1e-4), `${name}: reported ${whole.r.outputError} vs float64 ${whole.error}`);
    for (const chunk of [7, 256]) {
      const blocked = await run(chunk);
      whole.W.forEach((W, k) => {
        const { rel, masks } = relDiff(blocked.W[k]!, W);
        assert.ok(rel <= 1e-4 && masks === 0, `${name} chunk ${chunk} matrix ${k}: rel ${rel}, ${masks} mask entries differ`);
      });
      blocked.r.epochs.forEach((e, k) => {
        const u = whole.r.epochs[k]!;
        assert.ok(close(e.objective!, u.objective!, 1e-4) && close(e.outputError, u.outputError, 1e-4),
          `${name} chunk ${chunk} epoch ${k}: objective ${e.objective} vs ${u.objective}, error ${e.outputError} vs ${u.outputError}`);
      });
      assert.equal(blocked.r.chosenEpoch, whole.r.chosenEpoch);
    }
  }
});

test('z update (Eqs. 4.7–4.8, ReLU) equals a brute-force 1-D minimisation per element', async () => {
  const n = 400, alpha = 0.1, gamma = 0.1;
  const P = randn(n, 1).map((v) => v * 2), M = randn(n, 2).map((v) => v * 2), Z = new Float32Array(n);
  await sparsellmSteps.zRelu(Z, P, M, alpha, gamma);
  for (const [a, g] of [[alpha, gamma], [0.3, 2]] as const) {
    await sparsellmSteps.zRelu(Z, P, M, a, g);
    for (let i = 0; i < n; i++) {
      const fz = (v: number) => g * (P[i]! - relu(v)) ** 2 + a * (v - M[i]!) ** 2;
      let best = Infinity;
      for (let v = -8; v <= 8; v += 1e-3) best = Math.min(best, fz(v));
      assert.ok(fz(Z[i]!) <= best + 1e-5, `element ${i}: ${fz(Z[i]!)} vs ${best}`);
    }
  }
});

test('z update (Eq. 4.12, SiLU) has zero derivative; s update (Newton) never increases and reaches a stationary point', async () => {
  const n = 300, alpha = 5, gamma = 5;
  const P = randn(n, 1), M = randn(n, 2), S = randn(n, 3).map((v) => v * 2), Z = new Float32Array(n);
  await sparsellmSteps.zSilu(Z, P, M, S, alpha, gamma);
  for (let i = 0; i < n; i++) {
    const sg = silu(S[i]!);
    const grad = 2 * alpha * (Z[i]! - M[i]!) - 2 * gamma * (P[i]! - sg * Z[i]!) * sg;
    assert.ok(Math.abs(grad) < 1e-4 * (1 + Math.abs(M[i]!) + Math.abs(P[i]!)) * 10, `dz ${grad}`);
  }
  const G = randn(n, 5), S0 = S.slice();
  await sparsellmSteps.s(S, G, P, Z, alpha, gamma, 'newton', SPARSELLM_DEFAULTS.sSteps, SPARSELLM_DEFAULTS.sLr);
  for (let i = 0; i < n; i++) {
    const phi = (s: number) => alpha * (s - G[i]!) ** 2 + gamma * (P[i]! - silu(s) * Z[i]!) ** 2;
    assert.ok(phi(S[i]!) <= phi(S0[i]!) + 1e-6, 'did not increase');
    const h = 1e-3, d1 = (phi(S[i]! + h) - phi(S[i]! - h)) / (2 * h);
    assert.ok(Math.abs(d1) < 2e-2 * (1 + phi(S[i]!)), `ds ${d1} at ${i}`);
  }
});

// Measured at 86f702b on this problem (output error, epochs 0..3 at 80 %): 0.2643 0.2597 0.2536 0.2482 — the last
// epoch wins, 6 % below SparseGPT + refit (epoch 0); bound 3 %.
test('SparseLLM LLaMA: epoch 0 = SparseGPT, objective non-increasing, a later epoch beats SparseGPT + refit at 80%', async () => {
  const d = 32, f = 96, N = 1024, nseq = 8;
  const X = correlatedX(N, d, 4, 0.7), Hx = hessian(X, N, d, nseq);
  const Wg = randn(f * d, 2, 1 / Math.sqrt(d)), Wu = randn(f * d, 3, 1 / Math.sqrt(d)), Wd = randn(d * f, 4, 1 / Math.sqrt(f));
  const dense = { Wg, Wu, Wd };
  const u = Wu.slice(), g = Wg.slice();
  await sparsegptPrune(u, f, d, Hx, sparseGptOptions({ sparsity: 0.8 }));
  await sparsegptPrune(g, f, d, Hx, sparseGptOptions({ sparsity: 0.8 }));
  const one = { tokens: N, hidden: d, ffn: f, X, Hx, nsamples: nseq, Wg: Wg.slice(), Wu: Wu.slice(), Wd: Wd.slice() };
  await sparsellmLlama(one, sparseLlmOptions(llamaFamily, { sparsity: 0.8, epochs: 1 }));
  assert.deepEqual(one.Wu, u);
  assert.deepEqual(one.Wg, g);
  const base = llamaFfnError(X, N, d, f, dense, one);
  const a = { ...one, Wg: Wg.slice(), Wu: Wu.slice(), Wd: Wd.slice() };
  const r = await sparsellmLlama(a, sparseLlmOptions(llamaFamily, { sparsity: 0.8, lastEpochObjective: true }));
  for (let e = 1; e < r.epochs.length; e++) assert.ok(r.epochs[e]!.objective! <= r.epochs[e - 1]!.objective! * (1 + 1e-6));
  const err = llamaFfnError(X, N, d, f, dense, a);
  assert.ok(Math.abs(err - r.outputError) <= 1e-3 * err, `reported ${r.outputError} vs recomputed ${err}`);
  assert.ok(r.chosenEpoch > 0 && err < 0.97 * base, `sparsellm ${err} (epoch ${r.chosenEpoch}) vs SparseGPT + refit ${base}`);
});

test('SparseLLM options reach the solver: quirks accumulate fc1 damping, fc2Update only matters without the refit, 2:4, keepBest', async () => {
  const pr = optProblem(16, 64, 256);
  // referenceQuirks: fc1's Hessian keeps the damping of every epoch (ALGORITHMS.md §1.4), so epoch e's damping is
  // percdamp·mean(diag H + e·λ…) = λ₀·1.01^e; without the quirk it is λ₀ every epoch
  for (const quirks of [true, false]) {
    const { r } = await runOpt(pr, { sparsity: 0.8, referenceQuirks: quirks, keepBest: false, outputRefit: false });
    const d0 = r.epochs[0]!.prune[0]!.damping;
    r.epochs.forEach((e, k) => {
      const want = quirks ? d0 * 1.01 ** k : d0;
      assert.ok(Math.abs(e.prune[0]!.damping - want) <= 1e-5 * want, `quirks ${quirks} epoch ${k}: ${e.prune[0]!.damping} vs ${want}`);
    });
  }
  // fc2Update: with the output refit (default) fc2's own fit to p is not computed, so 'lstsq' and 'gd' give the same
  // weights; without the refit they differ
  for (const outputRefit of [true, false]) {
    const gd = await runOpt(pr, { sparsity: 0.8, fc2Update: 'gd', outputRefit });
    const ls = await runOpt(pr, { sparsity: 0.8, fc2Update: 'lstsq', outputRefit });
    const same = gd.w.W2.every((v, i) => v === ls.w.W2[i]);
    assert.equal(same, outputRefit, `outputRefit ${outputRefit}: fc2 ${same ? 'identical' : 'different'}`);
  }
  // 2:4: exactly two zeros in every group of four inputs of both matrices
  const nm = await runOpt(pr, { prunen: 2, prunem: 4 });
  for (const [W, cols] of [[nm.w.W1, pr.hidden], [nm.w.W2, pr.ffn]] as const)
    for (let g = 0; g < W.length; g += 4) {
      let z = 0;
      for (let k = 0; k < 4; k++) z += W[g + k] === 0 ? 1 : 0;
      assert.equal(z, 2, `group ${g} of a ${cols}-input matrix`);
    }
  // keepBest: the lowest-error epoch's weights; off: the last epoch's (errors recomputed from the weights)
  for (const keepBest of [true, false]) {
    const { r, error } = await runOpt(pr, { sparsity: 0.8, keepBest });
    const errs = r.epochs.map((e) => e.outputError);
    const want = keepBest ? Math.min(...errs) : errs.at(-1)!;
    assert.ok(Math.abs(error - want) <= 1e-3 * want, `keepBest ${keepBest}: ${error} vs ${want} (${errs})`);
  }
  await assert.rejects(sparsellmOpt({ ...pr, b1: new Float32Array(3) }, sparseLlmOptions(optFamily, { sparsity: 0.5 })), RangeError);
  await assert.rejects(sparsellmOpt({ ...pr }, sparseLlmOptions(optFamily, { sparsity: 1.5 })), RangeError);
  // fewer calibration tokens than 4 × the FFN width: a warning comes back (256 = 4 × 64 tokens: none)
  assert.deepEqual((await runOpt(pr, { sparsity: 0.5, epochs: 1 })).r.warnings, []);
  const few = optProblem(16, 64, 200);
  const w = (await sparsellmOpt({ ...few }, sparseLlmOptions(optFamily, { sparsity: 0.5, epochs: 1 }))).warnings;
  assert.equal(w.length, 1);
  assert.match(w[0]!, /200 calibration tokens are fewer than 4 x the FFN width 64/);
  // the binding takes no defaults: every missing field is a TypeError naming it
  const full = sparseLlmOptions(optFamily, { sparsity: 0.5 }) as Record<string, unknown>;
  for (const k of Object.keys(full).filter((k) => k !== 'sparsity')) {
    const o = { ...full };
    delete o[k];
    await assert.rejects(sparsellmOpt({ ...pr }, o as never), new RegExp(`^TypeError: option ${k} is missing$`), k);
  }
});

test('output refit: fc2 is the least-squares fit to the dense targets on the real sparse activations, then pruned', async () => {
  const pr = optProblem(48, 192, 2048);
  for (const s of [0.5, 0.9]) {
    const plain = await runOpt(pr, { sparsity: s, epochs: 1, outputRefit: false });
    const refit = await runOpt(pr, { sparsity: s, epochs: 1 });
    // same fc1 (epoch 0 = SparseGPT); fc2 fitted to Y on the real activations, then pruned. The fit is exact before
    // pruning; SparseGPT's pruning of the refit weights is approximate, so allow 2% at very high sparsity.
    assert.deepEqual(refit.w.W1, plain.w.W1);
    const bound = s <= 0.5 ? 1 : 1.02;
    assert.ok(refit.error <= plain.error * bound, `s=${s}: refit ${refit.error} vs plain ${plain.error}`);
  }
});

test('Gram kernel (float SSYRK partials of <= 1536 rows summed in double) against a float64 AᵀA', async () => {
  // ReLU-like activations with a positive mean and outlier columns (x8), as the output refit's A = act(M) has
  const rows = 20000, n = 32, g = randn(rows * n, 31);
  const A = new Float32Array(rows * n);
  for (let t = 0; t < rows; t++)
    for (let j = 0; j < n; j++) A[t * n + j] = relu(g[t * n + j]! + 0.5) * (j % 11 === 0 ? 8 : 1);
  const ref = new Float64Array(n * n), fp32 = new Float32Array(n * n);
  for (let t = 0; t < rows; t++)
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        const prod = A[t * n + i]! * A[t * n + j]!;
        ref[i * n + j]! += prod;
        fp32[i * n + j] = Math.fround(fp32[i * n + j]! + Math.fround(prod)); // one float32 sum over every row
      }
  // worst-case bound of a float sum of k <= 1536 products (γ_k = kε/(1 − kε), ε = 2⁻²⁴), relative to
  // Σ|aᵢaⱼ| <= √(GᵢᵢGⱼⱼ); the double sum of the partials adds nothing at this scale
  const k = 1536, eps = 2 ** -24, bound = (k * eps) / (1 - k * eps);
  const worst = (G: ArrayLike<number>) => {
    let w = 0;
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) w = Math.max(w, Math.abs(G[i * n + j]! - ref[i * n + j]!) / Math.sqrt(ref[i * n + i]! * ref[j * n + j]!));
    return w;
  };
  for (const chunk of [0, 1000, 7]) {
    const G = new Float64Array(n * n);
    await sparsellmSteps.gram(G, A, rows, n, chunk);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) assert.equal(G[i * n + j], G[j * n + i], 'symmetric');
    const err = worst(G);
    assert.ok(err <= bound, `chunk ${chunk}: relative error ${err} > ${bound}`);
    // and far better than one float32 sum over all the rows (the fp32 Gram that GramDouble's comment warns about)
    assert.ok(err * 10 <= worst(fp32), `chunk ${chunk}: ${err} vs fp32 ${worst(fp32)}`);
  }
});
