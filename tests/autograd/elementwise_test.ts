import {
  add,
  addRef,
  div,
  divRef,
  mul,
  mulRef,
  sub,
  subRef,
  UNARY_OPS,
  unaryOp,
  unaryRef,
} from "../../autograd/ops/elementwise.ts";
import { ShapeError, Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import { checkOp, ctx, gpuTest, randHost } from "../helpers.ts";

const rng = new Rng(7);

// Shapes chosen to not be multiples of the 256-thread workgroup, with broadcasting on either side.
const PAIRS: [number[], number[]][] = [
  [[37, 5], [37, 5]],
  [[3, 7, 5], [5]],
  [[3, 1, 5], [1, 7, 1]],
  [[1], [4, 3]],
  [[300], [300]],
];

for (
  const [name, gpu, ref] of [
    ["add", add, addRef],
    ["sub", sub, subRef],
    ["mul", mul, mulRef],
    ["div", div, divRef],
  ] as const
) {
  Deno.test({
    name: `elementwise ${name}: forward vs float64 and finite-difference gradients, with broadcasting`,
    ...gpuTest,
    fn: async () => {
      for (const [sa, sb] of PAIRS) {
        const a = randHost(rng, sa);
        // Keep divisors away from zero so finite differences are well conditioned.
        const b = name === "div" ? randHost(rng, sb, 0.5, 2) : randHost(rng, sb);
        await checkOp({ inputs: [a, b], gpu: ([x, y]) => gpu(x, y), ref: ([x, y]) => ref(x, y) });
      }
    },
  });
}

// Domains where each unary op is smooth (away from kinks for abs/relu/clamp).
const DOMAIN: Record<string, [number, number]> = {
  log: [0.2, 3],
  sqrt: [0.2, 3],
  rsqrt: [0.2, 3],
  powScalar: [0.3, 2],
};
const SCALARS: Record<string, [number, number]> = {
  scale: [-1.7, 0],
  addScalar: [0.3, 0],
  powScalar: [1.7, 0],
  clamp: [-0.5, 0.6],
};

for (const op of UNARY_OPS) {
  Deno.test({
    name: `unary ${op}: forward vs float64 and finite-difference gradient`,
    ...gpuTest,
    fn: async () => {
      const [lo, hi] = DOMAIN[op] ?? [-3, 3];
      const x = randHost(rng, [13, 29], lo, hi);
      if (["abs", "relu", "clamp"].includes(op)) {
        // Move points off the kinks (0, and the clamp bounds) so the derivative is defined.
        for (let i = 0; i < x.data.length; i++) {
          for (const k of [0, -0.5, 0.6]) if (Math.abs(x.data[i] - k) < 1e-3) x.data[i] += 0.01;
        }
      }
      const [s0, s1] = SCALARS[op] ?? [0, 0];
      await checkOp({
        inputs: [x],
        gpu: ([t]) => unaryOp(op, t, s0, s1),
        ref: ([h]) => unaryRef(op, h, s0, s1),
        atol: 1e-5,
        rtol: 2e-4,
      });
    },
  });
}

Deno.test({
  name: "elementwise: shapes that do not broadcast raise an error naming both",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const a = Tensor.zeros(c, [3, 4]);
    const b = Tensor.zeros(c, [5]);
    let msg = "";
    try {
      add(a, b);
    } catch (e) {
      if (!(e instanceof ShapeError)) throw e;
      msg = e.message;
    }
    if (!msg.includes("[3, 4]") || !msg.includes("[5]")) {
      throw new Error(`message does not name both shapes: ${msg}`);
    }
    a.dispose();
    b.dispose();
  },
});

Deno.test({
  name: "elementwise: grids over 65,535 workgroups are split (2^24 + 3 elements)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const n = (1 << 24) + 3; // 65,537 workgroups of 256
    const a = Tensor.full(c, [n], 1.5);
    const b = Tensor.full(c, [n], 2);
    const y = mul(a, b);
    const v = await y.read();
    for (const i of [0, 1 << 20, n - 2, n - 1]) {
      if (v[i] !== 3) throw new Error(`element ${i} is ${v[i]}, expected 3`);
    }
    a.dispose();
    b.dispose();
    y.dispose();
  },
});
