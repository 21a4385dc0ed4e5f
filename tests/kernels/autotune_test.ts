/**
 * The matmul autotuner (kernels/autotune.ts): shape classes, the candidates, the cache file (round
 * trip, corrupt and invalid files, the key), rejection of wrong kernels, and `matmulKernel` taking
 * its tuning from the installed table. Measurements run on tiny shapes with small budgets and one
 * or two candidates: these tests check behaviour, never speed.
 */
import assert from "node:assert";
import { join } from "node:path";
import {
  installMatmulTuning,
  matmulCandidates,
  type MatmulLauncher,
  matmulShapeClass,
  MatmulTuningTable,
  recordMatmulShapes,
  type TunedEntry,
} from "../../kernels/autotune.ts";
import { autotune, autotuneMode, cacheFile, cacheKey, loadMatmulTuning } from "../../host/autotune.ts";
import {
  defaultMatmulVariant,
  defaultTuning,
  type MatmulDims,
  matmulKernel,
  type MatmulTuning,
  matmulTuningLookup,
  type MatmulVariant,
  matmulWgsl,
  vec4Operands,
} from "../../kernels/matmul.ts";
import type { GpuContext } from "../../kernels/device.ts";
import { Tensor } from "../../autograd/tensor.ts";
import { ctx, gpuTest } from "../helpers.ts";

/** A small product that runs on the tile kernels on every adapter (not the skinny path). */
const SHAPE: MatmulDims = { batch: 1, m: 64, n: 96, k: 40 };

const tune = (tm: number, tn: number, wgx: number, wgy: number, bk = 4): MatmulTuning => ({
  tm,
  tn,
  wgx,
  wgy,
  bk,
});

/** A tuning other than the default, valid for the adapter's default variant. */
function otherTuning(variant: MatmulVariant): MatmulTuning {
  return variant === "blocked" ? tune(4, 4, 16, 16, 8) : tune(8, 16, 2, 4);
}

/** Runs `fn` with a fresh temporary cache directory, removed afterwards; restores the lookup. */
async function withCache(c: GpuContext, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "gradmm-autotune-" });
  const previous = matmulTuningLookup(c);
  try {
    await fn(dir);
  } finally {
    installMatmulTuning(c, null);
    if (previous) {
      // Put back whatever another test installed.
      const { setMatmulTuningLookup } = await import("../../kernels/matmul.ts");
      setMatmulTuningLookup(c, previous);
    }
    await Deno.remove(dir, { recursive: true });
  }
}

/** Counts launches per tuning, then launches the real kernel. */
function countingLauncher(counts: Map<string, number>): MatmulLauncher {
  return (c, a, b, out, dims, variant, tuning) => {
    const key = JSON.stringify(tuning);
    counts.set(key, (counts.get(key) ?? 0) + 1);
    matmulKernel(c, a, b, out, dims, { variant, tuning });
  };
}

Deno.test("autotune: shape classes round sizes up to powers of two and keep layout and vec4 loads apart", () => {
  const cls = (d: Partial<MatmulDims>) =>
    matmulShapeClass("vec4", { batch: 1, m: 330, n: 1024, k: 256, ...d });
  assert.strictEqual(cls({}), "vec4 b1 m512 n1024 k256 nn vv");
  // The same class for every size in (256, 512]: the x-step's 320 and 330 rows share an entry.
  assert.strictEqual(cls({ m: 257 }), cls({ m: 512 }));
  assert.notStrictEqual(cls({ m: 256 }), cls({ m: 257 }));
  assert.notStrictEqual(cls({ m: 512 }), cls({ m: 513 }));
  assert.strictEqual(cls({ transB: true }), "vec4 b1 m512 n1024 k256 nt vv");
  // A stored [K, M] is contiguous along M = 330, not a multiple of 4: scalar loads.
  assert.strictEqual(cls({ transA: true, transB: true }), "vec4 b1 m512 n1024 k256 tt sv");
  assert.strictEqual(cls({ m: 332, transA: true, transB: true }), "vec4 b1 m512 n1024 k256 tt vv");
  // K = 257 is not a multiple of 4: A (row-major, contiguous along K) is read as scalars.
  assert.strictEqual(cls({ k: 257 }), "vec4 b1 m512 n1024 k512 nn sv");
  assert.strictEqual(cls({ batch: 12 }), "vec4 b16 m512 n1024 k256 nn vv");
  assert.strictEqual(
    matmulShapeClass("blocked", { batch: 1, m: 1, n: 1, k: 1 }),
    "blocked b1 m1 n1 k1 nn ss",
  );
});

Deno.test({
  name: "autotune: candidates start with the default, fit the adapter, and big tiles need vec4 loads",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const big: MatmulDims = { batch: 1, m: 1024, n: 1024, k: 1024 };
    const list = matmulCandidates(c, "vec4", big);
    assert.deepStrictEqual(list[0], defaultTuning("vec4", big));
    assert.ok(list.some((t) => t.tm * t.tn > 144), "large products get large tiles");
    for (const t of list) assert.ok(t.wgx * t.wgy <= c.limits.maxComputeInvocationsPerWorkgroup);
    const keys = list.map((t) => JSON.stringify(t));
    assert.strictEqual(new Set(keys).size, keys.length, "no duplicates");
    // K odd: A falls back to scalar loads, whose large tiles take tens of seconds to compile.
    const scalar = matmulCandidates(c, "vec4", { ...big, k: 1023 });
    assert.ok(scalar.every((t) => t.tm * t.tn <= 144), JSON.stringify(scalar));
    // Tiles far taller than C are pointless for a 16-row product.
    const short = matmulCandidates(c, "vec4", { batch: 1, m: 16, n: 1024, k: 1024 });
    assert.ok(short.slice(1).every((t) => t.tm * t.wgy <= 48), JSON.stringify(short));
    assert.deepStrictEqual(matmulCandidates(c, "naive", big), [defaultTuning("naive", big)]);
  },
});

Deno.test({
  name: "autotune: measures, writes the cache, then reads it back without measuring again",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const variant = defaultMatmulVariant(c);
    const other = otherTuning(variant);
    await withCache(c, async (dir) => {
      const counts = new Map<string, number>();
      const shapes = [SHAPE, { ...SHAPE, m: 50 }, { ...SHAPE, transB: true }];
      const r = await autotune(c, shapes, {
        cacheDir: dir,
        candidates: [other],
        // Generous: on a loaded CPU one compile can pass half of a 1 s budget, and the candidate
        // would then be skipped as out of time (timing stops after 9 rounds anyway).
        budgetMs: 10_000,
        launcher: countingLauncher(counts),
      });
      assert.strictEqual(r.cacheStatus, "missing");
      assert.ok(r.saved);
      assert.deepStrictEqual(r.warnings, []);
      // Two classes: m = 50 and m = 64 share one, the transposed B is another.
      assert.deepStrictEqual(r.classes.map((x) => x.status), ["tuned", "tuned"]);
      const first = r.classes[0];
      // The class is measured on its largest shape.
      assert.strictEqual(first.entry!.shape.m, 64);
      assert.deepStrictEqual(first.candidates.map((x) => x.status), ["ok", "ok"]);
      for (const x of r.classes) {
        assert.ok(x.entry!.gflops > 0 && x.entry!.defaultGflops > 0 && x.entry!.speedup > 0);
        assert.ok([JSON.stringify(other), JSON.stringify(defaultTuning(variant, SHAPE))].includes(
          JSON.stringify(x.entry!.tuning),
        ));
      }
      assert.ok((counts.get(JSON.stringify(other)) ?? 0) >= 3, "the candidate ran in every round");

      const file = await cacheFile(c, dir);
      assert.strictEqual(r.file, file);
      const data = JSON.parse(await Deno.readTextFile(file));
      assert.deepStrictEqual(data.key, await cacheKey(c));
      assert.deepStrictEqual(Object.keys(data.entries).sort(), r.classes.map((x) => x.cls).sort());
      assert.deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), [file.split("/").pop()]);

      // Second run: everything from the cache, nothing launched.
      counts.clear();
      const again = await autotune(c, shapes, { cacheDir: dir, launcher: countingLauncher(counts) });
      assert.strictEqual(again.cacheStatus, "loaded");
      assert.strictEqual(again.saved, false);
      assert.deepStrictEqual(again.classes.map((x) => x.status), ["cached", "cached"]);
      assert.strictEqual(counts.size, 0);
      assert.deepStrictEqual(again.classes[0].entry, first.entry);

      // loadMatmulTuning alone installs the same table.
      installMatmulTuning(c, null);
      const loaded = await loadMatmulTuning(c, { cacheDir: dir });
      assert.strictEqual(loaded.status, "loaded");
      assert.deepStrictEqual(matmulTuningLookup(c)?.(variant, SHAPE), first.entry!.tuning);

      // --retune measures again.
      const re = await autotune(c, [SHAPE], {
        cacheDir: dir,
        retune: true,
        candidates: [other],
        budgetMs: 500,
      });
      assert.deepStrictEqual(re.classes.map((x) => x.status), ["tuned"]);
    });
  },
});

Deno.test({
  name: "autotune: a corrupt or invalid cache file is reported, ignored and rebuilt",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const other = otherTuning(defaultMatmulVariant(c));
    await withCache(c, async (dir) => {
      const file = await cacheFile(c, dir);
      await Deno.writeTextFile(file, '{"format": "gradmm-ts matmul tuning", "entries": {"x": ');
      const warnings: string[] = [];
      const r = await autotune(c, [SHAPE], {
        cacheDir: dir,
        candidates: [other],
        budgetMs: 500,
        onWarning: (w) => warnings.push(w),
      });
      assert.strictEqual(r.cacheStatus, "corrupt");
      assert.strictEqual(warnings.length, 1);
      assert.match(warnings[0], /corrupt.*rebuilt/);
      assert.deepStrictEqual(r.warnings, warnings);
      assert.deepStrictEqual(r.classes.map((x) => x.status), ["tuned"]);
      const rebuilt = JSON.parse(await Deno.readTextFile(file));
      assert.strictEqual(Object.keys(rebuilt.entries).length, 1);

      // An entry with an impossible tuning is dropped (and that class measured again); the
      // valid one next to it is kept.
      const cls = r.classes[0].cls;
      const entry: TunedEntry = rebuilt.entries[cls];
      const bad = { ...entry, tuning: { ...entry.tuning, tm: 5 } };
      const otherShape = { ...SHAPE, transA: true };
      const otherCls = matmulShapeClass(entry.variant, otherShape);
      rebuilt.entries[otherCls] = { ...entry, shape: otherShape };
      rebuilt.entries[cls] = bad;
      await Deno.writeTextFile(file, JSON.stringify(rebuilt));
      const w2: string[] = [];
      const r2 = await autotune(c, [SHAPE, otherShape], {
        cacheDir: dir,
        candidates: [other],
        budgetMs: 500,
        onWarning: (w) => w2.push(w),
      });
      assert.strictEqual(r2.cacheStatus, "loaded");
      assert.strictEqual(w2.length, 1);
      assert.match(w2[0], /dropping entry.*multiples of 4/);
      assert.deepStrictEqual(r2.classes.map((x) => x.status), ["tuned", "cached"]);

      // A file of another key (e.g. copied from another machine) is stale: not used, no warning.
      const stale = JSON.parse(await Deno.readTextFile(file));
      stale.key.adapter = "some other adapter";
      await Deno.writeTextFile(file, JSON.stringify(stale));
      const r3 = await autotune(c, [SHAPE], { cacheDir: dir, measure: false });
      assert.strictEqual(r3.cacheStatus, "stale");
      assert.deepStrictEqual(r3.warnings, []);
      assert.strictEqual(r3.table.entries.size, 0);

      // A cache path that cannot be written (a file where the directory should be) is a warning.
      const blocked = join(dir, "not-a-dir");
      await Deno.writeTextFile(blocked, "");
      const r4 = await autotune(c, [SHAPE], { cacheDir: blocked, candidates: [other], budgetMs: 500 });
      assert.strictEqual(r4.saved, false);
      assert.ok(r4.warnings.some((w) => /cannot (read|write)/.test(w)), JSON.stringify(r4.warnings));
      assert.deepStrictEqual(r4.classes.map((x) => x.status), ["tuned"]);
    });
  },
});

Deno.test({
  name:
    "autotune: a candidate whose output is wrong is rejected, however fast; a wrong default tunes nothing",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const variant = defaultMatmulVariant(c);
    const def = defaultTuning(variant, SHAPE);
    const lazy = otherTuning(variant);
    const offByOne = variant === "blocked" ? tune(8, 8, 16, 8, 16) : tune(8, 8, 2, 4);
    const launcher: MatmulLauncher = (cx, a, b, out, dims, v, tuning) => {
      // `lazy` launches nothing (the fastest of all); `offByOne` drops the last term of each sum.
      if (JSON.stringify(tuning) === JSON.stringify(lazy)) return;
      const d = JSON.stringify(tuning) === JSON.stringify(offByOne) ? { ...dims, k: dims.k - 1 } : dims;
      matmulKernel(cx, a, b, out, d, { variant: v, tuning });
    };
    await withCache(c, async (dir) => {
      const r = await autotune(c, [SHAPE], {
        cacheDir: dir,
        candidates: [lazy, offByOne],
        budgetMs: 10_000, // generous, as above: the candidates must not be skipped for time
        launcher,
      });
      const [cls] = r.classes;
      assert.strictEqual(cls.status, "tuned");
      assert.deepStrictEqual(cls.candidates.map((x) => x.status), ["ok", "wrong", "wrong"]);
      assert.deepStrictEqual(cls.entry!.tuning, def);
      assert.strictEqual(cls.entry!.speedup, 1);

      // When the default itself is wrong there is nothing to compare with: no entry at all.
      const broken: MatmulLauncher = (cx, a, b, out, dims, v, tuning) =>
        matmulKernel(cx, a, b, out, { ...dims, k: dims.k - 1 }, { variant: v, tuning });
      const r2 = await autotune(c, [{ ...SHAPE, transB: true }], {
        cacheDir: dir,
        candidates: [lazy],
        launcher: broken,
      });
      assert.strictEqual(r2.classes[0].status, "skipped");
      assert.match(r2.classes[0].message!, /default kernel disagrees with a float64 product/);
      assert.strictEqual(r2.classes[0].entry, undefined);
    });
  },
});

Deno.test({
  name: "autotune: matmulKernel compiles the installed tuning for its class, the default elsewhere",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const variant = defaultMatmulVariant(c);
    const chosen = otherTuning(variant);
    const table = new MatmulTuningTable();
    table.entries.set(matmulShapeClass(variant, SHAPE), {
      variant,
      tuning: chosen,
      defaultTuning: defaultTuning(variant, SHAPE),
      gflops: 2,
      defaultGflops: 1,
      wallGflops: 2,
      speedup: 2,
      clock: "wall",
      compileMs: null,
      shape: SHAPE,
      measuredAt: new Date().toISOString(),
    });
    const sources: string[] = [];
    const pipeline = c.pipeline.bind(c);
    c.pipeline = (code: string, entry?: string) => {
      sources.push(code);
      return pipeline(code, entry);
    };
    const a = Tensor.from(c, new Float32Array(128 * 128), [128, 128]);
    const b = Tensor.from(c, new Float32Array(128 * 128), [128, 128]);
    const out = Tensor.empty(c, [128, 128]);
    const wgsl = (dims: MatmulDims, t: MatmulTuning) => {
      const v = vec4Operands(dims);
      return matmulWgsl(variant, { vecA: v.vecA, vecB: v.vecB && t.tn % 4 === 0 }, t);
    };
    const previous = matmulTuningLookup(c);
    try {
      installMatmulTuning(c, table);
      const launch = (dims: MatmulDims, tuning?: MatmulTuning) => {
        sources.length = 0;
        matmulKernel(c, a.buffer, b.buffer, out.buffer, dims, tuning ? { variant, tuning } : {});
        return sources[0];
      };
      // In the class (m = 50 rounds up to 64 like SHAPE's 64): the table's tuning.
      const inClass = { ...SHAPE, m: 50 };
      assert.strictEqual(launch(inClass), wgsl(inClass, chosen));
      // Another class (m = 100): the static default.
      const outside = { ...SHAPE, m: 100 };
      assert.strictEqual(launch(outside), wgsl(outside, defaultTuning(variant, outside)));
      // A launch's own tuning wins over the table.
      const own = variant === "blocked" ? tune(8, 8, 8, 8, 32) : tune(16, 8, 2, 4);
      assert.strictEqual(launch(inClass, own), wgsl(inClass, own));
      // Removed: back to the default.
      installMatmulTuning(c, null);
      assert.strictEqual(launch(inClass), wgsl(inClass, defaultTuning(variant, inClass)));
      await c.sync();
    } finally {
      c.pipeline = pipeline;
      installMatmulTuning(c, null);
      if (previous) (await import("../../kernels/matmul.ts")).setMatmulTuningLookup(c, previous);
      for (const t of [a, b, out]) t.dispose();
    }
  },
});

Deno.test({
  name: "autotune: recordMatmulShapes lists each distinct shape once and restores the lookup",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const a = Tensor.from(c, new Float32Array(128 * 128), [128, 128]);
    const b = Tensor.from(c, new Float32Array(128 * 128), [128, 128]);
    const out = Tensor.empty(c, [128, 128]);
    const sentinel = () => undefined;
    const { setMatmulTuningLookup } = await import("../../kernels/matmul.ts");
    const previous = matmulTuningLookup(c);
    setMatmulTuningLookup(c, sentinel);
    try {
      const { result, shapes } = await recordMatmulShapes(c, async () => {
        for (const dims of [SHAPE, SHAPE, { ...SHAPE, transB: true }]) {
          matmulKernel(c, a.buffer, b.buffer, out.buffer, dims);
        }
        await c.sync();
        return 7;
      });
      assert.strictEqual(result, 7);
      assert.deepStrictEqual(shapes, [
        { ...SHAPE, transA: false, transB: false, strideA: 64 * 40, strideB: 40 * 96 },
        { ...SHAPE, transA: false, transB: true, strideA: 64 * 40, strideB: 40 * 96 },
      ]);
      assert.strictEqual(matmulTuningLookup(c), sentinel);
    } finally {
      setMatmulTuningLookup(c, previous ?? null);
      for (const t of [a, b, out]) t.dispose();
    }
  },
});

Deno.test("autotune: GRADMM_AUTOTUNE selects off, cache-only or on", () => {
  const saved = Deno.env.get("GRADMM_AUTOTUNE");
  try {
    const mode = (v: string | null) => {
      if (v === null) Deno.env.delete("GRADMM_AUTOTUNE");
      else Deno.env.set("GRADMM_AUTOTUNE", v);
      return autotuneMode();
    };
    assert.strictEqual(mode(null), "on");
    assert.strictEqual(autotuneMode("cache"), "cache", "unset: the caller's fallback");
    assert.strictEqual(mode("on"), "on");
    assert.strictEqual(mode("1"), "on");
    assert.strictEqual(mode("0"), "off");
    assert.strictEqual(mode("off"), "off");
    assert.strictEqual(mode("cache"), "cache");
  } finally {
    if (saved === undefined) Deno.env.delete("GRADMM_AUTOTUNE");
    else Deno.env.set("GRADMM_AUTOTUNE", saved);
  }
});
