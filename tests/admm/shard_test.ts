/**
 * Shard selection (admm/shard.ts): the split covers every round exactly once, `--shard i/n`
 * parsing, and the scheduler environments (Slurm job arrays, Kubernetes Indexed Jobs) with their
 * inconsistent cases. Pure: no GPU.
 */
import assert from "node:assert/strict";
import {
  canonicalRoundKeys,
  parseShard,
  parseShardOutputPath,
  resolveShard,
  roundKeyId,
  ShardError,
  shardOutputPath,
  shardRoundKeys,
} from "../../admm/shard.ts";

Deno.test("canonical order is class, then ρ in the given order, then round (runSynth's loop order)", () => {
  const keys = canonicalRoundKeys(2, [0.7, 0.1], 2).map((k) => `${k.classIndex}/${k.rho}/${k.round}`);
  assert.deepEqual(keys, [
    "0/0.7/0",
    "0/0.7/1",
    "0/0.1/0",
    "0/0.1/1",
    "1/0.7/0",
    "1/0.7/1",
    "1/0.1/0",
    "1/0.1/1",
  ]);
});

Deno.test("shards partition the rounds: every round in exactly one shard, sizes within one", () => {
  for (const [classes, rhos, rounds] of [[2, [0.7], 2], [6, [0.1, 0.5, 0.9], 10], [3, [1], 1]] as const) {
    const keys = canonicalRoundKeys(classes, [...rhos], rounds);
    for (const n of [1, 2, 3, 4, 7, keys.length, keys.length + 3]) {
      const parts = Array.from({ length: n }, (_, index) => shardRoundKeys(keys, { index, count: n }));
      const seen = parts.flat().map(roundKeyId);
      assert.equal(new Set(seen).size, keys.length, `n=${n}: a round is in two shards`);
      assert.deepEqual(seen.sort(), keys.map(roundKeyId).sort(), `n=${n}: rounds lost`);
      const sizes = parts.map((p) => p.length);
      assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `n=${n}: unbalanced ${sizes}`);
      // Each shard keeps the canonical order (merge relies on it only through the keys, but a
      // shard's own JSONL is then in one-process order too).
      for (const p of parts) {
        const pos = p.map((k) => keys.findIndex((c) => roundKeyId(c) === roundKeyId(k)));
        assert.deepEqual(pos, [...pos].sort((a, b) => a - b));
      }
    }
  }
  // Round-robin: with 4 classes × 1 round and 2 shards, each shard gets two classes, not a half.
  const keys = canonicalRoundKeys(4, [0.7], 1);
  assert.deepEqual(shardRoundKeys(keys, { index: 1, count: 2 }).map((k) => k.classIndex), [1, 3]);
});

Deno.test("--shard i/n parsing accepts 0 ≤ i < n only", () => {
  assert.deepEqual(parseShard("2/8"), { index: 2, count: 8 });
  assert.deepEqual(parseShard(" 0 / 1 "), { index: 0, count: 1 });
  for (const bad of ["4/4", "1/0", "-1/4", "1.5/4", "2", "a/b", "1/4/2", ""]) {
    assert.throws(() => parseShard(bad), ShardError, `'${bad}' accepted`);
  }
});

function resolve(flags: { shard?: string; shards?: string }, env: Record<string, string>) {
  const s = resolveShard(flags, env);
  return s && `${s.index}/${s.count}`;
}

Deno.test("Slurm job arrays: index is the task's position in the array range", () => {
  // --array=0-3
  const base = { SLURM_ARRAY_TASK_MIN: "0", SLURM_ARRAY_TASK_MAX: "3", SLURM_ARRAY_TASK_COUNT: "4" };
  assert.equal(resolve({}, { ...base, SLURM_ARRAY_TASK_ID: "2" }), "2/4");
  // --array=1-4 (1-based ids)
  const one = { SLURM_ARRAY_TASK_MIN: "1", SLURM_ARRAY_TASK_MAX: "4", SLURM_ARRAY_TASK_COUNT: "4" };
  assert.equal(resolve({}, { ...one, SLURM_ARRAY_TASK_ID: "1" }), "0/4");
  assert.equal(resolve({}, { ...one, SLURM_ARRAY_TASK_ID: "4" }), "3/4");
  // --array=0-6:2 → ids 0,2,4,6
  const strided = { ...base, SLURM_ARRAY_TASK_MAX: "6", SLURM_ARRAY_TASK_STEP: "2" };
  assert.equal(resolve({}, { ...strided, SLURM_ARRAY_TASK_ID: "4" }), "2/4");
  // Old Slurm without COUNT: MIN/MAX suffice; without MIN, COUNT with ids from 0.
  assert.equal(
    resolve({}, { SLURM_ARRAY_TASK_ID: "5", SLURM_ARRAY_TASK_MIN: "5", SLURM_ARRAY_TASK_MAX: "7" }),
    "0/3",
  );
  assert.equal(resolve({}, { SLURM_ARRAY_TASK_ID: "1", SLURM_ARRAY_TASK_COUNT: "3" }), "1/3");
  // An explicit --shard wins over the environment; --shard none opts out.
  assert.equal(resolve({ shard: "1/2" }, { ...base, SLURM_ARRAY_TASK_ID: "3" }), "1/2");
  assert.equal(resolve({ shard: "none" }, { ...base, SLURM_ARRAY_TASK_ID: "3" }), undefined);
  // With --shards N the array id is the shard index: a shard resubmitted alone (--array=2).
  const alone = { SLURM_ARRAY_TASK_ID: "2", SLURM_ARRAY_TASK_MIN: "2", SLURM_ARRAY_TASK_MAX: "2" };
  assert.equal(resolve({}, { ...alone, SLURM_ARRAY_TASK_COUNT: "1" }), "0/1");
  assert.equal(resolve({ shards: "4" }, { ...alone, SLURM_ARRAY_TASK_COUNT: "1" }), "2/4");
});

Deno.test("Slurm job arrays: inconsistent or unmappable arrays are refused with a reason", () => {
  const cases: [Record<string, string>, { shard?: string; shards?: string }, RegExp][] = [
    // --array=1,5,9: MIN 1, MAX 9, COUNT 3 is no evenly spaced range
    [
      {
        SLURM_ARRAY_TASK_ID: "5",
        SLURM_ARRAY_TASK_MIN: "1",
        SLURM_ARRAY_TASK_MAX: "9",
        SLURM_ARRAY_TASK_COUNT: "3",
      },
      {},
      /not a contiguous range/,
    ],
    [
      { SLURM_ARRAY_TASK_ID: "9", SLURM_ARRAY_TASK_MIN: "0", SLURM_ARRAY_TASK_MAX: "3" },
      {},
      /inconsistent Slurm array/,
    ],
    [
      {
        SLURM_ARRAY_TASK_ID: "1",
        SLURM_ARRAY_TASK_MIN: "0",
        SLURM_ARRAY_TASK_MAX: "6",
        SLURM_ARRAY_TASK_STEP: "4",
      },
      {},
      /evenly spaced/,
    ],
    [{ SLURM_ARRAY_TASK_ID: "1" }, {}, /cannot tell the number of shards/],
    [
      { SLURM_ARRAY_TASK_ID: "x", SLURM_ARRAY_TASK_COUNT: "2" },
      {},
      /SLURM_ARRAY_TASK_ID must be a non-negative integer/,
    ],
    [{ SLURM_ARRAY_TASK_ID: "4", SLURM_ARRAY_TASK_COUNT: "4" }, {}, /not below the shard count/],
    [{ SLURM_ARRAY_TASK_ID: "4" }, { shards: "4" }, /--array=0-3/],
    [{}, { shard: "1/2", shards: "2" }, /not both/],
    [{}, { shard: "none", shards: "2" }, /cannot be combined/],
  ];
  for (const [env, flags, re] of cases) {
    assert.throws(
      () => resolveShard(flags, env),
      (e: Error) => e instanceof ShardError && re.test(e.message),
      JSON.stringify(env),
    );
  }
});

Deno.test("Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX with --shards N", () => {
  assert.equal(resolve({ shards: "8" }, { JOB_COMPLETION_INDEX: "7" }), "7/8");
  assert.throws(() => resolveShard({}, { JOB_COMPLETION_INDEX: "1" }), /pass --shards N/);
  assert.throws(
    () => resolveShard({ shards: "2" }, { JOB_COMPLETION_INDEX: "2" }),
    /not below the shard count/,
  );
  assert.throws(() => resolveShard({ shards: "0" }, { JOB_COMPLETION_INDEX: "0" }), /at least 1/);
  // No scheduler: no shard, and --shards alone has nothing to index it.
  assert.equal(resolve({}, {}), undefined);
  assert.throws(() => resolveShard({ shards: "2" }, {}), /needs a scheduler's index/);
});

Deno.test("shard output names round-trip", () => {
  assert.equal(shardOutputPath("runs/sst2.jsonl", { index: 3, count: 16 }), "runs/sst2.shard-3-of-16.jsonl");
  assert.deepEqual(parseShardOutputPath("runs/sst2.shard-3-of-16.jsonl"), {
    out: "runs/sst2.jsonl",
    shard: { index: 3, count: 16 },
  });
  assert.equal(parseShardOutputPath("runs/sst2.jsonl"), undefined);
});
