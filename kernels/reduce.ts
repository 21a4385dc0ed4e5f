/**
 * Reduction kernels: sum and max (with the index of the first maximum) along one axis, the
 * backward kernels that spread a reduced gradient back over the axis, and the WGSL building
 * blocks (workgroup tree sums, row-size-dependent workgroup sizes) that the softmax, loss and
 * normalisation kernels share.
 *
 * A tensor reduced along `axis` is viewed as `[outer, n, inner]` (n = the axis length):
 * - `inner == 1` (the innermost axis): one workgroup per row, each thread accumulates a strided
 *   slice of the row, then a tree reduction in workgroup memory combines the threads. Very long
 *   rows with few of them are split into chunks and reduced in two passes so that a 10⁷-element
 *   `sumAll` does not run on one workgroup.
 * - `inner > 1` (any other axis): a 2-D workgroup covers a tile of adjacent output columns
 *   (coalesced loads) and several threads per column stride along the axis; a tree over those
 *   threads finishes the column. Long axes with few outputs are split into chunks likewise.
 */
import { type GpuContext, splitGrid } from "./device.ts";
import { cachedWgsl, launchLinear, LINEAR_MAIN, packParams } from "./launch.ts";

/** The most negative finite f32: the identity of `max`, and the "minus infinity" of masks. */
export const F32_LOWEST = -3.4028234663852886e38;

/** WGSL literal of {@link F32_LOWEST}. */
export const F32_LOWEST_WGSL = "-3.4028234663852886e38";

/** The smallest power of two ≥ n (n ≥ 1). */
export function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * Workgroup size for a kernel that gives one workgroup to a row of `n` elements: a power of two
 * between 32 and 256, so short rows do not keep 256 mostly idle threads waiting at barriers.
 */
export function rowWorkgroupSize(n: number): number {
  return Math.min(256, Math.max(32, nextPow2(n)));
}

/**
 * How a row kernel maps rows onto threads:
 * - `perThread: false`: one workgroup of `wg` threads per row; the threads stride over the row and
 *   combine their partial results with a tree in workgroup memory (fast on GPUs for any length).
 * - `perThread: true`: one thread per row, `wg` rows per workgroup, no workgroup memory and no
 *   barriers. On CPU adapters (llvmpipe/lavapipe) a workgroup runs as a loop over SIMD lanes on
 *   one core and every barrier is a context switch between lane groups, so a [330, 128] layer
 *   norm as 330 workgroups of 128 threads spends most of its time in barriers; 330 threads in
 *   six workgroups each walking its own row is an order of magnitude faster.
 */
export interface RowLayout {
  perThread: boolean;
  wg: number;
}

/** Rows up to this long get one thread each with CPU-tuned kernels (longer rows need the lanes). */
export const SHORT_ROW = 2048;

/** The {@link RowLayout} for `rows` rows of `n` elements on this context. */
export function rowLayout(ctx: GpuContext, n: number, rows: number): RowLayout {
  if (ctx.cpuKernels && n <= SHORT_ROW) {
    // 8 rows fill one 256-bit SIMD group; up to 64 per workgroup, but keep ~16 workgroups when
    // there are few rows so that every core of the CPU gets some.
    return { perThread: true, wg: Math.min(64, Math.max(8, nextPow2(Math.ceil(rows / 16)))) };
  }
  return { perThread: false, wg: rowWorkgroupSize(n) };
}

/**
 * WGSL for `fn NAME(lid: u32, v: T) -> T`: the sum of `v` over the threads of one row, returned to
 * each of them. With one workgroup per row it is a tree over all `wg` threads in workgroup memory
 * (call it from uniform control flow; it can be called several times in a row); with one thread
 * per row it returns `v`. `T` is `f32`, `vec2f` or `vec4f`.
 */
export function laneSumWgsl(name: string, layout: RowLayout, type = "f32"): string {
  if (layout.perThread) return `fn ${name}(lid: u32, v: ${type}) -> ${type} { return v; }`;
  return treeSumWgsl(name, layout.wg, type);
}

/**
 * WGSL for `fn NAME(lid: u32, v: T) -> T`: the sum of `v` over all `wg` threads of a workgroup
 * (a tree in workgroup memory), returned to every thread. `T` is `f32`, `vec2f` or `vec4f`.
 * Must be called from uniform control flow; it can be called several times in a row.
 */
export function treeSumWgsl(name: string, wg: number, type = "f32"): string {
  return /* wgsl */ `
var<workgroup> ${name}_buf: array<${type}, ${wg}>;
fn ${name}(lid: u32, v: ${type}) -> ${type} {
  ${name}_buf[lid] = v;
  workgroupBarrier();
  for (var s = ${wg / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) { ${name}_buf[lid] = ${name}_buf[lid] + ${name}_buf[lid + s]; }
    workgroupBarrier();
  }
  let r = ${name}_buf[0];
  workgroupBarrier(); // every thread has read the result before a next call overwrites it
  return r;
}`;
}

/**
 * WGSL for the entry point of a row kernel with the given layout. Declares `row` (the row this
 * thread works on), `lane` (its first element in the row) and the constant `STEP` (the stride
 * between its elements), so that a kernel walks its share of a row with
 * `for (var k = lane; k < n; k += STEP)` in either layout. Rows past the end must return early;
 * that keeps barriers in uniform control flow because a row is either one workgroup or one thread.
 */
export function rowMain(layout: RowLayout): string {
  const { wg, perThread } = layout;
  return /* wgsl */ `
const STEP = ${perThread ? 1 : wg}u;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = ${perThread ? `(wid.x + wid.y * nwg.x) * ${wg}u + lid` : "wid.x + wid.y * nwg.x"};
  let lane = ${perThread ? "0u" : "lid"};`;
}

/** Dispatches a row kernel over `rows` rows with the given layout (split over a 2-D grid past 65,535 workgroups). */
export function launchRows(
  ctx: GpuContext,
  code: string,
  buffers: GPUBuffer[],
  params: ArrayBufferView | null,
  rows: number,
  layout: RowLayout,
): void {
  if (rows <= 0) return;
  const groups = layout.perThread ? Math.ceil(rows / layout.wg) : rows;
  ctx.dispatch(
    ctx.pipeline(code),
    buffers,
    params,
    splitGrid(groups, ctx.limits.maxComputeWorkgroupsPerDimension),
  );
}

/** What a reduction computes. */
export type ReduceKind = "sum" | "max";

// ---------------------------------------------------------------------------------------------
// Innermost axis: rows of n contiguous elements, each row optionally split into `chunks` pieces.

function sumRowsWgsl(layout: RowLayout): string {
  return /* wgsl */ `
struct P { rows: u32, n: u32, chunks: u32, chunkLen: u32, scale: f32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> O: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${laneSumWgsl("wsum", layout)}
${rowMain(layout)}
  if (row >= p.rows * p.chunks) { return; }
  let r = row / p.chunks;
  let c = row % p.chunks;
  let start = r * p.n + c * p.chunkLen;
  let end = r * p.n + min((c + 1u) * p.chunkLen, p.n);
  // Kahan summation per thread: a thread may add hundreds of values of a long row.
  var acc = 0.0;
  var comp = 0.0;
  for (var k = start + lane; k < end; k += STEP) {
    let y = X[k] - comp;
    let t = acc + y;
    comp = (t - acc) - y;
    acc = t;
  }
  let total = wsum(lid, acc);
  if (lane == 0u) { O[row] = total * p.scale; }
}`;
}

function maxRowsWgsl(layout: RowLayout): string {
  // The running maximum and its index; an empty slice keeps index 0xffffffff, which loses every
  // tie in the tree, so the first index of the maximum always wins.
  const tree = layout.perThread ? "" : /* wgsl */ `
  bv[lid] = best;
  bi[lid] = at;
  workgroupBarrier();
  for (var s = ${layout.wg / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) {
      let v = bv[lid + s];
      let i = bi[lid + s];
      if (v > bv[lid] || (v == bv[lid] && i < bi[lid])) { bv[lid] = v; bi[lid] = i; }
    }
    workgroupBarrier();
  }
  best = bv[0];
  at = bi[0];`;
  return /* wgsl */ `
struct P { rows: u32, n: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> O: array<f32>;
@group(0) @binding(2) var<storage, read_write> I: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${
    layout.perThread
      ? ""
      : `var<workgroup> bv: array<f32, ${layout.wg}>;\nvar<workgroup> bi: array<u32, ${layout.wg}>;`
  }
${rowMain(layout)}
  if (row >= p.rows) { return; }
  let start = row * p.n;
  var best = ${F32_LOWEST_WGSL};
  var at = 0xffffffffu;
  for (var k = lane; k < p.n; k += STEP) {
    let v = X[start + k];
    if (v > best || at == 0xffffffffu) { best = v; at = k; }
  }${tree}
  if (lane == 0u) {
    O[row] = best;
    I[row] = f32(at);
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// Other axes: [outer, n, inner] with inner > 1. Workgroup = tx columns × ty threads along n.

function stridedWgsl(kind: ReduceKind, tx: number, ty: number): string {
  const isMax = kind === "max";
  return /* wgsl */ `
struct P { outer: u32, n: u32, inner: u32, tiles: u32, chunks: u32, chunkLen: u32, scale: f32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> O: array<f32>;
${isMax ? "@group(0) @binding(2) var<storage, read_write> I: array<f32>;" : ""}
@group(0) @binding(${isMax ? 3 : 2}) var<uniform> p: P;
var<workgroup> bv: array<f32, ${tx * ty}>;
${isMax ? `var<workgroup> bi: array<u32, ${tx * ty}>;` : ""}
@compute @workgroup_size(${tx}, ${ty})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_id) l: vec3u) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= p.outer * p.tiles * p.chunks) { return; }
  // Workgroup g covers output tile (g % tiles) of outer row (g / tiles / chunks), axis chunk c.
  let tile = g % p.tiles;
  let c = (g / p.tiles) % p.chunks;
  let o = g / (p.tiles * p.chunks);
  let col = tile * ${tx}u + l.x;
  let k0 = c * p.chunkLen;
  let k1 = min(k0 + p.chunkLen, p.n);
  let slot = l.y * ${tx}u + l.x;
  ${
    isMax
      ? /* wgsl */ `
  var best = ${F32_LOWEST_WGSL};
  var at = 0xffffffffu;
  if (col < p.inner) {
    for (var k = k0 + l.y; k < k1; k += ${ty}u) {
      let v = X[(o * p.n + k) * p.inner + col];
      if (v > best || at == 0xffffffffu) { best = v; at = k; }
    }
  }
  bv[slot] = best;
  bi[slot] = at;
  workgroupBarrier();
  for (var s = ${Math.floor(ty / 2)}u; s > 0u; s >>= 1u) {
    if (l.y < s) {
      let v = bv[slot + s * ${tx}u];
      let i = bi[slot + s * ${tx}u];
      if (v > bv[slot] || (v == bv[slot] && i < bi[slot])) { bv[slot] = v; bi[slot] = i; }
    }
    workgroupBarrier();
  }
  if (l.y == 0u && col < p.inner) {
    O[o * p.inner + col] = bv[l.x];
    I[o * p.inner + col] = f32(bi[l.x]);
  }`
      : /* wgsl */ `
  var acc = 0.0;
  var comp = 0.0;
  if (col < p.inner) {
    for (var k = k0 + l.y; k < k1; k += ${ty}u) {
      let y = X[(o * p.n + k) * p.inner + col] - comp;
      let t = acc + y;
      comp = (t - acc) - y;
      acc = t;
    }
  }
  bv[slot] = acc;
  workgroupBarrier();
  for (var s = ${Math.floor(ty / 2)}u; s > 0u; s >>= 1u) {
    if (l.y < s) { bv[slot] = bv[slot] + bv[slot + s * ${tx}u]; }
    workgroupBarrier();
  }
  if (l.y == 0u && col < p.inner) { O[(o * p.chunks + c) * p.inner + col] = bv[l.x] * p.scale; }`
  }
}`;
}

/** Below this many workgroups a long axis is split into chunks (two passes) to fill the GPU. */
const SPLIT_BELOW_WORKGROUPS = 256;
/** Axes shorter than this are never split: one pass is cheap enough. */
const SPLIT_MIN_AXIS = 4096;
/** Target length of one chunk when an axis is split. */
const CHUNK_TARGET = 2048;

/** How many chunks to split an axis of length `n` into when only `groups` workgroups would run. */
function chunkCount(n: number, groups: number): number {
  if (n < SPLIT_MIN_AXIS || groups >= SPLIT_BELOW_WORKGROUPS) return 1;
  return Math.max(1, Math.min(Math.ceil(n / CHUNK_TARGET), Math.ceil((SPLIT_BELOW_WORKGROUPS * 4) / groups)));
}

/**
 * Column tile width and threads per column for the strided kernel. CPU-tuned kernels give each
 * column of a short axis one thread (no tree, see {@link RowLayout}).
 */
function stridedTile(ctx: GpuContext, n: number, inner: number): [number, number] {
  if (ctx.cpuKernels && n <= SHORT_ROW) return [Math.min(64, Math.max(8, nextPow2(inner))), 1];
  const tx = Math.min(32, Math.max(2, nextPow2(inner)));
  const ty = Math.min(256 / tx, nextPow2(Math.max(1, n)));
  return [tx, Math.max(1, ty)];
}

/**
 * Sums `x` viewed as `[outer, n, inner]` over its middle axis into `out` (`[outer, inner]`),
 * multiplied by `scale` (1/n gives the mean). Long axes are reduced in two passes through a
 * pooled scratch buffer.
 */
export function sumAxisKernel(
  ctx: GpuContext,
  x: GPUBuffer,
  out: GPUBuffer,
  outer: number,
  n: number,
  inner: number,
  scale = 1,
): void {
  if (outer * inner === 0) return;
  if (inner === 1) {
    const chunks = chunkCount(n, outer);
    if (chunks === 1) {
      sumRowsPass(ctx, x, out, outer, n, 1, n, scale);
      return;
    }
    const chunkLen = Math.ceil(n / chunks);
    const partial = ctx.pool.acquire(outer * chunks * 4, "sum partials");
    sumRowsPass(ctx, x, partial, outer, n, chunks, chunkLen, 1);
    sumRowsPass(ctx, partial, out, outer, chunks, 1, chunks, scale);
    ctx.releaseLater(partial);
    return;
  }
  const [tx] = stridedTile(ctx, n, inner);
  const tiles = Math.ceil(inner / tx);
  const chunks = chunkCount(n, outer * tiles);
  if (chunks === 1) {
    stridedPass(ctx, "sum", x, out, null, outer, n, inner, 1, n, scale);
    return;
  }
  const chunkLen = Math.ceil(n / chunks);
  const partial = ctx.pool.acquire(outer * chunks * inner * 4, "sum partials");
  stridedPass(ctx, "sum", x, partial, null, outer, n, inner, chunks, chunkLen, 1);
  stridedPass(ctx, "sum", partial, out, null, outer, chunks, inner, 1, chunks, scale);
  ctx.releaseLater(partial);
}

function sumRowsPass(
  ctx: GpuContext,
  x: GPUBuffer,
  out: GPUBuffer,
  rows: number,
  n: number,
  chunks: number,
  chunkLen: number,
  scale: number,
): void {
  const layout = rowLayout(ctx, chunkLen, rows * chunks);
  launchRows(
    ctx,
    cachedWgsl(`sumRows ${layout.perThread} ${layout.wg}`, () => sumRowsWgsl(layout)),
    [x, out],
    packParams([rows, n, chunks, chunkLen, { f: scale }]),
    rows * chunks,
    layout,
  );
}

function stridedPass(
  ctx: GpuContext,
  kind: ReduceKind,
  x: GPUBuffer,
  out: GPUBuffer,
  idx: GPUBuffer | null,
  outer: number,
  n: number,
  inner: number,
  chunks: number,
  chunkLen: number,
  scale: number,
): void {
  const [tx, ty] = stridedTile(ctx, chunkLen, inner);
  const tiles = Math.ceil(inner / tx);
  const params = packParams([outer, n, inner, tiles, chunks, chunkLen, { f: scale }]);
  const buffers = idx ? [x, out, idx] : [x, out];
  const code = cachedWgsl(`strided ${kind} ${tx} ${ty}`, () => stridedWgsl(kind, tx, ty));
  launchRows(ctx, code, buffers, params, outer * tiles * chunks, { perThread: false, wg: tx * ty });
}

/**
 * Maximum of `x` viewed as `[outer, n, inner]` over its middle axis: values into `out` and the
 * index (along the axis, as an exact f32 integer) of the first maximum into `idx`, both
 * `[outer, inner]`. `n` must be at least 1.
 */
export function maxAxisKernel(
  ctx: GpuContext,
  x: GPUBuffer,
  out: GPUBuffer,
  idx: GPUBuffer,
  outer: number,
  n: number,
  inner: number,
): void {
  if (outer * inner === 0) return;
  if (n < 1) throw new RangeError("max over an empty axis has no value");
  if (inner === 1) {
    const layout = rowLayout(ctx, n, outer);
    const code = cachedWgsl(`maxRows ${layout.perThread} ${layout.wg}`, () => maxRowsWgsl(layout));
    launchRows(ctx, code, [x, out, idx], packParams([outer, n]), outer, layout);
    return;
  }
  stridedPass(ctx, "max", x, out, idx, outer, n, inner, 1, n, 1);
}

// ---------------------------------------------------------------------------------------------
// Backward kernels: one thread per element of the unreduced tensor.

const EXPAND_WGSL = /* wgsl */ `
struct P { total: u32, n: u32, inner: u32, scale: f32 }
@group(0) @binding(0) var<storage, read> G: array<f32>;
@group(0) @binding(1) var<storage, read_write> O: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.total) { return; }
  let o = gid / (p.n * p.inner);
  let c = gid % p.inner;
  O[gid] = G[o * p.inner + c] * p.scale;
}`;

/**
 * The backward of a sum (or mean, with `scale` = 1/n) along the middle axis of
 * `[outer, n, inner]`: `out[o, k, c] = g[o, c] · scale`.
 */
export function expandAxisKernel(
  ctx: GpuContext,
  g: GPUBuffer,
  out: GPUBuffer,
  outer: number,
  n: number,
  inner: number,
  scale = 1,
): void {
  const total = outer * n * inner;
  launchLinear(ctx, EXPAND_WGSL, [g, out], packParams([total, n, inner, { f: scale }]), total);
}

const SCATTER_ARG_WGSL = /* wgsl */ `
struct P { total: u32, n: u32, inner: u32 }
@group(0) @binding(0) var<storage, read> G: array<f32>;
@group(0) @binding(1) var<storage, read> I: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.total) { return; }
  let o = gid / (p.n * p.inner);
  let k = (gid / p.inner) % p.n;
  let j = o * p.inner + gid % p.inner;
  O[gid] = select(0.0, G[j], k == u32(I[j]));
}`;

/**
 * The backward of a max along the middle axis of `[outer, n, inner]`: the gradient `g[o, c]`
 * goes to the element whose axis index is `idx[o, c]`, zeros elsewhere.
 */
export function scatterArgKernel(
  ctx: GpuContext,
  g: GPUBuffer,
  idx: GPUBuffer,
  out: GPUBuffer,
  outer: number,
  n: number,
  inner: number,
): void {
  const total = outer * n * inner;
  launchLinear(ctx, SCATTER_ARG_WGSL, [g, idx, out], packParams([total, n, inner]), total);
}
