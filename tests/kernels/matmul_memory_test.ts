/**
 * Host memory of repeated matmul launches. On Mesa 22.3's lavapipe a vec4 kernel that read K from
 * a uniform was recompiled at every dispatch with the value folded in, and the variants were never
 * freed: ~1.4 MB per launch of Aᵀ·B at 128×128×64 (see `vec4ParamSpace` in kernels/matmul.ts).
 * On other adapters the check passes trivially; it exists for the CPU adapters that CI runs on.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { matmulKernel, matmulWgsl, VEC4_LARGE_TUNING, VEC4_TUNING } from "../../kernels/matmul.ts";
import { ctx, gpuTest } from "../helpers.ts";

/** Resident set size of this process in MiB (Linux), or null where /proc is missing. */
function rssMiB(): number | null {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const kb = status.match(/VmRSS:\s+(\d+)/);
    return kb ? Number(kb[1]) / 1024 : null;
  } catch {
    return null;
  }
}

Deno.test({
  name: "matmul: 80 launches of Aᵀ·B (each its own submit) do not grow host memory",
  ...gpuTest,
  async fn() {
    const c = await ctx();
    const [m, n, k] = [128, 128, 64];
    const a = c.pool.acquire(m * k * 4), b = c.pool.acquire(k * n * 4), out = c.pool.acquire(m * n * 4);
    try {
      const launch = async () => {
        matmulKernel(c, a, b, out, { batch: 1, m, n, k, transA: true });
        await c.sync();
      };
      for (let i = 0; i < 5; i++) await launch(); // compile, warm the pool and the driver
      const before = rssMiB();
      if (before === null) return; // no /proc: nothing to measure on this system
      for (let i = 0; i < 80; i++) await launch();
      const grown = rssMiB()! - before;
      // Before the fix: ~110 MiB on lavapipe. A few MiB of allocator noise are normal.
      assert(
        grown < 30,
        `host memory grew by ${grown.toFixed(1)} MiB over 80 launches on ${c.adapter.description}`,
      );
    } finally {
      for (const buf of [a, b, out]) c.pool.release(buf);
    }
  },
});

Deno.test("matmul: the 12×12 vec4 kernel reads its parameters from storage, larger tiles from a uniform", () => {
  const small = matmulWgsl("vec4", { transA: true, vecA: true, vecB: true }, VEC4_TUNING);
  const large = matmulWgsl("vec4", { vecA: true, vecB: true }, VEC4_LARGE_TUNING);
  assertEquals([small.includes("var<storage, read> params: P;"), small.includes("var<uniform>")], [
    true,
    false,
  ]);
  assertEquals([large.includes("var<uniform> p: P;"), large.includes("params")], [true, false]);
});
