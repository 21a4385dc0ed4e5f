/**
 * End-to-end tests of `tune`: a small square sweep into a temporary cache directory (the table,
 * the cache file, a second run served from the cache without measuring, a corrupt file rebuilt,
 * --json), a model's shapes, and flag errors. Tiny sizes and budgets: behaviour, not speed.
 */
import assert from "node:assert";
import { join } from "node:path";
import { installMatmulTuning } from "../../kernels/autotune.ts";
import { matmulTuningLookup } from "../../kernels/matmul.ts";
import { loadModel } from "../../host/files.ts";
import { tuneForModel } from "../../cli/tune.ts";
import { gpuTest } from "../helpers.ts";
import { ctx } from "../helpers.ts";
import { fixtureModel } from "../fixtures.ts";
import { runCli } from "./capture.ts";

/** The cache files in `dir`. */
function cacheFiles(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) =>
    /^matmul-tuning-[0-9a-f]{16}\.json$/.test(n)
  );
}

/** Runs `fn` with a temporary cache directory, then removes it and the table `tune` installed. */
async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "gradmm-tune-" });
  try {
    await fn(dir);
  } finally {
    installMatmulTuning(await ctx(), null);
    await Deno.remove(dir, { recursive: true });
  }
}

const SMALL = ["--matrix-sizes", "48,64", "--layouts", "nn,nt", "--budget", "0.5"];

Deno.test({
  name: "cli tune: measures squares into the cache, re-reads it without measuring, rebuilds a corrupt file",
  ...gpuTest,
  fn: () =>
    withDir(async (dir) => {
      const r = await runCli(["tune", ...SMALL, "--cache-dir", dir]);
      assert.strictEqual(r.code, 0, r.stderr);
      // 48 and 64 round up to the same class: one class per layout.
      assert.match(r.stderr, /\[1\/2\] \S+ b1 m64 n64 k64 nn vv \(64×64×64 A·B\)/);
      assert.match(r.stderr, /\[2\/2\] \S+ b1 m64 n64 k64 nt vv \(64×64×64 A·Bᵀ\)/);
      assert.match(r.stderr, /\(missing, updated\)/);
      const rows = r.stdout.split("\n").filter((l) => / m64 n64 k64 /.test(l));
      assert.strictEqual(rows.length, 2, r.stdout);
      for (const row of rows) assert.match(row, /\d+\.\d\d×\s.*tuned/);
      const files = cacheFiles(dir);
      assert.strictEqual(files.length, 1, `cache dir holds ${[...Deno.readDirSync(dir)].map((e) => e.name)}`);
      const file = join(dir, files[0]);
      const entries = JSON.parse(await Deno.readTextFile(file)).entries;
      assert.strictEqual(Object.keys(entries).length, 2);

      // Second run: served from the cache, no class measured.
      const again = await runCli(["tune", ...SMALL, "--cache-dir", dir]);
      assert.strictEqual(again.code, 0, again.stderr);
      assert.doesNotMatch(again.stderr, /\[1\/2\]/);
      assert.match(again.stderr, /\(loaded\)/);
      assert.strictEqual(again.stdout.split("\n").filter((l) => /cached \(/.test(l)).length, 2, again.stdout);

      // A corrupt file: a warning, then everything measured again and the file rewritten.
      await Deno.writeTextFile(file, "{ not json");
      const fixed = await runCli(["tune", ...SMALL, "--cache-dir", dir, "--json"]);
      assert.strictEqual(fixed.code, 0, fixed.stderr);
      assert.match(fixed.stderr, /warning: the matmul tuning cache .* is corrupt/);
      assert.match(fixed.stderr, /\(corrupt, updated\)/);
      const report = JSON.parse(fixed.stdout);
      assert.strictEqual(report.cacheStatus, "corrupt");
      const json: {
        status: string;
        gflops: number;
        speedup: number;
        tuning: unknown;
        defaultTuning: unknown;
        candidates: unknown[];
      }[] = report.classes;
      assert.deepStrictEqual(json.map((j) => j.status), ["tuned", "tuned"]);
      for (const j of json) {
        assert.ok(j.gflops > 0 && j.speedup > 0 && j.tuning && j.defaultTuning, JSON.stringify(j));
        assert.ok(j.candidates.length >= 1);
      }
      assert.strictEqual(Object.keys(JSON.parse(await Deno.readTextFile(file)).entries).length, 2);
    }),
});

Deno.test({
  name: "cli tune --model: records the model's matmul shapes and tunes their classes",
  ...gpuTest,
  fn: () =>
    withDir(async (dir) => {
      // gpt2-d128 (d = 128): its shapes are large enough to be tuned; tiny-gpt2's (d = 2) are not.
      const model = fixtureModel("gpt2-d128");
      const r = await runCli([
        "tune",
        "--model",
        model,
        "--batch",
        "4",
        "--length",
        "16",
        "--budget",
        "0.3",
        "--cache-dir",
        dir,
        "--json",
      ]);
      assert.strictEqual(r.code, 0, r.stderr);
      const m = /(\d+) distinct matmul shapes in a synth step/.exec(r.stderr);
      assert.ok(m && Number(m[1]) > 0, r.stderr);
      const json: { shape: { m: number }; status: string; message: string }[] = JSON.parse(r.stdout).classes;
      assert.ok(json.length > 0 && json.length <= Number(m[1]));
      // Only the model's shapes (no --matrix-sizes): 64 rows = batch 4 × length 16 (fewer rows would all go
      // to the skinny kernel on CPU adapters).
      assert.ok(json.some((j) => j.shape.m === 64), JSON.stringify(json.map((j) => j.shape)));
      assert.ok(json.some((j) => j.status === "tuned"), JSON.stringify(json.map((j) => j.status)));
      assert.ok(json.every((j) => ["tuned", "skipped"].includes(j.status)));
      assert.ok(json.every((j) => j.status === "tuned" || /too small to matter|skinny/.test(j.message)));
    }),
});

Deno.test({
  name:
    "tuneForModel: GRADMM_AUTOTUNE=0 does nothing, =cache only loads (the CPU default), =on measures once",
  ...gpuTest,
  fn: () =>
    withDir(async (dir) => {
      const c = await ctx();
      const model = await loadModel(c, fixtureModel("gpt2-d128"));
      const saved = Deno.env.get("GRADMM_AUTOTUNE");
      const lines: string[] = [];
      const opts = { batch: 4, length: 16, workload: "synth" as const, cacheDir: dir, budgetMs: 300 };
      const run = (mode: string | null) => {
        if (mode === null) Deno.env.delete("GRADMM_AUTOTUNE");
        else Deno.env.set("GRADMM_AUTOTUNE", mode);
        return tuneForModel(model, { ...opts, log: (l) => lines.push(l) });
      };
      try {
        assert.strictEqual(await run("0"), null);
        assert.strictEqual(matmulTuningLookup(c), undefined);
        assert.deepStrictEqual(cacheFiles(dir), []);

        const cacheOnly = await run("cache");
        assert.ok(cacheOnly);
        assert.deepStrictEqual(cacheOnly.classes, []);
        assert.deepStrictEqual(cacheFiles(dir), []);

        // Unset: CPU adapters only read the cache (measuring costs minutes of compiles), GPUs tune.
        const unset = await run(null);
        assert.ok(unset);
        if (c.isCpuAdapter) assert.deepStrictEqual(unset.classes, []);

        const first = await run("on");
        assert.ok(first && first.saved);
        assert.ok(first.classes.some((x) => x.status === "tuned"));
        assert.ok(lines.some((l) => /tuning matmul tiles for this adapter/.test(l)), lines.join("\n"));
        assert.ok(matmulTuningLookup(c), "the table is installed");

        lines.length = 0;
        const second = await run("1");
        assert.ok(second && !second.saved);
        assert.ok(second.classes.every((x) => x.status !== "tuned"));
        assert.ok(!lines.some((l) => /tuning matmul tiles/.test(l)), lines.join("\n"));
        // The model's parameters come back without gradients.
        for (const p of model.parameters().values()) assert.ok(!p.requiresGrad && p.grad === null);
      } finally {
        if (saved === undefined) Deno.env.delete("GRADMM_AUTOTUNE");
        else Deno.env.set("GRADMM_AUTOTUNE", saved);
        model.dispose();
      }
    }),
});

Deno.test({
  name: "cli tune: flag errors are one-line usage errors",
  ...gpuTest,
  fn: async () => {
    const cases: [string[], RegExp][] = [
      [["tune", "--layouts", "nx"], /--layouts takes nn, nt, tn or tt, got 'nx'/],
      [["tune", "--matrix-sizes", "0"], /--matrix-sizes must be an integer/],
      [["tune", "--matrix-sizes", ""], /nothing to tune/],
      [["tune", "--variant", "fast"], /--variant must be one of/],
      [["tune", "--workload", "pretrain", "--matrix-sizes", "8"], /--workload must be synth or finetune/],
      [["tune", "--bogus"], /unknown flag '--bogus'/],
    ];
    for (const [argv, re] of cases) {
      const r = await runCli(argv);
      assert.strictEqual(r.code, 2, `${argv.join(" ")}: ${r.stdout} ${r.stderr}`);
      assert.match(r.stderr, re);
    }
    const help = await runCli(["tune", "--help"]);
    assert.strictEqual(help.code, 0);
    assert.match(help.stdout, /GRADMM_AUTOTUNE=0/);
  },
});
