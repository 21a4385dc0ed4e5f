/**
 * Causal (optionally key-masked, grouped-query) attention kernels, one workgroup per row:
 *
 * - forward: one workgroup per (batch, head, query). Keys are processed in blocks of
 *   {@link KEY_BLOCK}: scores go to workgroup memory, then an online (rescaled) softmax folds
 *   each block into the running output, so any number of keys fits.
 * - backward, query side: one workgroup per query row recomputes the row's log-sum-exp `L`,
 *   `D = dO·O`, and `dQ = scale · Σ_j P_j (dO·v_j − D) k_j`; it stores `L` and `D` for the
 *   key side.
 * - backward, key side: one workgroup per (batch, kv head, key) sums over every query head of
 *   its group and every query that sees the key: `dV = Σ P dO`, `dK = scale · Σ P (dO·v − D) q`.
 *   Each output row has one owner, so there are no atomics and results are deterministic.
 *
 * Masked keys are flagged with a large finite negative score and get probability exactly 0; a
 * row with no visible key outputs zeros and passes no gradient (its `L` is a large positive
 * number, so every `exp(s − L)` is 0).
 */
import { type GpuContext, splitGrid } from "./device.ts";
import { packParams } from "./launch.ts";

/** Threads per workgroup. */
const WG = 64;
/** Largest head size supported (each thread owns MAX_HEAD_DIM / WG output columns). */
export const MAX_HEAD_DIM = 128;
/** Keys (forward) or queries (key-side backward) staged in workgroup memory at a time. */
const KEY_BLOCK = 256;

/** Geometry and options of one attention call. */
export interface AttentionDims {
  batch: number;
  heads: number;
  kvHeads: number;
  queries: number;
  keys: number;
  headDim: number;
  /** Query i sits at key position queryOffset + i and sees keys ≤ that. */
  queryOffset: number;
  scale: number;
  hasMask: boolean;
}

const COMMON = /* wgsl */ `
struct P {
  rows: u32, heads: u32, kvHeads: u32, tq: u32,
  tk: u32, dh: u32, qoff: i32, hasMask: u32,
  scale: f32,
}
const WG = ${WG}u;
const DPT = ${MAX_HEAD_DIM / WG}u;
const KB = ${KEY_BLOCK}u;
const NEG = -1e30;        // score of a masked key
const VALID = -1e29;      // scores above this are real
const EMPTY_LSE = 1e30;   // log-sum-exp of a row without visible keys

var<workgroup> red: array<f32, WG>;

fn reduceSum(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn reduceMax(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn keyVisible(b: u32, j: u32) -> bool {
  return p.hasMask == 0u || M[b * p.tk + j] > 0.5;
}
`;

const BINDINGS_IN = /* wgsl */ `
@group(0) @binding(0) var<storage, read> Q: array<f32>;
@group(0) @binding(1) var<storage, read> K: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<f32>;
@group(0) @binding(3) var<storage, read> M: array<f32>;
`;

const ROW_PROLOGUE = /* wgsl */ `
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let i = row % p.tq;
  let bh = row / p.tq;
  let h = bh % p.heads;
  let b = bh / p.heads;
  let g = h / (p.heads / p.kvHeads);
  let kvBase = (b * p.kvHeads + g) * p.tk * p.dh;
  let qBase = row * p.dh;
  let nk = u32(clamp(p.qoff + i32(i) + 1, 0, i32(p.tk)));
`;

const FORWARD_WGSL = /* wgsl */ `
${BINDINGS_IN}
@group(0) @binding(4) var<storage, read_write> O: array<f32>;
@group(0) @binding(5) var<uniform> p: P;
${COMMON}
var<workgroup> qs: array<f32, ${MAX_HEAD_DIM}>;
var<workgroup> sc: array<f32, KB>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
${ROW_PROLOGUE}
  for (var d = lid; d < p.dh; d += WG) { qs[d] = Q[qBase + d]; }
  workgroupBarrier();
  var m = NEG;
  var l = 0.0;
  var acc: array<f32, DPT>;
  for (var kb = 0u; kb < nk; kb += KB) {
    let cnt = min(KB, nk - kb);
    var localMax = NEG;
    for (var jj = lid; jj < cnt; jj += WG) {
      let j = kb + jj;
      var s = NEG;
      if (keyVisible(b, j)) {
        let kr = kvBase + j * p.dh;
        var dot = 0.0;
        for (var d = 0u; d < p.dh; d++) { dot += qs[d] * K[kr + d]; }
        s = dot * p.scale;
        localMax = max(localMax, s);
      }
      sc[jj] = s;
    }
    let mNew = max(m, reduceMax(localMax, lid));
    let alpha = exp(m - mNew);
    var localSum = 0.0;
    for (var jj = lid; jj < cnt; jj += WG) {
      let s = sc[jj];
      let pj = select(0.0, exp(s - mNew), s > VALID);
      sc[jj] = pj;
      localSum += pj;
    }
    l = l * alpha + reduceSum(localSum, lid);
    m = mNew;
    for (var c = 0u; c < DPT; c++) {
      let d = lid + c * WG;
      if (d < p.dh) {
        var a = acc[c] * alpha;
        for (var jj = 0u; jj < cnt; jj++) { a += sc[jj] * V[kvBase + (kb + jj) * p.dh + d]; }
        acc[c] = a;
      }
    }
    workgroupBarrier();
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var c = 0u; c < DPT; c++) {
    let d = lid + c * WG;
    if (d < p.dh) { O[qBase + d] = acc[c] * inv; }
  }
}`;

const BACKWARD_QUERY_WGSL = /* wgsl */ `
${BINDINGS_IN}
@group(0) @binding(4) var<storage, read> O: array<f32>;
@group(0) @binding(5) var<storage, read> DO: array<f32>;
@group(0) @binding(6) var<storage, read_write> DQ: array<f32>;
@group(0) @binding(7) var<storage, read_write> LD: array<f32>;
@group(0) @binding(8) var<uniform> p: P;
${COMMON}
var<workgroup> qs: array<f32, ${MAX_HEAD_DIM}>;
var<workgroup> dos: array<f32, ${MAX_HEAD_DIM}>;
var<workgroup> sc: array<f32, KB>;

fn score(kr: u32) -> f32 {
  var dot = 0.0;
  for (var d = 0u; d < p.dh; d++) { dot += qs[d] * K[kr + d]; }
  return dot * p.scale;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
${ROW_PROLOGUE}
  var partD = 0.0;
  for (var d = lid; d < p.dh; d += WG) {
    qs[d] = Q[qBase + d];
    let go = DO[qBase + d];
    dos[d] = go;
    partD += go * O[qBase + d];
  }
  let dRow = reduceSum(partD, lid); // also makes qs and dos visible

  // Pass 1: the row's log-sum-exp, each thread online over its own keys, then combined.
  var m = NEG;
  var l = 0.0;
  for (var j = lid; j < nk; j += WG) {
    if (keyVisible(b, j)) {
      let s = score(kvBase + j * p.dh);
      if (s > m) { l = l * exp(m - s) + 1.0; m = s; } else { l += exp(s - m); }
    }
  }
  let mAll = reduceMax(m, lid);
  let lAll = reduceSum(select(0.0, l * exp(m - mAll), l > 0.0), lid);
  let lse = select(EMPTY_LSE, mAll + log(lAll), lAll > 0.0);

  // Pass 2: dS_j = P_j (dO·v_j − D), dQ = scale Σ_j dS_j k_j.
  var acc: array<f32, DPT>;
  for (var kb = 0u; kb < nk; kb += KB) {
    let cnt = min(KB, nk - kb);
    for (var jj = lid; jj < cnt; jj += WG) {
      let j = kb + jj;
      var ds = 0.0;
      if (keyVisible(b, j)) {
        let kr = kvBase + j * p.dh;
        let pj = exp(score(kr) - lse);
        var dp = 0.0;
        for (var d = 0u; d < p.dh; d++) { dp += dos[d] * V[kr + d]; }
        ds = pj * (dp - dRow);
      }
      sc[jj] = ds;
    }
    workgroupBarrier();
    for (var c = 0u; c < DPT; c++) {
      let d = lid + c * WG;
      if (d < p.dh) {
        var a = acc[c];
        for (var jj = 0u; jj < cnt; jj++) { a += sc[jj] * K[kvBase + (kb + jj) * p.dh + d]; }
        acc[c] = a;
      }
    }
    workgroupBarrier();
  }
  for (var c = 0u; c < DPT; c++) {
    let d = lid + c * WG;
    if (d < p.dh) { DQ[qBase + d] = acc[c] * p.scale; }
  }
  if (lid == 0u) {
    LD[2u * row] = lse;
    LD[2u * row + 1u] = dRow;
  }
}`;

const BACKWARD_KEY_WGSL = /* wgsl */ `
${BINDINGS_IN}
@group(0) @binding(4) var<storage, read> DO: array<f32>;
@group(0) @binding(5) var<storage, read> LD: array<f32>;
@group(0) @binding(6) var<storage, read_write> DK: array<f32>;
@group(0) @binding(7) var<storage, read_write> DV: array<f32>;
@group(0) @binding(8) var<uniform> p: P;
${COMMON}
var<workgroup> ks: array<f32, ${MAX_HEAD_DIM}>;
var<workgroup> vs: array<f32, ${MAX_HEAD_DIM}>;
var<workgroup> sp: array<f32, KB>;
var<workgroup> sd: array<f32, KB>;
var<workgroup> sq: array<u32, KB>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  // Here p.rows counts key rows (batch, kv head, key).
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let j = row % p.tk;
  let bg = row / p.tk;
  let g = bg % p.kvHeads;
  let b = bg / p.kvHeads;
  let kBase = row * p.dh;
  for (var d = lid; d < p.dh; d += WG) {
    ks[d] = K[kBase + d];
    vs[d] = V[kBase + d];
  }
  workgroupBarrier();
  let visible = keyVisible(b, j);
  // Queries i with qoff + i >= j see this key, in every query head of the group.
  let i0 = u32(max(i32(j) - p.qoff, 0));
  let perHead = select(0u, p.tq - i0, i0 < p.tq);
  let rep = p.heads / p.kvHeads;
  let count = rep * perHead;
  var dk: array<f32, DPT>;
  var dv: array<f32, DPT>;
  for (var base = 0u; base < count; base += KB) {
    let cnt = min(KB, count - base);
    for (var it = lid; it < cnt; it += WG) {
      let item = base + it;
      let h = g * rep + item / perHead;
      let i = i0 + item % perHead;
      let qrow = (b * p.heads + h) * p.tq + i;
      var pj = 0.0;
      var ds = 0.0;
      if (visible) {
        let qr = qrow * p.dh;
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < p.dh; d++) {
          s += Q[qr + d] * ks[d];
          dp += DO[qr + d] * vs[d];
        }
        pj = exp(s * p.scale - LD[2u * qrow]);
        ds = pj * (dp - LD[2u * qrow + 1u]);
      }
      sp[it] = pj;
      sd[it] = ds;
      sq[it] = qrow * p.dh;
    }
    workgroupBarrier();
    for (var c = 0u; c < DPT; c++) {
      let d = lid + c * WG;
      if (d < p.dh) {
        var ak = dk[c];
        var av = dv[c];
        for (var it = 0u; it < cnt; it++) {
          av += sp[it] * DO[sq[it] + d];
          ak += sd[it] * Q[sq[it] + d];
        }
        dk[c] = ak;
        dv[c] = av;
      }
    }
    workgroupBarrier();
  }
  for (var c = 0u; c < DPT; c++) {
    let d = lid + c * WG;
    if (d < p.dh) {
      DK[kBase + d] = dk[c] * p.scale;
      DV[kBase + d] = dv[c];
    }
  }
}`;

function params(dims: AttentionDims, rows: number): Uint8Array {
  return packParams([
    rows,
    dims.heads,
    dims.kvHeads,
    dims.queries,
    dims.keys,
    dims.headDim,
    dims.queryOffset,
    dims.hasMask ? 1 : 0,
    { f: dims.scale },
  ]);
}

function rowGrid(ctx: GpuContext, rows: number): [number, number] {
  return splitGrid(rows, ctx.limits.maxComputeWorkgroupsPerDimension);
}

/**
 * Forward: `out` [B, H, Tq, Dh] from q [B, H, Tq, Dh], k and v [B, Hkv, Tk, Dh] and the key mask
 * [B, Tk] (any buffer when `dims.hasMask` is false; it is not read).
 */
export function attentionForwardKernel(
  ctx: GpuContext,
  dims: AttentionDims,
  q: GPUBuffer,
  k: GPUBuffer,
  v: GPUBuffer,
  mask: GPUBuffer,
  out: GPUBuffer,
): void {
  const rows = dims.batch * dims.heads * dims.queries;
  if (rows === 0) return;
  ctx.dispatch(ctx.pipeline(FORWARD_WGSL), [q, k, v, mask, out], params(dims, rows), rowGrid(ctx, rows));
}

/**
 * Query-side backward: writes dQ [B, H, Tq, Dh] and, per query row, its log-sum-exp and
 * `dO·O` into `lseAndDelta` [B·H·Tq, 2] for {@link attentionBackwardKeyKernel}.
 */
export function attentionBackwardQueryKernel(
  ctx: GpuContext,
  dims: AttentionDims,
  q: GPUBuffer,
  k: GPUBuffer,
  v: GPUBuffer,
  mask: GPUBuffer,
  out: GPUBuffer,
  gradOut: GPUBuffer,
  gradQ: GPUBuffer,
  lseAndDelta: GPUBuffer,
): void {
  const rows = dims.batch * dims.heads * dims.queries;
  if (rows === 0) return;
  ctx.dispatch(
    ctx.pipeline(BACKWARD_QUERY_WGSL),
    [q, k, v, mask, out, gradOut, gradQ, lseAndDelta],
    params(dims, rows),
    rowGrid(ctx, rows),
  );
}

/** Key-side backward: dK and dV [B, Hkv, Tk, Dh], summed over the query heads of each group. */
export function attentionBackwardKeyKernel(
  ctx: GpuContext,
  dims: AttentionDims,
  q: GPUBuffer,
  k: GPUBuffer,
  v: GPUBuffer,
  mask: GPUBuffer,
  gradOut: GPUBuffer,
  lseAndDelta: GPUBuffer,
  gradK: GPUBuffer,
  gradV: GPUBuffer,
): void {
  const rows = dims.batch * dims.kvHeads * dims.keys;
  if (rows === 0) return;
  ctx.dispatch(
    ctx.pipeline(BACKWARD_KEY_WGSL),
    [q, k, v, mask, gradOut, lseAndDelta, gradK, gradV],
    params(dims, rows),
    rowGrid(ctx, rows),
  );
}
