// Issue 19: bad input by class, not by case. Output placement (inside the model folder or around any input, through
// symlinks and ..), contradictory or orphaned options, empty values: one stderr line, exit 2, inputs unchanged, no
// output left. Implausible calibration text: one warning line, exit 0, the model is written.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { EVAL_RULES, EVAL_TEXT_OPTIONS, givenOptions, PRUNE_RULES, PRUNE_TEXT_OPTIONS, validateEvalArgs, validatePruneArgs } from '../src/cli/validate.js';
import { assertOutputOutsideInput, modelInputs, optionInputs } from '../src/pipeline/output-placement.js';
import { calibrationTextWarning, HEAPS_MIN, textStatistics } from '../src/data/calibration-check.js';
import { copyStories, hashTree, oneLine, pool, runCli, STORIES, tempRoot, type CliResult, assertRefused, type RefusedCase } from './faults-helpers.js';
import { projectRoot } from './helpers.js';

const root = tempRoot('sparsellm-classes-');
const fx = (name: string) => join(root, name);
const MODEL = fx('models/m');
const TINYSTORIES = join(projectRoot, 'calibration', 'data', 'tinystories_sample.txt');

/** A deterministic byte stream (xorshift32), so the "random bytes" fixture is the same on every run. */
function pseudoRandomBytes(n: number, seed = 0x9e3779b9): Buffer {
  const out = Buffer.alloc(n);
  let x = seed >>> 0;
  for (let k = 0; k < n; k++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[k] = x & 0xff;
  }
  return out;
}

function buildFixtures(): void {
  copyStories(MODEL);
  symlinkSync(MODEL, fx('link-to-model'));
  symlinkSync(fx('models'), fx('link-to-models'));
  mkdirSync(fx('data'));
  copyFileSync(TINYSTORIES, fx('data/cal.txt'));
  copyStories(fx('staged/run.partial')); // a model folder whose name is another --out's working folder
  mkdirSync(fx('texts'));
  writeFileSync(fx('texts/random.txt'), pseudoRandomBytes(20_000));
  writeFileSync(fx('texts/utf16.txt'), Buffer.from(`\ufeff${readFileSync(TINYSTORIES, 'utf8')}`, 'utf16le'));
  writeFileSync(fx('texts/repeated.txt'), 'The cat sat on the mat. '.repeat(400));
  copyFileSync(TINYSTORIES, fx('texts/tinystories.txt'));
  mkdirSync(fx('ckpt')); // a checkpoint folder: placement is refused before its weights are read
  writeFileSync(fx('ckpt/config.json'), '{"model_type": "llama"}');
  writeFileSync(fx('ckpt/model.safetensors'), '');
}

type Case = RefusedCase;

const fast = ['--method', 'sparsegpt', '--calib', 'tinystories', '--nsamples', '4', '--seqlen', '64', '--quiet'];
const prune = (name: string, model: string, out: string, extra: string[], expect: RegExp, more: Partial<Case> = {}): Case =>
  ({ name, args: ['prune', '--model', model, ...fast, ...extra, '--out', out], expect, out, ...more });

const placement: Case[] = [
  prune('out inside the model folder', MODEL, join(MODEL, 'onnx', 'pruned'), [], /--out .*models\/m\/onnx\/pruned is inside the input model folder .*models\/m: choose a folder outside it/),
  prune('out contains the model folder (--force would delete it)', MODEL, fx('models'), ['--force'], /--out .*\/models contains the input model folder .*models\/m: choose a folder that does not contain it/, { outExisted: true }),
  prune('out inside the model through a symlink', MODEL, fx('link-to-model/pruned'), [], /--out .*link-to-model\/pruned is inside the input model folder .*models\/m:/),
  prune('out inside the model through ..', MODEL, `${fx('nowhere')}/../models/m/a/b`, [], /--out .*nowhere\/\.\.\/models\/m\/a\/b is inside the input model folder/),
  prune('out contains the calibration file (--force would delete it)', STORIES, fx('data'), ['--calib', fx('data/cal.txt'), '--force'], /--out .*\/data contains the --calib input .*data\/cal\.txt:/, { outExisted: true }),
  { name: 'convert: out inside the checkpoint folder', args: ['convert', fx('ckpt'), '--out', fx('ckpt/onnx')], expect: /--out .*ckpt\/onnx is inside the input checkpoint folder .*ckpt: choose a folder outside it/, out: fx('ckpt/onnx') },
  prune('out whose working folder <out>.partial is the model', fx('staged/run.partial'), fx('staged/run'), ['--force'], /--out .*staged\/run \(its working folder .*run\.partial\) is the input model folder/, { partialExisted: true }),
];

const contradictions: Case[] = [
  prune('--sparsity with N:M', STORIES, fx('out-c1'), ['--prunen', '2', '--prunem', '4', '--sparsity', '0.5'], /--sparsity 0\.5 and --prunen 2 contradict each other: give either --sparsity \(unstructured\) or --prunen with --prunem \(N:M\)/),
  prune('--force with --resume', STORIES, fx('out-c3'), ['--force', '--resume'], /--force and --resume contradict each other/),
  prune('SparseLLM option with wanda', STORIES, fx('out-c4'), ['--method', 'wanda', '--alpha', '0.5'], /--alpha 0\.5 is a SparseLLM option, but --method is wanda: drop --alpha or use --method sparsellm/),
  prune('--max-shard-size without --format', STORIES, fx('out-c8'), ['--max-shard-size', '1GB'], /--max-shard-size 1GB needs --format: it sizes the safetensors shards/),
  prune('--eval-seqlen without --eval', STORIES, fx('out-c7'), ['--eval-seqlen', '128'], /--eval-seqlen 128 needs --eval/),
  { name: 'eval: --per-document with --max-windows', args: ['eval', '--model', STORIES, '--dataset', 'tinystories', '--per-document', '--max-windows', '2'], expect: /--per-document and --max-windows 2 contradict each other/ },
];

const empties: Case[] = [
  prune('--out empty', STORIES, '', [], /--out is empty: give the output folder/),
  prune('--model blank', ' ', fx('out-e2'), [], /--model is blank \(" "\): give a model folder/),
  prune('--eval with an empty name', STORIES, fx('out-e6'), ['--eval', 'tinystories,,wikitext2'], /--eval "tinystories,,wikitext2" has an empty name in its list/),
  { name: 'eval: --dataset blank', args: ['eval', '--model', STORIES, '--dataset', '  '], expect: /--dataset is blank/ },
  { name: 'inspect: empty MODEL', args: ['inspect', ''], expect: /MODEL is empty/ },
  prune('--model-file empty', STORIES, fx('out-e7'), ['--model-file', ''], /--model-file is empty: give the ONNX file inside the model/),
  { name: 'convert: --out empty', args: ['convert', fx('ckpt'), '--out', ''], expect: /--out is empty: give the output folder/ },
];

const classes = { 'output placement': placement, contradictions, 'empty values': empties };

describe('issue 19 classes: one line, exit 2, inputs untouched, no output', () => {
  const all = Object.values(classes).flat();
  const results = new Map<string, CliResult>();
  let inputsBefore: Map<string, string>;
  let inputsAfter: Map<string, string>;

  before(async () => {
    buildFixtures();
    inputsBefore = hashTree(root, STORIES);
    const done = await pool(all.map((c) => () => runCli(c.args)), 4);
    all.forEach((c, k) => results.set(c.name, done[k]!));
    inputsAfter = hashTree(root, STORIES);
  });

  for (const c of all) {
    it(c.name, () => {
      assertRefused(c, results.get(c.name)!);
    });
  }

  it('leaves every input as it was (content hashes, no file added or removed)', () => {
    assert.deepEqual(inputsAfter, inputsBefore);
    assert.ok(existsSync(join(MODEL, 'onnx', 'model.onnx')) && existsSync(fx('data/cal.txt')) && existsSync(fx('staged/run.partial/onnx/model.onnx')));
  });
});

// yargs' values when nothing is typed (src/cli/commands/prune.ts)
const pruneDefaults = { model: 'm', out: 'o', method: 'sparsellm', calib: 'c4', layers: 'all', percdamp: 0.01, blocksize: 128, referenceQuirks: false, outputRefit: true, keepBest: true, force: false, resume: false };

describe('issue 19: defaults are not options the user gave', () => {
  it('--method wanda with the SparseGPT/SparseLLM defaults in argv is accepted', () => {
    const args = ['prune', '--model', 'm', '--method', 'wanda', '--out', 'o'];
    assert.doesNotThrow(() => validatePruneArgs({ ...pruneDefaults, method: 'wanda' }, givenOptions(args)));
  });
  it('the same argv with --percdamp typed is refused, also as --percdamp=0.1', () => {
    for (const typed of [['--percdamp', '0.1'], ['--percdamp=0.1']]) {
      const args = ['prune', '--model', 'm', '--method', 'wanda', ...typed, '--out', 'o'];
      assert.throws(() => validatePruneArgs({ ...pruneDefaults, method: 'wanda', percdamp: 0.1 }, givenOptions(args)), /--percdamp 0\.1 is a SparseGPT option/);
    }
  });
  it('camelCase and --no- forms count as typed; tokens after -- do not', () => {
    assert.deepEqual([...givenOptions(['prune', '--evalSeqlen', '5', '--no-keep-best', '--', '--force'])].sort(), ['eval-seqlen', 'keep-best']);
  });
  it('--no-force with --resume is no contradiction (a false boolean is not a request)', () => {
    assert.doesNotThrow(() => validatePruneArgs({ ...pruneDefaults, resume: true }, givenOptions(['prune', '--no-force', '--resume'])));
  });
  it('eval: --max-windows without --per-document is accepted', () => {
    assert.doesNotThrow(() => validateEvalArgs({ model: 'm', dataset: 'wikitext2', perDocument: false, maxWindows: 2 }, givenOptions(['eval', '--max-windows', '2'])));
  });
});

describe('issue 19: implausible calibration text warns in one line and the run goes on', () => {
  const warnCases = [
    { name: 'random bytes', file: 'texts/random.txt', expect: /not valid UTF-8 \(\d+% of its characters undecodable\); \d+% control characters/ },
    { name: 'UTF-16 text', file: 'texts/utf16.txt', expect: /natural text: \d+% control characters \(binary data or UTF-16\?\);/ },
    { name: 'one sentence repeated', file: 'texts/repeated.txt', expect: /only 6 distinct words in 2400/ },
  ];
  const results = new Map<string, CliResult>();
  const out = (name: string) => fx(`warn-out-${name.replace(/\W+/g, '-')}`);

  before(async () => {
    if (!existsSync(fx('texts'))) buildFixtures();
    const runs = [...warnCases, { name: 'shipped TinyStories sample', file: 'texts/tinystories.txt' }];
    const done = await pool(runs.map((c) => () => runCli(['prune', '--model', STORIES, '--method', 'sparsegpt', '--calib', fx(c.file), '--nsamples', '2', '--seqlen', '64', '--quiet', '--out', out(c.name)])), 2);
    runs.forEach((c, k) => results.set(c.name, done[k]!));
  });

  for (const c of warnCases) {
    it(`${c.name}: exit 0, exactly one warning line, the model is written`, () => {
      const r = results.get(c.name)!;
      assert.equal(r.code, 0, r.stderr);
      const line = oneLine(r);
      assert.match(line, /^sparsellm: warning: calibration text .* does not look like natural text: .*; pruning goes on, but the result may be poor$/);
      assert.match(line, c.expect);
      assert.ok(existsSync(join(out(c.name), 'onnx', 'model.onnx')));
    });
  }

  it('the shipped TinyStories sample: no warning, no stderr at all with --quiet', () => {
    const r = results.get('shipped TinyStories sample')!;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.ok(existsSync(join(out('shipped TinyStories sample'), 'onnx', 'model.onnx')));
  });

  it('measures: the TinyStories sample is far above every threshold, a repeated sentence far below', () => {
    const s = textStatistics(readFileSync(TINYSTORIES, 'utf8'));
    // 725 words, 309 distinct: V/√n = 11.5 (calibration-check.ts: natural texts measured ≥ 6.0, threshold 2)
    assert.equal(s.undecodable + s.control, 0);
    assert.ok(s.distinctWords / Math.sqrt(s.words) > 3 * HEAPS_MIN, `${s.distinctWords} of ${s.words}`);
    assert.equal(calibrationTextWarning(readFileSync(TINYSTORIES, 'utf8')), undefined);
    // one stray bad byte in a long text is tolerated (0.1 % threshold); a text too short to judge is not flagged by its words
    assert.equal(calibrationTextWarning(`${readFileSync(TINYSTORIES, 'utf8')}\ufffd`), undefined);
    assert.equal(calibrationTextWarning('a a a a a'), undefined);
  });
});

describe('issue 19, in process: every rule of each class', () => {
  const sample: Record<string, unknown> = { sparsity: 0.5, prunen: 2, prunem: 4, force: true, resume: true, 'eval-seqlen': 128, eval: 'tinystories', alpha: 0.5, beta: 0.5, gamma: 0.5, epochs: 2, 'fc2-update': 'lstsq', 'reference-quirks': true, 'output-refit': false, 'keep-best': false, percdamp: 0.1, blocksize: 64, 'per-document': true, 'max-windows': 2 };
  const camel = (k: string) => k.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  const argvOf = (base: Record<string, unknown>, typed: string[]) => ({ ...base, ...Object.fromEntries(typed.map((k) => [camel(k), sample[k]])) });
  const given = (typed: string[]) => givenOptions(typed.map((k) => `--${k}`));

  for (const [command, rules, validate, base] of [['prune', PRUNE_RULES, validatePruneArgs, pruneDefaults], ['eval', EVAL_RULES, validateEvalArgs, { model: 'm', dataset: 'wikitext2', perDocument: false }]] as const) {
    for (const r of rules.exclusive ?? []) {
      it(`${command}: --${r.a} with --${r.b} is refused naming both, each alone is accepted`, () => {
        assert.throws(() => validate(argvOf(base, [r.a, r.b]), given([r.a, r.b])), new RegExp(`--${r.a}\\b.* and --${r.b}\\b.* contradict each other`));
        for (const one of [r.a, r.b]) {
          const partner = [...(rules.needs ?? [])].find((n) => n.option === one)?.needs;
          const typed = partner ? [one, partner] : [one];
          assert.doesNotThrow(() => validate(argvOf(base, typed), given(typed)));
        }
      });
    }
    for (const r of rules.needs ?? []) {
      it(`${command}: --${r.option} without --${r.needs} is refused naming both`, () => {
        assert.throws(() => validate(argvOf(base, [r.option]), given([r.option])), new RegExp(`: --${r.option}\\b.* needs --${r.needs}:`));
        assert.doesNotThrow(() => validate(argvOf(base, [r.option, r.needs]), given([r.option, r.needs])));
      });
    }
    for (const r of rules.methodOnly ?? []) {
      for (const option of r.options) {
        it(`${command}: --${option} is refused with every method but ${r.methods.join('/')}, naming --method`, () => {
          for (const method of ['magnitude', 'wanda', 'sparsegpt', 'sparsellm']) {
            const run = () => validate({ ...argvOf(base, [option]), method }, given(['method', option]));
            if (r.methods.includes(method)) assert.doesNotThrow(run);
            else assert.throws(run, new RegExp(`--(no-)?${option}\\b.* is a \\w+ option, but --method is ${method}: drop`));
          }
        });
      }
    }
  }

  for (const [command, options, validate, base] of [['prune', PRUNE_TEXT_OPTIONS, validatePruneArgs, pruneDefaults], ['eval', EVAL_TEXT_OPTIONS, validateEvalArgs, { model: 'm', dataset: 'wikitext2' }]] as const) {
    for (const o of options) {
      it(`${command}: --${o.name} empty, blank${o.list ? ', or with an empty list item' : ''} is refused`, () => {
        for (const v of ['', ' ', '\t \n', ...(o.list ? ['a,', ',a', 'a, ,b'] : [])]) {
          assert.throws(() => validate({ ...base, [camel(o.name)]: v }, new Set()), new RegExp(`: --${o.name} (is (empty|blank)|".*" has an empty name)`), JSON.stringify(v));
        }
        assert.doesNotThrow(() => validate({ ...base, [camel(o.name)]: o.list ? 'a,b' : 'a' }, new Set()));
      });
    }
  }

  describe('output placement', () => {
    before(() => {
      if (!existsSync(MODEL)) buildFixtures();
    });
    const refuse = (out: string, modelPath: string, onnx: string, expect: RegExp) =>
      assert.throws(() => assertOutputOutsideInput(out, modelInputs(modelPath, onnx)), expect);
    const onnx = () => join(MODEL, 'onnx', 'model.onnx');

    it('an .onnx file inside MODEL/onnx/: the whole MODEL folder is the input', () =>
      refuse(join(MODEL, 'pruned'), onnx(), onnx(), /is inside the input model folder/));
    it('a symlink to the model\'s parent folder contains the model', () =>
      refuse(fx('link-to-models'), MODEL, onnx(), /contains the input model folder/));
    it('a model named through a symlink: out inside the real folder', () =>
      refuse(join(MODEL, 'x'), fx('link-to-model'), join(fx('link-to-model'), 'onnx', 'model.onnx'), /inside the input model folder .*link-to-model \(/));
    it('out equal to the model folder, and not-yet-existing folders under a symlink', () => {
      refuse(fx('link-to-model'), MODEL, onnx(), /is the input model folder/);
      refuse(fx('link-to-models/m/new/deeper'), MODEL, onnx(), /is inside the input model folder/);
    });
    it('out beside a lone .onnx file, or inside a --data-dir, is accepted; around a --tokenizer or --eval file is not', () => {
      const lone = fx('data/cal.txt'); // any file stands for a lone model file: only the file itself is the input
      assert.doesNotThrow(() => assertOutputOutsideInput(fx('data/pruned'), modelInputs(lone, lone)));
      assert.doesNotThrow(() => assertOutputOutsideInput(fx('data/pruned'), optionInputs({ '--data-dir': fx('data') })));
      assert.throws(() => assertOutputOutsideInput(root, optionInputs({ '--data-dir': fx('data') })), /contains the --data-dir input/);
      assert.throws(() => assertOutputOutsideInput(fx('data'), optionInputs({ '--tokenizer': undefined, '--eval': ['tinystories', fx('data/cal.txt')] })), /contains the --eval input/);
    });
    it('a folder beside the model whose name only starts like it is accepted (models/m2 is not inside models/m)', () =>
      assert.doesNotThrow(() => assertOutputOutsideInput(fx('models/m2'), modelInputs(MODEL, onnx()))));
  });
});
