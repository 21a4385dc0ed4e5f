/**
 * matmul and linear: forward against the float64 reference and finite-difference gradients, on
 * shapes that are not multiples of any tile, for every transpose combination, batched products,
 * a weight shared by the batch (folded into rows, and the transposed-A case that is not), a shared
 * left operand, and both weight layouts of linear, with and without bias.
 */
import { throws as assertThrows } from "node:assert";
import { linear, linearRef, matmul, matmulRef } from "../../autograd/ops/matmul.ts";
import { ShapeError, Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import { checkOp, ctx, gpuTest, randHost } from "../helpers.ts";

const rng = new Rng(5);

// Sums over K carry rounding of order sqrt(K)·1e-7 in f32.
const TOL = { atol: 1e-4, rtol: 1e-4, gradAtol: 2e-4, gradRtol: 2e-3 };

interface MatmulCase {
  a: number[];
  b: number[];
  transA?: boolean;
  transB?: boolean;
  why: string;
}

const CASES: MatmulCase[] = [
  { a: [37, 53], b: [53, 29], why: "2-D, odd sizes" },
  { a: [53, 37], b: [53, 29], transA: true, why: "A transposed" },
  { a: [37, 53], b: [29, 53], transB: true, why: "B transposed" },
  { a: [53, 37], b: [29, 53], transA: true, transB: true, why: "both transposed" },
  { a: [3, 17, 9], b: [3, 9, 11], why: "batched" },
  { a: [3, 9, 17], b: [3, 11, 9], transA: true, transB: true, why: "batched, both transposed" },
  { a: [2, 3, 5, 7], b: [2, 3, 7, 4], why: "two batch dims" },
  { a: [2, 5, 13], b: [13, 6], why: "shared weight, folded into rows" },
  { a: [2, 5, 13], b: [6, 13], transB: true, why: "shared transposed weight, folded into rows" },
  { a: [3, 13, 5], b: [13, 6], transA: true, why: "shared weight with A transposed (batched + sum)" },
  { a: [3, 13, 5], b: [6, 13], transA: true, transB: true, why: "shared transposed weight, A transposed" },
  { a: [5, 13], b: [3, 13, 6], why: "shared left operand" },
  { a: [13, 5], b: [3, 6, 13], transA: true, transB: true, why: "shared left operand, both transposed" },
  { a: [1, 1], b: [1, 1], why: "1×1×1" },
  { a: [8, 12], b: [12, 16], why: "multiples of 4 (vec4 loads)" },
  { a: [2, 12, 8], b: [16, 12], transA: true, transB: true, why: "multiples of 4, transposed" },
];

for (const c of CASES) {
  Deno.test({
    name: `matmul ${c.why}: ${JSON.stringify(c.a)}${c.transA ? "ᵀ" : ""} · ${JSON.stringify(c.b)}${
      c.transB ? "ᵀ" : ""
    } forward and gradients`,
    ...gpuTest,
    fn: async () => {
      const opts = { transA: c.transA, transB: c.transB };
      await checkOp({
        inputs: [randHost(rng, c.a), randHost(rng, c.b)],
        gpu: ([a, b]) => matmul(a, b, opts),
        ref: ([a, b]) => matmulRef(a, b, opts),
        ...TOL,
      });
    },
  });
}

for (const layout of ["in_out", "out_in"] as const) {
  for (const withBias of [true, false]) {
    Deno.test({
      name: `linear ${layout}${withBias ? " with bias" : ""}: [2, 7, 19] → 23, forward and gradients`,
      ...gpuTest,
      fn: async () => {
        const w = layout === "in_out" ? [19, 23] : [23, 19];
        const inputs = [randHost(rng, [2, 7, 19]), randHost(rng, w)];
        if (withBias) inputs.push(randHost(rng, [23]));
        await checkOp({
          inputs,
          gpu: ([x, wt, b]) => linear(x, wt, b, { weightLayout: layout }),
          ref: ([x, wt, b]) => linearRef(x, wt, b, { weightLayout: layout }),
          ...TOL,
        });
      },
    });
  }
}

Deno.test({
  name: "linear on a 1-D input (one row) matches the reference",
  ...gpuTest,
  fn: async () => {
    await checkOp({
      inputs: [randHost(rng, [9]), randHost(rng, [5, 9]), randHost(rng, [5])],
      gpu: ([x, w, b]) => linear(x, w, b, { weightLayout: "out_in" }),
      ref: ([x, w, b]) => linearRef(x, w, b, { weightLayout: "out_in" }),
      ...TOL,
    });
  },
});

Deno.test({
  name: "matmul and linear: shape errors are ShapeErrors that name both shapes",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const t = (shape: number[]) => Tensor.zeros(c, shape);
    const expectShapeError = (fn: () => unknown, ...mentions: string[]) =>
      assertThrows(fn, (e: Error) => e instanceof ShapeError && mentions.every((m) => e.message.includes(m)));
    expectShapeError(() => matmul(t([3, 4]), t([5, 6])), "[3, 4]", "[5, 6]");
    expectShapeError(() => matmul(t([3, 4]), t([5, 4]), { transA: true, transB: true }), "[3, 4]", "[5, 4]");
    expectShapeError(() => matmul(t([2, 3, 4]), t([3, 4, 5])), "[2]", "[3]");
    expectShapeError(() => matmul(t([4]), t([4, 5])), "[4]", "[4, 5]");
    expectShapeError(() => linear(t([2, 7]), t([8, 3])), "[2, 7]", "[8, 3]");
    expectShapeError(() => linear(t([2, 7]), t([7, 3]), t([4])), "[4]", "[2, 7]");
  },
});

Deno.test({
  name: "matmul: the output shape keeps the batch dims; a weight shared by the batch gets one gradient",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const x = Tensor.from(c, new Float32Array(2 * 3 * 4).fill(1), [2, 3, 4]);
    const w = Tensor.from(c, new Float32Array(4 * 5).fill(0.5), [4, 5], { requiresGrad: true });
    const y = matmul(x, w);
    if (y.shape.join() !== "2,3,5") throw new Error(`shape ${y.shape}`);
    const { backward } = await import("../../autograd/tape.ts");
    backward(y);
    // dW = xᵀ·1 summed over the 6 rows: every entry is 6.
    const g = await w.grad!.read();
    if (!g.every((v) => v === 6)) throw new Error(`dW = ${g}`);
    for (const z of [x, w, y]) z.dispose();
  },
});
