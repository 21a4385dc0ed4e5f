/**
 * Elementwise ops. For each: the forward (a GPU kernel), the backward rule, and the float64 CPU
 * reference used by the tests, side by side.
 *
 * Binary ops broadcast like NumPy; their backward sums the gradient over the broadcast
 * dimensions ({@link sumToShape}).
 */
import {
  binaryKernel,
  type BinaryOp,
  sumToShapeKernel,
  unaryBackwardKernel,
  unaryKernel,
} from "../../kernels/elementwise.ts";
import { broadcastShapes, type HostTensor, map, mapBroadcast } from "../reference.ts";
import { record } from "../tape.ts";
import { fmtShape, ShapeError, Tensor } from "../tensor.ts";

function sameCtx(op: string, a: Tensor, b: Tensor): void {
  if (a.ctx !== b.ctx) throw new Error(`${op}: ${a.label} and ${b.label} live on different GPU contexts`);
}

/** The broadcast shape of `a` and `b`, or a ShapeError naming both. */
export function broadcastShape(op: string, a: readonly number[], b: readonly number[]): number[] {
  const s = broadcastShapes(a, b);
  if (!s) {
    throw new ShapeError(`${op}: shapes ${fmtShape(a)} and ${fmtShape(b)} cannot be broadcast together`);
  }
  return s;
}

function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  sameCtx(op, a, b);
  const shape = broadcastShape(op, a.shape, b.shape);
  const out = Tensor.empty(a.ctx, shape);
  binaryKernel(a.ctx, op, a.buffer, a.shape, b.buffer, b.shape, out.buffer, shape);
  return out;
}

/**
 * Sums `g` down to `shape` (the inverse of broadcasting). Returns `g` itself when the shapes
 * already agree.
 */
export function sumToShape(g: Tensor, shape: readonly number[]): Tensor {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g;
  const out = Tensor.empty(g.ctx, shape);
  sumToShapeKernel(g.ctx, g.buffer, g.shape, out.buffer, shape);
  return out;
}

// ---------------------------------------------------------------------------------------------
// add: d/da = 1, d/db = 1

/** `a + b` with broadcasting. */
export function add(a: Tensor, b: Tensor): Tensor {
  const out = binary("add", a, b);
  return record(out, "add", [a, b], (g) => [sumToShape(g, a.shape), sumToShape(g, b.shape)]);
}
/** Float64 reference of {@link add}. */
export const addRef = (a: HostTensor, b: HostTensor): HostTensor => mapBroadcast(a, b, (x, y) => x + y);

// sub: d/da = 1, d/db = -1

/** `a - b` with broadcasting. */
export function sub(a: Tensor, b: Tensor): Tensor {
  const out = binary("sub", a, b);
  return record(out, "sub", [a, b], (g) => [sumToShape(g, a.shape), sumToShape(neg(g), b.shape)]);
}
/** Float64 reference of {@link sub}. */
export const subRef = (a: HostTensor, b: HostTensor): HostTensor => mapBroadcast(a, b, (x, y) => x - y);

// mul: d/da = b, d/db = a

/** `a * b` elementwise with broadcasting. */
export function mul(a: Tensor, b: Tensor): Tensor {
  const out = binary("mul", a, b);
  return record(out, "mul", [a, b], (g) => [
    a.requiresGrad ? sumToShape(binary("mul", g, b), a.shape) : null,
    b.requiresGrad ? sumToShape(binary("mul", g, a), b.shape) : null,
  ]);
}
/** Float64 reference of {@link mul}. */
export const mulRef = (a: HostTensor, b: HostTensor): HostTensor => mapBroadcast(a, b, (x, y) => x * y);

// div: d/da = 1/b, d/db = -a/b²

/** `a / b` elementwise with broadcasting. */
export function div(a: Tensor, b: Tensor): Tensor {
  const out = binary("div", a, b);
  return record(out, "div", [a, b], (g) => [
    a.requiresGrad ? sumToShape(binary("div", g, b), a.shape) : null,
    b.requiresGrad ? sumToShape(neg(binary("div", binary("mul", g, out), b)), b.shape) : null,
  ]);
}
/** Float64 reference of {@link div}. */
export const divRef = (a: HostTensor, b: HostTensor): HostTensor => mapBroadcast(a, b, (x, y) => x / y);

// ---------------------------------------------------------------------------------------------
// Unary ops: each is a WGSL expression of x (forward) and of x, y = f(x), g (backward), plus its
// float64 reference and derivative.

interface UnarySpec {
  forward: string;
  backward: string;
  ref: (x: number, s0: number, s1: number) => number;
}

const GELU_C = Math.sqrt(2 / Math.PI);

const UNARY: Record<string, UnarySpec> = {
  neg: { forward: "-x", backward: "-g", ref: (x) => -x },
  exp: { forward: "exp(x)", backward: "g * y", ref: Math.exp },
  log: { forward: "log(x)", backward: "g / x", ref: Math.log },
  sqrt: { forward: "sqrt(x)", backward: "g * 0.5 / y", ref: Math.sqrt },
  rsqrt: { forward: "inverseSqrt(x)", backward: "-0.5 * g * y / x", ref: (x) => 1 / Math.sqrt(x) },
  square: { forward: "x * x", backward: "2.0 * g * x", ref: (x) => x * x },
  abs: { forward: "abs(x)", backward: "g * sign(x)", ref: Math.abs },
  // tanh(x) for large |x| overflows exp in some implementations: clamp first (tanh(±15) = ±1 in f32).
  tanh: { forward: "tanh(clamp(x, -15.0, 15.0))", backward: "g * (1.0 - y * y)", ref: Math.tanh },
  sigmoid: {
    forward: "1.0 / (1.0 + exp(-clamp(x, -80.0, 80.0)))",
    backward: "g * y * (1.0 - y)",
    ref: (x) => 1 / (1 + Math.exp(-x)),
  },
  relu: { forward: "max(x, 0.0)", backward: "select(0.0, g, x > 0.0)", ref: (x) => Math.max(x, 0) },
  silu: {
    forward: "x / (1.0 + exp(-clamp(x, -80.0, 80.0)))",
    backward:
      "g * (1.0 / (1.0 + exp(-clamp(x, -80.0, 80.0)))) * (1.0 + x * (1.0 - 1.0 / (1.0 + exp(-clamp(x, -80.0, 80.0)))))",
    ref: (x) => x / (1 + Math.exp(-x)),
  },
  // GELU, tanh approximation (GPT-2's "gelu_new"): 0.5 x (1 + tanh(c (x + 0.044715 x³))).
  gelu: {
    forward: `0.5 * x * (1.0 + tanh(clamp(${GELU_C} * (x + 0.044715 * x * x * x), -15.0, 15.0)))`,
    backward: `g * (0.5 * (1.0 + tanh(clamp(${GELU_C} * (x + 0.044715 * x * x * x), -15.0, 15.0))) +
      0.5 * x * (1.0 - pow(tanh(clamp(${GELU_C} * (x + 0.044715 * x * x * x), -15.0, 15.0)), 2.0)) *
      ${GELU_C} * (1.0 + 3.0 * 0.044715 * x * x))`,
    ref: (x) => 0.5 * x * (1 + Math.tanh(GELU_C * (x + 0.044715 * x ** 3))),
  },
  // Scalar forms: s0 and s1 are uniform parameters.
  scale: { forward: "x * s0", backward: "g * s0", ref: (x, s0) => x * s0 },
  addScalar: { forward: "x + s0", backward: "g", ref: (x, s0) => x + s0 },
  powScalar: { forward: "pow(x, s0)", backward: "g * s0 * pow(x, s0 - 1.0)", ref: (x, s0) => x ** s0 },
  clamp: {
    forward: "clamp(x, s0, s1)",
    backward: "select(0.0, g, x >= s0 && x <= s1)",
    ref: (x, s0, s1) => Math.min(Math.max(x, s0), s1),
  },
};

/** Names of the unary ops, for tests and docs. */
export const UNARY_OPS: string[] = Object.keys(UNARY);

function unary(name: string, x: Tensor, s0 = 0, s1 = 0): Tensor {
  const spec = UNARY[name];
  const out = Tensor.empty(x.ctx, x.shape);
  unaryKernel(x.ctx, spec.forward, x.buffer, out.buffer, x.size, s0, s1);
  return record(out, name, [x], (g) => {
    const gx = Tensor.empty(x.ctx, x.shape);
    unaryBackwardKernel(x.ctx, spec.backward, x.buffer, out.buffer, g.buffer, gx.buffer, x.size, s0, s1);
    return [gx];
  });
}

/** Float64 reference of a unary op by name. */
export function unaryRef(name: string, x: HostTensor, s0 = 0, s1 = 0): HostTensor {
  const f = UNARY[name].ref;
  return map(x, (v) => f(v, s0, s1));
}

/** Applies a unary op by name (see {@link UNARY_OPS}); `s0`, `s1` are its scalar arguments. */
export function unaryOp(name: string, x: Tensor, s0 = 0, s1 = 0): Tensor {
  if (!UNARY[name]) throw new Error(`unknown unary op '${name}'; known: ${UNARY_OPS.join(", ")}`);
  return unary(name, x, s0, s1);
}

/** `-x` */
export const neg = (x: Tensor): Tensor => unary("neg", x);
/** `exp(x)` */
export const exp = (x: Tensor): Tensor => unary("exp", x);
/** Natural log. */
export const log = (x: Tensor): Tensor => unary("log", x);
/** Square root. */
export const sqrt = (x: Tensor): Tensor => unary("sqrt", x);
/** `1/sqrt(x)` */
export const rsqrt = (x: Tensor): Tensor => unary("rsqrt", x);
/** `x²` */
export const square = (x: Tensor): Tensor => unary("square", x);
/** `|x|` */
export const abs = (x: Tensor): Tensor => unary("abs", x);
/** Hyperbolic tangent. */
export const tanh = (x: Tensor): Tensor => unary("tanh", x);
/** Logistic sigmoid. */
export const sigmoid = (x: Tensor): Tensor => unary("sigmoid", x);
/** `max(x, 0)` */
export const relu = (x: Tensor): Tensor => unary("relu", x);
/** SiLU (swish): `x · sigmoid(x)`, Llama's MLP activation. */
export const silu = (x: Tensor): Tensor => unary("silu", x);
/** GELU with the tanh approximation (GPT-2 and Phi's `gelu_new`). */
export const gelu = (x: Tensor): Tensor => unary("gelu", x);
/** `x * s` for a number `s`. */
export const scale = (x: Tensor, s: number): Tensor => unary("scale", x, s);
/** `x + s` for a number `s`. */
export const addScalar = (x: Tensor, s: number): Tensor => unary("addScalar", x, s);
/** `x ** p` for a number `p` (x > 0 unless p is an integer). */
export const powScalar = (x: Tensor, p: number): Tensor => unary("powScalar", x, p);
/** Clamps to `[lo, hi]`; the gradient is zero outside. */
export const clamp = (x: Tensor, lo: number, hi: number): Tensor => unary("clamp", x, lo, hi);
