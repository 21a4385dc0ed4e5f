import { embedding, embeddingRef } from "../../autograd/ops/embedding.ts";
import { add } from "../../autograd/ops/elementwise.ts";
import { backward } from "../../autograd/tape.ts";
import { ShapeError, Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import { host } from "../../autograd/reference.ts";
import { assertClose, checkOp, ctx, gpuTest, randHost } from "../helpers.ts";

const rng = new Rng(21);
const V = 11;
const D = 7;
// Repeated ids (3 three times, 0 and 10 twice) so the backward has to sum positions.
const IDS = [3, 0, 10, 3, 7, 1, 3, 10, 0, 5, 2, 9, 4, 6, 8];

for (const withHost of [true, false]) {
  Deno.test({
    name: `embedding: forward and gradient with repeated ids (${
      withHost ? "CSR backward" : "column backward"
    })`,
    ...gpuTest,
    fn: async () => {
      await checkOp({
        inputs: [randHost(rng, [V, D]), host(IDS, [3, 5])],
        wrt: [0],
        gpu: ([w, ids]) => embedding(w, ids, withHost ? { hostIds: IDS } : {}),
        ref: ([w, ids]) => embeddingRef(w, ids),
      });
    },
  });
}

Deno.test({
  name: "embedding: both backward paths give identical bits, run after run",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const n = 300;
    const ids = Array.from({ length: n }, () => rng.int(5)); // many repeats
    const w = Tensor.from(c, rng.normals(5 * 33), [5, 33], { requiresGrad: true });
    const idT = Tensor.from(c, ids, [n]);
    const g = Tensor.from(c, rng.normals(n * 33), [n, 33]);
    const results: Float32Array[] = [];
    for (const opts of [{ hostIds: ids }, {}, { hostIds: ids }]) {
      w.zeroGrad();
      const y = embedding(w, idT, opts);
      backward(y, { grad: g });
      results.push(await w.grad!.read());
      y.dispose();
    }
    for (const r of results.slice(1)) {
      for (let i = 0; i < r.length; i++) {
        if (r[i] !== results[0][i]) {
          throw new Error(`gradient element ${i} differs: ${r[i]} vs ${results[0][i]}`);
        }
      }
    }
    for (const t of [w, idT, g]) t.dispose();
  },
});

Deno.test({
  name: "embedding: out-of-range ids raise a clear error on the CPU and give zero rows on the GPU",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const w = Tensor.from(c, rng.normals(V * D), [V, D]);
    const bad = [1, V, 2];
    const idT = Tensor.from(c, bad, [3]);
    let msg = "";
    try {
      embedding(w, idT, { hostIds: bad });
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      msg = e.message;
    }
    if (!msg.includes(`id ${V}`) || !msg.includes(`[0, ${V})`)) throw new Error(`unclear message: '${msg}'`);
    try {
      embedding(w, idT, { hostIds: [1, 2] });
      throw new Error("expected a ShapeError");
    } catch (e) {
      if (!(e instanceof ShapeError)) throw e;
    }
    const y = await embedding(w, idT).read();
    for (let j = 0; j < D; j++) {
      if (y[D + j] !== 0) throw new Error(`row of out-of-range id is not zero: ${y[D + j]}`);
    }
    for (const t of [w, idT]) t.dispose();
  },
});

Deno.test({
  name: "embedding: a table split into row chunks (rowOffset) sums to the whole lookup and gradient",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const wh = randHost(rng, [V, D]);
    const wA = Tensor.from(c, Float32Array.from(wh.data.subarray(0, 6 * D)), [6, D], { requiresGrad: true });
    const wB = Tensor.from(c, Float32Array.from(wh.data.subarray(6 * D)), [V - 6, D], { requiresGrad: true });
    const idT = Tensor.from(c, IDS, [IDS.length]);
    const y = add(embedding(wA, idT, { hostIds: IDS, rowOffset: 0 }), embedding(wB, idT, { rowOffset: 6 }));
    const ref = embeddingRef(
      { data: Float64Array.from(Float32Array.from(wh.data)), shape: [V, D] },
      host(IDS, [IDS.length]),
    );
    assertClose(await y.read(), ref.data, "chunked forward", 1e-30, 0);
    backward(y, { grad: Tensor.full(c, y.shape, 1) });
    const count = (r: number) => IDS.filter((i) => i === r).length;
    const gA = await wA.grad!.read();
    const gB = await wB.grad!.read();
    for (let r = 0; r < V; r++) {
      const got = r < 6 ? gA[r * D] : gB[(r - 6) * D];
      if (got !== count(r)) throw new Error(`row ${r}: gradient ${got}, expected ${count(r)}`);
    }
    for (const t of [wA, wB, idT, y]) t.dispose();
  },
});
