import assert from "node:assert";
import { GpuContext } from "../../kernels/device.ts";
import { formatGpuTime, GpuTimer, summarizeTimestamps } from "../../kernels/timing.ts";
import { ctx, gpuTest } from "../helpers.ts";

/** A kernel whose every thread spins for a while, so a dispatch takes measurable GPU time. */
const SPIN_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> b: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) {
  var s = b[g.x];
  for (var i = 0u; i < 2000u; i++) { s = s * 1.0001 + 0.5; }
  b[g.x] = s;
}`;

function spinner(
  c: GpuContext,
): { run: (dispatches: number, passPerDispatch: boolean) => void; free: () => Promise<void> } {
  const buffer = c.device.createBuffer({ size: 4 * 64 * 64, usage: GPUBufferUsage.STORAGE });
  const pipeline = c.pipeline(SPIN_WGSL);
  return {
    run(dispatches, passPerDispatch) {
      for (let i = 0; i < dispatches; i++) {
        c.dispatch(pipeline, [buffer], null, [64]);
        if (passPerDispatch) c.endPass();
      }
    },
    // After the batch that uses it ran: a submit naming a destroyed buffer panics Deno 2.9.6.
    free: async () => {
      await c.sync();
      buffer.destroy();
    },
  };
}

Deno.test({
  name: "GpuTimer: 20 dispatches of a kernel measure more GPU time than one",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    if (!c.features.has("timestamp-query")) {
      console.log(`  skipped: ${c.adapterName} has no timestamp-query`);
      return;
    }
    const spin = spinner(c);
    const timer = new GpuTimer(c);
    try {
      spin.run(1, false); // compile outside the timed regions
      await c.sync();
      const measure = async (n: number) => {
        timer.begin();
        spin.run(n, false);
        timer.end();
        const t = await timer.read();
        assert.ok(t, "a device with timestamp-query returns a time");
        assert.strictEqual(t.problem, null, `timestamps look wrong: ${t.problem}`);
        assert.strictEqual(t.passes, 1, "the dispatches of a region share one pass");
        return t;
      };
      const one = await measure(1);
      const twenty = await measure(20);
      assert.ok(one.sumMs > 0, "one dispatch takes some GPU time");
      // Loose: 20× the work, at least 4× the time, whatever the adapter's clock or noise.
      assert.ok(
        twenty.sumMs > 4 * one.sumMs,
        `20 dispatches ${twenty.sumMs} ms vs 1 dispatch ${one.sumMs} ms`,
      );
      assert.ok(twenty.spanMs >= twenty.sumMs * 0.999, "the span of one pass is its duration");
      // Nothing is recorded outside a region.
      spin.run(3, false);
      assert.deepStrictEqual(await timer.read(), {
        passes: 0,
        untimed: 0,
        sumMs: 0,
        spanMs: 0,
        problem: null,
      });
    } finally {
      timer.dispose();
      await spin.free();
    }
  },
});

Deno.test({
  name: "GpuTimer: regions with more passes than one query set grow into new sets, then stop timing",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    if (!c.features.has("timestamp-query")) return;
    const spin = spinner(c);
    const timer = new GpuTimer(c, { chunk: 8, maxChunks: 3 });
    try {
      // Two regions before one read: 5 + 6 passes, 4 per query set.
      timer.begin();
      spin.run(5, true);
      timer.end();
      c.flush(); // regions may span submits
      timer.begin();
      spin.run(6, true);
      timer.end();
      const t = await timer.read();
      assert.ok(t);
      assert.strictEqual(t.passes, 11);
      assert.strictEqual(t.untimed, 0);
      assert.strictEqual(t.problem, null, `${t.problem}`);
      assert.ok(t.spanMs >= t.sumMs * 0.999, `span ${t.spanMs} < sum ${t.sumMs}`);
      // Past 3 sets (12 passes) the rest are counted, not timed.
      timer.begin();
      spin.run(15, true);
      timer.end();
      const over = await timer.read();
      assert.ok(over);
      assert.strictEqual(over.passes, 12);
      assert.strictEqual(over.untimed, 3);
      assert.strictEqual(c.passTimestamps, null, "end() uninstalls the hook");
    } finally {
      timer.dispose();
      await spin.free();
    }
  },
});

Deno.test({
  name: "GpuTimer: misuse is reported, and one timer at a time per context",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    if (!c.features.has("timestamp-query")) return;
    const a = new GpuTimer(c);
    const b = new GpuTimer(c);
    try {
      assert.throws(() => a.end(), /not running/);
      a.begin();
      assert.throws(() => a.begin(), /already running/);
      assert.throws(() => b.begin(), /another timer/);
      await assert.rejects(() => a.read(), /end\(\) the region/);
      a.end();
      assert.throws(() => new GpuTimer(c, { chunk: 5 }), RangeError);
    } finally {
      a.dispose();
      b.dispose();
    }
  },
});

Deno.test({
  name: "GpuTimer: without timestamp-query it is inert and reads null",
  ...gpuTest,
  fn: async () => {
    const real = await ctx();
    // The same device seen through a context whose features lack timestamp-query.
    const c = new GpuContext(real.device, real.adapter, real.limits, new Set(["shader-f16"]));
    const spin = spinner(c);
    const timer = new GpuTimer(c);
    try {
      assert.strictEqual(timer.available, false);
      timer.begin();
      assert.strictEqual(c.passTimestamps, null, "no hook is installed");
      spin.run(2, false);
      timer.end();
      const t = await timer.read();
      assert.strictEqual(t, null);
      assert.strictEqual(formatGpuTime(t), "n/a");
      await c.sync();
    } finally {
      timer.dispose();
      await spin.free();
    }
  },
});

Deno.test("summarizeTimestamps: sums pass durations, spans first to last, flags meaningless values", () => {
  const ok = summarizeTimestamps(new BigUint64Array([1000n, 3000n, 5000n, 6000n].map(BigInt)));
  assert.deepStrictEqual(ok, { passes: 2, sumMs: 0.003, spanMs: 0.005, problem: null });
  assert.strictEqual(formatGpuTime({ ...ok, untimed: 0 }), "0.003");
  const zero = summarizeTimestamps(new BigUint64Array(4));
  assert.match(zero.problem ?? "", /only zero/);
  assert.strictEqual(formatGpuTime({ ...zero, untimed: 0 }), "n/a");
  assert.match(summarizeTimestamps(new BigUint64Array([5n, 2n])).problem ?? "", /end before/);
  assert.match(summarizeTimestamps(new BigUint64Array([7n, 7n, 9n, 9n])).problem ?? "", /0 ns/);
  assert.match(summarizeTimestamps(new BigUint64Array([7n, 8n, 0n, 0n])).problem ?? "", /1 of 2 passes/);
  assert.strictEqual(summarizeTimestamps(new BigUint64Array(0)).passes, 0);
});
