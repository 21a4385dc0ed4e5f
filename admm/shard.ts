/**
 * Splitting a synth job into shards for an existing scheduler (Slurm job arrays, Kubernetes
 * Indexed Jobs). The work units are rounds, identified by (class, ρ, round): every round's
 * randomness is derived from (seed, ρ, class, round), so any subset of rounds can run in any
 * process and still produce the records a one-process run would.
 *
 * Pure: the scheduler's environment is passed in as a plain record, so this runs anywhere.
 */
import type { RoundKey } from "./synth.ts";

/** Shard `index` of `count` (0 ≤ index < count). */
export interface Shard {
  /** This shard's 0-based index. */
  index: number;
  /** How many shards the run is split into. */
  count: number;
}

/** Where a shard came from, for the note the CLI prints. */
export interface ResolvedShard extends Shard {
  /** Where it came from (the flag or the scheduler variable), for the note the CLI prints. */
  source: string;
}

/** A shard setting that is malformed or inconsistent; printed without a stack trace. */
export class ShardError extends Error {
  /** Error name, for messages. */
  override name = "ShardError";
  /** The CLI prints it without a stack trace. */
  readonly userFacing = true;
}

/**
 * Every round of a job in the order a one-process run executes and writes them (the loop order
 * of `runSynth`: class, then ρ in the given order, then round). Merged outputs follow this order.
 */
export function canonicalRoundKeys(classes: number, rhos: number[], roundsPerClass: number): RoundKey[] {
  const keys: RoundKey[] = [];
  for (let classIndex = 0; classIndex < classes; classIndex++) {
    for (const rho of rhos) {
      for (let round = 0; round < roundsPerClass; round++) keys.push({ rho, classIndex, round });
    }
  }
  return keys;
}

/**
 * The rounds of `shard`: round-robin over the canonical order, so each shard gets a share of
 * every class (classes can differ in sequence length, hence in cost) and shard sizes differ by at
 * most one round.
 */
export function shardRoundKeys(keys: RoundKey[], shard: Shard): RoundKey[] {
  return keys.filter((_, i) => i % shard.count === shard.index);
}

/** A key as a string, for sets and messages: "class 1, ρ 0.7, round 2". */
export function roundKeyId(k: RoundKey): string {
  return `class ${k.classIndex}, ρ ${k.rho}, round ${k.round}`;
}

function nonNegativeInt(s: string, what: string): number {
  const t = s.trim();
  if (!/^\d+$/.test(t)) throw new ShardError(`${what} must be a non-negative integer, got '${s}'`);
  return Number(t);
}

/** Parses "i/n" (e.g. "2/8"). */
export function parseShard(s: string): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(s);
  if (!m) throw new ShardError(`--shard must be i/n with 0 ≤ i < n (e.g. 0/4), got '${s}'`);
  const shard = { index: Number(m[1]), count: Number(m[2]) };
  checkShard(shard, `--shard ${s}`);
  return shard;
}

function checkShard(s: Shard, what: string): void {
  if (s.count < 1) throw new ShardError(`${what}: the number of shards must be at least 1`);
  if (s.index >= s.count) {
    throw new ShardError(`${what}: shard index ${s.index} is not below the shard count ${s.count}`);
  }
}

/**
 * Shard of a Slurm job array task. Slurm numbers tasks by their array ids, which need not start
 * at 0 (`--array=1-8`) and may be strided (`--array=0-14:2`); the shard index is the task's
 * position in that range. Arbitrary id lists (`--array=1,5,9`) cannot be mapped without the list
 * and are refused. Uses SLURM_ARRAY_TASK_COUNT when set (Slurm ≥ 18), else MIN/MAX/STEP.
 */
function slurmShard(env: Record<string, string | undefined>): Shard {
  const id = nonNegativeInt(env.SLURM_ARRAY_TASK_ID!, "SLURM_ARRAY_TASK_ID");
  const min = env.SLURM_ARRAY_TASK_MIN !== undefined
    ? nonNegativeInt(env.SLURM_ARRAY_TASK_MIN, "SLURM_ARRAY_TASK_MIN")
    : undefined;
  const max = env.SLURM_ARRAY_TASK_MAX !== undefined
    ? nonNegativeInt(env.SLURM_ARRAY_TASK_MAX, "SLURM_ARRAY_TASK_MAX")
    : undefined;
  const step = env.SLURM_ARRAY_TASK_STEP !== undefined
    ? nonNegativeInt(env.SLURM_ARRAY_TASK_STEP, "SLURM_ARRAY_TASK_STEP")
    : 1;
  const count = env.SLURM_ARRAY_TASK_COUNT !== undefined
    ? nonNegativeInt(env.SLURM_ARRAY_TASK_COUNT, "SLURM_ARRAY_TASK_COUNT")
    : undefined;
  const fix = "submit a contiguous range such as --array=0-3, or pass --shard i/n";
  if (min === undefined) {
    // Without MIN the ids are taken to start at 0; COUNT is then needed for the shard count.
    if (count === undefined) {
      throw new ShardError(
        "SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MIN/MAX is: " +
          "cannot tell the number of shards; pass --shard i/n",
      );
    }
    const shard = { index: id, count };
    checkShard(shard, `SLURM_ARRAY_TASK_ID=${id} with SLURM_ARRAY_TASK_COUNT=${count}`);
    return shard;
  }
  if (max === undefined || max < min || id < min || id > max) {
    throw new ShardError(
      `inconsistent Slurm array: SLURM_ARRAY_TASK_ID=${id}, MIN=${min}, MAX=${max ?? "unset"}; ${fix}`,
    );
  }
  if (step < 1 || (max - min) % step !== 0 || (id - min) % step !== 0) {
    throw new ShardError(
      `Slurm array ids ${min}-${max} with step ${step} do not form an evenly spaced range containing ` +
        `task ${id}; ${fix}`,
    );
  }
  const span = (max - min) / step + 1;
  if (count !== undefined && count !== span) {
    throw new ShardError(
      `this Slurm array has ${count} tasks, but ids ${min}-${max} (step ${step}) span ${span}: ` +
        `the ids are not a contiguous range; ${fix}`,
    );
  }
  return { index: (id - min) / step, count: span };
}

/**
 * The shard this process runs: from `--shard i/n` if given, else from the scheduler's
 * environment (Slurm job array, or Kubernetes Indexed Job's JOB_COMPLETION_INDEX together with
 * `--shards N`), else none (the whole job). `--shard none` runs the whole job even inside an
 * array task. With `--shards N` a Slurm array id is taken as the shard index as it is (ids
 * 0..N-1); without it the index is the task's position in the array's id range.
 */
export function resolveShard(
  flags: { shard?: string; shards?: string },
  env: Record<string, string | undefined>,
): ResolvedShard | undefined {
  const shards = flags.shards !== undefined ? nonNegativeInt(flags.shards, "--shards") : undefined;
  if (shards !== undefined && shards < 1) throw new ShardError("--shards must be at least 1");
  if (flags.shard !== undefined) {
    if (flags.shard.trim() === "none") {
      if (shards !== undefined) throw new ShardError("--shard none and --shards cannot be combined");
      return undefined;
    }
    if (shards !== undefined) {
      throw new ShardError("pass either --shard i/n or --shards N (with a scheduler's index), not both");
    }
    return { ...parseShard(flags.shard), source: "--shard" };
  }
  if (env.SLURM_ARRAY_TASK_ID !== undefined) {
    const source = `Slurm array task ${env.SLURM_ARRAY_TASK_ID}`;
    if (shards !== undefined) {
      // With --shards the array id is the shard index itself, so one shard can be resubmitted
      // alone (`sbatch --array=2`), when the array's own range would say "1 task".
      const index = nonNegativeInt(env.SLURM_ARRAY_TASK_ID, "SLURM_ARRAY_TASK_ID");
      if (index >= shards) {
        throw new ShardError(
          `SLURM_ARRAY_TASK_ID=${index} is not below --shards ${shards}: with --shards the array ids ` +
            `are the shard indices, so submit --array=0-${shards - 1} (or a subset of it)`,
        );
      }
      return { index, count: shards, source };
    }
    return { ...slurmShard(env), source };
  }
  if (env.JOB_COMPLETION_INDEX !== undefined) {
    const index = nonNegativeInt(env.JOB_COMPLETION_INDEX, "JOB_COMPLETION_INDEX");
    if (shards === undefined) {
      throw new ShardError(
        `JOB_COMPLETION_INDEX=${index} is set (Kubernetes Indexed Job): pass --shards N with N = the Job's ` +
          "completions, or --shard none to run the whole job",
      );
    }
    const s = { index, count: shards };
    checkShard(s, `JOB_COMPLETION_INDEX=${index} with --shards ${shards}`);
    return { ...s, source: `Kubernetes completion index ${index}` };
  }
  if (shards !== undefined) {
    throw new ShardError(
      "--shards N needs a scheduler's index (SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX); " +
        "outside a scheduler pass --shard i/n",
    );
  }
  return undefined;
}

/** The output file of a shard: "out.jsonl" → "out.shard-2-of-4.jsonl". */
export function shardOutputPath(out: string, shard: Shard): string {
  const stem = out.replace(/\.jsonl$/, "");
  return `${stem}.shard-${shard.index}-of-${shard.count}.jsonl`;
}

/** Parses a shard output name back into its shard, or undefined if it is not one. */
export function parseShardOutputPath(path: string): { out: string; shard: Shard } | undefined {
  const m = /^(.*)\.shard-(\d+)-of-(\d+)\.jsonl$/.exec(path);
  if (!m) return undefined;
  return { out: `${m[1]}.jsonl`, shard: { index: Number(m[2]), count: Number(m[3]) } };
}
