/**
 * Softmax and log-softmax over the last axis, and their backward kernels: one workgroup per row,
 * or one thread per row on CPU adapters (see `RowLayout` in reduce.ts).
 *
 * The forward finds the row's maximum and the sum of `exp(x - max)` in a single pass ("online"
 * softmax: each thread keeps a running maximum and rescales its running sum when the maximum
 * grows), merges the threads' pairs with a tree, then writes the outputs in a second pass. Every
 * exponent is ≤ 0, so inputs of any magnitude stay finite; a row of equal mask values
 * (e.g. all −3.4e38) gives the uniform distribution, like PyTorch.
 *
 * A few very long rows (GRADMM's [10, 50257] vocabulary softmax) would leave a GPU with one busy
 * workgroup per row: on GPUs those rows are split into chunks of {@link SPLIT_CHUNK} with one
 * workgroup each, in two passes (per-chunk statistics, then the outputs, each workgroup merging
 * its row's chunk statistics itself).
 */
import { type GpuContext, splitGrid } from "./device.ts";
import { cachedWgsl, packParams } from "./launch.ts";
import {
  F32_LOWEST_WGSL,
  laneSumWgsl,
  launchRows,
  type RowLayout,
  rowLayout,
  rowMain,
  treeSumWgsl,
} from "./reduce.ts";

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

/** Elements of a row per workgroup when long rows are split (256 threads × 8). */
export const SPLIT_CHUNK = 2048;
const SPLIT_WG = 256;

/** Split rows into chunks on GPUs when they are long and too few to fill the GPU on their own. */
function splitChunks(ctx: GpuContext, rows: number, n: number): number {
  if (ctx.cpuKernels || n < 4 * SPLIT_CHUNK || rows >= 128) return 0;
  return Math.ceil(n / SPLIT_CHUNK);
}

const SPLIT_PARAMS = /* wgsl */ `
struct P { rows: u32, n: u32, chunks: u32 }`;
const SPLIT_MAIN = /* wgsl */ `
@compute @workgroup_size(${SPLIT_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= p.rows * p.chunks) { return; }
  let row = g / p.chunks;
  let c = g % p.chunks;
  let start = row * p.n + c * ${SPLIT_CHUNK}u;
  let len = min(${SPLIT_CHUNK}u, p.n - c * ${SPLIT_CHUNK}u);`;

/** Pass 1 of a split softmax: (max, Σ exp(x − max)) of every chunk into S[2·g], S[2·g + 1]. */
const SPLIT_STATS_WGSL = /* wgsl */ `${SPLIT_PARAMS}
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> S: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${onlineLseWgsl("lse", { perThread: false, wg: SPLIT_WG })}
${SPLIT_MAIN}
  let ms = lse(lid, lid, start, len);
  if (lid == 0u) {
    S[2u * g] = ms.x;
    S[2u * g + 1u] = ms.y;
  }
}`;

/** Pass 2: every workgroup merges its row's chunk statistics, then writes its chunk. */
function splitWriteWgsl(log: boolean): string {
  return /* wgsl */ `${SPLIT_PARAMS}
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> S: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${SPLIT_MAIN}
  var m = ${F32_LOWEST_WGSL};
  for (var k = 0u; k < p.chunks; k++) { m = max(m, S[2u * (row * p.chunks + k)]); }
  var sum = 0.0;
  for (var k = 0u; k < p.chunks; k++) {
    let i = 2u * (row * p.chunks + k);
    sum += S[i + 1u] * exp(S[i] - m);
  }
  ${log ? "let logSum = log(sum);" : "let inv = 1.0 / sum;"}
  for (var k = lid; k < len; k += ${SPLIT_WG}u) {
    ${log ? "O[start + k] = (X[start + k] - m) - logSum;" : "O[start + k] = exp(X[start + k] - m) * inv;"}
  }
}`;
}

/** Backward pass 1: Σ g⊙y (softmax) or Σ g (log-softmax) of every chunk into S[g]. */
function splitDotWgsl(log: boolean): string {
  return /* wgsl */ `${SPLIT_PARAMS}
${
    // log-softmax's sum does not read Y, and an unused binding would be dropped from the layout.
    log ? "" : "@group(0) @binding(0) var<storage, read> Y: array<f32>;"}
@group(0) @binding(${log ? 0 : 1}) var<storage, read> G: array<f32>;
@group(0) @binding(${log ? 1 : 2}) var<storage, read_write> S: array<f32>;
@group(0) @binding(${log ? 2 : 3}) var<uniform> p: P;
${treeSumWgsl("wsum", SPLIT_WG)}
${SPLIT_MAIN}
  var acc = 0.0;
  for (var k = lid; k < len; k += ${SPLIT_WG}u) {
    ${log ? "acc += G[start + k];" : "acc += G[start + k] * Y[start + k];"}
  }
  let total = wsum(lid, acc);
  if (lid == 0u) { S[g] = total; }
}`;
}

/** Backward pass 2: the row's dot product from its chunks, then the input gradient of this chunk. */
function splitBackwardWgsl(log: boolean): string {
  return /* wgsl */ `${SPLIT_PARAMS}
@group(0) @binding(0) var<storage, read> Y: array<f32>;
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> S: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@group(0) @binding(4) var<uniform> p: P;
${SPLIT_MAIN}
  var dot = 0.0;
  for (var k = 0u; k < p.chunks; k++) { dot += S[row * p.chunks + k]; }
  for (var k = lid; k < len; k += ${SPLIT_WG}u) {
    let i = start + k;
    ${log ? "O[i] = G[i] - exp(Y[i]) * dot;" : "O[i] = Y[i] * (G[i] - dot);"}
  }
}`;
}

/**
 * Runs a split-row kernel pair: `first` writes `perChunk` values per chunk into a scratch buffer
 * (its last binding), `second` reads them (bindings made by `secondBuffers(scratch)`).
 */
function launchSplit(
  ctx: GpuContext,
  rows: number,
  n: number,
  chunks: number,
  perChunk: number,
  first: { code: string; buffers: GPUBuffer[] },
  second: { code: string; buffers: (scratch: GPUBuffer) => GPUBuffer[] },
): void {
  const scratch = ctx.pool.acquire(rows * chunks * perChunk * 4, "softmax chunk statistics");
  const params = packParams([rows, n, chunks]);
  const grid = splitGrid(rows * chunks, ctx.limits.maxComputeWorkgroupsPerDimension);
  ctx.dispatch(ctx.pipeline(first.code), [...first.buffers, scratch], params, grid);
  ctx.dispatch(ctx.pipeline(second.code), second.buffers(scratch), params, grid);
  ctx.releaseLater(scratch);
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
  const chunks = splitChunks(ctx, rows, n);
  if (chunks > 0) {
    const write = cachedWgsl(`softmax split ${log}`, () => splitWriteWgsl(log));
    launchSplit(ctx, rows, n, chunks, 2, { code: SPLIT_STATS_WGSL, buffers: [x] }, {
      code: write,
      buffers: (stats) => [x, stats, out],
    });
    return;
  }
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
  const chunks = splitChunks(ctx, rows, n);
  if (chunks > 0) {
    const dot = cachedWgsl(`softmaxBackward split dot ${log}`, () => splitDotWgsl(log));
    const write = cachedWgsl(`softmaxBackward split ${log}`, () => splitBackwardWgsl(log));
    launchSplit(ctx, rows, n, chunks, 1, { code: dot, buffers: log ? [g] : [y, g] }, {
      code: write,
      buffers: (dots) => [y, g, dots, out],
    });
    return;
  }
  const layout = rowLayout(ctx, n, rows);
  const key = `softmaxBackward ${layout.perThread} ${layout.wg} ${log}`;
  const code = cachedWgsl(key, () => softmaxBackwardWgsl(layout, log));
  launchRows(ctx, code, [y, g, out], packParams([rows, n]), rows, layout);
}
