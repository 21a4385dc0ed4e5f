import { rope, ropeInvFreq, ropeRef } from "../../autograd/ops/rope.ts";
import { ShapeError, Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import { host } from "../../autograd/reference.ts";
import { assertClose, checkOp, ctx, gpuTest, randHost } from "../helpers.ts";

const rng = new Rng(31);

Deno.test({
  name: "rope: full rotary on odd T with left-padded positions, forward and gradient",
  ...gpuTest,
  fn: async () => {
    // Row 1 is left-padded by 3: positions = max(cumsum(mask) - 1, 0), as transformers builds them.
    const pos = [0, 1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 1, 2, 3];
    const opts = { rotaryDim: 8, theta: 10000 };
    await checkOp({
      inputs: [randHost(rng, [2, 3, 7, 8]), host(pos, [2, 7])],
      wrt: [0],
      gpu: ([x, p]) => rope(x, p, opts),
      ref: ([x, p]) => ropeRef(x, p, opts),
      atol: 2e-6,
      rtol: 1e-5,
    });
  },
});

Deno.test({
  name: "rope: partial rotary (Phi) with shared positions and an odd number of pairs, forward and gradient",
  ...gpuTest,
  fn: async () => {
    const opts = { rotaryDim: 6, theta: 500 };
    await checkOp({
      inputs: [randHost(rng, [1, 2, 5, 12]), host([3, 4, 5, 6, 7], [5])],
      wrt: [0],
      gpu: ([x, p]) => rope(x, p, opts),
      ref: ([x, p]) => ropeRef(x, p, opts),
      atol: 2e-6,
      rtol: 1e-5,
    });
  },
});

Deno.test({
  name: "rope: matches transformers' f32 cos/sin tables at large positions (angle reduction)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const pos = [0, 1, 100, 511, 1000, 1023, 2047, 4095, 777, 30000];
    const opts = { rotaryDim: 32, theta: 10000 };
    const xh = randHost(rng, [1, 2, pos.length, 40]);
    const x = Tensor.from(c, Float32Array.from(xh.data), xh.shape);
    const p = Tensor.from(c, pos, [pos.length]);
    const y = rope(x, p, opts);
    const ref = ropeRef(
      { data: Float64Array.from(Float32Array.from(xh.data)), shape: xh.shape },
      host(pos, [pos.length]),
      opts,
    );
    assertClose(await y.read(), ref.data, "rope at large positions", 1e-6, 1e-6);
    for (const t of [x, p, y]) t.dispose();
  },
});

Deno.test({
  name: "rope: inverse frequencies follow transformers (f32, theta^(-2i/d)) and bad shapes are rejected",
  ...gpuTest,
  fn: async () => {
    const inv = ropeInvFreq(64, 10000);
    if (inv.length !== 32 || inv[0] !== 1) throw new Error(`unexpected inv_freq start ${inv[0]}`);
    for (let i = 0; i < 32; i++) {
      const exact = Math.pow(10000, -(2 * i) / 64);
      if (Math.abs(inv[i] - exact) > 2e-7 * exact) {
        throw new Error(`inv_freq[${i}] = ${inv[i]}, expected ≈ ${exact}`);
      }
    }
    const c = await ctx();
    const x = Tensor.zeros(c, [2, 3, 7, 8]);
    const p = Tensor.zeros(c, [2, 5]);
    try {
      rope(x, p, { rotaryDim: 8, theta: 10000 });
      throw new Error("expected a ShapeError");
    } catch (e) {
      if (
        !(e instanceof ShapeError) || !e.message.includes("[2, 5]") || !e.message.includes("[2, 3, 7, 8]")
      ) throw e;
    }
    try {
      rope(x, Tensor.zeros(c, [7]), { rotaryDim: 10, theta: 10000 });
      throw new Error("expected a RangeError");
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
    }
    x.dispose();
    p.dispose();
  },
});
