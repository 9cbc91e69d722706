// Progress bars with ETA on stderr (cli-progress). Quiet mode or --json turns them into no-ops.
import cliProgress from 'cli-progress';

export interface Progress {
  start(label: string, total: number): void;
  tick(n?: number, detail?: string): void;
  stop(): void;
  log(line: string): void;
}

export function createProgress(enabled: boolean): Progress {
  if (!enabled) return { start() {}, tick() {}, stop() {}, log() {} };
  let bar: cliProgress.SingleBar | undefined;
  return {
    start(label, total) {
      bar?.stop();
      bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: `${label.padEnd(24)} {bar} {percentage}% | {value}/{total} | ETA {eta_formatted} {detail}`,
          hideCursor: true,
          noTTYOutput: !process.stderr.isTTY,
          notTTYSchedule: 5000,
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
