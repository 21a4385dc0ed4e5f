/**
 * Small synth settings for tests, written once as options (the names of `synth()`'s request) and
 * turned into the CLI's flags, so CLI, API, merge and Slurm tests describe their runs the same way.
 */

/** Option values of a synth run, by option name (`perClass`, `realPool`, `rho`, …). */
export type SynthSettings = Readonly<Record<string, number | string>>;

/**
 * A run small enough for tiny-gpt2 or gpt2-d128 on 2 CPU cores: 2 rounds of 2 texts per class.
 * The default method's swap iterations (13 on a CPU adapter) would dominate a test's time, so 2.
 */
export const TINY_SYNTH: SynthSettings = {
  perClass: 4,
  batch: 2,
  outerSteps: 2,
  innerSteps: 2,
  initCandidates: 2,
  topK: 20,
  realN: 8,
  realPool: 16,
  length: 8,
  refineIterations: 2,
};

/**
 * The synth part of a tiny `experiment` (passed as `--synth-…` flags): one outer and one inner
 * step per round.
 */
export const EXPERIMENT_SYNTH: SynthSettings = {
  batch: 2,
  outerSteps: 1,
  innerSteps: 1,
  initCandidates: 2,
  topK: 20,
  length: 6,
};

/**
 * `{ perClass: 4, topK: 20 }` → `["--per-class", "4", "--top-k", "20"]`; with `prefix` "synth-",
 * `--synth-per-class` and so on (experiment's flags for its synth runs).
 */
export function synthFlags(settings: SynthSettings, prefix = ""): string[] {
  return Object.entries(settings).flatMap(([name, value]) => [
    `--${prefix}${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`,
    String(value),
  ]);
}
