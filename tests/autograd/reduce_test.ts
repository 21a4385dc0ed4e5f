import {
  argmax,
  argmaxRef,
  max,
  maxRef,
  mean,
  meanAll,
  meanAllRef,
  meanRef,
  sum,
  sumAll,
  sumAllRef,
  sumRef,
} from "../../autograd/ops/reduce.ts";
import { backward } from "../../autograd/tape.ts";
import { ShapeError, Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import { assertClose, checkOp, ctx, gpuTest, randHost, toGpu, withKernelVariants } from "../helpers.ts";

const rng = new Rng(11);

// Odd shapes: rows shorter and longer than a workgroup, a row length of 1, many short rows, an
// axis of length 1 in the middle.
const SHAPES = [[3, 37], [5, 7, 300], [2, 1030], [4, 1], [700, 13], [2, 1, 3]];

const OPS = [
  ["sum", sum, sumRef],
  ["mean", mean, meanRef],
  ["max", max, maxRef],
] as const;

for (const [name, gpu, ref] of OPS) {
  Deno.test({
    name: `reduce ${name}: every axis (negative too), keepDim both ways, forward and FD gradient`,
    ...gpuTest,
    fn: () =>
      withKernelVariants(async () => {
        for (const shape of SHAPES) {
          for (let axis = -1; axis < shape.length; axis++) {
            // axis −1 and the explicit last axis run the same kernel: use −1 with keepDim, the
            // explicit axes without, and the middle axis both ways.
            const keeps = axis === -1 ? [true] : axis === shape.length - 1 ? [false] : [false, true];
            for (const keepDim of keeps) {
              const x = randHost(rng, shape);
              const y = await checkOp({
                inputs: [x],
                gpu: ([t]) => {
                  const out = gpu(t, axis, keepDim);
                  const want = ref(x, axis, keepDim).shape;
                  if (out.shape.join() !== want.join()) {
                    throw new Error(
                      `${name}(${shape}, ${axis}, ${keepDim}) has shape [${out.shape}], want [${want}]`,
                    );
                  }
                  return out;
                },
                ref: ([h]) => ref(h, axis, keepDim),
                atol: 2e-5,
                rtol: 1e-4,
              });
              if (y.some((v) => !Number.isFinite(v))) throw new Error(`${name}: non-finite output`);
            }
          }
        }
      }),
  });
}

Deno.test({
  name: "reduce sumAll / meanAll: forward and FD gradient, shape [1]",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      for (const shape of [[5, 7, 300], [1], [13]]) {
        for (const [gpu, ref] of [[sumAll, sumAllRef], [meanAll, meanAllRef]] as const) {
          await checkOp({
            inputs: [randHost(rng, shape)],
            gpu: ([t]) => gpu(t),
            ref: ([h]) => ref(h),
            atol: 1e-4,
            rtol: 1e-4,
          });
        }
      }
    }),
});

Deno.test({
  name: "reduce max: ties send the gradient to the first arg-max (last and middle axis)",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const c = await ctx();
      const lowest = -3.4028234663852886e38;
      // Rows: a tie at 1 and 2; all equal; all the most negative f32 (a fully masked row).
      const x = Tensor.from(c, [1, 3, 3, 2, 5, 5, 5, 5, lowest, lowest, lowest, lowest], [3, 4], {
        requiresGrad: true,
      });
      const m = max(x, -1);
      assertClose(await m.read(), [3, 5, lowest], "max values");
      backward(m, { grad: Tensor.from(c, [1, 2, 3], [3]) });
      assertClose(await x.grad!.read(), [0, 1, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0], "max gradient");
      assertClose(await argmax(x, 1).read(), [1, 0, 0], "argmax");

      // Middle axis of [2, 3, 2]: ties along the axis go to the lowest index.
      const y = Tensor.from(c, [4, 1, 4, 7, 0, 7, 2, 2, 9, 2, 9, 1], [2, 3, 2], { requiresGrad: true });
      const my = max(y, 1);
      assertClose(await my.read(), [4, 7, 9, 2], "middle-axis max");
      backward(my);
      assertClose(await y.grad!.read(), [1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0], "middle-axis gradient");
      for (const t of [x, m, y, my]) t.dispose();
    }),
});

Deno.test({
  name: "reduce argmax: matches the float64 reference on every axis",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const c = await ctx();
      const h = randHost(rng, [5, 7, 300]);
      const x = toGpu(c, h);
      for (const axis of [0, 1, 2]) {
        const a = argmax(x, axis);
        assertClose(await a.read(), argmaxRef(h, axis).data, `argmax axis ${axis}`, 0.1, 0);
        a.dispose();
      }
      x.dispose();
    }),
});

Deno.test({
  name: "reduce: rows longer than one workgroup (50,257 = GPT-2's vocabulary) and long non-last axes",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const c = await ctx();
      // [3, 50257] is split into chunks (few rows); [256, 4099] runs one pass of one workgroup per
      // long row; [20000, 3] and [3, 9000, 2] are long non-last axes (chunked column reductions).
      for (
        const [shape, axis] of [[[3, 50257], 1], [[256, 4099], 1], [[20000, 3], 0], [
          [3, 9000, 2],
          1,
        ]] as const
      ) {
        const h = randHost(rng, [...shape], -1, 1);
        const x = toGpu(c, h);
        for (const [name, gpu, ref] of OPS) {
          const y = gpu(x, axis);
          assertClose(
            await y.read(),
            ref(h, axis).data,
            `${name} over axis ${axis} of [${shape}]`,
            1e-4,
            1e-5,
          );
          y.dispose();
        }
        const a = argmax(x, axis);
        assertClose(
          await a.read(),
          argmaxRef(h, axis).data,
          `argmax over axis ${axis} of [${shape}]`,
          0.1,
          0,
        );
        a.dispose();
        x.dispose();
      }
      // The backward of a long row: sum's gradient is g everywhere, max's is g at the arg-max.
      await checkOp({
        inputs: [randHost(rng, [2, 50257])],
        gpu: ([t]) => max(t, -1),
        ref: ([h]) => maxRef(h, -1),
        maxProbes: 20,
      });
      await checkOp({
        inputs: [randHost(rng, [2, 50257])],
        gpu: ([t]) => mean(t, -1),
        ref: ([h]) => meanRef(h, -1),
        maxProbes: 20,
      });
    }),
});

Deno.test({
  name: "reduce sumAll: 3·10⁶ elements in two passes, accurate to f32 rounding",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const c = await ctx();
      const h = randHost(rng, [3_000_017], 0, 1);
      const x = toGpu(c, h);
      const s = sumAll(x);
      const m = meanAll(x);
      const want = sumAllRef({ data: Float64Array.from(Float32Array.from(h.data)), shape: h.shape }).data[0];
      assertClose([await s.item()], [want], "sumAll", 0, 1e-6);
      assertClose([await m.item()], [want / h.data.length], "meanAll", 0, 1e-6);
      for (const t of [x, s, m]) t.dispose();
    }),
});

Deno.test({
  name: "reduce: an axis out of range is a ShapeError naming the axis and the shape",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const c = await ctx();
      const x = Tensor.zeros(c, [3, 4]);
      for (const f of [() => sum(x, 2), () => mean(x, -3), () => max(x, 5)]) {
        let msg = "";
        try {
          f();
        } catch (e) {
          if (!(e instanceof ShapeError)) throw e;
          msg = e.message;
        }
        if (!msg.includes("[3, 4]") || !/axis -?\d/.test(msg)) throw new Error(`unhelpful message: '${msg}'`);
      }
      x.dispose();
    }),
});
