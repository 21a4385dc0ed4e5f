import assert from "node:assert";
import {
  Adam,
  adamRefState,
  adamStepRef,
  AdamW,
  clipGradNorm,
  clipGradNormRef,
  linearWarmupDecay,
  OptimizerError,
} from "../../autograd/optim.ts";
import { Tensor } from "../../autograd/tensor.ts";
import { scale } from "../../autograd/ops/elementwise.ts";
import { Rng } from "../../autograd/random.ts";
import { assertClose, ctx, gpuTest } from "../helpers.ts";

// Odd sizes, so no parameter is a multiple of the 256-thread workgroup.
const SHAPES = [[37], [3, 101]];

interface RunOptions {
  decoupled: boolean;
  weightDecay: number;
  seed: number;
}

/**
 * Runs 5 steps of the GPU optimiser and the float64 reference side by side on random gradients,
 * changing the learning rate after step 2 and leaving one parameter without a gradient at step 3
 * (it must be skipped, and its bias correction must not advance).
 */
async function compareWithReference(o: RunOptions): Promise<void> {
  const c = await ctx();
  const rng = new Rng(o.seed);
  const hostParams = SHAPES.map((s) => Float64Array.from(rng.normals(s.reduce((a, b) => a * b, 1))));
  const params = SHAPES.map((s, k) =>
    Tensor.from(c, Float32Array.from(hostParams[k]), s, { requiresGrad: true })
  );
  const states = hostParams.map((p) => adamRefState(p.length));
  const hyper = { lr: 0.05, betas: [0.8, 0.95] as [number, number], eps: 1e-6, weightDecay: o.weightDecay };
  const opt = o.decoupled ? new AdamW(params, hyper) : new Adam(params, hyper);
  assert.strictEqual(opt.decoupled, o.decoupled);
  for (let step = 0; step < 5; step++) {
    if (step === 2) opt.lr = 0.02;
    opt.zeroGrad();
    params.forEach((p, k) => {
      if (step === 3 && k === 1) return;
      // Gradients of mixed scale, rounded to f32 so the reference sees what the GPU sees.
      const g = Float64Array.from(rng.normals(p.size, k === 0 ? 1 : 0.01));
      p.grad = Tensor.from(c, Float32Array.from(g), p.shape).keep();
      adamStepRef(hostParams[k], g, states[k], { ...hyper, lr: opt.lr, decoupled: o.decoupled });
    });
    opt.step();
    for (let k = 0; k < params.length; k++) {
      assertClose(await params[k].read(), hostParams[k], `parameter ${k} after step ${step + 1}`, 2e-6, 2e-5);
    }
  }
  assert.strictEqual(opt.stateOf(params[0])!.step, 5);
  assert.strictEqual(opt.stateOf(params[1])!.step, 4);
  assertClose(await opt.stateOf(params[1])!.v.read(), states[1].v, "second moment", 1e-9, 1e-4);
  opt.dispose();
  for (const p of params) p.dispose();
}

Deno.test({
  name:
    "Adam: 5 steps match the float64 reference (bias correction, L2 weight decay, lr change, skipped grad)",
  ...gpuTest,
  fn: () => compareWithReference({ decoupled: false, weightDecay: 0.1, seed: 11 }),
});

Deno.test({
  name: "AdamW: 5 steps match the float64 reference (decoupled weight decay)",
  ...gpuTest,
  fn: () => compareWithReference({ decoupled: true, weightDecay: 0.3, seed: 12 }),
});

Deno.test({
  name: "Adam without weight decay, and AdamW's default decay of 0.01",
  ...gpuTest,
  fn: async () => {
    await compareWithReference({ decoupled: false, weightDecay: 0, seed: 13 });
    const c = await ctx();
    const p = Tensor.zeros(c, [2], { requiresGrad: true });
    assert.strictEqual(new AdamW([p]).weightDecay, 0.01);
    assert.strictEqual(new Adam([p]).weightDecay, 0);
    p.dispose();
  },
});

async function clipCase(maxNorm: number, sizes: number[], gradScale: number): Promise<void> {
  const c = await ctx();
  const rng = new Rng(sizes.length + sizes[0]);
  const host = sizes.map((n) => Float64Array.from(rng.normals(n, gradScale)));
  const params = sizes.map((n, k) => {
    const p = Tensor.zeros(c, [n], { requiresGrad: true });
    p.grad = Tensor.from(c, Float32Array.from(host[k]), [n]).keep();
    return p;
  });
  // A parameter without a gradient is ignored.
  const idle = Tensor.zeros(c, [5], { requiresGrad: true });
  const expectedNorm = clipGradNormRef(host, maxNorm);
  const norm = clipGradNorm([...params, idle], maxNorm);
  assertClose([await norm.item()], [expectedNorm], `norm (maxNorm ${maxNorm})`, 1e-6, 1e-5);
  for (let k = 0; k < params.length; k++) {
    assertClose(
      await params[k].grad!.read(),
      host[k],
      `clipped gradient ${k} (maxNorm ${maxNorm})`,
      1e-7,
      2e-5,
    );
  }
  norm.dispose();
  idle.dispose();
  for (const p of params) p.dispose();
}

Deno.test({
  name: "clipGradNorm: global norm and scaling match the float64 reference",
  ...gpuTest,
  fn: async () => {
    await clipCase(1.0, [37, 303], 1); // clipped: the norm is ~18
    await clipCase(100, [37, 303], 1); // not clipped: scale 1
    await clipCase(Infinity, [37, 303], 1); // norm only
    // Large enough for many partial sums per tensor and several elements per thread.
    await clipCase(0.5, [70_001, 3, 4_099], 0.1);
  },
});

Deno.test({
  name: "clipGradNorm with no gradients returns 0; bad maxNorm is rejected",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const p = Tensor.zeros(c, [3], { requiresGrad: true });
    const norm = clipGradNorm([p], 1);
    assert.strictEqual(await norm.item(), 0);
    norm.dispose();
    assert.throws(() => clipGradNorm([p], 0), OptimizerError);
    assert.throws(() => clipGradNorm([], 1), OptimizerError);
    p.dispose();
  },
});

Deno.test({
  name: "optimiser step and clipping encode without submitting or reading back; dispose frees the moments",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const p = Tensor.from(c, new Float32Array(1000).fill(1), [1000], { requiresGrad: true });
    p.grad = Tensor.full(c, [1000], 2).keep();
    const opt = new AdamW([p], { lr: 0.1, weightDecay: 0 });
    c.flush();
    const before = c.pool.stats.bytesLive;
    const submits = c.submits;
    const norm = clipGradNorm([p], 1);
    opt.step();
    assert.strictEqual(c.submits, submits, "step() and clipGradNorm() must not submit");
    // One step of Adam moves each weight by lr (|m̂/sqrt(v̂)| = 1), whatever the gradient's scale.
    assertClose(await p.read(), new Float32Array(1000).fill(0.9), "weights after one step", 1e-6, 1e-5);
    assertClose([await norm.item()], [Math.sqrt(4000)], "norm", 1e-4, 1e-5);
    norm.dispose();
    c.flush();
    assert.ok(c.pool.stats.bytesLive > before, "the moments are allocated on the first step");
    opt.dispose();
    c.flush();
    assert.strictEqual(c.pool.stats.bytesLive, before);
    p.dispose();
  },
});

Deno.test({
  name: "optimiser rejects bad hyperparameters, duplicates and non-leaf parameters",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const p = Tensor.zeros(c, [4], { requiresGrad: true });
    assert.throws(() => new Adam([p], { lr: -1 }), /lr must be/);
    assert.throws(() => new Adam([p], { betas: [1, 0.9] }), OptimizerError);
    assert.throws(() => new AdamW([p, p]), /appears twice/);
    const q = scale(p, 2);
    assert.throws(() => new Adam([q]), /not a leaf/);
    q.dispose();
    p.dispose();
  },
});

Deno.test("linearWarmupDecay follows transformers' linear schedule with warmup", () => {
  const lrs = [0, 1, 2, 3, 4, 5, 9, 10, 12].map((s) => linearWarmupDecay(s, 1, 4, 10));
  assertClose(lrs, [0, 0.25, 0.5, 0.75, 1, 5 / 6, 1 / 6, 0, 0], "schedule", 1e-12, 0);
  assert.strictEqual(linearWarmupDecay(0, 0.1, 0, 5), 0.1);
});
