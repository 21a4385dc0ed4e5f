/**
 * Step graphs (kernels/graph.ts): a replayed step must do exactly what running the step again
 * does, bit for bit; what cannot be replayed must fail loudly; and the buffers a graph encodes
 * must stay out of the pool's circulation until the graph is disposed.
 */
import assert from "node:assert";
import { GraphCaptureError } from "../../kernels/device.ts";
import { StepGraph } from "../../kernels/graph.ts";
import { Adam, clipGradNorm } from "../../autograd/optim.ts";
import { linear } from "../../autograd/ops/matmul.ts";
import { add, square, tanh } from "../../autograd/ops/elementwise.ts";
import { sumAll } from "../../autograd/ops/reduce.ts";
import { backward } from "../../autograd/tape.ts";
import { scope, Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { noGrad } from "../../autograd/grad_mode.ts";

/** A small regression problem: tanh MLP 7 → 13 → 5, Adam, clipping; odd sizes on purpose. */
async function setup(seed: number) {
  const c = await ctx();
  const rng = new Rng(seed);
  const x = Tensor.from(c, rng.normals(11 * 7), [11, 7]).keep();
  const y = Tensor.from(c, rng.normals(11 * 5), [11, 5]).keep();
  const w1 = Tensor.from(c, rng.normals(7 * 13, 0.4), [7, 13], { requiresGrad: true }).keep();
  const b1 = Tensor.from(c, rng.normals(13, 0.1), [13], { requiresGrad: true }).keep();
  const w2 = Tensor.from(c, rng.normals(13 * 5, 0.4), [13, 5], { requiresGrad: true }).keep();
  const params = [w1, b1, w2];
  const opt = new Adam(params, { lr: 0.01 });
  // Returns the loss before the update; nothing is read back.
  const step = () =>
    scope(c, () => {
      for (const p of params) p.zeroGrad();
      const h = tanh(linear(x, w1, b1));
      const loss = sumAll(square(add(linear(h, w2), y)));
      backward(loss);
      clipGradNorm(params, 0.5).dispose();
      opt.step();
      return noGrad(c, () => loss.detach()).keep();
    });
  const dispose = () => {
    for (const t of [x, y, ...params]) t.dispose();
    opt.dispose();
  };
  return { c, params, opt, step, dispose };
}

Deno.test({
  name: "step graph: replays give bit-identical parameters and losses to running the step",
  ...gpuTest,
  fn: async () => {
    const eager = await setup(4);
    const eagerLosses: number[] = [];
    for (let i = 0; i < 8; i++) {
      const l = eager.step();
      eagerLosses.push(await l.item());
      l.dispose();
    }
    const eagerParams = await Promise.all(eager.params.map((p) => p.read()));

    const g = await setup(4);
    const losses: number[] = [];
    const first = g.step();
    losses.push(await first.item());
    first.dispose();
    const { graph, result: loss } = StepGraph.capture(g.c, g.step);
    losses.push(await loss.item());
    assert.ok(graph.dispatchCount > 10, `only ${graph.dispatchCount} dispatches captured`);
    const before = g.c.dispatches;
    for (let i = 2; i < 8; i++) {
      graph.replay();
      losses.push(await loss.item()); // the captured loss buffer is rewritten by each replay
    }
    // Adam's update is a live segment: one dispatch per parameter per replay on top of the graph.
    assert.strictEqual(g.c.dispatches - before, 6 * (graph.dispatchCount + g.params.length));
    const params = await Promise.all(g.params.map((p) => p.read()));
    assert.deepStrictEqual(losses, eagerLosses);
    params.forEach((p, i) => assert.deepStrictEqual(p, eagerParams[i], `parameter ${i} differs`));
    assert.ok(losses[7] < losses[0], "the loss should fall");
    // The step count advanced through the live segment.
    assert.strictEqual(g.opt.stateOf(g.params[0])!.step, 8);
    graph.dispose();
    loss.dispose();
    g.dispose();
    eager.dispose();
  },
});

Deno.test({
  name: "step graph: a read-back or the optimiser's first step inside a capture is refused",
  ...gpuTest,
  fn: async () => {
    const g = await setup(5);
    assert.throws(() => StepGraph.capture(g.c, g.step), GraphCaptureError, "first Adam step");
    assert.strictEqual(g.c.recorder, null, "the recorder must be cleared after a failed capture");
    await g.c.sync();
    const t = Tensor.from(g.c, [1, 2, 3], [3]);
    assert.throws(
      () => StepGraph.capture(g.c, () => void t.read()),
      GraphCaptureError,
    );
    assert.strictEqual(g.c.recorder, null);
    // The context still works normally afterwards.
    assert.deepStrictEqual([...await t.read()], [1, 2, 3]);
    t.dispose();
    g.dispose();
  },
});

Deno.test({
  name: "step graph: uploads are replayed, and encoded buffers stay pinned until dispose",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const acc = Tensor.zeros(c, [5]).keep();
    const { graph } = StepGraph.capture(c, () =>
      scope(c, () => {
        const inc = Tensor.from(c, [1, 2, 3, 4, 5], [5]); // an upload inside the step
        const next = noGrad(c, () => add(acc, inc));
        c.copyBuffer(next.buffer, 0, acc.buffer, 0, acc.bytes);
      }));
    graph.replay();
    graph.replay();
    assert.deepStrictEqual([...await acc.read()], [3, 6, 9, 12, 15]);

    // A disposed tensor's buffer that the graph encodes is not handed out again...
    const pinned = acc.buffer;
    acc.dispose();
    await c.sync();
    const fresh = Array.from({ length: 4 }, () => Tensor.empty(c, [5]));
    assert.ok(fresh.every((t) => t.buffer !== pinned), "a pinned buffer was handed out");
    for (const t of fresh) t.dispose();
    await c.sync();
    // ...until the graph is disposed.
    const live = c.pool.stats.buffersLive;
    graph.dispose();
    assert.ok(c.pool.stats.buffersLive < live, "dispose() should release the held-back buffer");
    assert.throws(() => graph.replay(), GraphCaptureError);
  },
});
