/**
 * The pool's out-of-memory path and peak counter, on a stand-in device whose allocations fail
 * past a budget (a real GPU cannot be made to run out of memory on demand in a test).
 */
import assert from "node:assert/strict";
import { BufferPool, GpuOutOfMemoryError } from "../../kernels/pool.ts";

/** A device stand-in: `createBuffer` fails (as an out-of-memory error scope) past `budget` bytes. */
function fakeDevice(budget: number) {
  let used = 0;
  const scopes: (string | null)[] = [];
  const device = {
    pushErrorScope: () => scopes.push(null),
    createBuffer: ({ size }: { size: number }) => {
      if (used + size > budget) scopes[scopes.length - 1] = `not enough memory left for ${size} bytes`;
      else used += size;
      return { size, destroy: () => (used -= size) };
    },
    popErrorScope: () => {
      const err = scopes.pop();
      return Promise.resolve(err ? { message: err } : null);
    },
  };
  return device as unknown as GPUDevice;
}

Deno.test("pool: a failed allocation is thrown as GpuOutOfMemoryError by the next allocation, naming the tensor", async () => {
  const pool = new BufferPool(fakeDevice(3000), 1 << 30);
  const a = pool.acquire(1024, "small");
  pool.acquire(4096, "'model.embed_tokens.weight'"); // over the budget: reported asynchronously
  pool.checkOutOfMemory(); // not reported yet
  const logged: unknown[] = [];
  const saved = console.error;
  console.error = (...args: unknown[]) => logged.push(args.join(" "));
  try {
    await Promise.resolve(); // the error scope resolves
    await Promise.resolve();
  } finally {
    console.error = saved;
  }
  assert.equal(logged.length, 1, "the failure is also printed when it is reported");
  assert.throws(() => pool.checkOutOfMemory(), GpuOutOfMemoryError);
  assert.throws(
    () => pool.acquire(16),
    (e: Error) =>
      e instanceof GpuOutOfMemoryError && /model\.embed_tokens\.weight/.test(e.message) &&
      /4\.00 KiB/.test(e.message) && /smaller model/.test(e.message),
  );
  // Releasing still works after the failure.
  pool.release(a);
  assert.equal(pool.stats.bytesPooled, 1024);
});

Deno.test("pool: peakBytes is the most held at once (live + pooled) since the last resetPeak", () => {
  const pool = new BufferPool(fakeDevice(1 << 20), 1 << 30);
  const a = pool.acquire(1024);
  const b = pool.acquire(2048);
  assert.equal(pool.peakBytes, 3072);
  pool.release(b);
  pool.release(a);
  assert.equal(pool.peakBytes, 3072); // pooled buffers still count
  pool.trim();
  pool.resetPeak();
  assert.equal(pool.peakBytes, 0);
  pool.release(pool.acquire(512));
  assert.equal(pool.peakBytes, 512);
});
