/**
 * Elementwise WGSL kernels: binary ops with NumPy broadcasting, unary ops given as a WGSL
 * expression of `x`, in-place `dst += alpha * src`, and the reduction of a broadcast gradient
 * back to an input's shape.
 */
import type { GpuContext } from "./device.ts";
import { cachedWgsl, launchLinear, LINEAR_MAIN, MAX_RANK, packParams, padDims } from "./launch.ts";

/** Binary ops as WGSL expressions of `a` and `b`. */
export const BINARY_EXPR = {
  add: "a + b",
  sub: "a - b",
  mul: "a * b",
  div: "a / b",
  maximum: "max(a, b)",
  minimum: "min(a, b)",
} as const;
export type BinaryOp = keyof typeof BINARY_EXPR;

const DIMS_STRUCT = `shape: array<vec4u, 2>, sa: array<vec4u, 2>, sb: array<vec4u, 2>`;

function binarySameShapeWgsl(expr: string): string {
  return /* wgsl */ `
struct P { n: u32 }
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  let a = A[gid];
  let b = B[gid];
  O[gid] = ${expr};
}`;
}

function binaryRepeatWgsl(expr: string): string {
  return /* wgsl */ `
struct P { n: u32, na: u32, nb: u32 }
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  let a = A[gid % p.na];
  let b = B[gid % p.nb];
  O[gid] = ${expr};
}`;
}

/**
 * True when `shape` broadcast to `out` is a block of trailing dimensions repeated along the
 * leading ones (a bias [V] against [N, V], a scalar against anything): element i of the
 * output then reads element i mod size of the operand.
 */
function repeatsAlongLeading(shape: readonly number[], out: readonly number[]): boolean {
  const padded = [...new Array(out.length - shape.length).fill(1), ...shape];
  let k = 0;
  while (k < out.length && padded[k] === 1) k++;
  for (let d = k; d < out.length; d++) if (padded[d] !== out[d]) return false;
  return true;
}

function binaryBroadcastWgsl(expr: string): string {
  return /* wgsl */ `
struct P { n: u32, rank: u32, _p0: u32, _p1: u32, ${DIMS_STRUCT} }
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  var rem = gid;
  var ia = 0u;
  var ib = 0u;
  for (var d = i32(p.rank) - 1; d >= 0; d--) {
    let k = u32(d);
    let s = p.shape[k / 4u][k % 4u];
    let c = rem % s;
    rem = rem / s;
    ia += c * p.sa[k / 4u][k % 4u];
    ib += c * p.sb[k / 4u][k % 4u];
  }
  let a = A[ia];
  let b = B[ib];
  O[gid] = ${expr};
}`;
}

/** Row-major strides of `shape`, with 0 where the dimension is broadcast (size 1 in `shape`, >1 in `out`). */
export function broadcastStrides(shape: readonly number[], out: readonly number[]): number[] {
  const r = out.length;
  const padded = [...new Array(r - shape.length).fill(1), ...shape];
  const strides = new Array(r).fill(0);
  let s = 1;
  for (let d = r - 1; d >= 0; d--) {
    strides[d] = padded[d] === 1 && out[d] !== 1 ? 0 : s;
    s *= padded[d];
  }
  return strides;
}

/** `out = a OP b` with `out` of shape `outShape` (a and b broadcast to it). */
export function binaryKernel(
  ctx: GpuContext,
  op: BinaryOp,
  a: GPUBuffer,
  aShape: readonly number[],
  b: GPUBuffer,
  bShape: readonly number[],
  out: GPUBuffer,
  outShape: readonly number[],
): void {
  const n = outShape.reduce((x, y) => x * y, 1);
  const expr = BINARY_EXPR[op];
  const same = aShape.length === bShape.length && aShape.every((d, i) => d === bShape[i]);
  if (same) {
    launchLinear(
      ctx,
      cachedWgsl(`binary same ${op}`, () => binarySameShapeWgsl(expr)),
      [a, b, out],
      packParams([n]),
      n,
    );
    return;
  }
  if (repeatsAlongLeading(aShape, outShape) && repeatsAlongLeading(bShape, outShape)) {
    // One modulo per operand instead of a div/mod per dimension: the common bias and scalar
    // cases, and much cheaper on CPU adapters, where integer division is not vectorised.
    const na = aShape.reduce((x, y) => x * y, 1);
    const nb = bShape.reduce((x, y) => x * y, 1);
    const code = cachedWgsl(`binary repeat ${op}`, () => binaryRepeatWgsl(expr));
    launchLinear(ctx, code, [a, b, out], packParams([n, na, nb]), n);
    return;
  }
  if (outShape.length > MAX_RANK) throw new RangeError(`rank ${outShape.length} > ${MAX_RANK}`);
  const params = packParams([
    n,
    outShape.length,
    0,
    0,
    ...padDims(outShape, 1),
    ...padDims(broadcastStrides(aShape, outShape)),
    ...padDims(broadcastStrides(bShape, outShape)),
  ]);
  launchLinear(
    ctx,
    cachedWgsl(`binary broadcast ${op}`, () => binaryBroadcastWgsl(expr)),
    [a, b, out],
    params,
    n,
  );
}

/** `out = f(x)` for a WGSL expression of `x` (and the uniform scalars `s0`, `s1`). */
export function unaryKernel(
  ctx: GpuContext,
  expr: string,
  x: GPUBuffer,
  out: GPUBuffer,
  n: number,
  s0 = 0,
  s1 = 0,
): void {
  const code = cachedWgsl(`unary ${expr}`, () => /* wgsl */ `
struct P { n: u32, s0: f32, s1: f32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> O: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  let x = X[gid];
  let s0 = p.s0;
  let s1 = p.s1;
  O[gid] = ${expr};
}`);
  launchLinear(ctx, code, [x, out], packParams([n, { f: s0 }, { f: s1 }]), n);
}

/** `out = f(x, g)`: a unary op's backward as a WGSL expression of `x` (input), `y` (output) and `g`. */
export function unaryBackwardKernel(
  ctx: GpuContext,
  expr: string,
  x: GPUBuffer,
  y: GPUBuffer,
  g: GPUBuffer,
  out: GPUBuffer,
  n: number,
  s0 = 0,
  s1 = 0,
): void {
  const code = cachedWgsl(`unaryBackward ${expr}`, () => /* wgsl */ `
struct P { n: u32, s0: f32, s1: f32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> Y: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@group(0) @binding(4) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  let x = X[gid];
  let y = Y[gid];
  let g = G[gid];
  let s0 = p.s0;
  let s1 = p.s1;
  O[gid] = ${expr};
}`);
  launchLinear(ctx, code, [x, y, g, out], packParams([n, { f: s0 }, { f: s1 }]), n);
}

const AXPY_WGSL = /* wgsl */ `
struct P { n: u32, alpha: f32 }
@group(0) @binding(0) var<storage, read_write> D: array<f32>;
@group(0) @binding(1) var<storage, read> S: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  D[gid] = D[gid] + p.alpha * S[gid];
}`;

/** In place: `dst[i] += alpha * src[i]` for the first `n` elements. */
export function axpyKernel(ctx: GpuContext, dst: GPUBuffer, src: GPUBuffer, n: number, alpha = 1): void {
  launchLinear(ctx, AXPY_WGSL, [dst, src], packParams([n, { f: alpha }]), n);
}

const SUM_TO_SHAPE_WGSL = /* wgsl */ `
struct P { n: u32, rank: u32, count: u32, _p: u32, gshape: array<vec4u, 2>, oshape: array<vec4u, 2> }
@group(0) @binding(0) var<storage, read> G: array<f32>;
@group(0) @binding(1) var<storage, read_write> O: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
fn dim(v: array<vec4u, 2>, k: u32) -> u32 { return v[k / 4u][k % 4u]; }
${LINEAR_MAIN(64)}
  if (gid >= p.n) { return; }
  var acc = 0.0;
  var comp = 0.0; // Kahan compensation: the reduced count can be large (bias gradients)
  for (var k = 0u; k < p.count; k++) {
    var remj = gid;
    var remk = k;
    var gi = 0u;
    var stride = 1u;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
      let u = u32(d);
      let gs = dim(p.gshape, u);
      var c: u32;
      if (dim(p.oshape, u) == 1u && gs != 1u) { c = remk % gs; remk = remk / gs; }
      else { c = remj % gs; remj = remj / gs; }
      gi += c * stride;
      stride *= gs;
    }
    let y = G[gi] - comp;
    let t = acc + y;
    comp = (t - acc) - y;
    acc = t;
  }
  O[gid] = acc;
}`;

/**
 * Sums a gradient of shape `gShape` over the dimensions that were broadcast to produce it, giving
 * `outShape` (which broadcasts to `gShape`).
 */
export function sumToShapeKernel(
  ctx: GpuContext,
  g: GPUBuffer,
  gShape: readonly number[],
  out: GPUBuffer,
  outShape: readonly number[],
): void {
  const r = gShape.length;
  const o = [...new Array(r - outShape.length).fill(1), ...outShape];
  const n = o.reduce((x, y) => x * y, 1);
  let count = 1;
  for (let d = 0; d < r; d++) if (o[d] === 1 && gShape[d] !== 1) count *= gShape[d];
  const params = packParams([n, r, count, 0, ...padDims(gShape, 1), ...padDims(o, 1)]);
  launchLinear(ctx, SUM_TO_SHAPE_WGSL, [g, out], params, n, 64);
}
