/**
 * Integration tests of the autograd engine itself (tape, backward, scopes, disposal), built from
 * the elementwise ops, whose own gradients are checked in elementwise_test.ts.
 */
import assert from "node:assert";
import { add, addScalar, exp, mul, scale, tanh } from "../../autograd/ops/elementwise.ts";
import { backward, topoOrder } from "../../autograd/tape.ts";
import { scope, ShapeError, Tensor } from "../../autograd/tensor.ts";
import { assertClose, ctx, gpuTest } from "../helpers.ts";
import { autogradState, noGrad } from "../../autograd/grad_mode.ts";

const X = [0.5, -1.25, 2, 0.1, -0.3];

Deno.test({
  name: "tape: gradients accumulate across two backward calls until zeroGrad",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const x = Tensor.from(c, X, [5], { requiresGrad: true });
    const y1 = mul(x, x); // d/dx = 2x
    backward(y1);
    assertClose(await x.grad!.read(), X.map((v) => 2 * v), "first backward");
    const y2 = scale(x, 3); // d/dx = 3
    backward(y2);
    assertClose(await x.grad!.read(), X.map((v) => 2 * v + 3), "accumulated over two backward calls");
    x.zeroGrad();
    assert.strictEqual(x.grad, null);
    const y3 = mul(x, x);
    backward(y3);
    assertClose(await x.grad!.read(), X.map((v) => 2 * v), "after zeroGrad the sum restarts");
    for (const t of [x, y1, y2, y3]) t.dispose();
  },
});

Deno.test({
  name: "tape: noGrad records nothing (and is restored after a throw)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const x = Tensor.from(c, X, [5], { requiresGrad: true });
    const y = noGrad(c, () => tanh(mul(x, x)));
    assert.strictEqual(y.node, null);
    assert.strictEqual(y.requiresGrad, false);
    assert.throws(() => backward(y), /does not depend on any tensor with requiresGrad/);
    assert.throws(() =>
      noGrad(c, () => {
        throw new Error("inside");
      }), /inside/);
    assert.strictEqual(autogradState(c).gradDisabled, 0);
    const z = mul(x, x);
    assert.ok(z.node, "recording resumes after noGrad");
    for (const t of [x, y, z]) t.dispose();
  },
});

Deno.test({
  name: "tape: gradient with respect to a non-leaf tensor via retainGradOf",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const x = Tensor.from(c, X, [5], { requiresGrad: true });
    const h = scale(x, 2); // non-leaf
    const y = mul(h, h); // dy/dh = 2h = 4x, dy/dx = 8x
    backward(y, { retainGradOf: [h] });
    assertClose(await h.grad!.read(), X.map((v) => 4 * v), "dy/dh");
    assertClose(await x.grad!.read(), X.map((v) => 8 * v), "dy/dx still flows through h");
    // Without retainGradOf, non-leaves keep no gradient.
    const h2 = scale(x, 2);
    backward(mul(h2, x));
    assert.strictEqual(h2.grad, null);
    for (const t of [x, h, y, h2]) t.dispose();
  },
});

Deno.test({
  name: "tape: a chain of 5,000 ops backpropagates (iterative topological order, no stack overflow)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const x = Tensor.from(c, [0.3, -0.7, 1.1], [3], { requiresGrad: true });
    const depth = 5000;
    const grad = await scope(c, async () => {
      let t = x;
      for (let i = 0; i < depth; i++) t = i % 2 === 0 ? scale(t, 1.0002) : addScalar(t, 0.001);
      assert.strictEqual(topoOrder(t).length, depth + 1);
      backward(t);
      return await x.grad!.read();
    });
    // d/dx = 1.0002^2500, the same for every element.
    const expected = 1.0002 ** (depth / 2);
    assertClose(grad, [expected, expected, expected], "gradient through 5,000 ops", 1e-6, 1e-4);
    x.dispose();
  },
});

Deno.test({
  name: "tape: diamond graphs (a tensor used several times) accumulate every path",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const x = Tensor.from(c, X, [5], { requiresGrad: true });
    await scope(c, async () => {
      // a = e^x feeds two branches: d = 2a + a·a, so dd/dx = (2 + 2a)·a.
      const a = exp(x);
      const d = add(scale(a, 2), mul(a, a));
      backward(d);
      assertClose(
        await x.grad!.read(),
        X.map((v) => (2 + 2 * Math.exp(v)) * Math.exp(v)),
        "diamond",
        1e-5,
        1e-5,
      );
      x.zeroGrad();
      // The same tensor as both inputs of one op: x·x + x, d/dx = 2x + 1.
      backward(add(mul(x, x), x));
      assertClose(await x.grad!.read(), X.map((v) => 2 * v + 1), "x used three times");
    });
    x.dispose();
  },
});

Deno.test({
  name: "scope: disposes intermediates, keeps returned and kept tensors; nests",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    c.flush();
    const start = c.pool.stats.bytesLive;
    const x = Tensor.from(c, X, [5]);
    let inner: Tensor[] = [];
    let kept: Tensor | null = null;
    const { out } = scope(c, () => {
      const a = exp(x);
      const b = scale(a, 2);
      kept = tanh(b).keep();
      inner = [a, b];
      return { out: add(a, b) };
    });
    for (const t of inner) assert.ok(t.disposed, "intermediate disposed when the scope closes");
    assert.ok(!out.disposed && !kept!.disposed);
    assert.ok(!x.disposed, "tensors created outside the scope are untouched");
    assertClose(await out.read(), X.map((v) => 3 * Math.exp(v)), "returned tensor still readable");
    // A tensor returned from a nested scope belongs to the enclosing one.
    let fromInner: Tensor | null = null;
    scope(c, () => {
      fromInner = scope(c, () => scale(x, 2));
      assert.ok(!fromInner.disposed);
    });
    assert.ok(fromInner!.disposed, "returned from the inner scope, disposed by the outer");
    // Async scopes close when the promise settles.
    const values = await scope(c, async () => {
      const t = scale(x, -1);
      return await t.read();
    });
    assertClose(values, X.map((v) => -v), "async scope");
    for (const t of [x, out, kept!]) t.dispose();
    c.flush();
    assert.strictEqual(c.pool.stats.bytesLive, start);
  },
});

Deno.test({
  name: "scope: a throw inside still disposes what was created",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    let made: Tensor | null = null;
    assert.throws(() =>
      scope(c, () => {
        made = Tensor.zeros(c, [7]);
        throw new Error("boom");
      }), /boom/);
    assert.ok(made!.disposed);
    assert.strictEqual(autogradState(c).scopes.length, 0);
  },
});

Deno.test({
  name: "backward: clear errors for a root without requiresGrad and a mismatched seed gradient",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const x = Tensor.from(c, X, [5]);
    const y = mul(x, x);
    assert.throws(() => backward(y), /does not depend on any tensor with requiresGrad/);
    const w = Tensor.from(c, X, [5], { requiresGrad: true });
    const z = mul(w, w);
    const seed = Tensor.zeros(c, [4]);
    assert.throws(() => backward(z, { grad: seed }), ShapeError);
    for (const t of [x, y, w, z, seed]) t.dispose();
  },
});

Deno.test({
  name: "dispose: use after dispose throws an error naming the tensor; dispose twice is harmless",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const x = Tensor.from(c, X, [5], { name: "weights" });
    x.dispose();
    x.dispose();
    assert.throws(() => mul(x, x), /'weights' was used after dispose\(\)/);
    await assert.rejects(() => x.read(), /used after dispose/);
    // Disposing a tensor also frees its gradient.
    const w = Tensor.from(c, X, [5], { requiresGrad: true });
    backward(mul(w, w));
    const g = w.grad!;
    w.dispose();
    assert.ok(g.disposed);
  },
});
