import { topk, topkRef } from "../../autograd/ops/topk.ts";
import { Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import type { HostTensor } from "../../autograd/reference.ts";
import { checkOp, ctx, gpuTest, randHost } from "../helpers.ts";

const rng = new Rng(51);

/** Values on a coarse grid so rows have many ties (also across the k-th position). */
function tiedHost(shape: number[], levels: number): HostTensor {
  const h = randHost(rng, shape);
  for (let i = 0; i < h.data.length; i++) h.data[i] = Math.round(h.data[i] * levels) / levels;
  return h;
}

async function expectExact(x: HostTensor, k: number): Promise<void> {
  const c = await ctx();
  const t = Tensor.from(c, Float32Array.from(x.data), x.shape);
  const ref = topkRef({ data: Float64Array.from(Float32Array.from(x.data)), shape: x.shape }, k);
  const { values, indices } = topk(t, k);
  const [v, i] = [await values.read(), await indices.read()];
  for (let e = 0; e < v.length; e++) {
    if (v[e] !== ref.values.data[e] || i[e] !== ref.indices.data[e]) {
      throw new Error(
        `shape [${x.shape}], k=${k}: entry ${e} is (${v[e]}, #${i[e]}), expected (${ref.values.data[e]}, #${
          ref.indices.data[e]
        })`,
      );
    }
  }
  for (const u of [t, values, indices]) u.dispose();
}

Deno.test({
  name: "topk: exact values and indices against a stable sort, with ties, zeros of both signs and k = n",
  ...gpuTest,
  fn: async () => {
    await expectExact(randHost(rng, [7, 1000]), 37);
    await expectExact(tiedHost([5, 300], 2), 200); // ~13 distinct values: ties at the threshold
    await expectExact(tiedHost([3, 257], 1), 1);
    await expectExact(tiedHost([2, 9], 1), 9); // k = n
    const zeros = { data: Float64Array.from([0, -0, 1, -0, 0, -1, 0, 2]), shape: [1, 8] };
    await expectExact(zeros, 6);
    await expectExact(randHost(rng, [2, 3, 70000], -1e-3, 1e-3), 3); // rank 3, rows longer than 2^16
  },
});

Deno.test({
  name: "topk: rows whose candidates overflow workgroup memory take the radix-select path",
  ...gpuTest,
  fn: async () => {
    // k > 256 gives no lower bound, so all 5,000 elements are candidates: more than fit.
    await expectExact(randHost(rng, [2, 5000]), 300);
    await expectExact(tiedHost([2, 5000], 1), 300); // ... with ties at the threshold
    await expectExact({ data: new Float64Array(2 * 5000).fill(0.25), shape: [2, 5000] }, 7); // all equal
  },
});

Deno.test({
  name: "topk: gradient of the values scatters into the selected positions",
  ...gpuTest,
  fn: async () => {
    await checkOp({
      inputs: [randHost(rng, [3, 5, 29])],
      gpu: ([x]) => topk(x, 6).values,
      ref: ([x]) => topkRef(x, 6).values,
    });
  },
});

Deno.test({
  name: "topk: k larger than the row (or not positive) is a clear error",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const x = Tensor.zeros(c, [4, 10]);
    for (const k of [11, 0]) {
      try {
        topk(x, k);
        throw new Error("expected a RangeError");
      } catch (e) {
        if (!(e instanceof RangeError) || !e.message.includes(`k = ${k}`) || !e.message.includes("10")) {
          throw e;
        }
      }
    }
    x.dispose();
  },
});
