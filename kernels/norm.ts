/**
 * LayerNorm and RMSNorm over the last axis, forward and backward: one workgroup per row, or one
 * thread per row on CPU adapters (see `RowLayout` in reduce.ts).
 *
 * Nothing is saved between forward and backward: the backward recomputes the row statistics
 * (mean, 1/σ) from `x`, which costs one more read of a row the kernel reads anyway and keeps
 * the ops free of hidden tensors whose lifetime nobody owns.
 *
 * The backward kernels also write, per element, the term whose sum over rows is the weight's
 * gradient (`g · x̂`); the op layer sums it over rows with the column reduction of reduce.ts.
 */
import type { GpuContext } from "./device.ts";
import { cachedWgsl, packParams } from "./launch.ts";
import { laneSumWgsl, launchRows, type RowLayout, rowLayout, rowMain } from "./reduce.ts";

const HEAD = "struct P { rows: u32, n: u32, eps: f32 }";

/** WGSL computing the row's `mean` and `rstd` = 1/sqrt(biased variance + eps), two-pass. */
const LAYER_STATS = /* wgsl */ `
  var s1 = 0.0;
  for (var k = lane; k < p.n; k += STEP) { s1 += X[start + k]; }
  let mean = wsum(lid, s1) / f32(p.n);
  var s2 = 0.0;
  for (var k = lane; k < p.n; k += STEP) { let d = X[start + k] - mean; s2 += d * d; }
  let rstd = inverseSqrt(wsum(lid, s2) / f32(p.n) + p.eps);`;

/** WGSL computing the row's `r` = 1/sqrt(mean(x²) + eps). */
const RMS_STATS = /* wgsl */ `
  var s2 = 0.0;
  for (var k = lane; k < p.n; k += STEP) { let v = X[start + k]; s2 += v * v; }
  let r = inverseSqrt(wsum(lid, s2) / f32(p.n) + p.eps);`;

function layerNormWgsl(layout: RowLayout): string {
  return /* wgsl */ `
${HEAD}
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<uniform> p: P;
${laneSumWgsl("wsum", layout)}
${rowMain(layout)}
  if (row >= p.rows) { return; }
  let start = row * p.n;
  ${LAYER_STATS}
  for (var k = lane; k < p.n; k += STEP) {
    Y[start + k] = (X[start + k] - mean) * rstd * W[k] + B[k];
  }
}`;
}

/** `y = (x − mean) / sqrt(var + eps) · w + b` for each of `rows` rows of `n` values. */
export function layerNormKernel(
  ctx: GpuContext,
  x: GPUBuffer,
  w: GPUBuffer,
  b: GPUBuffer,
  y: GPUBuffer,
  rows: number,
  n: number,
  eps: number,
): void {
  if (n === 0) return;
  const layout = rowLayout(ctx, n, rows);
  const code = cachedWgsl(`layerNorm ${layout.perThread} ${layout.wg}`, () => layerNormWgsl(layout));
  launchRows(ctx, code, [x, w, b, y], packParams([rows, n, { f: eps }]), rows, layout);
}

function layerNormBackwardWgsl(layout: RowLayout, weightTerm: boolean): string {
  // With x̂ = (x − mean)·rstd and d = g ⊙ w:  dx = rstd · (d − mean(d) − x̂ · mean(d ⊙ x̂)).
  return /* wgsl */ `
${HEAD}
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> DX: array<f32>;
${weightTerm ? "@group(0) @binding(4) var<storage, read_write> GW: array<f32>;" : ""}
@group(0) @binding(${weightTerm ? 5 : 4}) var<uniform> p: P;
${laneSumWgsl("wsum", layout)}
${laneSumWgsl("wsum2", layout, "vec2f")}
${rowMain(layout)}
  if (row >= p.rows) { return; }
  let start = row * p.n;
  ${LAYER_STATS}
  var acc = vec2f(0.0);
  for (var k = lane; k < p.n; k += STEP) {
    let i = start + k;
    let d = G[i] * W[k];
    acc += vec2f(d, d * (X[i] - mean) * rstd);
  }
  let sums = wsum2(lid, acc) / f32(p.n);
  for (var k = lane; k < p.n; k += STEP) {
    let i = start + k;
    let xhat = (X[i] - mean) * rstd;
    DX[i] = rstd * (G[i] * W[k] - sums.x - xhat * sums.y);
    ${weightTerm ? "GW[i] = G[i] * xhat;" : ""}
  }
}`;
}

/**
 * Launches a norm's backward kernel over `rows` rows of `n` (layer norm and RMS norm share the
 * bindings X, W, G, DX and the optional per-element weight term GW, and the parameters).
 */
function launchNormBackward(
  ctx: GpuContext,
  name: string,
  build: (layout: RowLayout, weightTerm: boolean) => string,
  buffers: GPUBuffer[],
  gw: GPUBuffer | null,
  rows: number,
  n: number,
  eps: number,
): void {
  if (n === 0) return;
  const layout = rowLayout(ctx, n, rows);
  const code = cachedWgsl(
    `${name} ${layout.perThread} ${layout.wg} ${gw !== null}`,
    () => build(layout, gw !== null),
  );
  launchRows(ctx, code, gw ? [...buffers, gw] : buffers, packParams([rows, n, { f: eps }]), rows, layout);
}

/**
 * Backward of {@link layerNormKernel}: the input gradient into `dx`, and (when `gw` is given)
 * `g · x̂` per element, whose sum over rows is the weight's gradient.
 */
export function layerNormBackwardKernel(
  ctx: GpuContext,
  x: GPUBuffer,
  w: GPUBuffer,
  g: GPUBuffer,
  dx: GPUBuffer,
  gw: GPUBuffer | null,
  rows: number,
  n: number,
  eps: number,
): void {
  launchNormBackward(ctx, "layerNormBackward", layerNormBackwardWgsl, [x, w, g, dx], gw, rows, n, eps);
}

function rmsNormWgsl(layout: RowLayout): string {
  return /* wgsl */ `
${HEAD}
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${laneSumWgsl("wsum", layout)}
${rowMain(layout)}
  if (row >= p.rows) { return; }
  let start = row * p.n;
  ${RMS_STATS}
  for (var k = lane; k < p.n; k += STEP) {
    Y[start + k] = X[start + k] * r * W[k];
  }
}`;
}

/** `y = x / sqrt(mean(x²) + eps) · w` for each of `rows` rows of `n` values. */
export function rmsNormKernel(
  ctx: GpuContext,
  x: GPUBuffer,
  w: GPUBuffer,
  y: GPUBuffer,
  rows: number,
  n: number,
  eps: number,
): void {
  if (n === 0) return;
  const layout = rowLayout(ctx, n, rows);
  const code = cachedWgsl(`rmsNorm ${layout.perThread} ${layout.wg}`, () => rmsNormWgsl(layout));
  launchRows(ctx, code, [x, w, y], packParams([rows, n, { f: eps }]), rows, layout);
}

function rmsNormBackwardWgsl(layout: RowLayout, weightTerm: boolean): string {
  // With r = 1/sqrt(mean(x²) + eps) and d = g ⊙ w:  dx = r·d − x · r³ · mean(d ⊙ x).
  return /* wgsl */ `
${HEAD}
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> DX: array<f32>;
${weightTerm ? "@group(0) @binding(4) var<storage, read_write> GW: array<f32>;" : ""}
@group(0) @binding(${weightTerm ? 5 : 4}) var<uniform> p: P;
${laneSumWgsl("wsum", layout)}
${rowMain(layout)}
  if (row >= p.rows) { return; }
  let start = row * p.n;
  ${RMS_STATS}
  var acc = 0.0;
  for (var k = lane; k < p.n; k += STEP) { let i = start + k; acc += G[i] * W[k] * X[i]; }
  let c = wsum(lid, acc) / f32(p.n) * r * r * r;
  for (var k = lane; k < p.n; k += STEP) {
    let i = start + k;
    DX[i] = r * G[i] * W[k] - X[i] * c;
    ${weightTerm ? "GW[i] = G[i] * X[i] * r;" : ""}
  }
}`;
}

/**
 * Backward of {@link rmsNormKernel}: the input gradient into `dx`, and (when `gw` is given)
 * `g · x · r` per element, whose sum over rows is the weight's gradient.
 */
export function rmsNormBackwardKernel(
  ctx: GpuContext,
  x: GPUBuffer,
  w: GPUBuffer,
  g: GPUBuffer,
  dx: GPUBuffer,
  gw: GPUBuffer | null,
  rows: number,
  n: number,
  eps: number,
): void {
  launchNormBackward(ctx, "rmsNormBackward", rmsNormBackwardWgsl, [x, w, g, dx], gw, rows, n, eps);
}
