// Progress bars with ETA on stderr (cli-progress). Quiet mode or --json turns them into no-ops.
import cliProgress from 'cli-progress';

export interface Progress {
  start(label: string, total: number): void;
  tick(n?: number, detail?: string): void;
  stop(): void;
  log(line: string): void;
}

/** Without a terminal (logs, CI), one line per finished phase instead of redrawn bars. */
function lineProgress(): Progress {
  let current: { label: string; total: number; done: number; t0: number } | undefined;
  const finish = () => {
    if (current) process.stderr.write(`${current.label}: ${current.done}/${current.total} in ${((performance.now() - current.t0) / 1000).toFixed(1)} s\n`);
    current = undefined;
  };
  return {
    start(label, total) {
      finish();
      current = { label, total, done: 0, t0: performance.now() };
    },
    tick(n = 1) {
      if (current) current.done += n;
    },
    stop: finish,
    log(line) {
      finish();
      process.stderr.write(`${line}\n`);
    },
  };
}

export function createProgress(enabled: boolean, interactive = Boolean(process.stderr.isTTY)): Progress {
  if (!enabled) return { start() {}, tick() {}, stop() {}, log() {} };
  if (!interactive) return lineProgress();
  let bar: cliProgress.SingleBar | undefined;
  return {
    start(label, total) {
      bar?.stop();
      bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: `${label.padEnd(24)} {bar} {percentage}% | {value}/{total} | ETA {eta_formatted} {detail}`,
          hideCursor: true,
          etaBuffer: 20,
          clearOnComplete: false,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total, 0, { detail: '' });
    },
    tick(n = 1, detail = '') {
      bar?.increment(n, { detail });
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
    log(line) {
      if (bar) bar.stop();
      bar = undefined;
      process.stderr.write(`${line}\n`);
    },
  };
}
