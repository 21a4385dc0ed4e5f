/**
 * LayerNorm and RMSNorm over the last axis, forward and backward, one workgroup per row.
 *
 * Nothing is saved between forward and backward: the backward recomputes the row statistics
 * (mean, 1/σ) from `x`, which costs one more read of a row the kernel reads anyway and keeps
 * the ops free of hidden tensors whose lifetime nobody owns.
 *
 * The backward kernels also write, per element, the term whose sum over rows is the weight's
 * gradient (`g · x̂`); the op layer sums it over rows with the column reduction of reduce.ts.
 */
import type { GpuContext } from "./device.ts";
import { packParams } from "./launch.ts";
import { launchRows, ROW_MAIN, rowWorkgroupSize, treeSumWgsl } from "./reduce.ts";

const HEAD = "struct P { rows: u32, n: u32, eps: f32 }";

/** WGSL computing the row's `mean` and `rstd` = 1/sqrt(biased variance + eps), two-pass. */
const LAYER_STATS = (wg: number) => /* wgsl */ `
  var s1 = 0.0;
  for (var k = lid; k < p.n; k += ${wg}u) { s1 += X[start + k]; }
  let mean = wsum(lid, s1) / f32(p.n);
  var s2 = 0.0;
  for (var k = lid; k < p.n; k += ${wg}u) { let d = X[start + k] - mean; s2 += d * d; }
  let rstd = inverseSqrt(wsum(lid, s2) / f32(p.n) + p.eps);`;

/** WGSL computing the row's `r` = 1/sqrt(mean(x²) + eps). */
const RMS_STATS = (wg: number) => /* wgsl */ `
  var s2 = 0.0;
  for (var k = lid; k < p.n; k += ${wg}u) { let v = X[start + k]; s2 += v * v; }
  let r = inverseSqrt(wsum(lid, s2) / f32(p.n) + p.eps);`;

function layerNormWgsl(wg: number): string {
  return /* wgsl */ `
${HEAD}
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<uniform> p: P;
${treeSumWgsl("wsum", wg)}
${ROW_MAIN(wg)}
  if (row >= p.rows) { return; }
  let start = row * p.n;
  ${LAYER_STATS(wg)}
  for (var k = lid; k < p.n; k += ${wg}u) {
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
  launchRows(ctx, layerNormWgsl(rowWorkgroupSize(n)), [x, w, b, y], packParams([rows, n, { f: eps }]), rows);
}

function layerNormBackwardWgsl(wg: number, weightTerm: boolean): string {
  // With x̂ = (x − mean)·rstd and d = g ⊙ w:  dx = rstd · (d − mean(d) − x̂ · mean(d ⊙ x̂)).
  return /* wgsl */ `
${HEAD}
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> DX: array<f32>;
${weightTerm ? "@group(0) @binding(4) var<storage, read_write> GW: array<f32>;" : ""}
@group(0) @binding(${weightTerm ? 5 : 4}) var<uniform> p: P;
${treeSumWgsl("wsum", wg)}
${treeSumWgsl("wsum2", wg, "vec2f")}
${ROW_MAIN(wg)}
  if (row >= p.rows) { return; }
  let start = row * p.n;
  ${LAYER_STATS(wg)}
  var acc = vec2f(0.0);
  for (var k = lid; k < p.n; k += ${wg}u) {
    let i = start + k;
    let d = G[i] * W[k];
    acc += vec2f(d, d * (X[i] - mean) * rstd);
  }
  let sums = wsum2(lid, acc) / f32(p.n);
  for (var k = lid; k < p.n; k += ${wg}u) {
    let i = start + k;
    let xhat = (X[i] - mean) * rstd;
    DX[i] = rstd * (G[i] * W[k] - sums.x - xhat * sums.y);
    ${weightTerm ? "GW[i] = G[i] * xhat;" : ""}
  }
}`;
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
  if (n === 0) return;
  const code = layerNormBackwardWgsl(rowWorkgroupSize(n), gw !== null);
  const buffers = gw ? [x, w, g, dx, gw] : [x, w, g, dx];
  launchRows(ctx, code, buffers, packParams([rows, n, { f: eps }]), rows);
}

function rmsNormWgsl(wg: number): string {
  return /* wgsl */ `
${HEAD}
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${treeSumWgsl("wsum", wg)}
${ROW_MAIN(wg)}
  if (row >= p.rows) { return; }
  let start = row * p.n;
  ${RMS_STATS(wg)}
  for (var k = lid; k < p.n; k += ${wg}u) {
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
  launchRows(ctx, rmsNormWgsl(rowWorkgroupSize(n)), [x, w, y], packParams([rows, n, { f: eps }]), rows);
}

function rmsNormBackwardWgsl(wg: number, weightTerm: boolean): string {
  // With r = 1/sqrt(mean(x²) + eps) and d = g ⊙ w:  dx = r·d − x · r³ · mean(d ⊙ x).
  return /* wgsl */ `
${HEAD}
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> DX: array<f32>;
${weightTerm ? "@group(0) @binding(4) var<storage, read_write> GW: array<f32>;" : ""}
@group(0) @binding(${weightTerm ? 5 : 4}) var<uniform> p: P;
${treeSumWgsl("wsum", wg)}
${ROW_MAIN(wg)}
  if (row >= p.rows) { return; }
  let start = row * p.n;
  ${RMS_STATS(wg)}
  var acc = 0.0;
  for (var k = lid; k < p.n; k += ${wg}u) { let i = start + k; acc += G[i] * W[k] * X[i]; }
  let c = wsum(lid, acc) / f32(p.n) * r * r * r;
  for (var k = lid; k < p.n; k += ${wg}u) {
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
  if (n === 0) return;
  const code = rmsNormBackwardWgsl(rowWorkgroupSize(n), gw !== null);
  const buffers = gw ? [x, w, g, dx, gw] : [x, w, g, dx];
  launchRows(ctx, code, buffers, packParams([rows, n, { f: eps }]), rows);
}
