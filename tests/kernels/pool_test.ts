import assert from "node:assert";
import { BufferPool, formatBytes, MAX_FREE_PER_CLASS, sizeClass } from "../../kernels/pool.ts";
import { scope, Tensor } from "../../autograd/tensor.ts";
import { exp, mul, scale } from "../../autograd/ops/elementwise.ts";
import { backward } from "../../autograd/tape.ts";
import { ctx, gpuTest } from "../helpers.ts";

const MiB = 1 << 20;

Deno.test("sizeClass: powers of two up to 1 MiB, then eighths of the enclosing power of two", () => {
  const cases: [number, number][] = [
    [0, 16],
    [1, 16],
    [16, 16],
    [17, 32],
    [100, 128],
    [1000, 1024],
    [1024, 1024],
    [1025, 2048],
    [MiB - 1, MiB],
    [MiB, MiB],
    [MiB + 1, MiB + MiB / 8],
    [1.5 * MiB, 1.5 * MiB],
    [1.5 * MiB + 16, 1.625 * MiB],
    [100 * MiB, 104 * MiB],
  ];
  for (const [bytes, cls] of cases) assert.strictEqual(sizeClass(bytes), cls, `sizeClass(${bytes})`);
  // Never more than 12.5% waste above 1 MiB.
  for (let b = MiB + 1; b < 64 * MiB; b = Math.floor(b * 1.37)) {
    assert.ok(sizeClass(b) >= b && sizeClass(b) <= b * 1.125 + 16, `waste at ${b}`);
  }
  assert.strictEqual(formatBytes(1536), "1.50 KiB");
});

Deno.test({
  name: "pool: a released buffer is reused by the next request of its size class",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    // A private pool, so counters are not shared with other tests' tensors.
    const pool = new BufferPool(c.device, c.limits.maxBufferSize);
    const a = pool.acquire(1000);
    assert.strictEqual(a.size, 1024);
    assert.deepStrictEqual(pool.stats, {
      bytesLive: 1024,
      bytesPooled: 0,
      allocations: 1,
      reuses: 0,
      buffersLive: 1,
    });
    pool.release(a);
    assert.deepStrictEqual(pool.stats, {
      bytesLive: 0,
      bytesPooled: 1024,
      allocations: 1,
      reuses: 0,
      buffersLive: 0,
    });
    const b = pool.acquire(700); // same class
    assert.strictEqual(b, a);
    assert.strictEqual(pool.stats.reuses, 1);
    assert.strictEqual(pool.stats.allocations, 1);
    const d = pool.acquire(2000); // another class: a new buffer
    assert.notStrictEqual(d, a);
    assert.strictEqual(pool.stats.allocations, 2);
    pool.release(b);
    pool.release(b); // a double release is ignored
    pool.release(d);
    assert.deepStrictEqual(pool.stats, {
      bytesLive: 0,
      bytesPooled: 3072,
      allocations: 2,
      reuses: 1,
      buffersLive: 0,
    });
    pool.trim();
    assert.strictEqual(pool.stats.bytesPooled, 0);
  },
});

Deno.test({
  name:
    "pool: at most MAX_FREE_PER_CLASS free buffers are kept per size class; oversized requests fail clearly",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const pool = new BufferPool(c.device, c.limits.maxBufferSize);
    const bufs = Array.from({ length: MAX_FREE_PER_CLASS + 8 }, () => pool.acquire(48));
    for (const b of bufs) pool.release(b);
    assert.strictEqual(pool.stats.bytesPooled, MAX_FREE_PER_CLASS * 64);
    assert.strictEqual(pool.stats.buffersLive, 0);
    pool.trim();
    // A pool with a 1 MiB maximum: the check is the pool's, whatever the adapter allows.
    const small = new BufferPool(c.device, MiB);
    assert.throws(
      () => small.acquire(MiB + 1, "huge"),
      (e: Error) => e instanceof RangeError && /huge needs .*maximum buffer size/.test(e.message),
    );
  },
});

Deno.test({
  name: "pool: bytesLive returns to its starting value after a scope closes (and the batch is submitted)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const w = Tensor.from(c, [1, 2, 3, 4, 5, 6, 7], [7], { requiresGrad: true });
    c.flush();
    const start = c.pool.stats;
    for (let round = 0; round < 3; round++) {
      await scope(c, async () => {
        const y = mul(exp(scale(w, 0.1)), w);
        backward(y);
        await y.read();
        w.zeroGrad();
      });
      // Disposed buffers go back to the pool once the batch that may still read them is submitted.
      c.flush();
      assert.strictEqual(c.pool.stats.bytesLive, start.bytesLive, `round ${round}`);
      assert.strictEqual(c.pool.stats.buffersLive, start.buffersLive);
    }
    // Rounds after the first are served from the pool.
    const end = c.pool.stats;
    assert.ok(end.reuses > start.reuses);
    w.dispose();
  },
});
