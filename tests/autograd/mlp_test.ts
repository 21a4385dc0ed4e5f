/**
 * End-to-end check of the autograd engine: a 2 → 32 → 32 → 2 tanh MLP learns two interleaved
 * spirals with Adam (full batch, gradient clipping), and the training loop does not grow GPU
 * memory. Every piece (linear, tanh, cross-entropy, backward, clipping, Adam) is checked on its
 * own elsewhere; this test checks that they compose into something that learns.
 */
import assert from "node:assert";
import { Adam, clipGradNorm } from "../../autograd/optim.ts";
import { linear } from "../../autograd/ops/matmul.ts";
import { tanh } from "../../autograd/ops/elementwise.ts";
import { crossEntropy } from "../../autograd/ops/loss.ts";
import { argmax } from "../../autograd/ops/reduce.ts";
import { backward } from "../../autograd/tape.ts";
import { scope, Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { noGrad } from "../../autograd/grad_mode.ts";

/** `n` points on two interleaved spirals of `turns` turns (class = which spiral), lightly noised. */
function spirals(n: number, turns: number, rng: Rng): { points: Float32Array; labels: Float32Array } {
  const points = new Float32Array(2 * n);
  const labels = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const cls = i % 2;
    const r = (Math.floor(i / 2) + 1) / (n / 2);
    const angle = turns * 2 * Math.PI * r + cls * Math.PI;
    points[2 * i] = 2 * r * Math.cos(angle) + 0.02 * rng.normal();
    points[2 * i + 1] = 2 * r * Math.sin(angle) + 0.02 * rng.normal();
    labels[i] = cls;
  }
  return { points, labels };
}

Deno.test({
  name: "MLP: 200 Adam steps learn two spirals, with constant GPU memory and one submit per step",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const rng = new Rng(3);
    const n = 300;
    const { points, labels } = spirals(n, 1.25, new Rng(1));
    const x = Tensor.from(c, points, [n, 2]);
    const targets = Tensor.from(c, labels, [n]);
    const dims = [2, 32, 32, 2];
    const weights: Tensor[] = [];
    const biases: Tensor[] = [];
    for (let l = 0; l < 3; l++) {
      // LeCun-normal initialisation keeps tanh out of saturation at the start.
      const w = rng.normals(dims[l] * dims[l + 1], Math.sqrt(1 / dims[l]));
      weights.push(Tensor.from(c, w, [dims[l], dims[l + 1]], { requiresGrad: true, name: `w${l}` }));
      biases.push(Tensor.zeros(c, [dims[l + 1]], { requiresGrad: true, name: `b${l}` }));
    }
    const params = [...weights, ...biases];
    const forward = (input: Tensor): Tensor => {
      let h = input;
      for (let l = 0; l < 3; l++) {
        h = linear(h, weights[l], biases[l], { weightLayout: "in_out" });
        if (l < 2) h = tanh(h);
      }
      return h;
    };

    const opt = new Adam(params, { lr: 0.02 });
    const steps = 200;
    let firstLoss = NaN;
    let lastLoss = NaN;
    let liveAtStep10 = -1;
    let liveAtEnd = -1;
    let firstNorm = NaN;
    const quietSubmits: number[] = [];
    for (let step = 0; step < steps; step++) {
      const submitsBefore = c.submits;
      const readNow = step === 0 || step === steps - 1;
      await scope(c, async () => {
        opt.zeroGrad();
        const loss = crossEntropy(forward(x), targets, { reduction: "mean" });
        backward(loss);
        const norm = clipGradNorm(params, 1.0);
        opt.step();
        // Reading is a GPU→CPU sync: only at the first and the last step.
        if (step === 0) {
          firstLoss = await loss.item();
          firstNorm = await norm.item();
        } else if (readNow) {
          lastLoss = await loss.item();
        }
      });
      c.flush();
      if (!readNow) quietSubmits.push(c.submits - submitsBefore);
      if (step === 9) liveAtStep10 = c.pool.stats.bytesLive;
      if (step === steps - 1) liveAtEnd = c.pool.stats.bytesLive;
    }

    const predicted = noGrad(c, () => scope(c, () => argmax(forward(x), 1)));
    const classes = await predicted.read();
    predicted.dispose();
    let correct = 0;
    for (let i = 0; i < n; i++) if (classes[i] === labels[i]) correct++;
    const accuracy = correct / n;

    assert.ok(Number.isFinite(firstNorm) && firstNorm > 0, `gradient norm at step 1: ${firstNorm}`);
    assert.ok(
      lastLoss < firstLoss / 20,
      `loss fell from ${firstLoss.toFixed(4)} to ${lastLoss.toFixed(4)}, expected a factor of 20 or more`,
    );
    assert.ok(accuracy >= 0.95, `training accuracy ${(accuracy * 100).toFixed(1)}%, expected ≥ 95%`);
    assert.strictEqual(
      liveAtEnd,
      liveAtStep10,
      "GPU memory in use grew between step 10 and step 200 (a leak)",
    );
    assert.ok(
      quietSubmits.every((s) => s === 1),
      `steps without a read should submit exactly once, got ${[...new Set(quietSubmits)].join(", ")} submits`,
    );

    opt.dispose();
    for (const t of [x, targets, ...params]) t.dispose();
  },
});
