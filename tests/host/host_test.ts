/**
 * The host layer's own pieces: the one atomic write, and the autotuner's injected cache (the
 * platform-neutral store interface of kernels/autotune.ts, and the folder store of host/).
 */
import assert from "node:assert";
import { join } from "node:path";
import { writeFileAtomic } from "../../host/atomic.ts";
import { cacheKey as hostCacheKey, folderTuningStore } from "../../host/autotune.ts";
import {
  autotune,
  cacheKey,
  installMatmulTuning,
  loadMatmulTuning,
  type TuningStore,
} from "../../kernels/autotune.ts";
import { defaultMatmulVariant, type MatmulDims, type MatmulTuning } from "../../kernels/matmul.ts";
import { ctx, gpuTest } from "../helpers.ts";

/** Parts whose producer fails after the first one. */
function* failingParts(): Generator<Uint8Array> {
  yield new TextEncoder().encode("partial");
  throw new Error("source failed");
}

Deno.test("writeFileAtomic: text, bytes and parts replace the file whole; a failure leaves nothing behind", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "out.txt");
    await writeFileAtomic(path, "first\n");
    assert.strictEqual(await Deno.readTextFile(path), "first\n");
    await writeFileAtomic(path, new TextEncoder().encode("second"));
    assert.strictEqual(await Deno.readTextFile(path), "second");
    const parts = ["a", "bc", "", "def"].map((s) => new TextEncoder().encode(s));
    await writeFileAtomic(path, parts);
    assert.strictEqual(await Deno.readTextFile(path), "abcdef");
    // A part that throws midway: the old file stays, and no temporary file is left.
    await assert.rejects(() => writeFileAtomic(path, failingParts()), /source failed/);
    assert.strictEqual(await Deno.readTextFile(path), "abcdef");
    await assert.rejects(() => writeFileAtomic(join(dir, "missing", "x.txt"), "x"), Deno.errors.NotFound);
    assert.deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["out.txt"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A {@link TuningStore} in a Map, as a page would keep one (e.g. over localStorage). */
function memoryStore(): TuningStore & { entries: Map<string, string> } {
  const entries = new Map<string, string>();
  return {
    entries,
    locate: (name) => `memory:${name}`,
    read: (name) => Promise.resolve(entries.get(name) ?? null),
    write: (name, text) => {
      entries.set(name, text);
      return Promise.resolve();
    },
  };
}

const SHAPE: MatmulDims = { batch: 1, m: 64, n: 96, k: 40 };

Deno.test({
  name: "autotune without a host: an injected store and runtime, wall-clock ranking without a CPU clock",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const variant = defaultMatmulVariant(c);
    const other: MatmulTuning = variant === "blocked"
      ? { tm: 4, tn: 4, wgx: 16, wgy: 16, bk: 8 }
      : { tm: 8, tn: 16, wgx: 2, wgy: 4, bk: 4 };
    const store = memoryStore();
    const runtime = { backend: "test-backend", version: "test-1" };
    try {
      const r = await autotune(c, [SHAPE], { store, runtime, candidates: [other], budgetMs: 300 });
      assert.strictEqual(r.cacheStatus, "missing");
      assert.ok(r.saved);
      assert.deepStrictEqual(r.classes.map((x) => x.status), ["tuned"]);
      assert.strictEqual(r.classes[0].entry!.clock, "wall", "no cpuTime given: ranked by wall time");
      assert.strictEqual(store.entries.size, 1);
      const [name, text] = [...store.entries][0];
      assert.match(name, /^matmul-tuning-[0-9a-f]{16}\.json$/);
      assert.strictEqual(r.file, `memory:${name}`);
      const data = JSON.parse(text);
      assert.deepStrictEqual(data.key, await cacheKey(c, runtime));
      assert.strictEqual(data.key.backend, "test-backend");
      assert.strictEqual(data.key.deno, "test-1");

      // Read back from the same store: installed without measuring.
      installMatmulTuning(c, null);
      const loaded = await loadMatmulTuning(c, { store, runtime });
      assert.strictEqual(loaded.status, "loaded");
      assert.deepStrictEqual(loaded.table.entries.get(r.classes[0].cls), r.classes[0].entry);
      // Another runtime has another entry name: nothing there yet.
      const elsewhere = await loadMatmulTuning(c, { store, runtime: { ...runtime, version: "test-2" } });
      assert.strictEqual(elsewhere.status, "missing");
      // No store: nothing persists, nothing is read.
      const none = await loadMatmulTuning(c, {});
      assert.strictEqual(none.status, "none");
      assert.strictEqual(none.file, null);
    } finally {
      installMatmulTuning(c, null);
    }
  },
});

Deno.test({
  name: "host autotune cache: files in a folder, keyed by this Deno",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const key = await hostCacheKey(c);
    assert.strictEqual(key.deno, Deno.version.deno);
    assert.strictEqual(key.backend, Deno.env.get("DENO_WEBGPU_BACKEND") ?? "");
    const dir = await Deno.makeTempDir();
    try {
      const store = folderTuningStore(join(dir, "sub"));
      assert.strictEqual(await store.read("x.json"), null, "a missing folder reads as empty");
      await store.write("x.json", "{}\n");
      assert.strictEqual(await store.read("x.json"), "{}\n");
      assert.strictEqual(store.locate("x.json"), join(dir, "sub", "x.json"));
      assert.deepStrictEqual([...Deno.readDirSync(join(dir, "sub"))].map((e) => e.name), ["x.json"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
