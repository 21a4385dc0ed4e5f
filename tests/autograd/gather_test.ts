import { gatherLast, gatherLastRef } from "../../autograd/ops/gather.ts";
import { backward } from "../../autograd/tape.ts";
import { ShapeError, Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import { host, type HostTensor } from "../../autograd/reference.ts";
import { checkOp, ctx, gpuTest, randHost } from "../helpers.ts";

const rng = new Rng(77);

/** `rows × m` ids drawn from [0, range). */
function randomIds(rows: number, m: number, range: number): number[] {
  return Array.from({ length: rows * m }, () => rng.int(range));
}

/** Checks forward and gradient; every element of x is probed, so the gathered ones surely are. */
function checkGather(x: HostTensor, index: HostTensor): Promise<Float32Array> {
  return checkOp({
    inputs: [x, index],
    wrt: [0],
    maxProbes: x.data.length,
    gpu: ([xt, it]) => gatherLast(xt, it),
    ref: ([xh, ih]) => gatherLastRef(xh, ih),
  });
}

Deno.test({
  name: "gatherLast: forward and gradient on odd shapes (37 rows of 1000, 13 ids each), bad ids give 0",
  ...gpuTest,
  fn: async () => {
    const ids = randomIds(37, 13, 1000);
    // Not ids of the row: negative, past the end, fractional, huge. Each must read as 0.
    const bad = [-1, 1000, 2.5, 1e9];
    bad.forEach((v, k) => (ids[k * 29 + 3] = v));
    const out = await checkGather(randHost(rng, [37, 1000]), host(ids, [37, 13]));
    bad.forEach((v, k) => {
      if (out[k * 29 + 3] !== 0) throw new Error(`index ${v} read ${out[k * 29 + 3]}, expected 0`);
    });
  },
});

Deno.test({
  name: "gatherLast: repeated ids in a row add their gradients (rank 3)",
  ...gpuTest,
  fn: async () => {
    // 12 ids per row drawn from 4 values: every row repeats some.
    await checkGather(randHost(rng, [5, 3, 20]), host(randomIds(15, 12, 4), [5, 3, 12]));
  },
});

Deno.test({
  name: "gatherLast: 2^22 + 1 rows (grids over 65,535 workgroups are split), forward and backward",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const rows = (1 << 22) + 1; // 65,537 workgroups of 64 threads, in both kernels
    const n = 2;
    const xs = Float32Array.from({ length: rows * n }, (_, i) => (i % 1009) + 0.5);
    const ids = Float32Array.from({ length: rows }, (_, r) => r % 3); // id 2 is past the row
    const gs = Float32Array.from({ length: rows }, (_, r) => (r % 7) + 1);
    const x = Tensor.from(c, xs, [rows, n], { requiresGrad: true });
    const index = Tensor.from(c, ids, [rows, 1]);
    const g = Tensor.from(c, gs, [rows, 1]);
    const y = gatherLast(x, index);
    backward(y, { grad: g });
    const [out, gx] = [await y.read(), await x.grad!.read()];
    for (let r = 0; r < rows; r++) {
      const id = ids[r];
      const want = id < n ? xs[r * n + id] : 0;
      if (out[r] !== want) throw new Error(`row ${r}: gathered ${out[r]}, expected ${want}`);
      for (let j = 0; j < n; j++) {
        const wantG = j === id ? gs[r] : 0;
        if (gx[r * n + j] !== wantG) {
          throw new Error(`row ${r}: gradient[${j}] ${gx[r * n + j]}, expected ${wantG}`);
        }
      }
    }
    for (const t of [x, index, g, y]) t.dispose();
  },
});

Deno.test({
  name: "gatherLast: an index whose leading shape differs from x's is a clear error",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const x = Tensor.zeros(c, [5, 10]);
    for (const shape of [[4, 3], [5], [5, 1, 3]]) {
      const index = Tensor.zeros(c, shape);
      try {
        gatherLast(x, index);
        throw new Error(`index [${shape}] was accepted`);
      } catch (e) {
        if (
          !(e instanceof ShapeError) || !e.message.includes("[5, 10]") ||
          !e.message.includes(`[${shape.join(", ")}]`)
        ) {
          throw e;
        }
      }
      index.dispose();
    }
    x.dispose();
  },
});
