import cliProgress from 'cli-progress';

export type ProgressMode = 'auto' | 'bar' | 'lines' | 'none';

export interface Progress {
  /** One more point finished. */
  tick(label: string): void;
  stop(): void;
}

/**
 * A cli-progress bar on stderr when it is a terminal (`auto`), plain "point i/n done"
 * lines through `out` otherwise.
 */
export function createProgress(mode: ProgressMode, total: number, done: number, out: (line: string) => void): Progress {
  const resolved = mode === 'auto' ? (process.stderr.isTTY ? 'bar' : 'lines') : mode;
  let n = done;
  if (resolved === 'bar') {
    const bar = new cliProgress.SingleBar(
      {
        format: 'sweep [{bar}] {value}/{total} points | {percentage}% | {duration_formatted} elapsed, ETA {eta_formatted} | {last}',
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 50,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, done, { last: '' });
    return {
      tick: (label) => bar.increment(1, { last: label }),
      stop: () => bar.stop(),
    };
  }
  if (resolved === 'lines') {
    return {
      tick: (label) => out(`point ${++n}/${total} done (${label})`),
      stop: () => undefined,
    };
  }
  return { tick: () => undefined, stop: () => undefined };
}
