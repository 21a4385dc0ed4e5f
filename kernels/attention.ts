/**
 * Causal (optionally key-masked, grouped-query) attention kernels: the forward, and the backward
 * in two kernels (query side, key side), each in a GPU and a CPU variant.
 *
 * Operands are read and written through {@link HeadLayout}s, so q, k and v can be read straight
 * from a fused projection (GPT-2's `c_attn` output [B, T, 3·H·Dh]) and the output written with
 * its heads merged ([B, T, H·Dh]) without transposes or slices; gradients use the layout of
 * their operand.
 *
 * GPU variant, one workgroup per row:
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
 * CPU variant (`ctx.cpuKernels`): the same three kernels with one thread per query row (forward,
 * query side) or key row (key side), the row's vectors in registers, the head size compiled in
 * and rows read as vec4f where the layouts allow. On CPU adapters a workgroup is a loop over SIMD
 * lanes on one core, a barrier is a context switch and every lane's load is gathered on its own:
 * the GPU variant's 64-thread workgroups, mostly idle on short rows (33 keys, Dh = 32 in the
 * GRADMM x-step) and synchronising twice per key block, took ~35 ms per layer there, one thread
 * per row ~1.5 ms.
 *
 * Masked keys are flagged with a large finite negative score (GPU variant) or skipped (CPU
 * variant) and get probability exactly 0; a row with no visible key outputs zeros and passes no
 * gradient (its `L` is a large positive number, so every `exp(s − L)` is 0).
 *
 * On GPUs, calls with enough queries run the tiled kernels of kernels/attention_flash.ts instead
 * (K/V tiles in workgroup memory, the forward's log-sum-exp saved for the backward); the GPU
 * variant here serves decode steps and is the baseline they are measured against.
 */
import { type GpuContext, splitGrid } from "./device.ts";
import { cachedWgsl, launchLinear, LINEAR_MAIN, packParams } from "./launch.ts";
import { nextPow2 } from "./reduce.ts";

/** Threads per workgroup (GPU variant). */
const WG = 64;
/** Largest head size supported (each thread owns MAX_HEAD_DIM / WG output columns). */
export const MAX_HEAD_DIM = 128;
/** Keys (forward) or queries (key-side backward) staged in workgroup memory at a time. */
const KEY_BLOCK = 256;

/**
 * Where a `[B, heads, T, Dh]` operand sits in its buffer: element (b, h, t, d) is at
 * `offset + b·batch + h·head + t·token + d` (in floats).
 */
export interface HeadLayout {
  offset: number;
  batch: number;
  head: number;
  token: number;
}

/** The contiguous `[B, heads, T, Dh]` layout. */
export function headsLayout(heads: number, tokens: number, headDim: number): HeadLayout {
  return { offset: 0, batch: heads * tokens * headDim, head: tokens * headDim, token: headDim };
}

/**
 * Heads merged per token, `[B, T, heads·Dh]`: rows of `rowLen` floats (default heads·Dh), the
 * operand starting `offset` floats into each row (e.g. k inside a fused q/k/v row).
 */
export function tokensLayout(
  heads: number,
  tokens: number,
  headDim: number,
  rowLen = heads * headDim,
  offset = 0,
): HeadLayout {
  return { offset, batch: tokens * rowLen, head: headDim, token: rowLen };
}

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
  /** Layouts of q (and dq), k (dk), v (dv) and the output (and its gradient). */
  layout: { q: HeadLayout; k: HeadLayout; v: HeadLayout; out: HeadLayout };
}

/**
 * The parameter block shared by every kernel. Layouts come first as vec4u (offset, batch, head,
 * token) so that they sit on the 16-byte boundaries uniform structs need.
 */
export const PARAMS_WGSL = /* wgsl */ `
struct P {
  lq: vec4u, lk: vec4u, lv: vec4u, lo: vec4u,
  rows: u32, heads: u32, kvHeads: u32, tq: u32,
  tk: u32, dh: u32, qoff: i32, hasMask: u32,
  scale: f32,
}
/** Index of element 0 of row (b, h, t) in an operand with layout l. */
fn at(l: vec4u, b: u32, h: u32, t: u32) -> u32 { return l.x + b * l.y + h * l.z + t * l.w; }

/**
 * Whether key j of batch row b may be attended to. A select, not a short-circuit ||: llvmpipe turned the
 * short-circuit around the storage read into ~2 ms per dispatch. Without a mask, M is bound to
 * another operand at least B·Tk long, so the read stays in bounds.
 */
fn keyVisible(b: u32, j: u32) -> bool {
  return select(M[b * p.tk + j] > 0.5, true, p.hasMask == 0u);
}`;

/** Parameters of a call; layout words are divided by `unit` (4 when a kernel reads vec4f). */
export function params(dims: AttentionDims, rows: number, unit: number): Uint8Array {
  const l = (x: HeadLayout) => [x.offset, x.batch, x.head, x.token].map((v) => v / unit);
  const { q, k, v, out } = dims.layout;
  return packParams([
    ...l(q),
    ...l(k),
    ...l(v),
    ...l(out),
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

// ---------------------------------------------------------------------------------------------
// GPU variant: one workgroup per row.

const COMMON = /* wgsl */ `
${PARAMS_WGSL}
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
`;

/** Q, K, V and the mask as storage arrays of `type` (f32, or vec4f where rows allow it). */
export const bindingsIn = (type: string) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> Q: array<${type}>;
@group(0) @binding(1) var<storage, read> K: array<${type}>;
@group(0) @binding(2) var<storage, read> V: array<${type}>;
@group(0) @binding(3) var<storage, read> M: array<f32>;
`;

/** Query row `row` = (batch, head, query): its q, output and key/value rows; `nk` keys visible. */
const ROW_PROLOGUE = /* wgsl */ `
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let i = row % p.tq;
  let bh = row / p.tq;
  let h = bh % p.heads;
  let b = bh / p.heads;
  let g = h / (p.heads / p.kvHeads);
  let qBase = at(p.lq, b, h, i);
  let oBase = at(p.lo, b, h, i);
  let kBase = at(p.lk, b, g, 0u);   // key j at kBase + j * p.lk.w
  let vBase = at(p.lv, b, g, 0u);
  let nk = u32(clamp(p.qoff + i32(i) + 1, 0, i32(p.tk)));
`;

const FORWARD_WGSL = /* wgsl */ `
${bindingsIn("f32")}
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
        let kr = kBase + j * p.lk.w;
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
        for (var jj = 0u; jj < cnt; jj++) { a += sc[jj] * V[vBase + (kb + jj) * p.lv.w + d]; }
        acc[c] = a;
      }
    }
    workgroupBarrier();
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var c = 0u; c < DPT; c++) {
    let d = lid + c * WG;
    if (d < p.dh) { O[oBase + d] = acc[c] * inv; }
  }
}`;

const BACKWARD_QUERY_WGSL = /* wgsl */ `
${bindingsIn("f32")}
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
    let go = DO[oBase + d];
    dos[d] = go;
    partD += go * O[oBase + d];
  }
  let dRow = reduceSum(partD, lid); // also makes qs and dos visible

  // Pass 1: the row's log-sum-exp, each thread online over its own keys, then combined.
  var m = NEG;
  var l = 0.0;
  for (var j = lid; j < nk; j += WG) {
    if (keyVisible(b, j)) {
      let s = score(kBase + j * p.lk.w);
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
        let pj = exp(score(kBase + j * p.lk.w) - lse);
        let vr = vBase + j * p.lv.w;
        var dp = 0.0;
        for (var d = 0u; d < p.dh; d++) { dp += dos[d] * V[vr + d]; }
        ds = pj * (dp - dRow);
      }
      sc[jj] = ds;
    }
    workgroupBarrier();
    for (var c = 0u; c < DPT; c++) {
      let d = lid + c * WG;
      if (d < p.dh) {
        var a = acc[c];
        for (var jj = 0u; jj < cnt; jj++) { a += sc[jj] * K[kBase + (kb + jj) * p.lk.w + d]; }
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

/**
 * The gradient outputs of the key side and the uniform after them: DK and DV as two bindings, or
 * DK alone when dk and dv are two parts of the same buffer (a fused q/k/v gradient; two writable
 * bindings of one buffer are not allowed). The order {@link keySideBuffers} binds; shared with
 * the flash key side.
 */
export function keyGradBindings(type: string, shared: boolean): string {
  const dv = shared ? "" : `
@group(0) @binding(7) var<storage, read_write> DV: array<${type}>;`;
  return /* wgsl */ `
@group(0) @binding(6) var<storage, read_write> DK: array<${type}>;${dv}
@group(0) @binding(${shared ? 7 : 8}) var<uniform> p: P;`;
}

/** The row kernels' store of one dV element: into DK's buffer when the two are shared. */
const storeDV = (type: string, shared: boolean) => /* wgsl */ `
fn storeDV(i: u32, x: ${type}) { ${shared ? "DK" : "DV"}[i] = x; }`;

/**
 * The key side's buffers in binding order ({@link keyGradBindings}): `gradK` and `gradV` bound
 * once when they are the same buffer.
 */
export function keySideBuffers(
  q: GPUBuffer,
  k: GPUBuffer,
  v: GPUBuffer,
  mask: GPUBuffer,
  gradOut: GPUBuffer,
  lseAndDelta: GPUBuffer,
  gradK: GPUBuffer,
  gradV: GPUBuffer,
): { shared: boolean; buffers: GPUBuffer[] } {
  const shared = gradK === gradV;
  const buffers = shared
    ? [q, k, v, mask, gradOut, lseAndDelta, gradK]
    : [q, k, v, mask, gradOut, lseAndDelta, gradK, gradV];
  return { shared, buffers };
}

function backwardKeyWgsl(shared: boolean): string {
  return /* wgsl */ `
${bindingsIn("f32")}
@group(0) @binding(4) var<storage, read> DO: array<f32>;
@group(0) @binding(5) var<storage, read> LD: array<f32>;
${keyGradBindings("f32", shared)}${storeDV("f32", shared)}
${COMMON}
var<workgroup> ks: array<f32, ${MAX_HEAD_DIM}>;
var<workgroup> vs: array<f32, ${MAX_HEAD_DIM}>;
var<workgroup> sp: array<f32, KB>;
var<workgroup> sd: array<f32, KB>;
var<workgroup> sq: array<u32, KB>;
var<workgroup> so: array<u32, KB>;

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
  let kRow = at(p.lk, b, g, j);
  let vRow = at(p.lv, b, g, j);
  for (var d = lid; d < p.dh; d += WG) {
    ks[d] = K[kRow + d];
    vs[d] = V[vRow + d];
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
      let qr = at(p.lq, b, h, i);
      let orow = at(p.lo, b, h, i);
      var pj = 0.0;
      var ds = 0.0;
      if (visible) {
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < p.dh; d++) {
          s += Q[qr + d] * ks[d];
          dp += DO[orow + d] * vs[d];
        }
        pj = exp(s * p.scale - LD[2u * qrow]);
        ds = pj * (dp - LD[2u * qrow + 1u]);
      }
      sp[it] = pj;
      sd[it] = ds;
      sq[it] = qr;
      so[it] = orow;
    }
    workgroupBarrier();
    for (var c = 0u; c < DPT; c++) {
      let d = lid + c * WG;
      if (d < p.dh) {
        var ak = dk[c];
        var av = dv[c];
        for (var it = 0u; it < cnt; it++) {
          av += sp[it] * DO[so[it] + d];
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
      DK[kRow + d] = dk[c] * p.scale;
      storeDV(vRow + d, dv[c]);
    }
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// CPU variant: one thread per row (query row, or key row on the key side), the row's vectors in
// registers. The head size is compiled in, and rows are read as vec4f when the head size and
// every layout word are multiples of 4: llvmpipe gathers each lane's load on its own, so four
// floats per load matter more there than anything else.

/** How a kernel sees a head row: `count` elements of type `type` (f32 or vec4f). */
export interface HeadVector {
  type: string;
  count: number;
}

/**
 * vec4f rows when the head size and every layout word are multiples of 4 (then every row starts
 * on a 16-byte boundary), else f32.
 */
export function headVector(dims: AttentionDims): HeadVector {
  const { q, k, v, out } = dims.layout;
  const words = [q, k, v, out].flatMap((l) => [l.offset, l.batch, l.head, l.token]);
  if (dims.headDim % 4 === 0 && words.every((w) => w % 4 === 0)) {
    return { type: "vec4f", count: dims.headDim / 4 };
  }
  return { type: "f32", count: dims.headDim };
}

/** Declarations shared by the CPU kernels: bindings of Q, K, V and the mask, parameters, helpers. */
function cpuCommon(hv: HeadVector): string {
  return /* wgsl */ `
${bindingsIn(hv.type)}
alias T = ${hv.type};
const DH = ${hv.count}u;  // vectors of type T per head row
const NEG = -1e30;        // running maximum before the first key: exp(NEG − s) is 0
const EMPTY_LSE = 1e30;   // log-sum-exp of a row without visible keys

fn vdot(a: T, b: T) -> f32 { return ${hv.type === "f32" ? "a * b" : "dot(a, b)"}; }
`;
}

/** Entry point of a CPU kernel: declares `row` (one per thread) and returns past the last one. */
function cpuMain(wg: number): string {
  return /* wgsl */ `
${PARAMS_WGSL}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = (wid.x + wid.y * nwg.x) * ${wg}u + lid;
  if (row >= p.rows) { return; }`;
}

/** Query row `row` = (batch, head, query): its q, output and key/value rows; `nk` keys visible. */
const CPU_QUERY_ROW = /* wgsl */ `
  let i = row % p.tq;
  let bh = row / p.tq;
  let h = bh % p.heads;
  let b = bh / p.heads;
  let g = h / (p.heads / p.kvHeads);
  let qBase = at(p.lq, b, h, i);
  let oBase = at(p.lo, b, h, i);
  let kBase = at(p.lk, b, g, 0u);
  let vBase = at(p.lv, b, g, 0u);
  let nk = u32(clamp(p.qoff + i32(i) + 1, 0, i32(p.tk)));`;

/**
 * One step of the online softmax over a key with score s: m = running maximum, l = Σ exp(s − m);
 * `a` rescales what was accumulated before and `e` weighs this key. Branch-free, because the
 * lanes of a SIMD group disagree on whether the maximum grows.
 */
const ONLINE_STEP = /* wgsl */ `
    let mNew = max(m, s);
    let a = exp(m - mNew);
    let e = exp(s - mNew);
    l = l * a + e;
    m = mNew;`;

function forwardCpuWgsl(hv: HeadVector, wg: number): string {
  return /* wgsl */ `
${cpuCommon(hv)}
@group(0) @binding(4) var<storage, read_write> O: array<T>;
@group(0) @binding(5) var<uniform> p: P;
${cpuMain(wg)}
${CPU_QUERY_ROW}
  var q: array<T, DH>;
  var acc: array<T, DH>;
  for (var d = 0u; d < DH; d++) { q[d] = Q[qBase + d] * p.scale; acc[d] = T(0.0); }
  var m = NEG;
  var l = 0.0;
  for (var j = 0u; j < nk; j++) {
    if (!keyVisible(b, j)) { continue; }
    let kr = kBase + j * p.lk.w;
    let vr = vBase + j * p.lv.w;
    var s = 0.0;
    for (var d = 0u; d < DH; d++) { s += vdot(q[d], K[kr + d]); }
    ${ONLINE_STEP}
    for (var d = 0u; d < DH; d++) { acc[d] = acc[d] * a + e * V[vr + d]; }
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var d = 0u; d < DH; d++) { O[oBase + d] = acc[d] * inv; }
}`;
}

function backwardQueryCpuWgsl(hv: HeadVector, wg: number): string {
  // dQ = scale Σ_j P_j (dO·v_j − D) k_j with P_j = exp(s_j − m) / l, accumulated online like the
  // forward (every score once); L = m + log l and D = dO·O are stored for the key side.
  return /* wgsl */ `
${cpuCommon(hv)}
@group(0) @binding(4) var<storage, read> O: array<T>;
@group(0) @binding(5) var<storage, read> DO: array<T>;
@group(0) @binding(6) var<storage, read_write> DQ: array<T>;
@group(0) @binding(7) var<storage, read_write> LD: array<f32>;
@group(0) @binding(8) var<uniform> p: P;
${cpuMain(wg)}
${CPU_QUERY_ROW}
  var q: array<T, DH>;
  var go: array<T, DH>;
  var acc: array<T, DH>;
  var dRow = 0.0;
  for (var d = 0u; d < DH; d++) {
    q[d] = Q[qBase + d] * p.scale;
    go[d] = DO[oBase + d];
    dRow += vdot(go[d], O[oBase + d]);
    acc[d] = T(0.0);
  }
  var m = NEG;
  var l = 0.0;
  for (var j = 0u; j < nk; j++) {
    if (!keyVisible(b, j)) { continue; }
    let kr = kBase + j * p.lk.w;
    let vr = vBase + j * p.lv.w;
    var s = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < DH; d++) {
      s += vdot(q[d], K[kr + d]);
      dp += vdot(go[d], V[vr + d]);
    }
    ${ONLINE_STEP}
    let w = e * (dp - dRow);
    for (var d = 0u; d < DH; d++) { acc[d] = acc[d] * a + w * K[kr + d]; }
  }
  let f = select(0.0, p.scale / l, l > 0.0);
  for (var d = 0u; d < DH; d++) { DQ[qBase + d] = acc[d] * f; }
  LD[2u * row] = select(EMPTY_LSE, m + log(l), l > 0.0);
  LD[2u * row + 1u] = dRow;
}`;
}

function backwardKeyCpuWgsl(hv: HeadVector, wg: number, shared: boolean): string {
  // One thread per key row (batch, kv head, key): over every query head of the group and every
  // query that sees the key, dV = Σ P dO and dK = scale · Σ P (dO·v − D) q.
  return /* wgsl */ `
${cpuCommon(hv)}
@group(0) @binding(4) var<storage, read> DO: array<T>;
@group(0) @binding(5) var<storage, read> LD: array<f32>;
${keyGradBindings("T", shared)}${storeDV("T", shared)}
${cpuMain(wg)}
  let j = row % p.tk;
  let bg = row / p.tk;
  let g = bg % p.kvHeads;
  let b = bg / p.kvHeads;
  let kRow = at(p.lk, b, g, j);
  let vRow = at(p.lv, b, g, j);
  var dk: array<T, DH>;
  var dv: array<T, DH>;
  for (var d = 0u; d < DH; d++) { dk[d] = T(0.0); dv[d] = T(0.0); }
  if (keyVisible(b, j)) {
    var k: array<T, DH>;
    var v: array<T, DH>;
    for (var d = 0u; d < DH; d++) { k[d] = K[kRow + d] * p.scale; v[d] = V[vRow + d]; }
    // Queries i with qoff + i >= j see this key.
    let i0 = u32(max(i32(j) - p.qoff, 0));
    let rep = p.heads / p.kvHeads;
    for (var h = g * rep; h < (g + 1u) * rep; h++) {
      for (var i = i0; i < p.tq; i++) {
        let qrow = (b * p.heads + h) * p.tq + i;
        let qr = at(p.lq, b, h, i);
        let orow = at(p.lo, b, h, i);
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < DH; d++) {
          s += vdot(Q[qr + d], k[d]);
          dp += vdot(DO[orow + d], v[d]);
        }
        let pj = exp(s - LD[2u * qrow]);
        let ds = pj * (dp - LD[2u * qrow + 1u]);
        for (var d = 0u; d < DH; d++) {
          dv[d] += pj * DO[orow + d];
          dk[d] += ds * Q[qr + d];
        }
      }
    }
  }
  for (var d = 0u; d < DH; d++) {
    DK[kRow + d] = dk[d] * p.scale;
    storeDV(vRow + d, dv[d]);
  }
}`;
}

/**
 * Dispatches one attention kernel over `rows` rows: the CPU variant built by `cpu` (one thread
 * per row) when the context asks for CPU kernels, else `gpuCode` (one workgroup per row).
 */
function launch(
  ctx: GpuContext,
  name: string,
  gpuCode: string,
  cpu: (hv: HeadVector, wg: number) => string,
  dims: AttentionDims,
  buffers: GPUBuffer[],
  rows: number,
): void {
  if (rows === 0) return;
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (!ctx.cpuKernels) {
    ctx.dispatch(ctx.pipeline(gpuCode), buffers, params(dims, rows, 1), splitGrid(rows, max));
    return;
  }
  // Up to 64 rows per workgroup, fewer (down to one 256-bit SIMD group) to give every core work.
  const wg = Math.min(64, Math.max(8, nextPow2(Math.ceil(rows / 16))));
  const hv = headVector(dims);
  const code = cachedWgsl(`attention ${name} ${hv.type} ${hv.count} ${wg}`, () => cpu(hv, wg));
  const unit = hv.type === "vec4f" ? 4 : 1;
  ctx.dispatch(ctx.pipeline(code), buffers, params(dims, rows, unit), splitGrid(Math.ceil(rows / wg), max));
}

/**
 * Forward: `out` from q, k, v (laid out as `dims.layout` says) and the key mask [B, Tk] (any
 * buffer when `dims.hasMask` is false; it is not read).
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
  launch(ctx, "forward", FORWARD_WGSL, forwardCpuWgsl, dims, [q, k, v, mask, out], rows);
}

/**
 * Query-side backward: writes dQ (in q's layout) and, per query row, its log-sum-exp and `dO·O`
 * into `lseAndDelta` [B·H·Tq, 2] for {@link attentionBackwardKeyKernel}. `gradOut` has the
 * output's layout.
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
  const buffers = [q, k, v, mask, out, gradOut, gradQ, lseAndDelta];
  launch(ctx, "backwardQuery", BACKWARD_QUERY_WGSL, backwardQueryCpuWgsl, dims, buffers, rows);
}

/**
 * Key-side backward: dK and dV (in k's and v's layouts), summed over the query heads of each
 * group. `gradK` and `gradV` may be the same buffer (disjoint parts of a fused q/k/v gradient).
 */
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
  const { shared, buffers } = keySideBuffers(q, k, v, mask, gradOut, lseAndDelta, gradK, gradV);
  const gpuCode = cachedWgsl(`attention backwardKey gpu ${shared}`, () => backwardKeyWgsl(shared));
  const name = `backwardKey ${shared}`;
  launch(ctx, name, gpuCode, (hv, wg) => backwardKeyCpuWgsl(hv, wg, shared), dims, buffers, rows);
}

const COPY_HEADS_WGSL = /* wgsl */ `
struct P { src: vec4u, dst: vec4u, n: u32, heads: u32, tokens: u32, dh: u32 }
@group(0) @binding(0) var<storage, read> S: array<f32>;
@group(0) @binding(1) var<storage, read_write> D: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
fn at(l: vec4u, b: u32, h: u32, t: u32) -> u32 { return l.x + b * l.y + h * l.z + t * l.w; }
${LINEAR_MAIN(64)}
  if (gid >= p.n) { return; }
  let d = gid % p.dh;
  let t = (gid / p.dh) % p.tokens;
  let h = (gid / (p.dh * p.tokens)) % p.heads;
  let b = gid / (p.dh * p.tokens * p.heads);
  D[at(p.dst, b, h, t) + d] = S[at(p.src, b, h, t) + d];
}`;

/**
 * Copies a `[batch, heads, tokens, headDim]` operand from one layout to another, e.g. the new
 * keys of a fused q/k/v projection into a KV cache (`[B, Hkv, capacity, Dh]` at the cached
 * length): one dispatch instead of a slice, a transpose and a block copy.
 */
export function copyHeadsKernel(
  ctx: GpuContext,
  src: GPUBuffer,
  srcLayout: HeadLayout,
  dst: GPUBuffer,
  dstLayout: HeadLayout,
  dims: { batch: number; heads: number; tokens: number; headDim: number },
): void {
  const n = dims.batch * dims.heads * dims.tokens * dims.headDim;
  const l = (x: HeadLayout) => [x.offset, x.batch, x.head, x.token];
  const params = packParams([...l(srcLayout), ...l(dstLayout), n, dims.heads, dims.tokens, dims.headDim]);
  launchLinear(ctx, COPY_HEADS_WGSL, [src, dst], params, n, 64);
}
