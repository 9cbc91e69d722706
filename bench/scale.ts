/**
 * `npm run bench -- --scale` (issue 16): real sizes on one machine.
 *  1. Peak RSS against depth at fixed width: OPT-shaped random models, d=512, 4 to 32 blocks (fp32 external data),
 *     SparseGPT 50%, 8 × 256 tokens.
 *  2. An OPT-1.3b-shaped model (d=2048, 24 blocks, FFN 8192, 32 heads) with random weights in fp16 external data,
 *     pruned with SparseGPT 50% at a calibration size this machine affords (default 4 × 1024 tokens; `--scale-calib
 *     NxS`; `--scale-sparsegpt-layers 0-3` prunes only those blocks) and with SparseLLM 50% (default 2 × 1024 tokens and 2 epochs, `--scale-sparsellm-calib NxS`,
 *     `--scale-sparsellm-epochs E`, blocks 0-3 only, `--scale-sparsellm-layers all|0-23`: its solve costs ~25× SparseGPT's
 *     per token, hours for 24 blocks on 2 cores; its memory does not depend on the epoch or block count). `--scale-methods sparsegpt,sparsellm` picks which run (rows of methods not run are kept). Per phase: wall time, the largest resident set sampled during it; the pre-run estimate per part; and the
 *     sum one block's weights + activations + solver workspace + runtime, written out.
 *  3. A LLaMA-7B-shaped model (d=4096, 32 blocks, FFN 11008, 32 heads, vocab 512): a Hugging Face checkpoint with
 *     random fp16 weights (bench/llama-model.ts, ~13 GB), converted by sparsellm's own converter (its time and peak RSS
 *     recorded), then pruned like the OPT shape on the first blocks (`--scale-llama-layers`, default 0-1;
 *     `--scale-llama-calib`, default 2x1024; SparseLLM 1 epoch, `--scale-llama-epochs`). The checkpoint is deleted
 *     after the conversion and the ONNX (~13 GB) at the end, unless `--scale-keep-llama`. `--scale-skip-llama` skips it;
 *     `--scale-llama-onnx DIR` prunes an earlier run's converted folder instead (kept, and the conversion row kept).
 * Each prune runs in its own process (bench/child-prune.ts). Models are generated under $TMPDIR (bench/opt-model.ts),
 * never in the repository. Writes bench/scale-results.json, bench/scale.svg and the scale section of bench/RESULTS.md.
 *   npm run bench -- --scale --scale-render   (the chart and the section from the saved JSON, nothing measured)
 *   npm run bench -- --scale [--scale-calib 8x2048] [--scale-methods sparsegpt,sparsellm] [--scale-skip-depth] [--scale-skip-opt] [--scale-skip-llama]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildPruneArgs, ChildPruneResult } from './child-prune.js';
import { SCALE_BEGIN, SCALE_END, writeResultsSection } from './depth-section.js';
import { generateLlamaCheckpoint, LLAMA_7B, llamaName } from './llama-model.js';
import { generateOptModel, type OptShape } from './opt-model.js';
import { layout, linePanel, PALETTE } from '../src/report/svg.js';
import { native } from '../src/native/addon.js';

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const calibArg = argv[argv.indexOf('--scale-calib') + 1];
const option = (name: string, fallback: string) => (argv.includes(name) && argv[argv.indexOf(name) + 1] ? argv[argv.indexOf(name) + 1]! : fallback);
const calibSize = (v: string) => v.split('x').map(Number) as [number, number];
const [nsamples, seqlen] = calibSize(calibArg && argv.includes('--scale-calib') ? calibArg : '4x1024');
const [llmNsamples, llmSeqlen] = calibSize(option('--scale-sparsellm-calib', '2x1024'));
const llmEpochs = Number(option('--scale-sparsellm-epochs', '2'));
/** SparseLLM prunes these blocks of the OPT-1.3b shape (the rest pass through dense); on 2 cores all 24 take hours */
const llmLayers = option('--scale-sparsellm-layers', '0-3');
/** SparseGPT prunes these blocks of the OPT-1.3b shape (default all 24: about an hour on 2 cores) */
const gptLayers = option('--scale-sparsegpt-layers', 'all');
const optMethods = option('--scale-methods', 'sparsegpt,sparsellm').split(',') as ('sparsegpt' | 'sparsellm')[];
const [llamaNsamples, llamaSeqlen] = calibSize(option('--scale-llama-calib', '2x1024'));
const llamaLayers = option('--scale-llama-layers', '0-1');
const llamaEpochs = Number(option('--scale-llama-epochs', '1'));
const modelsDir = join(tmpdir(), 'sparsellm-bench-models-v1');
mkdirSync(modelsDir, { recursive: true });
// --scale-render: the chart and the RESULTS.md section from the saved bench/scale-results.json, nothing measured
const render = argv.includes('--scale-render');
const outRoot = render ? '' : mkdtempSync(join(tmpdir(), 'sparsellm-bench-scale-'));
const resultsFile = join(here, 'scale-results.json');
const MB = 2 ** 20;


/** Repeated tinystories sample: the generated models' calibration text (content does not matter for time or memory). */
function calibrationText(): string {
  const p = join(outRoot, 'calibration-long.txt');
  const sample = readFileSync(join(here, '..', 'calibration', 'data', 'tinystories_sample.txt'), 'utf8');
  writeFileSync(p, Array(24).fill(sample).join('\n'));
  return p;
}

/** What a row's model is: a generated OPT (bench/opt-model.ts) or a converted LLaMA checkpoint (bench/llama-model.ts). */
interface ModelUnderTest {
  dir: string;
  family: 'opt' | 'llama';
  shape: { hidden: number; layers: number; ffn: number; heads: number; dtype: string };
  linearBytes: number;
}

interface Row {
  model: string;
  family?: 'opt' | 'llama';
  shape: ModelUnderTest['shape'];
  method: string;
  /** SparseLLM epochs (absent for SparseGPT) */
  epochs?: number;
  /** --layers when not all blocks were pruned */
  layers?: string;
  nsamples: number;
  seqlen: number;
  linearBytes: number;
  maxRssMb: number;
  estimateMb: number;
  estimateParts: Record<string, number>;
  phaseSeconds: Record<string, number>;
  phaseRssMb: Record<string, number>;
  /** one block's weights + activations + solver workspace + runtime, from the estimate's parts (MB) */
  boundMb: number;
  wallSeconds: number;
}

function optModel(shapeIn: OptShape): ModelUnderTest {
  const t = performance.now();
  const g = generateOptModel(modelsDir, shapeIn);
  process.stderr.write(`[scale] ${g.dir} (generated in ${((performance.now() - t) / 1000).toFixed(0)} s)\n`);
  return { dir: g.dir, family: 'opt', shape: g.shape, linearBytes: g.linearParams * (g.shape.dtype === 'float16' ? 2 : 4) };
}

function prune(m: ModelUnderTest, method: 'sparsegpt' | 'sparsellm', ns: number, sl: number, calib: string, epochs?: number, layers?: string): Row {
  const g = m;
  const args: ChildPruneArgs = { model: g.dir, method, sparsity: 0.5, nsamples: ns, seqlen: sl, out: join(outRoot, 'out'), calib, ...(epochs ? { sparsellm: { epochs } } : {}), ...(layers ? { layers } : {}) };
  process.stderr.write(`[scale] ${g.dir}: ${method} ${ns}×${sl} ...\n`);
  const t0 = performance.now();
  const child = spawnSync(process.execPath, ['--import', 'tsx', join(here, 'child-prune.ts'), JSON.stringify(args)], { encoding: 'utf8', maxBuffer: 1 << 28 });
  rmSync(join(outRoot, 'out'), { recursive: true, force: true });
  if (child.status !== 0) throw new Error(`prune of ${g.dir} failed (exit ${child.status}):\n${child.stderr.slice(-2000)}`);
  const r = JSON.parse(child.stdout.trim().split('\n').pop()!) as ChildPruneResult;
  const parts = r.report.memoryEstimate?.parts ?? {};
  const row: Row = {
    model: g.dir.split('/').pop()!, family: g.family, shape: g.shape, method, ...(epochs ? { epochs } : {}), ...(layers ? { layers } : {}), nsamples: ns, seqlen: sl, linearBytes: g.linearBytes,
    maxRssMb: r.maxRssKb / 1024, estimateMb: r.estimateBytes / MB, estimateParts: Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, v / MB])),
    phaseSeconds: r.report.timings as Record<string, number>, phaseRssMb: r.phaseRssMb,
    boundMb: boundParts(parts).reduce((a, b) => a + b, 0) / MB,
    wallSeconds: (performance.now() - t0) / 1000,
  };
  process.stderr.write(`[scale]   peak RSS ${row.maxRssMb.toFixed(0)} MB, estimate ${row.estimateMb.toFixed(0)} MB, bound ${row.boundMb.toFixed(0)} MB, ${row.wallSeconds.toFixed(0)} s\n`);
  return row;
}

/**
 * The bound the issue asks peak RSS to stay within 1.5× of, from the estimate's parts: one block's weights (the solver's
 * float32 copies and the session's), the calibration activations (states between blocks and the captured linear
 * inputs), the solver workspace (Hessians, solver, SparseLLM's buffers) and the runtime. Not onnxruntime's forward work.
 */
function boundParts(parts: Record<string, number>): [number, number, number, number] {
  const p = (k: string) => parts[k] ?? 0;
  return [p('blockWeights') + p('sessionWeights'), p('activations') + p('captures'), p('hessians') + p('solver') + p('sparsellm'), p('runtime')];
}

interface Conversion {
  model: string;
  checkpointBytes: number;
  onnxBytes: number;
  generateSeconds: number;
  seconds: number;
  maxRssMb: number;
  cpuSeconds: number;
}

const folderBytes = (dir: string): number => readdirSync(dir, { withFileTypes: true, recursive: true })
  .filter((e) => e.isFile()).reduce((a, e) => a + statSync(join(e.parentPath, e.name)).size, 0);

/** The LLaMA-7B-shaped checkpoint, generated and converted by sparsellm's converter in a child process (measured). */
function llamaModel(keep: boolean, converted?: string): { model: ModelUnderTest; conversion?: Conversion } {
  const s = LLAMA_7B;
  const shape = { hidden: s.hidden, layers: s.layers, ffn: s.ffn, heads: s.heads, dtype: 'float16' };
  // the blocks' linears: q, k, v, o (hidden²) and gate, up, down (hidden × FFN), fp16
  const linearBytes = s.layers * (4 * s.hidden * s.hidden + 3 * s.hidden * s.ffn) * 2;
  // --scale-llama-onnx DIR: an earlier run's conversion (kept with --scale-keep-llama), its conversion figures kept
  if (converted) return { model: { dir: converted, family: 'llama', shape, linearBytes } };
  const onnxDir = join(modelsDir, `${llamaName(LLAMA_7B)}-onnx`);
  let t = performance.now();
  const g = generateLlamaCheckpoint(modelsDir, LLAMA_7B);
  const generateSeconds = (performance.now() - t) / 1000;
  const checkpointBytes = folderBytes(g.dir);
  process.stderr.write(`[scale] ${g.dir} (${(checkpointBytes / 2 ** 30).toFixed(1)} GiB, generated in ${generateSeconds.toFixed(0)} s): converting ...\n`);
  t = performance.now();
  const child = spawnSync(process.execPath, ['--import', 'tsx', join(here, 'child-convert.ts'), g.dir, onnxDir], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (child.status !== 0) throw new Error(`conversion of ${g.dir} failed (exit ${child.status}):\n${child.stderr.slice(-2000)}`);
  const r = JSON.parse(child.stdout.trim().split('\n').pop()!) as { maxRssKb: number; cpuSeconds: number };
  const conversion: Conversion = {
    model: llamaName(LLAMA_7B), checkpointBytes, onnxBytes: folderBytes(onnxDir), generateSeconds, seconds: (performance.now() - t) / 1000, maxRssMb: r.maxRssKb / 1024, cpuSeconds: r.cpuSeconds,
  };
  process.stderr.write(`[scale]   converted in ${conversion.seconds.toFixed(0)} s, peak RSS ${conversion.maxRssMb.toFixed(0)} MB\n`);
  if (!keep) rmSync(g.dir, { recursive: true, force: true });
  if (g.linearParams * 2 !== linearBytes) throw new Error(`linear bytes ${g.linearParams * 2} against ${linearBytes}`);
  return { model: { dir: onnxDir, family: 'llama', shape, linearBytes }, conversion };
}

const previous = existsSync(resultsFile) ? (JSON.parse(readFileSync(resultsFile, 'utf8')) as { depth?: Row[]; opt?: Row[]; llama?: Row[]; llamaConversion?: Conversion }) : {};
const results: { date: string; machine: Record<string, unknown>; depth: Row[]; opt: Row[]; llama: Row[]; llamaConversion?: Conversion } = render ? JSON.parse(readFileSync(resultsFile, 'utf8')) : {
  date: new Date().toISOString(),
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, blasCore: native().blasCore(), memoryGb: +(totalmem() / 2 ** 30).toFixed(1), loadAverageAtStart: loadavg().map((v) => +v.toFixed(2)) },
  depth: previous.depth ?? [], opt: previous.opt ?? [], llama: previous.llama ?? [], ...(previous.llamaConversion ? { llamaConversion: previous.llamaConversion } : {}),
};
const OPT_1_3B: OptShape = { hidden: 2048, layers: 24, ffn: 8192, heads: 32, dtype: 'float16' };
const save = () => writeFileSync(resultsFile, `${JSON.stringify(results, null, 2)}\n`);
const calib = render ? '' : calibrationText();
if (!render) try {
  if (!argv.includes('--scale-skip-opt')) {
    const opt = optModel(OPT_1_3B);
    for (const method of optMethods) {
      const row = method === 'sparsellm'
        ? prune(opt, 'sparsellm', llmNsamples, llmSeqlen, calib, llmEpochs, llmLayers === 'all' ? undefined : llmLayers)
        : prune(opt, 'sparsegpt', nsamples, seqlen, calib, undefined, gptLayers === 'all' ? undefined : gptLayers);
      results.opt = [...results.opt.filter((r) => r.method !== method), row];
      save();
    }
  }
  if (!argv.includes('--scale-skip-depth')) {
    results.depth = [];
    for (const layers of [4, 8, 16, 24, 32]) {
      results.depth.push(prune(optModel({ hidden: 512, layers }), 'sparsegpt', 8, 256, calib));
      save();
    }
  }
  if (!argv.includes('--scale-skip-llama')) {
    const keep = argv.includes('--scale-keep-llama');
    const converted = argv.includes('--scale-llama-onnx') ? option('--scale-llama-onnx', '') : undefined;
    const { model, conversion } = llamaModel(keep, converted);
    if (conversion) results.llamaConversion = conversion;
    save();
    try {
      for (const method of optMethods) {
        const row = prune(model, method, llamaNsamples, llamaSeqlen, calib, method === 'sparsellm' ? llamaEpochs : undefined, llamaLayers);
        results.llama = [...results.llama.filter((r) => r.method !== method), row];
        save();
      }
    } finally {
      if (!keep && !converted) rmSync(model.dir, { recursive: true, force: true });
    }
  }
} finally {
  rmSync(outRoot, { recursive: true, force: true });
  results.machine.loadAverageAtEnd = loadavg().map((v) => +v.toFixed(2));
  save();
}

// ----- chart and RESULTS.md section
const depth = results.depth;
if (depth.length) {
  const svg = layout('sparsellm --scale: peak RSS against depth', `OPT-shaped d=512, fp32 external data, SparseGPT 50%, 8 × 256 tokens · ${results.date.slice(0, 16)}`, [
    linePanel({
      title: 'Peak RSS against depth (d=512)', xlabel: 'decoder blocks', ylabel: 'MB', yZero: true, xTicks: depth.map((r) => r.shape.layers),
      series: [
        { name: 'peak RSS', color: PALETTE[0], points: depth.map((r) => [r.shape.layers, r.maxRssMb]) },
        { name: 'pre-run estimate', color: PALETTE[1], dash: true, points: depth.map((r) => [r.shape.layers, r.estimateMb]) },
        { name: 'linear weights', color: PALETTE[7], dash: true, points: depth.map((r) => [r.shape.layers, r.linearBytes / MB]) },
      ],
    }),
  ], 1);
  writeFileSync(join(here, 'scale.svg'), svg);
}
// (rounded; a value that rounds to zero prints 0, not -0)
const f0 = (v: number | undefined) => (v === undefined ? '-' : (Math.round(v) || 0).toFixed(0));
const f1 = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(1));
const PH = ['calibration', 'statistics', 'solve', 'rerun', 'export'];
const lines = [
  SCALE_BEGIN,
  '## Real sizes (`npm run bench -- --scale`, issue 16)',
  '',
  `Latest run ${results.date.slice(0, 16)} on ${results.machine.cpu}, ${results.machine.cores} cores, ${results.machine.memoryGb} GB; load average ${String(results.machine.loadAverageAtStart)} at the start, ${String(results.machine.loadAverageAtEnd)} at the end (each prune runs 2 BLAS threads itself, so a load average well above 2 means other work shared the machine and inflated the wall times); OpenBLAS kernels ${results.machine.blasCore ?? '?'}. ` +
    'Random-weight OPT-shaped models (bench/opt-model.ts) generated under $TMPDIR; each prune in its own process; peak RSS = process.resourceUsage().maxRSS; per-phase RSS = the largest resident set sampled (progress calls, every 200 ms) during the phase.',
  '',
  '### Peak RSS against depth (d=512, fp32, SparseGPT 50%, 8 × 256 tokens)',
  '',
  '![peak RSS against depth](scale.svg)',
  '',
  '| blocks | linear weights (MB) | peak RSS (MB) | estimate (MB) | estimate / peak | wall (s) |',
  '|---:|---:|---:|---:|---:|---:|',
  ...depth.map((r) => `| ${r.shape.layers} | ${f0(r.linearBytes / MB)} | ${f0(r.maxRssMb)} | ${f0(r.estimateMb)} | ${(r.estimateMb / r.maxRssMb).toFixed(2)} | ${f0(r.wallSeconds)} |`),
  '',
  ...(depth.length >= 2 ? [`From ${depth[0]!.shape.layers} to ${depth.at(-1)!.shape.layers} blocks peak RSS changes by ${f0(depth.at(-1)!.maxRssMb - depth[0]!.maxRssMb)} MB while the linear weights grow by ${f0((depth.at(-1)!.linearBytes - depth[0]!.linearBytes) / MB)} MB.`, ''] : []),
  ...(results.llamaConversion ? (() => {
    const c = results.llamaConversion;
    return [
      `### LLaMA-7B shape: the checkpoint and its conversion`,
      '',
      `${c.model}: a Hugging Face checkpoint with random fp16 weights (bench/llama-model.ts; d=4096, 32 blocks, FFN 11008, 32 heads, vocab 512 for the stories260K tokenizer), ${(c.checkpointBytes / 2 ** 30).toFixed(1)} GiB of safetensors shards, ${c.generateSeconds >= 1 ? `generated in ${f0(c.generateSeconds)} s` : 'generated by an earlier run and reused'}. ` +
        `sparsellm's converter (src/convert, in its own process) made the ONNX (${(c.onnxBytes / 2 ** 30).toFixed(1)} GiB with external data) in ${f0(c.seconds)} s (${f0(c.cpuSeconds)} CPU s) with a peak RSS of ${f0(c.maxRssMb)} MB.`,
      '',
    ];
  })() : []),
  ...[...results.opt, ...results.llama].flatMap((r) => {
    const [weights, activations, workspace, runtime] = boundParts(Object.fromEntries(Object.entries(r.estimateParts).map(([k, v]) => [k, v * MB])));
    const forward = r.estimateParts.forward ?? 0;
    return [
      `### ${r.family === 'llama' ? 'LLaMA-7B' : 'OPT-1.3b'} shape (d=${r.shape.hidden}, ${r.shape.layers} blocks, FFN ${r.shape.ffn}, ${r.shape.heads} heads, ${r.shape.dtype} external data), ${r.method} 50%, ${r.nsamples} × ${r.seqlen} tokens${r.epochs ? `, ${r.epochs} epoch${r.epochs > 1 ? 's' : ''}` : ''}${r.layers ? `, blocks ${r.layers} pruned (the later blocks are not run)` : ''}`,
      '',
      '| phase | wall (s) | largest RSS sampled (MB) |',
      '|---|---:|---:|',
      ...PH.map((p) => `| ${p} | ${f1(r.phaseSeconds[p])} | ${f0(r.phaseRssMb[p])} |`),
      `| total | ${f1(r.phaseSeconds.total)} | peak ${f0(r.maxRssMb)} |`,
      '',
      `Pre-run estimate ${f0(r.estimateMb)} MB (peak / estimate ${(r.maxRssMb / r.estimateMb).toFixed(2)}; the larger of the dense pass and the solve, src/pipeline/memory.ts): ${Object.entries(r.estimateParts).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${f0(v)}`).join(', ')} MB.`,
      '',
      `One block's weights + activations + solver workspace + runtime = ${f0(weights / MB)} + ${f0(activations / MB)} + ${f0(workspace / MB)} + ${f0(runtime / MB)} = ${f0(r.boundMb)} MB; ` +
        `peak RSS is ${(r.maxRssMb / r.boundMb).toFixed(2)}× that sum (target ≤ 1.5×). The model's linear weights are ${f0(r.linearBytes / MB)} MB. ` +
        `onnxruntime's working memory for one forward batch (attention scores and FFN intermediates, the estimate's forward part, not in the sum) is ${f0(forward)} MB.`,
      '',
    ];
  }),
  SCALE_END,
].join('\n');
writeResultsSection(SCALE_BEGIN, SCALE_END, lines);
process.stderr.write('wrote bench/scale-results.json, bench/scale.svg and the scale section of bench/RESULTS.md\n');
