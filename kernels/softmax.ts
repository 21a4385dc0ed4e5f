/**
 * Softmax and log-softmax over the last axis, and their backward kernels: one workgroup per row,
 * or one thread per row on CPU adapters (see `RowLayout` in reduce.ts).
 *
 * The forward finds the row's maximum and the sum of `exp(x - max)` in a single pass ("online"
 * softmax: each thread keeps a running maximum and rescales its running sum when the maximum
 * grows), merges the threads' pairs with a tree, then writes the outputs in a second pass. Every
 * exponent is ≤ 0, so inputs of any magnitude stay finite; a row of equal mask values
 * (e.g. all −3.4e38) gives the uniform distribution, like PyTorch.
 */
import type { GpuContext } from "./device.ts";
import { cachedWgsl, packParams } from "./launch.ts";
import { F32_LOWEST_WGSL, laneSumWgsl, launchRows, type RowLayout, rowLayout, rowMain } from "./reduce.ts";

/**
 * WGSL for `fn NAME(lid: u32, lane: u32, start: u32, n: u32) -> vec2f`: reads `X[start .. start+n)`
 * with the threads of one row (see `rowMain` in reduce.ts) and returns (max, Σ exp(x − max)) to
 * each of them, so that the row's log-sum-exp is `max + log(sum)`. Needs a storage array `X`
 * declared by the caller.
 */
export function onlineLseWgsl(name: string, layout: RowLayout): string {
  const { wg, perThread } = layout;
  const scan = /* wgsl */ `
  var m = ${F32_LOWEST_WGSL};
  var s = 0.0;
  for (var k = lane; k < n; k += ${perThread ? 1 : wg}u) {
    let v = X[start + k];
    if (v > m) { s = s * exp(m - v) + 1.0; m = v; } else { s = s + exp(v - m); }
  }`;
  if (perThread) {
    return /* wgsl */ `
fn ${name}(lid: u32, lane: u32, start: u32, n: u32) -> vec2f {${scan}
  return vec2f(m, s);
}`;
  }
  return /* wgsl */ `
var<workgroup> ${name}_m: array<f32, ${wg}>;
var<workgroup> ${name}_s: array<f32, ${wg}>;
fn ${name}(lid: u32, lane: u32, start: u32, n: u32) -> vec2f {${scan}
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

function softmaxWgsl(layout: RowLayout, log: boolean): string {
  return /* wgsl */ `
struct P { rows: u32, n: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> O: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${onlineLseWgsl("lse", layout)}
${rowMain(layout)}
  if (row >= p.rows) { return; }
  let start = row * p.n;
  let ms = lse(lid, lane, start, p.n);
  // (x − max) − log Σ, not x − (max + log Σ): the latter rounds away log Σ next to huge maxima.
  ${log ? "let logSum = log(ms.y);" : "let inv = 1.0 / ms.y;"}
  for (var k = lane; k < p.n; k += STEP) {
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
  const layout = rowLayout(ctx, n, rows);
  const code = cachedWgsl(`softmax ${layout.perThread} ${layout.wg} ${log}`, () => softmaxWgsl(layout, log));
  launchRows(ctx, code, [x, out], packParams([rows, n]), rows, layout);
}

function softmaxBackwardWgsl(layout: RowLayout, log: boolean): string {
  // softmax:     dx = y ⊙ (g − Σ g⊙y)
  // logSoftmax:  dx = g − exp(y) · Σ g
  return /* wgsl */ `
struct P { rows: u32, n: u32 }
@group(0) @binding(0) var<storage, read> Y: array<f32>;
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${laneSumWgsl("wsum", layout)}
${rowMain(layout)}
  if (row >= p.rows) { return; }
  let start = row * p.n;
  var acc = 0.0;
  for (var k = lane; k < p.n; k += STEP) {
    ${log ? "acc += G[start + k];" : "acc += G[start + k] * Y[start + k];"}
  }
  let dot = wsum(lid, acc);
  for (var k = lane; k < p.n; k += STEP) {
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
  const layout = rowLayout(ctx, n, rows);
  const key = `softmaxBackward ${layout.perThread} ${layout.wg} ${log}`;
  const code = cachedWgsl(key, () => softmaxBackwardWgsl(layout, log));
  launchRows(ctx, code, [y, g, out], packParams([rows, n]), rows, layout);
}
