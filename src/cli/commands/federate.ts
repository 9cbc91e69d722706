// `sparsellm federate serve | join | simulate`: FedSpaLLM federated pruning over HTTP(S) (src/federate).
import { existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { UserError } from '../../errors.js';
import { resolveModelArgument } from '../../hub/registry.js';
import { DEFAULT_SPARSITY, METHODS, PRUNE_DEFAULTS, defaultNsamples, type Device, type Method } from '../../pipeline/options.js';
import { createProgress } from '../../pipeline/progress.js';
import { AGGREGATION_RULES, type AggregationRule } from '../../federate/aggregate.js';
import { runClient } from '../../federate/client.js';
import { DEFAULT_PORT } from '../../federate/protocol.js';
import { runServer } from '../../federate/server.js';
import { runSimulation } from '../../federate/simulate.js';
import { SPLIT_MODES, type SplitMode } from '../../federate/split.js';
import { assertNonEmpty } from '../validate.js';

/** The federation token may come from the environment, which `ps` does not show. */
export const TOKEN_ENV = 'SPARSELLM_FEDERATION_TOKEN';

/** FedSpaLLM's published setting: every client runs SparseGPT (PAPERS.md §2.5). */
const FEDERATE_DEFAULTS = { method: 'sparsegpt' as Method, rounds: 1, quorum: 2, aggregate: 'fedspallm' as AggregationRule, sample: 'capacity' as const, roundTimeout: 3600, host: '127.0.0.1', capacity: 1, retryTimeout: 300 };

interface ServeArgs {
  model: string;
  sparsity: number;
  method: Method;
  rounds: number;
  sample: 'capacity' | 'all';
  quorum: number;
  clients?: number;
  aggregate: AggregationRule;
  nsamples?: number;
  seqlen?: number;
  seed: number;
  roundTimeout: number;
  token?: string;
  host: string;
  port: number;
  cert?: string;
  key?: string;
  out: string;
  resume: boolean;
  force: boolean;
  quiet: boolean;
}

interface JoinArgs {
  server: string;
  token?: string;
  calib: string;
  capacity: number;
  name?: string;
  model?: string;
  cacheDir?: string;
  ca?: string;
  seed: number;
  tokenizer?: string;
  dataDir?: string;
  device: Device;
  retryTimeout: number;
  quiet: boolean;
}

interface SimulateArgs extends Omit<ServeArgs, 'token' | 'host' | 'port' | 'cert' | 'key' | 'resume' | 'clients' | 'quorum'> {
  clients: number;
  quorum?: number;
  calib: string;
  split: SplitMode;
  capacity: string;
  docSeparator?: string;
  keepSplits: boolean;
}

function integer(name: string, v: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (v === undefined) return;
  if (!Number.isInteger(v) || v < min || v > max) throw new UserError(`--${name} must be an integer in [${min}, ${max === Number.MAX_SAFE_INTEGER ? '∞' : max}], got ${v}`);
}

function fraction(name: string, v: number, lo: 'open' | 'closed', hi: 'open' | 'closed', range: string): void {
  const ok = Number.isFinite(v) && (lo === 'open' ? v > 0 : v >= 0) && (hi === 'open' ? v < 1 : v <= 1);
  if (!ok) throw new UserError(`--${name} must be in ${range}, got ${v}`);
}

function existingFile(name: string, v: string | undefined): void {
  if (v !== undefined && !(existsSync(v) && statSync(v).isFile())) throw new UserError(`--${name} ${v}: no such file`);
}

function token(argv: { token?: string }, required: boolean): string {
  const t = argv.token ?? process.env[TOKEN_ENV] ?? '';
  if (t === '' && required) throw new UserError(`give the federation token with --token or $${TOKEN_ENV} (the server prints it when it starts)`);
  if (t !== '' && (/\s/.test(t) || t.length < 8)) throw new UserError('--token must be at least 8 characters without spaces');
  return t;
}

function checkCommon(argv: { sparsity: number; rounds: number; nsamples?: number; seqlen?: number; roundTimeout: number }): void {
  fraction('sparsity', argv.sparsity, 'open', 'open', '(0, 1)');
  integer('rounds', argv.rounds, 1);
  integer('nsamples', argv.nsamples, 1);
  integer('seqlen', argv.seqlen, 1);
  if (!(argv.roundTimeout > 0)) throw new UserError(`--round-timeout must be a positive number of seconds, got ${argv.roundTimeout}`);
}

const serveOptions = (y: Argv) =>
  y
    .option('model', { type: 'string', demandOption: true, describe: 'the dense model: folder, .onnx file or known name (stories260K, ...)' })
    .option('sparsity', { type: 'number', default: DEFAULT_SPARSITY, describe: 'target sparsity of every pruned linear, in (0, 1)' })
    .option('method', { choices: METHODS, default: FEDERATE_DEFAULTS.method, describe: 'what each client prunes with (the paper: sparsegpt)' })
    .option('rounds', { type: 'number', default: FEDERATE_DEFAULTS.rounds, describe: 'communication rounds' })
    .option('sample', { choices: ['capacity', 'all'] as const, default: FEDERATE_DEFAULTS.sample, describe: 'layer sampling: each client prunes round(capacity × blocks) blocks per round (capacity), or every block (all)' })
    .option('aggregate', { choices: AGGREGATION_RULES, default: FEDERATE_DEFAULTS.aggregate, describe: 'fedspallm: ℓ0 average + mask expansion (Eqs. 4.18-4.20); for comparison, mean: plain FedAvg-style mean; standalone: no aggregation, the global model is the first-joined client\'s own' })
    .option('nsamples', { type: 'number', describe: `calibration sequences per client (default ${defaultNsamples('sparsegpt')}; ${defaultNsamples('sparsellm')} for sparsellm)` })
    .option('seqlen', { type: 'number', describe: `calibration sequence length (default: the model's positions, at most ${PRUNE_DEFAULTS.maxSeqlen})` })
    .option('seed', { type: 'number', default: 0, describe: 'seed of the layer sampling (round r uses seed + r)' })
    .option('round-timeout', { type: 'number', default: FEDERATE_DEFAULTS.roundTimeout, describe: 'seconds a round waits for its clients; the late ones are dropped' })
    .option('out', { type: 'string', demandOption: true, describe: 'the server\'s folder: state/ (journal, accepted uploads) and model/ (the global model); nothing is written outside it' })
    .option('force', { type: 'boolean', default: false, describe: 'replace an existing federation folder' })
    .option('quiet', { type: 'boolean', default: false, describe: 'log only rejections, drops and rounds (not each join, upload and block)' });

const serveCommand: CommandModule<object, ServeArgs> = {
  command: 'serve',
  describe: 'Run the federation server: assigns blocks, receives the clients\' masked weights, aggregates, writes the global model',
  builder: (y: Argv) =>
    serveOptions(y)
      .option('quorum', { type: 'number', default: FEDERATE_DEFAULTS.quorum, describe: 'clients that must complete a round for it to count' })
      .option('clients', { type: 'number', describe: 'clients to wait for before the first round opens (default: --quorum)' })
      .option('token', { type: 'string', describe: `the federation's secret (also $${TOKEN_ENV}); default: a random one, printed` })
      .option('host', { type: 'string', default: FEDERATE_DEFAULTS.host, describe: 'address to listen on (0.0.0.0: every interface)' })
      .option('port', { type: 'number', default: DEFAULT_PORT, describe: 'port to listen on (0: any free port)' })
      .option('cert', { type: 'string', describe: 'TLS certificate (PEM): serve https' })
      .option('key', { type: 'string', describe: 'TLS private key (PEM), with --cert' })
      .option('resume', { type: 'boolean', default: false, describe: 'continue the federation in --out after a stop or crash (accepted uploads are kept)' })
      .example('$0 federate serve --model stories260K --sparsity 0.7 --quorum 2 --out fed', 'wait for 2 clients, one round, global model in fed/model') as unknown as Argv<ServeArgs>,
  handler: async (argv: ArgumentsCamelCase<ServeArgs>) => {
    assertNonEmpty(argv, [{ name: 'model', what: 'a model folder, .onnx file or known name' }, { name: 'out', what: 'the server\'s folder' }, { name: 'host', what: 'an address like 127.0.0.1' }]);
    checkCommon(argv);
    integer('quorum', argv.quorum, 1);
    integer('clients', argv.clients, 1);
    integer('port', argv.port, 0, 65535);
    const clients = argv.clients ?? argv.quorum;
    if (clients < argv.quorum) throw new UserError(`--clients ${clients} is below --quorum ${argv.quorum}: a round could never complete`);
    if ((argv.cert === undefined) !== (argv.key === undefined)) throw new UserError('--cert and --key go together: give both to serve https, or neither');
    existingFile('cert', argv.cert);
    existingFile('key', argv.key);
    if (argv.resume && argv.force) throw new UserError('--resume and --force contradict each other: --force starts over, --resume continues; give one of them');
    // the server's log always goes to stderr (rejections must be seen); --quiet leaves out the routine lines
    const progress = createProgress(true);
    const model = await resolveModelArgument(argv.model, { progress });
    const result = await runServer({
      model, out: argv.out, method: argv.method, sparsity: argv.sparsity, nsamples: argv.nsamples ?? defaultNsamples(argv.method), seqlen: argv.seqlen,
      rounds: argv.rounds, sample: argv.sample, aggregate: argv.aggregate, quorum: argv.quorum, clients, seed: argv.seed, roundTimeout: argv.roundTimeout,
      token: token(argv, false), host: argv.host, port: argv.port, tls: argv.cert && argv.key ? { cert: argv.cert, key: argv.key } : undefined,
      resume: argv.resume, force: argv.force, verbose: !argv.quiet,
    }, progress, (url, secret) => {
      const shown = argv.token !== undefined || process.env[TOKEN_ENV] ? `$${TOKEN_ENV}` : secret;
      process.stderr.write(`sparsellm federate serve: listening on ${url}; clients join with\n  sparsellm federate join --server ${url} --token ${shown} --calib YOUR_TEXT.txt\n`);
    });
    process.stdout.write(`global model: ${result.model} (${result.rounds} round(s), ${result.rejections.length} rejected request(s); report: sparsellm-report.json beside it)\n`);
  },
};

const joinCommand: CommandModule<object, JoinArgs> = {
  command: 'join',
  describe: 'Take part in a federation: prune the assigned blocks on your private text and upload only their masked weights',
  builder: (y: Argv) =>
    y
      .option('server', { type: 'string', demandOption: true, describe: 'the server\'s URL, e.g. http://10.0.0.5:8741' })
      .option('token', { type: 'string', describe: `the federation's secret (also $${TOKEN_ENV})` })
      .option('calib', { type: 'string', demandOption: true, describe: 'your private calibration text (.txt/.jsonl file or dataset name); it never leaves this machine' })
      .option('capacity', { type: 'number', default: FEDERATE_DEFAULTS.capacity, describe: 'fraction of the blocks you can prune per round, in (0, 1]' })
      .option('name', { type: 'string', describe: 'a name the server shows in its log' })
      .option('model', { type: 'string', describe: 'your own copy of the dense model (checked against the server\'s sha256); default: download it once' })
      .option('cache-dir', { type: 'string', describe: 'where a downloaded model is kept (default ~/.cache/sparsellm/federate)' })
      .option('ca', { type: 'string', describe: 'CA certificate (PEM) to trust, for a server with a self-signed certificate' })
      .option('seed', { type: 'number', default: PRUNE_DEFAULTS.seed, describe: 'seed of the calibration sampling (round r uses seed + r − 1)' })
      .option('tokenizer', { type: 'string', describe: 'tokenizer folder or file, when the model folder has none' })
      .option('data-dir', { type: 'string', describe: 'folder with dataset files (also $SPARSELLM_DATA)' })
      .option('device', { choices: ['auto', 'cpu', 'cuda'] as const, default: PRUNE_DEFAULTS.device, describe: 'solver device' })
      .option('retry-timeout', { type: 'number', default: FEDERATE_DEFAULTS.retryTimeout, describe: 'seconds to keep retrying while the server cannot be reached' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress bars' })
      .example('$0 federate join --server http://10.0.0.5:8741 --token T --calib my-notes.txt', 'join with your own text') as unknown as Argv<JoinArgs>,
  handler: async (argv: ArgumentsCamelCase<JoinArgs>) => {
    assertNonEmpty(argv, [{ name: 'server', what: 'the server\'s URL' }, { name: 'calib', what: 'your calibration text file' }, { name: 'model', what: 'a model folder or .onnx file' }, { name: 'cache-dir', what: 'a folder' }, { name: 'ca', what: 'a PEM file' }]);
    fraction('capacity', argv.capacity, 'open', 'closed', '(0, 1]');
    existingFile('ca', argv.ca);
    if (argv.model !== undefined && !existsSync(argv.model)) throw new UserError(`--model ${argv.model}: no such file or folder`);
    if (!(argv.retryTimeout >= 0)) throw new UserError(`--retry-timeout must be a number of seconds ≥ 0, got ${argv.retryTimeout}`);
    const cacheDir = argv.cacheDir ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'sparsellm', 'federate');
    const result = await runClient({
      server: argv.server, token: token(argv, true), calib: argv.calib, capacity: argv.capacity, name: argv.name, model: argv.model, cacheDir, ca: argv.ca,
      seed: argv.seed, tokenizer: argv.tokenizer, dataDir: argv.dataDir, device: argv.device, retryTimeout: argv.retryTimeout,
    }, createProgress(!argv.quiet));
    process.stdout.write(`${result.clientId}: ${result.uploadedBlocks} block(s) uploaded over ${result.rounds} round(s)\n`);
  },
};

const simulateCommand: CommandModule<object, SimulateArgs> = {
  command: 'simulate',
  describe: 'Run a server and N clients as child processes on 127.0.0.1, each client with its own share of one text',
  builder: (y: Argv) =>
    serveOptions(y)
      .option('clients', { type: 'number', demandOption: true, describe: 'number of clients' })
      .option('calib', { type: 'string', demandOption: true, describe: 'text file to split among the clients' })
      .option('split', { choices: SPLIT_MODES, default: 'documents' as SplitMode, describe: 'iid: shuffled lines dealt round-robin; documents: whole documents dealt round-robin; contiguous: consecutive runs' })
      .option('capacity', { type: 'string', default: '1', describe: 'client capacities: one for all, or one per client (0.5,1,1)' })
      .option('quorum', { type: 'number', describe: 'clients that must complete a round (default: all of them)' })
      .option('doc-separator', { type: 'string', describe: 'document separator of the text (default <|endoftext|>)' })
      .option('keep-splits', { type: 'boolean', default: false, describe: 'keep the per-client text files (their folder is printed)' })
      .example('$0 federate simulate --model stories260K --calib stories.txt --clients 4 --split documents --sparsity 0.7 --out fed', '4 clients on one machine') as unknown as Argv<SimulateArgs>,
  handler: async (argv: ArgumentsCamelCase<SimulateArgs>) => {
    assertNonEmpty(argv, [{ name: 'model', what: 'a model folder, .onnx file or known name' }, { name: 'out', what: 'the server\'s folder' }, { name: 'calib', what: 'a text file' }]);
    checkCommon(argv);
    integer('clients', argv.clients, 1, 64);
    integer('quorum', argv.quorum, 1, argv.clients);
    const capacities = String(argv.capacity).split(',').map((s) => Number(s.trim()));
    if (capacities.length !== 1 && capacities.length !== argv.clients) throw new UserError(`--capacity lists ${capacities.length} values for ${argv.clients} clients: give one, or one per client`);
    capacities.forEach((c) => fraction('capacity', c, 'open', 'closed', '(0, 1]'));
    const model = await resolveModelArgument(argv.model);
    const pass = (name: string, v: unknown) => (v === undefined ? [] : [`--${name}`, String(v)]);
    const serveArgs = [
      ...pass('sparsity', argv.sparsity), ...pass('method', argv.method), ...pass('rounds', argv.rounds), ...pass('sample', argv.sample),
      ...pass('aggregate', argv.aggregate), ...pass('nsamples', argv.nsamples), ...pass('seqlen', argv.seqlen), ...pass('seed', argv.seed),
      ...pass('round-timeout', argv.roundTimeout), ...pass('quorum', argv.quorum ?? argv.clients), ...(argv.force ? ['--force'] : []), ...(argv.quiet ? ['--quiet'] : []),
    ];
    const result = await runSimulation({
      model, calib: argv.calib, clients: argv.clients, split: argv.split, capacities, out: argv.out, serveArgs, joinArgs: ['--seed', String(argv.seed)],
      seed: argv.seed, docSeparator: argv.docSeparator, keepSplits: argv.keepSplits, quiet: argv.quiet,
    });
    const failed = result.clientCodes.map((c, i) => [i + 1, c] as const).filter(([, c]) => c !== 0);
    if (argv.keepSplits) process.stdout.write(`client texts: ${result.splits}\n`);
    if (failed.length) process.stderr.write(`sparsellm: federate simulate: client(s) ${failed.map(([i, c]) => `client-${i} (exit ${c})`).join(', ')} did not finish\n`);
    if (result.serverCode !== 0) throw new UserError(`federate simulate: the server exited with code ${result.serverCode} (see [server] above)`, 1);
    process.stdout.write(`global model: ${join(argv.out, 'model')}\n`);
  },
};

export const federateCommand: CommandModule = {
  command: 'federate <command>',
  describe: 'FedSpaLLM federated pruning: serve, join, or simulate on one machine',
  builder: (y: Argv) =>
    y
      .command(serveCommand as unknown as CommandModule)
      .command(joinCommand as unknown as CommandModule)
      .command(simulateCommand as unknown as CommandModule)
      .demandCommand(1, 'Name a federate command: serve, join or simulate (see sparsellm federate --help).'),
  handler: () => {},
};
