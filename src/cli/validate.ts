// Option-level checks of the commands (issue 19), run before any file is read: empty values, options that
// contradict each other, and options that only make sense with another one. Each failure is one UserError that
// names the options involved. Checks that need the model or the data stay in the pipeline (checkRun).
import { hideBin } from 'yargs/helpers';
import { UserError } from '../errors.js';

/**
 * The options the user typed, in kebab-case (`--evalSeqlen` counts as eval-seqlen, `--no-keep-best` as keep-best),
 * as opposed to values yargs filled in from a default. yargs' argv does not tell the two apart, so the command line
 * itself is read: every `--name` or `--name=value` token before a bare `--`.
 */
export function givenOptions(args: readonly string[] = hideBin(process.argv)): Set<string> {
  const given = new Set<string>();
  for (const a of args) {
    if (a === '--') break;
    const m = /^--([^=]+)/.exec(a);
    if (!m) continue;
    const name = m[1]!.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();
    given.add(name.startsWith('no-') ? name.slice(3) : name);
  }
  return given;
}

type Argv = Record<string, unknown>;
const camel = (kebab: string) => kebab.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
const value = (argv: Argv, name: string): unknown => argv[camel(name)];

/** Path and name options: what each one should hold (for the message). A comma list is checked item by item. */
interface TextOption {
  name: string;
  /** How the message names it (default `--name`; a positional is MODEL). */
  label?: string;
  what: string;
  list?: boolean;
}

/** Refuses empty and whitespace-only values (`--out ''` would otherwise mean the current folder). */
export function assertNonEmpty(argv: Argv, options: TextOption[]): void {
  for (const o of options) {
    const v = value(argv, o.name);
    if (v === undefined) continue;
    const text = String(v);
    const label = o.label ?? `--${o.name}`;
    if (text.trim() === '') throw new UserError(`${label} is ${text === '' ? 'empty' : `blank ("${text}")`}: give ${o.what}`);
    if (o.list && text.split(',').some((item) => item.trim() === '')) {
      throw new UserError(`${label} "${text}" has an empty name in its list: give ${o.what}, separated by single commas`);
    }
  }
}

/** Two options that cannot go together, and why. */
interface Exclusive {
  a: string;
  b: string;
  why: string;
}
/** An option that does nothing without another one. */
interface Needs {
  option: string;
  needs: string;
  why: string;
}
/** Options of one family of methods (they would be silently ignored by the others). */
interface MethodOnly {
  options: string[];
  methods: string[];
  family: string;
}

/** Options of one --allocation (ignored by the others). */
interface AllocationOnly {
  options: string[];
  allocation: string;
}

export interface Rules {
  exclusive?: Exclusive[];
  needs?: Needs[];
  methodOnly?: MethodOnly[];
  allocationOnly?: AllocationOnly[];
}

/** A boolean counts when true (`--no-force` is no request to force); any other option counts when typed. */
function isSet(argv: Argv, given: Set<string>, name: string): boolean {
  return given.has(name) && value(argv, name) !== false;
}

/** The option as typed: `--no-keep-best`, `--force`. */
function flag(argv: Argv, name: string): string {
  return value(argv, name) === false ? `--no-${name}` : `--${name}`;
}

/** The option with its value: `--sparsity 0.5`, `--no-keep-best`. */
function show(argv: Argv, name: string): string {
  const v = value(argv, name);
  return typeof v === 'boolean' ? flag(argv, name) : `--${name} ${String(v)}`;
}

export function assertConsistent(argv: Argv, given: Set<string>, rules: Rules): void {
  for (const r of rules.exclusive ?? []) {
    if (isSet(argv, given, r.a) && isSet(argv, given, r.b)) throw new UserError(`${show(argv, r.a)} and ${show(argv, r.b)} contradict each other: ${r.why}`);
  }
  for (const r of rules.needs ?? []) {
    if (isSet(argv, given, r.option) && !isSet(argv, given, r.needs)) throw new UserError(`${show(argv, r.option)} needs --${r.needs}: ${r.why}`);
  }
  const method = String(value(argv, 'method'));
  for (const r of rules.methodOnly ?? []) {
    if (r.methods.includes(method)) continue;
    const stray = r.options.find((o) => given.has(o));
    if (stray) {
      throw new UserError(`${show(argv, stray)} is ${r.family} option, but --method is ${method}: drop ${flag(argv, stray)} or use --method ${r.methods.join(' or ')}`);
    }
  }
  const allocation = String(value(argv, 'allocation') ?? 'uniform');
  for (const r of rules.allocationOnly ?? []) {
    if (r.allocation === allocation) continue;
    const stray = r.options.find((o) => given.has(o));
    if (stray) throw new UserError(`${show(argv, stray)} only applies to --allocation ${r.allocation}, but the allocation is ${allocation}: drop ${flag(argv, stray)} or add --allocation ${r.allocation}`);
  }
}

export const PRUNE_RULES: Rules = {
  exclusive: [
    { a: 'sparsity', b: 'prunen', why: 'give either --sparsity (unstructured) or --prunen with --prunem (N:M)' },
    { a: 'sparsity', b: 'prunem', why: 'give either --sparsity (unstructured) or --prunen with --prunem (N:M)' },
    { a: 'force', b: 'resume', why: '--force starts over, --resume continues the interrupted run; give one of them' },
    ...['prunen', 'prunem'].flatMap((nm) => ['allocation', 'sparsity-profile'].map((a) => ({
      a: nm, b: a, why: 'the N:M pattern is fixed by the hardware, so every layer keeps the same N:M; non-uniform sparsity needs --sparsity',
    }))),
    { a: 'sparsity-profile', b: 'sparsity', why: 'the profile gives every target itself (its weighted total is the run\'s sparsity); give one of them' },
    { a: 'sparsity-profile', b: 'allocation', why: 'the profile gives every target itself; give one of them' },
  ],
  needs: [
    { option: 'prunen', needs: 'prunem', why: 'N:M sparsity takes both (--prunen 2 --prunem 4 = 2:4)' },
    { option: 'prunem', needs: 'prunen', why: 'N:M sparsity takes both (--prunen 2 --prunem 4 = 2:4)' },
    { option: 'eval-seqlen', needs: 'eval', why: 'it sets the window of the evaluation after pruning; add --eval DATASETS or drop it' },
    { option: 'max-shard-size', needs: 'format', why: 'it sizes the safetensors shards; add --format safetensors (or both) or drop it' },
  ],
  methodOnly: [
    {
      options: ['alpha', 'beta', 'gamma', 'epochs', 'fc2-update', 'reference-quirks', 'output-refit', 'keep-best'],
      methods: ['sparsellm'],
      family: 'a SparseLLM',
    },
    // SparseLLM starts from a SparseGPT solve (its epoch 0), so it uses both.
    { options: ['percdamp', 'blocksize'], methods: ['sparsegpt', 'sparsellm'], family: 'a SparseGPT' },
    // magnitude reads no calibration text, so it has no activations to offload
    { options: ['offload'], methods: ['wanda', 'sparsegpt', 'sparsellm'], family: 'a calibration' },
  ],
  allocationOnly: [
    { options: ['owl-m', 'owl-lambda'], allocation: 'owl' },
    { options: ['search-deviation', 'search-held-out', 'search-rounds', 'search-guard', 'search-metric', 'search-data'], allocation: 'search' },
  ],
};

/** --revision / --model-file (src/cli/hub-options.ts), taken by every command that reads a model. */
const MODEL_SOURCE_TEXT_OPTIONS: TextOption[] = [
  { name: 'revision', what: 'a branch, tag or commit of the hub repo' },
  { name: 'model-file', what: 'the ONNX file inside the model, like onnx/model.onnx' },
];

export const PRUNE_TEXT_OPTIONS: TextOption[] = [
  ...MODEL_SOURCE_TEXT_OPTIONS,
  { name: 'model', what: 'a model folder, .onnx file or known name' },
  { name: 'out', what: 'the output folder' },
  { name: 'calib', what: 'a dataset name (c4, wikitext2, ptb, tinystories) or a text file' },
  { name: 'eval', what: 'dataset names or files', list: true },
  { name: 'tokenizer', what: 'a tokenizer folder or file' },
  { name: 'data-dir', what: 'a folder with dataset files' },
  { name: 'layers', what: 'all, first-half, last-half or block indices like 0-11' },
  { name: 'max-shard-size', what: 'a size like 5GB or 500MB' },
  { name: 'offload', what: 'a folder for the calibration activations' },
  { name: 'sparsity-profile', what: 'a sparsity profile JSON (or a sparsellm-report.json)' },
  { name: 'search-data', what: 'a dataset name (c4, wikitext2, ptb, tinystories) or a text file' },
];

export const EVAL_RULES: Rules = {
  exclusive: [
    { a: 'per-document', b: 'max-windows', why: '--per-document scores whole documents, --max-windows limits window scoring; give one of them' },
  ],
};

export const EVAL_TEXT_OPTIONS: TextOption[] = [
  ...MODEL_SOURCE_TEXT_OPTIONS,
  { name: 'model', what: 'a model folder, .onnx file or known name' },
  { name: 'dataset', what: 'dataset names or files', list: true },
  { name: 'tokenizer', what: 'a tokenizer folder or file' },
  { name: 'data-dir', what: 'a folder with dataset files' },
];

/** Everything about `prune`'s options alone that can be refused at once. */
export function validatePruneArgs(argv: Argv, given = givenOptions()): void {
  assertNonEmpty(argv, PRUNE_TEXT_OPTIONS);
  assertConsistent(argv, given, PRUNE_RULES);
}

export function validateEvalArgs(argv: Argv, given = givenOptions()): void {
  assertNonEmpty(argv, EVAL_TEXT_OPTIONS);
  assertConsistent(argv, given, EVAL_RULES);
}

export function validateInspectArgs(argv: Argv): void {
  assertNonEmpty(argv, [{ name: 'model', label: 'MODEL', what: 'a model folder or .onnx file' }, ...MODEL_SOURCE_TEXT_OPTIONS]);
}

export function validateConvertArgs(argv: Argv): void {
  assertNonEmpty(argv, [
    { name: 'model', label: 'MODEL', what: 'a checkpoint folder, known name or hub id' },
    { name: 'out', what: 'the output folder' },
    { name: 'revision', what: 'a branch, tag or commit of the hub repo' },
  ]);
}
