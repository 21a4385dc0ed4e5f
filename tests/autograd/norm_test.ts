import { layerNorm, layerNormRef, rmsNorm, rmsNormRef } from "../../autograd/ops/norm.ts";
import { backward } from "../../autograd/tape.ts";
import { scope, ShapeError, Tensor } from "../../autograd/tensor.ts";
import { add } from "../../autograd/ops/elementwise.ts";
import { max } from "../../autograd/ops/reduce.ts";
import { logSoftmax, softmax } from "../../autograd/ops/softmax.ts";
import { crossEntropy } from "../../autograd/ops/loss.ts";
import { Rng } from "../../autograd/random.ts";
import { assertClose, checkOp, ctx, gpuTest, randHost, withKernelVariants } from "../helpers.ts";

const rng = new Rng(47);

// Rows shorter and longer than a workgroup, a row length of 1, many short rows, a single row.
const SHAPES = [[3, 37], [5, 7, 300], [2, 1030], [4, 1], [700, 13], [19]];

Deno.test({
  name: "layerNorm: forward vs float64 and FD gradients for x, weight and bias on odd shapes",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      for (const shape of SHAPES) {
        const n = shape[shape.length - 1];
        // An offset mean checks the two-pass variance; eps 1e-5 as in GPT-2.
        const x = randHost(rng, shape, 1, 4);
        await checkOp({
          inputs: [x, randHost(rng, [n], 0.5, 1.5), randHost(rng, [n])],
          gpu: ([a, w, b]) => layerNorm(a, w, b, 1e-5),
          ref: ([a, w, b]) => layerNormRef(a, w, b, 1e-5),
          atol: 1e-4,
          rtol: 1e-4,
          gradAtol: 2e-4,
          gradRtol: 2e-3,
        });
      }
    }),
});

Deno.test({
  name: "rmsNorm: forward vs float64 and FD gradients for x and weight on odd shapes",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      for (const shape of SHAPES) {
        const n = shape[shape.length - 1];
        await checkOp({
          inputs: [randHost(rng, shape), randHost(rng, [n], 0.5, 1.5)],
          gpu: ([a, w]) => rmsNorm(a, w, 1e-6),
          ref: ([a, w]) => rmsNormRef(a, w, 1e-6),
          atol: 1e-4,
          rtol: 1e-4,
          gradAtol: 2e-4,
          gradRtol: 2e-3,
        });
      }
    }),
});

Deno.test({
  name: "layerNorm / rmsNorm: gradient for x alone (frozen weights, as in the GRADMM x-step)",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const x = randHost(rng, [6, 45]);
      const w = randHost(rng, [45], 0.5, 1.5);
      const b = randHost(rng, [45]);
      await checkOp({
        inputs: [x, w, b],
        wrt: [0],
        gpu: ([a, ww, bb]) => layerNorm(a, ww, bb),
        ref: ([a, ww, bb]) => layerNormRef(a, ww, bb),
        gradAtol: 2e-4,
      });
      await checkOp({
        inputs: [x, w],
        wrt: [0],
        gpu: ([a, ww]) => rmsNorm(a, ww),
        ref: ([a, ww]) => rmsNormRef(a, ww),
        gradAtol: 2e-4,
      });
      // And for the parameters alone (x a constant input).
      await checkOp({
        inputs: [x, w, b],
        wrt: [1, 2],
        gpu: ([a, ww, bb]) => layerNorm(a, ww, bb),
        ref: ([a, ww, bb]) => layerNormRef(a, ww, bb),
      });
    }),
});

Deno.test({
  name: "layerNorm: weight and bias gradients sum over many rows (5,000 × 3, a chunked column sum)",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const c = await ctx();
      const rows = 5000;
      const x = Tensor.from(c, rng.normals(rows * 3), [rows, 3]);
      const w = Tensor.from(c, [1, 2, 3], [3], { requiresGrad: true });
      const b = Tensor.from(c, [0, 0, 0], [3], { requiresGrad: true });
      const y = layerNorm(x, w, b);
      backward(y); // g = 1 everywhere: db = rows; dw = Σ x̂ over rows.
      assertClose(await b.grad!.read(), [rows, rows, rows], "bias gradient", 1e-3, 1e-6);
      const xv = await x.read();
      const dw = [0, 0, 0];
      for (let r = 0; r < rows; r++) {
        const v = [xv[3 * r], xv[3 * r + 1], xv[3 * r + 2]];
        const m = (v[0] + v[1] + v[2]) / 3;
        const s = 1 / Math.sqrt(v.reduce((a, e) => a + (e - m) ** 2, 0) / 3 + 1e-5);
        for (let k = 0; k < 3; k++) dw[k] += (v[k] - m) * s;
      }
      assertClose(await w.grad!.read(), dw, "weight gradient", 2e-3, 1e-4);
      for (const t of [x, w, b, y]) t.dispose();
    }),
});

Deno.test({
  name: "layerNorm / rmsNorm: a weight or bias that does not match x's last dim is a ShapeError naming both",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const c = await ctx();
      const x = Tensor.zeros(c, [3, 37]);
      const w = Tensor.zeros(c, [36]);
      const ok = Tensor.zeros(c, [37]);
      const b2 = Tensor.zeros(c, [1, 37]);
      const cases: [() => unknown, string][] = [
        [() => layerNorm(x, w, ok), "[36]"],
        [() => layerNorm(x, ok, b2), "[1, 37]"],
        [() => rmsNorm(x, w), "[36]"],
      ];
      for (const [f, shape] of cases) {
        let msg = "";
        try {
          f();
        } catch (e) {
          if (!(e instanceof ShapeError)) throw e;
          msg = e.message;
        }
        if (!msg.includes(shape) || !msg.includes("[3, 37]")) {
          throw new Error(`message does not name both: '${msg}'`);
        }
      }
      for (const t of [x, w, ok, b2]) t.dispose();
    }),
});

Deno.test({
  name: "norm + softmax + max + crossEntropy: a repeated forward/backward step does not grow GPU memory",
  ...gpuTest,
  fn: () =>
    withKernelVariants(async () => {
      const c = await ctx();
      const x = Tensor.from(c, rng.normals(6 * 40), [6, 40], { requiresGrad: true });
      const w = Tensor.from(c, rng.normals(40), [40], { requiresGrad: true });
      const b = Tensor.from(c, rng.normals(40), [40], { requiresGrad: true });
      const step = () =>
        scope(c, () => {
          const h = rmsNorm(layerNorm(x, w, b), w);
          const y = add(logSoftmax(h), max(softmax(h), -1, true));
          backward(crossEntropy(y, [1, 2, 3, -100, 39, 0], { ignoreIndex: -100 }));
        });
      const live: number[] = [];
      for (let i = 0; i < 4; i++) {
        step();
        for (const t of [x, w, b]) t.zeroGrad();
        await c.sync();
        live.push(c.pool.stats.bytesLive);
      }
      if (live[3] !== live[1]) throw new Error(`live GPU bytes grew across steps: ${live.join(", ")}`);
      for (const t of [x, w, b]) t.dispose();
    }),
});
