/**
 * The `run` command's progress bar (npm `cli-progress`, on stderr): one bar per phase (loading, each prefill,
 * each decode), redrawn synchronously on update so it moves while the CPU-bound forward pass runs. Disabled
 * (every call a no-op) when stderr is not a terminal or when the report goes to stdout as JSON.
 * @module
 */
import process from "node:process";
import cliProgress from "cli-progress";

/** A phase-by-phase progress bar. */
export interface Progress {
  /** Start a phase of `total` steps (`unit` names them: "steps", "layers", "tokens"). */
  phase(name: string, total: number, unit: string): void;
  /** Set the current phase's progress to `value` steps. */
  update(value: number): void;
  /** Finish the current phase (the bar is left at its total). */
  done(): void;
  readonly enabled: boolean;
}

/** A progress bar on stderr, or a no-op one when `enabled` is false or stderr is not a TTY. */
export const makeProgress = (enabled: boolean): Progress => {
  const on = enabled && process.stderr.isTTY === true;
  if (!on) return { phase() {}, update() {}, done() {}, enabled: false };
  let bar: cliProgress.SingleBar | undefined;
  let total = 0;
  const stop = () => {
    if (bar) {
      bar.update(total);
      bar.stop();
      bar = undefined;
    }
  };
  return {
    enabled: true,
    phase(name, n, unit) {
      stop();
      total = n;
      bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: `${name.padEnd(18)} [{bar}] {value}/{total} ${unit} | {duration_formatted}`,
          hideCursor: true,
          clearOnComplete: false,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(n, 0);
    },
    update(v) {
      bar?.update(Math.min(v, total));
    },
    done: stop,
  };
};
