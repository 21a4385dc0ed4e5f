/**
 * Top-k along the last axis, one workgroup per row, without sorting the row:
 *
 * 1. Bound: floats map to order-preserving u32 keys; each thread takes the largest key of its
 *    strided share of the row, and the k-th largest of these per-thread maxima is a lower bound
 *    on the k-th largest key of the row (k distinct elements reach it). Nothing below it can win.
 * 2. Fast path: the elements at or above the bound (typically a few hundred of 50,257) are
 *    compacted into workgroup memory and bitonic-sorted there by (value descending, index
 *    ascending); the first k are the answer. Two reads of the row in all.
 * 3. Fallback when too many elements reach the bound (many ties, k > 256): radix select over
 *    the row, four 8-bit histogram passes (integer atomics) to find the threshold key, plus
 *    three passes over the reversed index when more elements tie at the threshold than are
 *    needed (so the lower indices win); then exactly k winners are collected and sorted.
 *
 * The order (value desc, index asc) is total, so results are deterministic even though
 * candidates are gathered in whatever order the threads reach them.
 */
import { type GpuContext, splitGrid } from "./device.ts";
import { launchLinear, LINEAR_MAIN, packParams } from "./launch.ts";

/** Threads per row. */
const WG = 256;
/** Largest k supported (the winners are sorted in workgroup memory). */
export const MAX_TOPK = 1024;
/** Row length limit: indices are returned as exact f32 integers. */
export const MAX_TOPK_ROW = 1 << 24;

/**
 * Candidates held in workgroup memory: the largest power of two (at most 4096) whose key and
 * index arrays, plus the histogram, fit the adapter's workgroup storage (≥ 1024 on any WebGPU
 * adapter, which also bounds k).
 */
export function topkCapacity(ctx: GpuContext): number {
  const budget = ctx.limits.maxComputeWorkgroupStorageSize - 256 * 4 - 64;
  let cap = MAX_TOPK;
  while (cap < 4096 && 8 * cap * 2 <= budget) cap *= 2;
  return cap;
}

const topkWgsl = (cap: number) => /* wgsl */ `
struct P { rows: u32, n: u32, k: u32, sortSize: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> VALS: array<f32>;
@group(0) @binding(2) var<storage, read_write> IDX: array<f32>;
@group(0) @binding(3) var<uniform> p: P;

const WG = ${WG}u;
const CAP = ${cap}u;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> ckey: array<u32, CAP>;
var<workgroup> cidx: array<u32, CAP>;
var<workgroup> counter: atomic<u32>;
// [0] key prefix found so far, [1] how many still to take at/below it, [2] count in the chosen bin
var<workgroup> state: array<u32, 3>;

// Order-preserving map f32 -> u32 (larger float, larger key); +0 and -0 get the same key.
fn keyOf(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  if (x == 0.0) { return 0x80000000u; }
  return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}

// Sorts ckey/cidx[0, size) by (key descending, index ascending); size is a power of two.
fn bitonic(size: u32, lid: u32) {
  for (var block = 2u; block <= size; block = block << 1u) {
    for (var stride = block >> 1u; stride > 0u; stride = stride >> 1u) {
      for (var t = lid; t < size / 2u; t += WG) {
        let i = 2u * stride * (t / stride) + t % stride;
        let j = i + stride;
        let ka = ckey[i];
        let kb = ckey[j];
        let ia = cidx[i];
        let ib = cidx[j];
        let aFirst = ka > kb || (ka == kb && ia < ib);
        if (aFirst != ((i & block) == 0u)) {
          ckey[i] = kb;
          ckey[j] = ka;
          cidx[i] = ib;
          cidx[j] = ia;
        }
      }
      workgroupBarrier();
    }
  }
}

// Pads ckey/cidx[start, end) with entries that sort last.
fn pad(start: u32, end: u32, lid: u32) {
  for (var s = start + lid; s < end; s += WG) {
    ckey[s] = 0u;
    cidx[s] = 0xffffffffu;
  }
  workgroupBarrier();
}

// Thread 0 walks the histogram from the top bin down to the bin holding the remaining-th
// largest key, and records the refined prefix.
fn pickBin(shift: u32) {
  let prefix = state[0];
  let remaining = state[1];
  var cum = 0u;
  for (var bin = 255i; bin >= 0; bin--) {
    let c = atomicLoad(&hist[u32(bin)]);
    if (cum + c >= remaining) {
      state[0] = prefix | (u32(bin) << shift);
      state[1] = remaining - cum;
      state[2] = c;
      return;
    }
    cum += c;
  }
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.n;

  // 1. Lower bound: the k-th largest per-thread maximum (0, no bound, when k > WG).
  var mx = 0u;
  for (var e = lid; e < p.n; e += WG) { mx = max(mx, keyOf(X[base + e])); }
  var bound = 0u;
  if (p.k <= WG) {
    ckey[lid] = mx;
    workgroupBarrier();
    // Rank of this thread's maximum among all of them (ties by thread index); the thread of
    // rank k-1 publishes it. Cheaper than sorting 256 values: no barrier per step.
    var rank = 0u;
    for (var t = 0u; t < WG; t++) {
      let o = ckey[t];
      rank += select(0u, 1u, o > mx || (o == mx && t < lid));
    }
    if (rank == p.k - 1u) { state[0] = mx; }
    bound = workgroupUniformLoad(&state[0]);
  }

  // 2. Compact the candidates (key >= bound) into workgroup memory while they fit.
  if (lid == 0u) { atomicStore(&counter, 0u); }
  workgroupBarrier();
  for (var e = lid; e < p.n; e += WG) {
    let key = keyOf(X[base + e]);
    if (key >= bound) {
      let slot = atomicAdd(&counter, 1u);
      if (slot < CAP) {
        ckey[slot] = key;
        cidx[slot] = e;
      }
    }
  }
  workgroupBarrier();
  if (lid == 0u) { state[0] = atomicLoad(&counter); }
  let total = workgroupUniformLoad(&state[0]);

  if (total <= CAP) {
    var size = p.sortSize;
    while (size < total) { size = size << 1u; }
    pad(total, size, lid);
    bitonic(size, lid);
  } else {
    // 3. Radix select on the value keys, 8 bits at a time from the top.
    workgroupBarrier();
    if (lid == 0u) {
      state[0] = 0u;
      state[1] = p.k;
      state[2] = 0u;
    }
    var mask = 0u;
    for (var step = 0u; step < 4u; step++) {
      let shift = 24u - 8u * step;
      atomicStore(&hist[lid], 0u);
      let prefix = workgroupUniformLoad(&state[0]); // also a barrier: hist is clear, state is set
      for (var e = lid; e < p.n; e += WG) {
        let key = keyOf(X[base + e]);
        if (key >= bound && (key & mask) == prefix) { atomicAdd(&hist[(key >> shift) & 255u], 1u); }
      }
      workgroupBarrier();
      if (lid == 0u) { pickBin(shift); }
      workgroupBarrier(); // pickBin reads hist before the next step clears it
      mask = mask | (255u << shift);
    }
    let thresh = workgroupUniformLoad(&state[0]);
    let needEq = workgroupUniformLoad(&state[1]);
    let haveEq = workgroupUniformLoad(&state[2]);

    // More elements equal the threshold than are needed: keep the lowest indices, i.e. the
    // largest reversed indices n-1-e, by the same radix select over 24 index bits.
    var idxThresh = 0u;
    if (haveEq > needEq) {
      workgroupBarrier();
      if (lid == 0u) {
        state[0] = 0u;
        state[1] = needEq;
      }
      var imask = 0u;
      for (var step = 0u; step < 3u; step++) {
        let shift = 16u - 8u * step;
        atomicStore(&hist[lid], 0u);
        let prefix = workgroupUniformLoad(&state[0]);
        for (var e = lid; e < p.n; e += WG) {
          let r = p.n - 1u - e;
          if (keyOf(X[base + e]) == thresh && (r & imask) == prefix) { atomicAdd(&hist[(r >> shift) & 255u], 1u); }
        }
        workgroupBarrier();
        if (lid == 0u) { pickBin(shift); }
        workgroupBarrier();
        imask = imask | (255u << shift);
      }
      idxThresh = workgroupUniformLoad(&state[0]);
    }

    // Collect exactly k winners and sort them.
    if (lid == 0u) { atomicStore(&counter, 0u); }
    workgroupBarrier();
    for (var e = lid; e < p.n; e += WG) {
      let key = keyOf(X[base + e]);
      if (key > thresh || (key == thresh && p.n - 1u - e >= idxThresh)) {
        let slot = atomicAdd(&counter, 1u);
        ckey[slot] = key;
        cidx[slot] = e;
      }
    }
    workgroupBarrier();
    pad(p.k, p.sortSize, lid);
    bitonic(p.sortSize, lid);
  }

  for (var r = lid; r < p.k; r += WG) {
    let e = cidx[r];
    VALS[row * p.k + r] = X[base + e];
    IDX[row * p.k + r] = f32(e);
  }
}`;

/**
 * The `k` largest values of each of `rows` rows of length `n` (sorted descending, ties by lower
 * index) and their indices as f32.
 */
export function topkKernel(
  ctx: GpuContext,
  x: GPUBuffer,
  rows: number,
  n: number,
  k: number,
  values: GPUBuffer,
  indices: GPUBuffer,
): void {
  if (rows === 0 || k === 0) return;
  let sortSize = 2;
  while (sortSize < k) sortSize *= 2;
  const grid = splitGrid(rows, ctx.limits.maxComputeWorkgroupsPerDimension);
  const code = topkWgsl(topkCapacity(ctx));
  ctx.dispatch(ctx.pipeline(code), [x, values, indices], packParams([rows, n, k, sortSize]), grid);
}

const SCATTER_WGSL = /* wgsl */ `
struct P { total: u32, n: u32, k: u32 }
@group(0) @binding(0) var<storage, read> G: array<f32>;
@group(0) @binding(1) var<storage, read> IDX: array<f32>;
@group(0) @binding(2) var<storage, read_write> GX: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.total) { return; }
  let row = gid / p.k;
  GX[row * p.n + u32(IDX[gid])] = G[gid];
}`;

/**
 * Backward of the top-k values: `gradX[row, indices[row, r]] = grad[row, r]` into a zero-filled
 * `gradX` (indices within a row are distinct, so writes never collide).
 */
export function topkScatterKernel(
  ctx: GpuContext,
  grad: GPUBuffer,
  indices: GPUBuffer,
  rows: number,
  n: number,
  k: number,
  gradX: GPUBuffer,
): void {
  const total = rows * k;
  launchLinear(ctx, SCATTER_WGSL, [grad, indices, gradX], packParams([total, n, k]), total);
}
