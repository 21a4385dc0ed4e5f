import { logSoftmax, logSoftmaxRef, softmax, softmaxRef } from "../../autograd/ops/softmax.ts";
import { ShapeError, Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import { assertClose, checkOp, ctx, gpuTest, randHost, toGpu, withKernelVariants } from "../helpers.ts";

const rng = new Rng(23);

// Rows shorter and longer than a workgroup, a row length of 1, many short rows.
const SHAPES = [[3, 37], [5, 7, 300], [2, 1030], [4, 1], [700, 13], [11]];

for (
  const [name, gpu, ref] of [["softmax", softmax, softmaxRef], [
    "logSoftmax",
    logSoftmax,
    logSoftmaxRef,
  ]] as const
) {
  Deno.test({
    name: `${name}: forward vs float64 and FD gradient on odd shapes`,
    ...gpuTest,
    fn: () =>
      withKernelVariants(async () => {
        for (const shape of SHAPES) {
          await checkOp({
            inputs: [randHost(rng, shape, -4, 4)],
            gpu: ([t]) => gpu(t),
            ref: ([h]) => ref(h),
            atol: 1e-5,
            rtol: 1e-4,
          });
        }
      }),
  });

  Deno.test({
    name: `${name}: inputs of magnitude 1e4 stay finite and match the reference`,
    ...gpuTest,
    fn: () =>
      withKernelVariants(async () => {
        const c = await ctx();
        const h = randHost(rng, [6, 300], -1e4, 1e4);
        // The f32-rounded inputs are what the GPU sees.
        const h32 = { data: Float64Array.from(Float32Array.from(h.data)), shape: h.shape };
        const x = toGpu(c, h);
        const y = gpu(x);
        const v = await y.read();
        if (v.some((e) => !Number.isFinite(e))) throw new Error(`${name} produced a non-finite value`);
        assertClose(v, ref(h32).data, name, 1e-5, 1e-5);
        x.dispose();
        y.dispose();
      }),
  });
}

Deno.test({
  name: "softmax: masked rows (−3.4e38 entries) give zeros there, a fully masked row is uniform",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const c = await ctx();
      const lowest = -3.4028234663852886e38;
      const x = Tensor.from(c, [0, lowest, 1, lowest, lowest, lowest, lowest, lowest], [2, 4]);
      const y = softmax(x);
      const e = 1 / (1 + Math.E);
      assertClose(await y.read(), [e, 0, 1 - e, 0, 0.25, 0.25, 0.25, 0.25], "masked softmax", 1e-6, 1e-5);
      const ly = logSoftmax(x);
      const lv = await ly.read();
      assertClose(
        [lv[0], lv[2], lv[4]],
        [Math.log(e), Math.log(1 - e), Math.log(0.25)],
        "masked logSoftmax",
        1e-6,
        1e-5,
      );
      for (const t of [x, y, ly]) t.dispose();
    }),
});

Deno.test({
  name: "softmax: a row of 50,257 logits (longer than one workgroup), forward and FD gradient",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      for (const [gpu, ref] of [[softmax, softmaxRef], [logSoftmax, logSoftmaxRef]] as const) {
        await checkOp({
          inputs: [randHost(rng, [2, 50257], -5, 5)],
          gpu: ([t]) => gpu(t),
          ref: ([h]) => ref(h),
          atol: 1e-6,
          rtol: 1e-4,
          maxProbes: 20,
        });
      }
    }),
});

Deno.test({
  name: "softmax: a scalar (rank 0) has no axis: ShapeError naming the shape",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const c = await ctx();
      const x = Tensor.zeros(c, []);
      let msg = "";
      try {
        softmax(x);
      } catch (e) {
        if (!(e instanceof ShapeError)) throw e;
        msg = e.message;
      }
      if (!msg.includes("[]")) throw new Error(`unhelpful message: '${msg}'`);
      x.dispose();
    }),
});
