import {
  crossEntropy,
  type CrossEntropyOptions,
  crossEntropyRef,
  TargetRangeError,
} from "../../autograd/ops/loss.ts";
import type { HostTensor } from "../../autograd/reference.ts";
import { backward } from "../../autograd/tape.ts";
import { ShapeError, Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import { assertClose, checkOp, ctx, gpuTest, randHost, toGpu, withKernelVariants } from "../helpers.ts";

const rng = new Rng(31);

/** `n` random class targets in [0, classes), about a quarter of them replaced by `ignore`. */
function randTargets(n: number, classes: number, ignore?: number): HostTensor {
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    data[i] = ignore !== undefined && rng.uniform() < 0.25 ? ignore : rng.int(classes);
  }
  return { data, shape: [n] };
}

const REDUCTIONS = ["mean", "sum", "none"] as const;
// Rows × classes: classes shorter and longer than a workgroup, one class, many rows.
const SHAPES: [number, number][] = [[7, 5], [3, 1030], [300, 13], [4, 1]];

Deno.test({
  name: "crossEntropy: every reduction, with and without ignoreIndex, forward and FD gradient",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      for (const [n, classes] of SHAPES) {
        for (const reduction of REDUCTIONS) {
          for (const ignoreIndex of [undefined, -100]) {
            const opts: CrossEntropyOptions = { reduction, ignoreIndex };
            await checkOp({
              inputs: [randHost(rng, [n, classes], -3, 3), randTargets(n, classes, ignoreIndex)],
              wrt: [0],
              gpu: ([x, t]) => crossEntropy(x, t, opts),
              ref: ([x, t]) => crossEntropyRef(x, t, opts),
              atol: 1e-5,
              rtol: 1e-4,
            });
          }
        }
      }
    }),
});

Deno.test({
  name: "crossEntropy: targets given on the CPU (an ignore index that is a valid class too)",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      for (const reduction of REDUCTIONS) {
        const t = Array.from(randTargets(9, 6).data);
        // ignoreIndex 2 is also a class: rows with target 2 must be skipped.
        const opts: CrossEntropyOptions = { reduction, ignoreIndex: 2 };
        await checkOp({
          inputs: [randHost(rng, [9, 6])],
          gpu: ([x]) => crossEntropy(x, t, opts),
          ref: ([x]) => crossEntropyRef(x, t, opts),
        });
      }
    }),
});

Deno.test({
  name: "crossEntropy: logits [B, T, C] with targets [B, T] (and flattened [B·T])",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const x = randHost(rng, [2, 3, 17]);
      for (const t of [{ data: randTargets(6, 17).data, shape: [2, 3] }, randTargets(6, 17)]) {
        for (const reduction of ["mean", "none"] as const) {
          await checkOp({
            inputs: [x, t],
            wrt: [0],
            gpu: ([a, b]) => {
              const y = crossEntropy(a, b, { reduction });
              const want = reduction === "none" ? t.shape : [1];
              if (y.shape.join() !== want.join()) throw new Error(`shape [${y.shape}], want [${want}]`);
              return y;
            },
            ref: ([a, b]) => crossEntropyRef(a, b, { reduction }),
          });
        }
      }
    }),
});

Deno.test({
  name: "crossEntropy: 50,257 classes (longer than one workgroup) with large logits",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      await checkOp({
        inputs: [randHost(rng, [2, 50257], -30, 30), { data: Float64Array.of(50256, 17), shape: [2] }],
        wrt: [0],
        gpu: ([x, t]) => crossEntropy(x, t),
        ref: ([x, t]) => crossEntropyRef(x, t),
        atol: 1e-4,
        rtol: 1e-5,
        maxProbes: 20,
      });
      // ±1e4 logits: the loss stays finite (one-hot softmax, loss = gap to the maximum).
      const c = await ctx();
      const x = Tensor.from(c, [1e4, -1e4, 0, -1e4, 1e4, 5e3], [2, 3]);
      const y = crossEntropy(x, [0, 2], { reduction: "none" });
      assertClose(await y.read(), [0, 5e3], "large logits", 1e-3, 1e-6);
      x.dispose();
      y.dispose();
    }),
});

Deno.test({
  name: "crossEntropy: out-of-range targets throw on the CPU and contribute nothing on the GPU",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const c = await ctx();
      const h = randHost(rng, [4, 5]);
      const x = toGpu(c, h, true);
      for (const bad of [[0, 5, 1, 2], [0, -1, 1, 2], [0, 1.5, 1, 2]]) {
        let msg = "";
        try {
          crossEntropy(x, bad);
        } catch (e) {
          if (!(e instanceof TargetRangeError)) throw e;
          msg = e.message;
        }
        if (!msg.includes(`target ${bad[1]} at row 1`) || !msg.includes("[0, 5)")) {
          throw new Error(`unhelpful message: '${msg}'`);
        }
      }
      // On the GPU: rows 1 (target 5) and 3 (target −1) are dropped from the loss, the gradient
      // and the mean's count.
      const t = Tensor.from(c, [0, 5, 3, -1], [4]);
      const y = crossEntropy(x, t);
      const want = crossEntropyRef(h, [0, 5, 3, -1]).data[0];
      assertClose([await y.item()], [want], "loss with out-of-range targets");
      const inRange = crossEntropyRef(h, [0, -100, 3, -100], { ignoreIndex: -100 }).data[0];
      assertClose([want], [inRange], "reference drops out-of-range rows");
      backward(y);
      const g = await x.grad!.read();
      for (const i of [5, 6, 7, 8, 9, 15, 16, 17, 18, 19]) {
        if (g[i] !== 0) throw new Error(`gradient of a dropped row is ${g[i]} at ${i}`);
      }
      for (const v of [x, t, y]) v.dispose();
    }),
});

Deno.test({
  name: "crossEntropy: every target ignored gives a loss of 0 and a zero gradient (mean and sum)",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const c = await ctx();
      for (const reduction of ["mean", "sum"] as const) {
        const x = Tensor.from(c, rng.normals(12), [3, 4], { requiresGrad: true });
        const y = crossEntropy(x, [-100, -100, -100], { reduction, ignoreIndex: -100 });
        assertClose([await y.item()], [0], `${reduction} of nothing`);
        backward(y);
        assertClose(await x.grad!.read(), new Array(12).fill(0), "gradient");
        x.dispose();
        y.dispose();
      }
    }),
});

Deno.test({
  name: "crossEntropy: mismatched shapes are a ShapeError naming both",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const c = await ctx();
      const x = Tensor.zeros(c, [7, 5]);
      const t = Tensor.zeros(c, [6]);
      const flat = Tensor.zeros(c, [5]);
      const cases: [() => unknown, string[]][] = [
        [() => crossEntropy(x, t), ["[6]", "[7, 5]"]],
        [() => crossEntropy(x, [0, 1]), ["[2]", "[7, 5]"]],
        [() => crossEntropy(flat, [0]), ["[5]"]],
      ];
      for (const [f, parts] of cases) {
        let msg = "";
        try {
          f();
        } catch (e) {
          if (!(e instanceof ShapeError)) throw e;
          msg = e.message;
        }
        if (!parts.every((p) => msg.includes(p))) throw new Error(`message does not name ${parts}: '${msg}'`);
      }
      for (const v of [x, t, flat]) v.dispose();
    }),
});
