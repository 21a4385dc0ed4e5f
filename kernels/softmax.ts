/**
 * Softmax and log-softmax over the last axis, and their backward kernels: one workgroup per row.
 *
 * The forward finds the row's maximum and the sum of `exp(x - max)` in a single pass ("online"
 * softmax: each thread keeps a running maximum and rescales its running sum when the maximum
 * grows), merges the threads' pairs with a tree, then writes the outputs in a second pass. Every
 * exponent is ≤ 0, so inputs of any magnitude stay finite; a row of equal mask values
 * (e.g. all −3.4e38) gives the uniform distribution, like PyTorch.
 */
import type { GpuContext } from "./device.ts";
import { packParams } from "./launch.ts";
import { F32_LOWEST_WGSL, launchRows, ROW_MAIN, rowWorkgroupSize, treeSumWgsl } from "./reduce.ts";

/**
 * WGSL for `fn NAME(lid: u32, start: u32, n: u32) -> vec2f`: reads `X[start .. start+n)` with a
 * workgroup of `wg` threads and returns (max, Σ exp(x − max)) to every thread, so that the
 * row's log-sum-exp is `max + log(sum)`. Needs a storage array `X` declared by the caller.
 */
export function onlineLseWgsl(name: string, wg: number): string {
  return /* wgsl */ `
var<workgroup> ${name}_m: array<f32, ${wg}>;
var<workgroup> ${name}_s: array<f32, ${wg}>;
fn ${name}(lid: u32, start: u32, n: u32) -> vec2f {
  var m = ${F32_LOWEST_WGSL};
  var s = 0.0;
  for (var k = lid; k < n; k += ${wg}u) {
    let v = X[start + k];
    if (v > m) { s = s * exp(m - v) + 1.0; m = v; } else { s = s + exp(v - m); }
  }
  ${name}_m[lid] = m;
  ${name}_s[lid] = s;
  workgroupBarrier();
  for (var st = ${wg / 2}u; st > 0u; st >>= 1u) {
    if (lid < st) {
      let m1 = ${name}_m[lid];
      let m2 = ${name}_m[lid + st];
      let mm = max(m1, m2);
      ${name}_s[lid] = ${name}_s[lid] * exp(m1 - mm) + ${name}_s[lid + st] * exp(m2 - mm);
      ${name}_m[lid] = mm;
    }
    workgroupBarrier();
  }
  let r = vec2f(${name}_m[0], ${name}_s[0]);
  workgroupBarrier();
  return r;
}`;
}

function softmaxWgsl(wg: number, log: boolean): string {
  return /* wgsl */ `
struct P { rows: u32, n: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> O: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${onlineLseWgsl("lse", wg)}
${ROW_MAIN(wg)}
  if (row >= p.rows) { return; }
  let start = row * p.n;
  let ms = lse(lid, start, p.n);
  // (x − max) − log Σ, not x − (max + log Σ): the latter rounds away log Σ next to huge maxima.
  ${log ? "let logSum = log(ms.y);" : "let inv = 1.0 / ms.y;"}
  for (var k = lid; k < p.n; k += ${wg}u) {
    ${
    log ? "O[start + k] = (X[start + k] - ms.x) - logSum;" : "O[start + k] = exp(X[start + k] - ms.x) * inv;"
  }
  }
}`;
}

/** Softmax (or log-softmax when `log`) of each of `rows` rows of `n` contiguous values. */
export function softmaxKernel(
  ctx: GpuContext,
  x: GPUBuffer,
  out: GPUBuffer,
  rows: number,
  n: number,
  log = false,
): void {
  if (n === 0) return;
  launchRows(ctx, softmaxWgsl(rowWorkgroupSize(n), log), [x, out], packParams([rows, n]), rows);
}

function softmaxBackwardWgsl(wg: number, log: boolean): string {
  // softmax:     dx = y ⊙ (g − Σ g⊙y)
  // logSoftmax:  dx = g − exp(y) · Σ g
  return /* wgsl */ `
struct P { rows: u32, n: u32 }
@group(0) @binding(0) var<storage, read> Y: array<f32>;
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${treeSumWgsl("wsum", wg)}
${ROW_MAIN(wg)}
  if (row >= p.rows) { return; }
  let start = row * p.n;
  var acc = 0.0;
  for (var k = lid; k < p.n; k += ${wg}u) {
    ${log ? "acc += G[start + k];" : "acc += G[start + k] * Y[start + k];"}
  }
  let dot = wsum(lid, acc);
  for (var k = lid; k < p.n; k += ${wg}u) {
    let i = start + k;
    ${log ? "O[i] = G[i] - exp(Y[i]) * dot;" : "O[i] = Y[i] * (G[i] - dot);"}
  }
}`;
}

/**
 * Backward of {@link softmaxKernel} from its output `y` and the output gradient `g` (rows of
 * `n`): writes the input gradient to `out`.
 */
export function softmaxBackwardKernel(
  ctx: GpuContext,
  y: GPUBuffer,
  g: GPUBuffer,
  out: GPUBuffer,
  rows: number,
  n: number,
  log = false,
): void {
  if (n === 0) return;
  launchRows(ctx, softmaxBackwardWgsl(rowWorkgroupSize(n), log), [y, g, out], packParams([rows, n]), rows);
}
