/**
 * Host memory of repeated matmul launches. On Mesa 22.3's lavapipe a vec4 kernel that read K from
 * a uniform was recompiled at every dispatch with the value folded in, and the variants were never
 * freed: ~1.4 MB per launch of Aᵀ·B at 128×128×64 (see `VEC4_PARAM_SPACE` in kernels/matmul.ts).
 * On other adapters the check passes trivially; it exists for the CPU adapters that CI runs on.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { matmulKernel, matmulWgsl, VEC4_LARGE_TUNING, VEC4_TUNING } from "../../kernels/matmul.ts";
import { ctx, gpuTest } from "../helpers.ts";

/** Resident set size of this process in MiB. */
const rssMiB = () => Deno.memoryUsage().rss / 2 ** 20;

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
      for (let i = 0; i < 80; i++) await launch();
      const grown = rssMiB() - before;
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

Deno.test("matmul: every vec4 tiling reads its parameters from storage, the other variants from a uniform", () => {
  for (const tuning of [VEC4_TUNING, VEC4_LARGE_TUNING, { tm: 16, tn: 16, wgx: 2, wgy: 4, bk: 4 }]) {
    const wgsl = matmulWgsl("vec4", { transA: true, vecA: true, vecB: true }, tuning);
    assertEquals([wgsl.includes("var<storage, read> params: P;"), wgsl.includes("var<uniform>")], [
      true,
      false,
    ]);
  }
  const blocked = matmulWgsl("blocked", { vecA: true, vecB: true });
  assertEquals([blocked.includes("var<uniform> p: P;"), blocked.includes("params")], [true, false]);
});
