/**
 * Fused ("flash") attention kernels for GPUs: the same causal, key-masked, grouped-query
 * attention as kernels/attention.ts, with the same {@link HeadLayout} addressing, but tiled so
 * that each key/value row is read from global memory once per block of queries instead of once
 * per query.
 *
 * - forward: one workgroup per (batch, head, block of R queries). Tiles of C keys and values are
 *   staged in workgroup memory; every query keeps a running maximum `m`, sum `l` and output in
 *   registers and folds each tile in with an online softmax. Besides O it can store each row's
 *   log-sum-exp `L`, so the backward never recomputes the softmax normaliser.
 * - backward, query side: one workgroup per (batch, head, block of R queries) computes
 *   `D = dO·O`, then over key tiles recomputes `P = exp(s − L)` and
 *   `dQ = scale · Σ_j P_j (dO·v_j − D) k_j`; it stores D next to L for the key side.
 * - backward, key side: one workgroup per (batch, kv head, block of R keys) walks the query tiles
 *   of every query head of its group that can see the block and accumulates
 *   `dV = Σ P dO` and `dK = scale · Σ P (dO·v − D) q`.
 *
 * dQ and dK/dV are computed by separate passes, so every gradient row has exactly one owner: no
 * float atomics, deterministic results. The `[rows, 2]` buffer of (L, D) pairs has the layout the
 * row kernels use, so either key-side kernel can follow either query side.
 *
 * Threads: each row (query, or key on the key side) is served by NS threads, each owning a slice
 * of DS4 vec4 columns of the head, so that the row's vectors stay in registers whatever the head
 * size (a 128-wide head is 4 slices of 32 floats). Thread `lid` serves slice `lid / R` of row
 * `lid % R`: with R ≥ 32 a 32-wide SIMD group shares one slice, so its reads of a staged tile all
 * hit the same address (a broadcast). A score is the sum of NS partial dot products; they meet in
 * workgroup memory (`sp`), laid out [slice][tile column][row] so that neighbouring threads touch
 * neighbouring words. Staged tiles are [slice][tile column][DS4] vec4s with one vec4 of padding
 * per slice, so two slices read by one SIMD group start in different banks.
 *
 * Scores are kept in base 2 (q or k is pre-multiplied by scale·log2 e, so `exp2` replaces
 * `exp`); L is stored in natural log like the row kernels'.
 *
 * Block sizes (R rows per workgroup, C tile columns) are chosen per launch from the head size and
 * `maxComputeWorkgroupStorageSize` ({@link flashTiling}): the partial-score arrays, not the
 * tiles, are what fills workgroup memory, so C shrinks first on small limits (32 KiB on lavapipe,
 * 48 KiB on most GPUs).
 *
 * Which kernels run (flash or the one-workgroup-per-row kernels) is decided per call by
 * {@link useFlashAttention}; CPU adapters (`ctx.cpuKernels`) keep their one-thread-per-row
 * variant.
 */
import { type GpuContext, GpuLimitError, splitGrid } from "./device.ts";
import { cachedWgsl } from "./launch.ts";
import {
  type AttentionDims,
  bindingsIn,
  type HeadVector,
  headVector,
  keyGradBindings,
  keySideBuffers,
  MAX_HEAD_DIM,
  params,
  PARAMS_WGSL,
} from "./attention.ts";

/** Which of the three flash kernels. */
export type FlashKind = "forward" | "query" | "key";

/**
 * Block shape of one flash kernel: `ns` threads per row, each owning `ds4` vec4 columns of the
 * head (ns·ds4·4 ≥ head size, zero-padded); `rows` rows per workgroup (queries, or keys on the
 * key side); `tile` columns staged per step (keys, or queries on the key side).
 */
export interface FlashTiling {
  /** Threads per row. */
  ns: number;
  /** vec4 columns of the head each thread owns. */
  ds4: number;
  /** Rows per workgroup (queries; keys for the key-side kernel). */
  rows: number;
  /** Columns staged in workgroup memory per step (keys; queries for the key-side kernel). */
  tile: number;
}

/** Bytes of workgroup memory a kernel of `kind` declares with tiling `t`. */
export function flashSharedBytes(kind: FlashKind, t: FlashTiling): number {
  const staged = 2 * t.ns * (t.tile * t.ds4 + 1) * 16; // two tiles of vec4s, one vec4 pad per slice
  const partial = t.ns * t.tile * t.rows * 4; // one partial score per (slice, column, row)
  switch (kind) {
    case "forward":
      return staged + partial + t.tile * 4;
    case "query":
      return staged + 2 * partial + t.tile * 4 + (2 + t.ns) * t.rows * 4;
    case "key":
      return staged + 2 * partial + 2 * t.tile * 4 + t.rows * 4;
  }
}

/** Settings of the attention kernel choice on GPUs (module-wide; benches and tests change them). */
export interface FlashAttentionOptions {
  /**
   * `auto`: flash when there are at least {@link FlashAttentionOptions.minQueries} queries (a
   * decode step keeps the row kernels, which spread one query's keys over a workgroup);
   * `flash` / `rows`: always that kernel family.
   */
  mode: "auto" | "flash" | "rows";
  /**
   * Fewest queries for which `auto` picks the flash kernels. 128: on an H200 (docs/gpu/run4) the
   * row kernels were faster at the x-step's 33 queries (forward 0.022 vs 0.061 ms GPU, backward
   * 0.065 vs 0.13 ms for B10 H8 Dh32) and the flash kernels at 256 (backward 0.54 vs 1.70 ms for
   * B1 H32 Dh64); between the two was not measured.
   */
  minQueries: number;
  /** Forced block shape parts per kernel kind (tests, tuning); the rest is chosen as usual. */
  tiling: Partial<Record<FlashKind, Partial<FlashTiling>>>;
}

/** The current settings; change them with {@link setFlashAttentionOptions}. */
export const flashAttentionOptions: FlashAttentionOptions = { mode: "auto", minQueries: 128, tiling: {} };

/** Changes some of {@link flashAttentionOptions}; returns the previous settings (to restore them). */
export function setFlashAttentionOptions(o: Partial<FlashAttentionOptions>): FlashAttentionOptions {
  const previous = { ...flashAttentionOptions, tiling: { ...flashAttentionOptions.tiling } };
  Object.assign(flashAttentionOptions, o);
  return previous;
}

/** Whether a call with these dims runs the flash kernels (forward and backward) on `ctx`. */
export function useFlashAttention(ctx: GpuContext, dims: AttentionDims): boolean {
  if (ctx.cpuKernels) return false;
  const { mode, minQueries } = flashAttentionOptions;
  return mode === "flash" || (mode === "auto" && dims.queries >= minQueries);
}

/**
 * The block shape of a kernel for head size `headDim`: NS so that a thread's slice is at most 40
 * floats (forward, query side: 2 vectors per row in registers) or 16 floats (key side: 4 vectors),
 * 64 or 32 rows per workgroup (at most 128 threads), and the largest tile of 32, 16, 8 or 4
 * columns that fits the adapter's workgroup memory (fewer rows if even 4 does not fit).
 */
export function flashTiling(
  kind: FlashKind,
  headDim: number,
  limits: { maxComputeWorkgroupStorageSize: number; maxComputeInvocationsPerWorkgroup: number },
): FlashTiling {
  if (headDim < 1 || headDim > MAX_HEAD_DIM) {
    throw new RangeError(`flash attention: head size ${headDim} outside [1, ${MAX_HEAD_DIM}]`);
  }
  const forced = flashAttentionOptions.tiling[kind] ?? {};
  const ns = forced.ns ?? Math.ceil(headDim / (kind === "key" ? 16 : 40));
  const ds4 = forced.ds4 ?? Math.ceil(headDim / (4 * ns));
  const wantRows = forced.rows ?? (kind === "key" ? (ns <= 4 ? 32 : 16) : (ns <= 2 ? 64 : 32));
  const tiles = forced.tile ? [forced.tile] : [32, 16, 8, 4];
  for (let rows = wantRows; rows >= 1; rows >>= 1) {
    if (ns * rows > limits.maxComputeInvocationsPerWorkgroup) continue;
    for (const tile of tiles) {
      const t = { ns, ds4, rows, tile };
      if (flashSharedBytes(kind, t) <= limits.maxComputeWorkgroupStorageSize) return t;
    }
    if (forced.rows) break;
  }
  throw new GpuLimitError(
    `flash attention (${kind}, head size ${headDim}): no block shape fits ` +
      `${limits.maxComputeWorkgroupStorageSize} bytes of workgroup memory`,
  );
}

// ---------------------------------------------------------------------------------------------
// WGSL

/** Constants and the vec4 row loaders/storers for the named operands. */
function flashCommon(
  hv: HeadVector,
  dh: number,
  t: FlashTiling,
  loads: string[],
  stores: Record<string, string>,
): string {
  // vec4 operands hold whole rows (the head size is a multiple of 4); f32 ones are read one
  // float at a time and the head's last partial vec4 is zero-padded.
  const load = (x: string) =>
    hv.type === "vec4f"
      ? /* wgsl */ `
fn ld_${x}(base: u32, c4: u32) -> vec4f {
  if (c4 >= DH4) { return vec4f(0.0); }
  return ${x}[base + c4];
}`
      : /* wgsl */ `
fn ld_${x}(base: u32, c4: u32) -> vec4f {
  var r = vec4f(0.0);
  for (var c = 0u; c < 4u; c++) {
    let d = 4u * c4 + c;
    if (d < DH) { r[c] = ${x}[base + d]; }
  }
  return r;
}`;
  const store = (name: string, buffer: string) =>
    hv.type === "vec4f"
      ? /* wgsl */ `
fn st_${name}(base: u32, c4: u32, x: vec4f) {
  if (c4 < DH4) { ${buffer}[base + c4] = x; }
}`
      : /* wgsl */ `
fn st_${name}(base: u32, c4: u32, x: vec4f) {
  for (var c = 0u; c < 4u; c++) {
    let d = 4u * c4 + c;
    if (d < DH) { ${buffer}[base + d] = x[c]; }
  }
}`;
  return /* wgsl */ `
${PARAMS_WGSL}
const DH = ${dh}u;            // head size
const DH4 = ${Math.ceil(dh / 4)}u;
const NS = ${t.ns}u;          // threads (slices) per row
const DS4 = ${t.ds4}u;        // vec4 columns per slice
const R = ${t.rows}u;         // rows per workgroup
const C = ${t.tile}u;         // columns per staged tile
const TH = ${t.ns * t.rows}u; // threads per workgroup
const SL = ${t.tile * t.ds4 + 1}u; // vec4s per slice of a staged tile (+1: slices start in different banks)
const LOG2E = 1.4426950408889634;
const LN2 = 0.6931471805599453;
const NEG = -1e30;            // running maximum before the first visible key
const EMPTY_LSE = 1e30;       // log-sum-exp of a row without visible keys
${loads.map(load).join("")}
${Object.entries(stores).map(([n, b]) => store(n, b)).join("")}
`;
}

/** Staged index of (column j, vec4 column c4 of the whole head). */
const STAGED_AT = /* wgsl */ `
fn stagedAt(j: u32, c4: u32) -> u32 { return (c4 / DS4) * SL + j * DS4 + c4 % DS4; }`;

/** Query-block prologue shared by the forward and the query side. */
const QUERY_BLOCK = /* wgsl */ `
  let nqb = (p.tq + R - 1u) / R;
  let w = wid.x + wid.y * nwg.x;
  if (w >= p.rows * nqb) { return; }
  let bh = w % p.rows;              // p.rows = batch · heads
  let qb = nqb - 1u - w / p.rows;   // last (longest, under the causal mask) query blocks first
  let h = bh % p.heads;
  let b = bh / p.heads;
  let g = h / (p.heads / p.kvHeads);
  let sl = lid / R;
  let qi = lid % R;
  let i = qb * R + qi;
  let ic = min(i, p.tq - 1u);       // rows past the end compute on the last row, store nothing
  let lim = p.qoff + i32(i);        // query i sees keys j <= lim
  let qBase = at(p.lq, b, h, ic);
  let kBase = at(p.lk, b, g, 0u);
  let vBase = at(p.lv, b, g, 0u);
  // Keys seen by the block's last query: every tile the block needs.
  let lastQ = min(qb * R + R, p.tq) - 1u;
  let nk = u32(clamp(p.qoff + i32(lastQ) + 1, 0, i32(p.tk)));`;

/** Stages keys [kb, kb + C) of K and V (rows past nk repeat row nk − 1) and their visibility. */
const STAGE_KEYS = /* wgsl */ `
    for (var e = lid; e < C * NS * DS4; e += TH) {
      let j = e / (NS * DS4);
      let c4 = e % (NS * DS4);
      let key = min(kb + j, nk - 1u);
      ks[stagedAt(j, c4)] = ld_K(kBase + key * p.lk.w, c4);
      vs[stagedAt(j, c4)] = ld_V(vBase + key * p.lv.w, c4);
    }
    for (var j = lid; j < C; j += TH) {
      let visible = keyVisible(b, min(kb + j, nk - 1u));
      mk[j] = select(0.0, 1.0, visible && kb + j < nk);
    }
    workgroupBarrier();`;

function forwardFlashWgsl(hv: HeadVector, dh: number, t: FlashTiling, storeLse: boolean): string {
  return /* wgsl */ `
${bindingsIn(hv.type)}
@group(0) @binding(4) var<storage, read_write> O: array<${hv.type}>;
${storeLse ? "@group(0) @binding(5) var<storage, read_write> LD: array<f32>;" : ""}
@group(0) @binding(${storeLse ? 6 : 5}) var<uniform> p: P;
${flashCommon(hv, dh, t, ["Q", "K", "V"], { O: "O" })}
${STAGED_AT}
var<workgroup> ks: array<vec4f, ${t.ns * (t.tile * t.ds4 + 1)}>;
var<workgroup> vs: array<vec4f, ${t.ns * (t.tile * t.ds4 + 1)}>;
var<workgroup> sp: array<f32, ${t.ns * t.tile * t.rows}>;
var<workgroup> mk: array<f32, C>;

/** Score of (tile key j, row qi): the sum of the slices' partial dot products. */
fn score(j: u32, qi: u32) -> f32 {
  var s = 0.0;
  for (var u = 0u; u < NS; u++) { s += sp[(u * C + j) * R + qi]; }
  return s;
}

@compute @workgroup_size(${t.ns * t.rows})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
${QUERY_BLOCK}
  var q: array<vec4f, DS4>;
  var acc: array<vec4f, DS4>;
  for (var c = 0u; c < DS4; c++) {
    q[c] = ld_Q(qBase, sl * DS4 + c) * (p.scale * LOG2E);
    acc[c] = vec4f(0.0);
  }
  var m = NEG;
  var l = 0.0;
  for (var kb = 0u; kb < nk; kb += C) {
${STAGE_KEYS}
    for (var j = 0u; j < C; j++) {
      var s = 0.0;
      for (var c = 0u; c < DS4; c++) { s += dot(q[c], ks[sl * SL + j * DS4 + c]); }
      sp[(sl * C + j) * R + qi] = s;
    }
    ${t.ns > 1 ? "workgroupBarrier(); // every slice's partial scores are in" : ""}
    // Online softmax: the tile's maximum first, then rescale what came before and add the tile.
    let cnt = min(C, nk - kb);
    var mt = m;
    for (var j = 0u; j < cnt; j++) {
      if (i32(kb + j) <= lim && mk[j] > 0.5) { mt = max(mt, score(j, qi)); }
    }
    let alpha = exp2(m - mt);
    l *= alpha;
    for (var c = 0u; c < DS4; c++) { acc[c] *= alpha; }
    for (var j = 0u; j < cnt; j++) {
      if (i32(kb + j) <= lim && mk[j] > 0.5) {
        let pj = exp2(score(j, qi) - mt);
        l += pj;
        for (var c = 0u; c < DS4; c++) { acc[c] += pj * vs[sl * SL + j * DS4 + c]; }
      }
    }
    m = mt;
    workgroupBarrier(); // the next tile overwrites ks, vs, sp and mk
  }
  if (i < p.tq) {
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let oBase = at(p.lo, b, h, i);
    for (var c = 0u; c < DS4; c++) { st_O(oBase, sl * DS4 + c, acc[c] * inv); }
    ${
    storeLse
      ? "if (sl == 0u) { LD[2u * (bh * p.tq + i)] = select(EMPTY_LSE, (m + log2(l)) * LN2, l > 0.0); }"
      : ""
  }
  }
}`;
}

/**
 * The backward tiles' inner loop: for each staged column `col`, this thread's dot products
 * `s = a·x` and `dp = b·y` over its slice of the head (with several slices, at `sl * SL` in the
 * staged tiles x and y), then `body`, which sees `col`, `s` and `dp`.
 */
function columnDots(
  col: string,
  a: string,
  x: string,
  b: string,
  y: string,
  sliced: boolean,
  body: string,
): string {
  const at = `${sliced ? "sl * SL + " : ""}${col} * DS4 + c`;
  return /* wgsl */ `
    for (var ${col} = 0u; ${col} < C; ${col}++) {
      var s = 0.0;
      var dp = 0.0;
      for (var c = 0u; c < DS4; c++) {
        s += dot(${a}[c], ${x}[${at}]);
        dp += dot(${b}[c], ${y}[${at}]);
      }${body}
    }`;
}

/**
 * {@link columnDots} with several slices: the partial s and dp of (column `col`, row `row`) go to
 * sp/dpp, and after a barrier each (column, row) pair's sums over the slices are formed by one
 * thread, which alone reads and writes its slots in `finish` (seeing `col`, `r`, `s`, `dp`).
 */
function sliceSums(
  col: string,
  row: string,
  a: string,
  x: string,
  b: string,
  y: string,
  finish: string,
): string {
  const partials = `
      sp[(sl * C + ${col}) * R + ${row}] = s;
      dpp[(sl * C + ${col}) * R + ${row}] = dp;`;
  return /* wgsl */ `${columnDots(col, a, x, b, y, true, partials)}
    workgroupBarrier();
    for (var e = lid; e < C * R; e += TH) {
      let ${col} = e / R;
      let r = e % R;
      var s = 0.0;
      var dp = 0.0;
      for (var u = 0u; u < NS; u++) {
        s += sp[(u * C + ${col}) * R + r];
        dp += dpp[(u * C + ${col}) * R + r];
      }${finish}
    }
    workgroupBarrier();`;
}

function backwardQueryFlashWgsl(hv: HeadVector, dh: number, t: FlashTiling): string {
  // With one slice per row a thread has whole scores: dS is formed and used right away. With
  // several, the partial s and dO·v go through sp/dpp, the workgroup turns each (key, row) pair
  // into dS once (in place of slice 0's partial), and the slices read it back.
  const oneSlice = t.ns === 1;
  const tile = oneSlice
    ? columnDots(
      "j",
      "q",
      "ks",
      "go",
      "vs",
      false,
      `
      let visible = i32(kb + j) <= lim && mk[j] > 0.5;
      let ds = select(0.0, exp2(s - lse) * (dp - dRow), visible);
      for (var c = 0u; c < DS4; c++) { dq[c] += ds * ks[j * DS4 + c]; }`,
    )
    : sliceSums(
      "j",
      "qi",
      "q",
      "ks",
      "go",
      "vs",
      `
      let visible = i32(kb + j) <= p.qoff + i32(qb * R + r) && mk[j] > 0.5;
      sp[j * R + r] = select(0.0, exp2(s - rl[r]) * (dp - rd[r]), visible);`,
    ) + /* wgsl */ `
    let cnt = min(C, nk - kb);
    for (var j = 0u; j < cnt; j++) {
      let ds = sp[j * R + qi];
      for (var c = 0u; c < DS4; c++) { dq[c] += ds * ks[sl * SL + j * DS4 + c]; }
    }`;
  return /* wgsl */ `
${bindingsIn(hv.type)}
@group(0) @binding(4) var<storage, read> O: array<${hv.type}>;
@group(0) @binding(5) var<storage, read> DO: array<${hv.type}>;
@group(0) @binding(6) var<storage, read_write> DQ: array<${hv.type}>;
@group(0) @binding(7) var<storage, read_write> LD: array<f32>;
@group(0) @binding(8) var<uniform> p: P;
${flashCommon(hv, dh, t, ["Q", "K", "V", "O", "DO"], { DQ: "DQ" })}
${STAGED_AT}
var<workgroup> ks: array<vec4f, ${t.ns * (t.tile * t.ds4 + 1)}>;
var<workgroup> vs: array<vec4f, ${t.ns * (t.tile * t.ds4 + 1)}>;
var<workgroup> sp: array<f32, ${t.ns * t.tile * t.rows}>;
var<workgroup> dpp: array<f32, ${t.ns * t.tile * t.rows}>;
var<workgroup> mk: array<f32, C>;
var<workgroup> rl: array<f32, R>;   // L of each row, base 2
var<workgroup> rd: array<f32, R>;   // D = dO·O of each row
var<workgroup> red: array<f32, ${t.ns * t.rows}>;

@compute @workgroup_size(${t.ns * t.rows})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
${QUERY_BLOCK}
  let oBase = at(p.lo, b, h, ic);
  let row = bh * p.tq + ic;
  var q: array<vec4f, DS4>;
  var go: array<vec4f, DS4>;
  var dq: array<vec4f, DS4>;
  var part = 0.0;
  for (var c = 0u; c < DS4; c++) {
    q[c] = ld_Q(qBase, sl * DS4 + c) * (p.scale * LOG2E);
    go[c] = ld_DO(oBase, sl * DS4 + c);
    part += dot(go[c], ld_O(oBase, sl * DS4 + c));
    dq[c] = vec4f(0.0);
  }
  red[sl * R + qi] = part;
  workgroupBarrier();
  var dRow = 0.0;
  for (var u = 0u; u < NS; u++) { dRow += red[u * R + qi]; }
  let lse = LD[2u * row] * LOG2E;
  if (sl == 0u) {
    rl[qi] = lse;
    rd[qi] = dRow;
    if (i < p.tq) { LD[2u * row + 1u] = dRow; }
  }
  // rl and rd are read after the first tile's barrier.
  for (var kb = 0u; kb < nk; kb += C) {
${STAGE_KEYS}
${tile}
    workgroupBarrier(); // the next tile overwrites ks, vs, sp, dpp and mk
  }
  if (i < p.tq) {
    for (var c = 0u; c < DS4; c++) { st_DQ(qBase, sl * DS4 + c, dq[c] * p.scale); }
  }
}`;
}

function backwardKeyFlashWgsl(hv: HeadVector, dh: number, t: FlashTiling, shared: boolean): string {
  const oneSlice = t.ns === 1;
  const visible = (r: string, ii: string) =>
    `ib + ${ii} < p.tq && kok[${r}] > 0.5 && i32(k0 + ${r}) <= p.qoff + i32(ib + ${ii})`;
  const tile = oneSlice
    ? columnDots(
      "ii",
      "k",
      "qs",
      "v",
      "dos",
      false,
      `
        let pj = select(0.0, exp2(s - rl[ii]), ${visible("kj", "ii")});
        let ds = pj * (dp - rd[ii]);
        for (var c = 0u; c < DS4; c++) {
          dv[c] += pj * dos[ii * DS4 + c];
          dk[c] += ds * qs[ii * DS4 + c];
        }`,
    )
    : sliceSums(
      "ii",
      "kj",
      "k",
      "qs",
      "v",
      "dos",
      `
        let pj = select(0.0, exp2(s - rl[ii]), ${visible("r", "ii")});
        sp[ii * R + r] = pj;
        dpp[ii * R + r] = pj * (dp - rd[ii]);`,
    ) + /* wgsl */ `
      for (var ii = 0u; ii < C; ii++) {
        let pj = sp[ii * R + kj];
        let ds = dpp[ii * R + kj];
        for (var c = 0u; c < DS4; c++) {
          dv[c] += pj * dos[sl * SL + ii * DS4 + c];
          dk[c] += ds * qs[sl * SL + ii * DS4 + c];
        }
      }`;
  return /* wgsl */ `
${bindingsIn(hv.type)}
@group(0) @binding(4) var<storage, read> DO: array<${hv.type}>;
@group(0) @binding(5) var<storage, read> LD: array<f32>;
${keyGradBindings(hv.type, shared)}
${flashCommon(hv, dh, t, ["Q", "K", "V", "DO"], { DK: "DK", DV: shared ? "DK" : "DV" })}
${STAGED_AT}
var<workgroup> qs: array<vec4f, ${t.ns * (t.tile * t.ds4 + 1)}>;
var<workgroup> dos: array<vec4f, ${t.ns * (t.tile * t.ds4 + 1)}>;
var<workgroup> sp: array<f32, ${t.ns * t.tile * t.rows}>;
var<workgroup> dpp: array<f32, ${t.ns * t.tile * t.rows}>;
var<workgroup> rl: array<f32, C>;   // L of each staged query, base 2
var<workgroup> rd: array<f32, C>;   // D of each staged query
var<workgroup> kok: array<f32, R>;  // 1 for a key of the block that exists and is not masked

@compute @workgroup_size(${t.ns * t.rows})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let nkb = (p.tk + R - 1u) / R;
  let w = wid.x + wid.y * nwg.x;
  if (w >= p.rows * nkb) { return; }
  let bg = w % p.rows;               // p.rows = batch · kv heads
  let k0 = (w / p.rows) * R;         // first key of the block (early blocks, seen by most queries, first)
  let g = bg % p.kvHeads;
  let b = bg / p.kvHeads;
  let sl = lid / R;
  let kj = lid % R;
  let j = k0 + kj;
  let jc = min(j, p.tk - 1u);
  let kRow = at(p.lk, b, g, jc);
  let vRow = at(p.lv, b, g, jc);
  var k: array<vec4f, DS4>;
  var v: array<vec4f, DS4>;
  var dk: array<vec4f, DS4>;
  var dv: array<vec4f, DS4>;
  for (var c = 0u; c < DS4; c++) {
    k[c] = ld_K(kRow, sl * DS4 + c) * (p.scale * LOG2E);
    v[c] = ld_V(vRow, sl * DS4 + c);
    dk[c] = vec4f(0.0);
    dv[c] = vec4f(0.0);
  }
  if (sl == 0u) {
    let visible = keyVisible(b, jc);
    kok[kj] = select(0.0, 1.0, visible && j < p.tk);
  }
  // The first query that sees key k0; kok, rl and rd are read after the tile's barrier.
  let i0 = u32(clamp(i32(k0) - p.qoff, 0, i32(p.tq)));
  let rep = p.heads / p.kvHeads;
  for (var hh = 0u; hh < rep; hh++) {
    let h = g * rep + hh;
    let rowBase = (b * p.heads + h) * p.tq;
    for (var ib = i0; ib < p.tq; ib += C) {
      for (var e = lid; e < C * NS * DS4; e += TH) {
        let ii = e / (NS * DS4);
        let c4 = e % (NS * DS4);
        let iq = min(ib + ii, p.tq - 1u);
        qs[stagedAt(ii, c4)] = ld_Q(at(p.lq, b, h, iq), c4);
        dos[stagedAt(ii, c4)] = ld_DO(at(p.lo, b, h, iq), c4);
      }
      for (var e = lid; e < C; e += TH) {
        let r = rowBase + min(ib + e, p.tq - 1u);
        rl[e] = LD[2u * r] * LOG2E;
        rd[e] = LD[2u * r + 1u];
      }
      workgroupBarrier();
${tile}
      workgroupBarrier(); // the next tile overwrites qs, dos, sp, dpp, rl and rd
    }
  }
  if (j < p.tk) {
    for (var c = 0u; c < DS4; c++) {
      st_DK(kRow, sl * DS4 + c, dk[c] * p.scale);
      st_DV(vRow, sl * DS4 + c, dv[c]);
    }
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// Launchers

/** Compiles (once) and dispatches a flash kernel over `blocks` workgroups. */
function launchFlash(
  ctx: GpuContext,
  kind: FlashKind,
  variant: string,
  build: (hv: HeadVector, t: FlashTiling) => string,
  dims: AttentionDims,
  buffers: GPUBuffer[],
  rows: number,
  rowsPerBlock: (t: FlashTiling) => number,
): void {
  const t = flashTiling(kind, dims.headDim, ctx.limits);
  const blocks = rows * rowsPerBlock(t);
  if (blocks === 0) return;
  const hv = headVector(dims);
  const key = `flash ${kind} ${variant} ${hv.type} ${dims.headDim} ${t.ns} ${t.ds4} ${t.rows} ${t.tile}`;
  const code = cachedWgsl(key, () => build(hv, t));
  const unit = hv.type === "vec4f" ? 4 : 1;
  const grid = splitGrid(blocks, ctx.limits.maxComputeWorkgroupsPerDimension);
  ctx.dispatch(ctx.pipeline(code), buffers, params(dims, rows, unit), grid);
}

/**
 * Flash forward: `out` from q, k, v and the key mask [B, Tk] (any buffer when `dims.hasMask` is
 * false), like `attentionForwardKernel`. When `lseAndDelta` ([B·H·Tq, 2]) is given, each row's
 * log-sum-exp goes to its first column for {@link flashAttentionBackwardQueryKernel}.
 */
export function flashAttentionForwardKernel(
  ctx: GpuContext,
  dims: AttentionDims,
  q: GPUBuffer,
  k: GPUBuffer,
  v: GPUBuffer,
  mask: GPUBuffer,
  out: GPUBuffer,
  lseAndDelta: GPUBuffer | null,
): void {
  const storeLse = lseAndDelta !== null;
  const buffers = storeLse ? [q, k, v, mask, out, lseAndDelta] : [q, k, v, mask, out];
  launchFlash(
    ctx,
    "forward",
    `${storeLse}`,
    (hv, t) => forwardFlashWgsl(hv, dims.headDim, t, storeLse),
    dims,
    buffers,
    dims.batch * dims.heads,
    (t) => Math.ceil(dims.queries / t.rows),
  );
}

/**
 * Flash backward, query side: dQ (in q's layout) from the log-sum-exps the flash forward stored
 * in column 0 of `lseAndDelta`; writes each row's `D = dO·O` into column 1 for the key side
 * (either {@link flashAttentionBackwardKeyKernel} or `attentionBackwardKeyKernel`).
 */
export function flashAttentionBackwardQueryKernel(
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
  launchFlash(
    ctx,
    "query",
    "",
    (hv, t) => backwardQueryFlashWgsl(hv, dims.headDim, t),
    dims,
    [q, k, v, mask, out, gradOut, gradQ, lseAndDelta],
    dims.batch * dims.heads,
    (t) => Math.ceil(dims.queries / t.rows),
  );
}

/**
 * Flash backward, key side: dK and dV (in k's and v's layouts, summed over the query heads of
 * each group) from `lseAndDelta` as either query side leaves it. `gradK` and `gradV` may be the
 * same buffer (disjoint parts of a fused q/k/v gradient).
 */
export function flashAttentionBackwardKeyKernel(
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
  const { shared, buffers } = keySideBuffers(q, k, v, mask, gradOut, lseAndDelta, gradK, gradV);
  launchFlash(
    ctx,
    "key",
    `${shared}`,
    (hv, t) => backwardKeyFlashWgsl(hv, dims.headDim, t, shared),
    dims,
    buffers,
    dims.batch * dims.kvHeads,
    (t) => Math.ceil(dims.keys / t.rows),
  );
}
