// sparsellm command line: parses arguments (yargs) and dispatches to one module per command.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { isUserError } from '../errors.js';
import { pruneCommand } from './commands/prune.js';
import { evalCommand } from './commands/eval.js';
import { inspectCommand } from './commands/inspect.js';
import { convertCommand } from './commands/convert.js';
import { federateCommand } from './commands/federate.js';

process.env.ORT_DISABLE_TELEMETRY ??= '1';

function fail(message: string, code: number): never {
  // One line: multi-line messages (yargs' "Invalid values:\n  Argument: ...") are joined, not cut.
  const line = message.split('\n').map((s) => s.trim()).filter(Boolean).join(' ');
  process.stderr.write(`sparsellm: ${line}\n`);
  process.exit(code);
}

export async function main(argv: string[]): Promise<void> {
  try {
    await yargs(argv)
      .scriptName('sparsellm')
      .usage('$0 <command> [options]\n\nPrune decoder-only LLMs (OPT, LLaMA) exported to ONNX.')
      .command(pruneCommand)
      .command(evalCommand)
      .command(inspectCommand)
      .command(convertCommand)
      .command(federateCommand)
      .demandCommand(1, 'Name a command: prune, eval, inspect, convert or federate (see --help).')
      .strict()
      // `--calib a --calib b`: the last value wins (an array would reach the commands as a string option)
      .parserConfiguration({ 'duplicate-arguments-array': false })
      .recommendCommands()
      .fail((msg, err) => {
        if (err) throw err;
        fail(`${msg} (see sparsellm --help)`, 2);
      })
      .help()
      .alias('h', 'help')
      .version()
      .wrap(Math.min(110, process.stdout.columns ?? 100))
      .parseAsync();
  } catch (e) {
    if (isUserError(e)) fail(e.message, e.exitCode);
    const err = e as Error;
    if (process.env.SPARSELLM_DEBUG) process.stderr.write(`${err.stack}\n`);
    fail(`internal error: ${err.message} (set SPARSELLM_DEBUG=1 for the stack trace)`, 1);
  }
}

await main(hideBin(process.argv));
