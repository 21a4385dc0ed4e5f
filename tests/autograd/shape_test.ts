import {
  concat,
  concatRef,
  permute,
  permuteRef,
  reshape,
  reshapeRef,
  select,
  selectRef,
  slice,
  sliceRef,
  transpose,
  transposeRef,
} from "../../autograd/ops/shape.ts";
import { ShapeError, Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import { checkOp, ctx, gpuTest, randHost } from "../helpers.ts";

const rng = new Rng(11);

Deno.test({
  name: "shape reshape: forward, -1 inference and gradient",
  ...gpuTest,
  fn: async () => {
    await checkOp({
      inputs: [randHost(rng, [3, 5, 7])],
      gpu: ([x]) => reshape(x, [5, -1]),
      ref: ([x]) => reshapeRef(x, [5, -1]),
    });
  },
});

Deno.test({
  name: "shape permute / transpose: forward and gradient on odd shapes",
  ...gpuTest,
  fn: async () => {
    for (const dims of [[2, 0, 3, 1], [0, 1, 2, 3], [3, 2, 1, 0]]) {
      await checkOp({
        inputs: [randHost(rng, [2, 3, 5, 7])],
        gpu: ([x]) => permute(x, dims),
        ref: ([x]) => permuteRef(x, dims),
      });
    }
    await checkOp({
      inputs: [randHost(rng, [3, 5, 7])],
      gpu: ([x]) => transpose(x, -1, 0),
      ref: ([x]) => transposeRef(x, -1, 0),
    });
  },
});

Deno.test({
  name: "shape concat: forward and gradient along first, middle and last axes",
  ...gpuTest,
  fn: async () => {
    const cases: [number[][], number][] = [
      [[[2, 3, 5], [1, 3, 5]], 0],
      [[[2, 3, 5], [2, 4, 5], [2, 1, 5]], 1],
      [[[2, 3, 5], [2, 3, 2]], -1],
    ];
    for (const [shapes, axis] of cases) {
      await checkOp({
        inputs: shapes.map((s) => randHost(rng, s)),
        gpu: (xs) => concat(xs, axis),
        ref: (xs) => concatRef(xs, axis),
      });
    }
  },
});

Deno.test({
  name: "shape slice / select: forward and gradient (zeros outside the slice)",
  ...gpuTest,
  fn: async () => {
    for (const [axis, s, e] of [[0, 1, 3], [1, 2, 7], [2, -3, -1]]) {
      await checkOp({
        inputs: [randHost(rng, [3, 9, 5])],
        gpu: ([x]) => slice(x, axis, s, e),
        ref: ([x]) => sliceRef(x, axis, s, e),
      });
    }
    for (const [axis, i] of [[0, 2], [1, -1], [2, 0]]) {
      await checkOp({
        inputs: [randHost(rng, [3, 9, 5])],
        gpu: ([x]) => select(x, axis, i),
        ref: ([x]) => selectRef(x, axis, i),
      });
    }
  },
});

function messageOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof ShapeError) return e.message;
    throw e;
  }
  throw new Error("expected a ShapeError");
}

Deno.test({
  name: "shape ops: bad shapes raise ShapeError naming the shapes",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const a = Tensor.zeros(c, [3, 4]);
    const b = Tensor.zeros(c, [5, 4, 1]);
    const checks: [string, string[]][] = [
      [messageOf(() => reshape(a, [5, -1])), ["[3, 4]", "[5, -1]"]],
      [messageOf(() => reshape(a, [-1, -1])), ["[-1, -1]"]],
      [messageOf(() => concat([a, b], 0)), ["[3, 4]", "[5, 4, 1]"]],
      [messageOf(() => concat([a, Tensor.zeros(c, [3, 5])], 0)), ["[3, 4]", "[3, 5]"]],
      [messageOf(() => permute(a, [0, 0])), ["[0, 0]", "[3, 4]"]],
      [messageOf(() => slice(a, 1, 2, 6)), ["[3, 4]"]],
      [messageOf(() => select(a, 0, 3)), ["[3, 4]"]],
      [messageOf(() => transpose(a, 0, 2)), ["[3, 4]"]],
    ];
    for (const [msg, parts] of checks) {
      for (const p of parts) if (!msg.includes(p)) throw new Error(`message '${msg}' does not name ${p}`);
    }
    a.dispose();
    b.dispose();
  },
});
