/**
 * Kernels for weights stored as IEEE half precision (f16) on the GPU, with all arithmetic in f32:
 * each f16 weight is widened when it is loaded and every sum accumulates in f32. Halving the
 * bytes of a weight halves the memory it takes and the bandwidth of the products that are bound
 * by reading it (the output layer over a 50k vocabulary, decode steps).
 *
 * Storage of a [rows, cols] half matrix: row-major with a row stride of `cols` rounded up to a
 * multiple of 4 halves, the padding zero, so that every row starts on an 8-byte boundary and is
 * read as whole `vec4<f16>`. {@link halfStride} gives the stride.
 *
 * - {@link halfMatmulKernel}: `C = A · op(W) (+ bias)` with A f32 [M, K] and W f16 stored [K, N]
 *   (layout "kn": GPT-2's Conv1D in the forward) or [N, K] ("nk": nn.Linear, the output layer).
 *   The input gradient `dA = dC · op(W)ᵀ` is the same kernel with the other layout.
 *   Register-blocked (each thread a TM×TN tile of C, TM = M when M ≤ 16), with K split over
 *   threads when there are too few tiles to fill the adapter (the x-step's `dLogits · W`:
 *   M = 10, N = d, K = 50,257); split partials are summed by a second pass in a fixed order, so
 *   results are deterministic (no atomics).
 * - {@link halfGatherKernel}: embedding rows `W[ids]` widened to f32.
 * - {@link halfFromFloat32Kernel} / {@link halfToFloat32Kernel}: conversions between f32 and the
 *   padded f16 layout. f32 → f16 rounds to nearest, ties to even, on the bits (no `shader-f16`
 *   needed, and the same result as models/half_float.ts on every adapter: WGSL leaves the
 *   rounding of `f16(x)` to the implementation).
 * - {@link pickCandidateByDotHalfKernel}: the z-step decode's candidate pick against an f16
 *   output layer (the f32 one is in candidates.ts).
 *
 * Every kernel except the f32 → f16 conversion needs a device created with the `shader-f16`
 * feature (`enable f16;`); autograd/half.ts checks that before any is used.
 *
 * @module
 */
import { type GpuContext, GpuLimitError, splitGrid } from "./device.ts";
import { cachedWgsl, launchLinear, LINEAR_MAIN, packParams } from "./launch.ts";
import { launchPickByDot, pickByDotWgsl } from "./candidates.ts";

/** Row stride, in halves, of a half matrix with `cols` columns: `cols` rounded up to 4. */
export function halfStride(cols: number): number {
  return Math.max(4, Math.ceil(cols / 4) * 4);
}

/** A half matrix's GPU buffer and geometry, as the kernels see it. */
export interface HalfOperand {
  /** f16 elements, row-major, each row padded to a multiple of 4 halves. */
  buffer: GPUBuffer;
  /** Logical rows. */
  rows: number;
  /** Logical columns (before padding). */
  cols: number;
}

/**
 * How a product reads its f16 weight W: "kn" = stored [K, N] (C = A·W), "nk" = stored [N, K]
 * (C = A·Wᵀ).
 */
export type HalfLayout = "kn" | "nk";

/** How a product is cut up: the per-thread tile, the splits of K and the workgroup size. */
export interface HalfMatmulPlan {
  /** Rows and columns of C per thread ("kn": tn is a multiple of 4). */
  tm: number;
  tn: number;
  /** Chunks of K summed by the reduce pass (1 = the product kernel stores C itself). */
  splits: number;
  /** Length of each chunk of K (a multiple of 4). */
  kChunk: number;
  /** Threads per workgroup. */
  wg: number;
}

// CPU adapters (llvmpipe: 8-wide SIMD over invocations; every storage load is a per-lane loop,
// see docs/bench-cpu.md): one-vector workgroups and many accumulators per thread, so that each
// vec4 load feeds many FMAs; 128 threads keep both cores busy. GPUs: 64-thread workgroups, at
// most 64 accumulators (registers bound the occupancy) and ~16K threads to keep the SMs busy on
// the weight reads.
const CPU = { wg: 8, maxTm: 16, maxAcc: 192, maxTn: 32, threads: 128, minChunk: 256, maxSplits: 1024 };
const GPU = { wg: 64, maxTm: 16, maxAcc: 64, maxTn: 16, threads: 16384, minChunk: 128, maxSplits: 256 };

/** At most `max` per tile, spread evenly over the tiles, optionally rounded up to a multiple of 4. */
function balanced(x: number, max: number, multipleOf4: boolean): number {
  const cap = multipleOf4 ? Math.max(4, max & ~3) : Math.max(1, max);
  const t = Math.ceil(x / Math.ceil(x / cap));
  return multipleOf4 ? Math.ceil(t / 4) * 4 : t;
}

/** The plan for `[m, k] · op(W)` → `[m, n]` on this context's kernel family (`ctx.cpuKernels`). */
export function planHalfMatmul(
  ctx: GpuContext,
  m: number,
  n: number,
  k: number,
  layout: HalfLayout,
): HalfMatmulPlan {
  const cfg = ctx.cpuKernels ? CPU : GPU;
  const tm = balanced(m, cfg.maxTm, false);
  const tn = balanced(n, Math.min(cfg.maxTn, Math.max(1, Math.floor(cfg.maxAcc / tm))), layout === "kn");
  const tiles = Math.ceil(m / tm) * Math.ceil(n / tn);
  let splits = Math.max(
    1,
    Math.min(Math.ceil(cfg.threads / tiles), Math.floor(k / cfg.minChunk), cfg.maxSplits),
  );
  // The partials [splits, m, n] must fit one binding.
  const perSplit = m * n * 4;
  splits = Math.max(1, Math.min(splits, Math.floor(ctx.limits.maxStorageBufferBindingSize / perSplit)));
  const kChunk = Math.ceil(k / splits / 4) * 4;
  return { tm, tn, splits: Math.ceil(k / kChunk), kChunk, wg: cfg.wg };
}

interface Variant {
  layout: HalfLayout;
  tm: number;
  tn: number;
  wg: number;
  /** Write partials (several splits) instead of C (+ bias). */
  partial: boolean;
  bias: boolean;
  /** K % 4 == 0: every row of A starts on a vec4 boundary. */
  alignA: boolean;
  /** K % 4 != 0: the last step of the last split runs past K and its extra values are zeroed. */
  ragged: boolean;
}

const ZERO4 = "vec4<f32>(0.0)";

/** The WGSL of the product kernel of one variant (exported for tests). */
export function halfMatmulWgsl(v: Variant): string {
  const { tm, tn, layout, ragged } = v;
  const decl: string[] = [];
  const step: string[] = [];
  const fma: string[] = [];
  const store: string[] = [];
  // A [M, K] row-major f32, one vec4 of 4 consecutive k per row per step. Rows that do not start
  // on a vec4 boundary (K % 4 != 0) are read as the aligned vec4s around them and shifted; the
  // next vec4 is carried to the following step, so each step still costs one load per row.
  for (let i = 0; i < tm; i++) {
    decl.push(`let ae${i} = min(m0 + ${i}u, p.m - 1u) * p.k + k0;`);
    decl.push(`let ai${i} = ae${i} / 4u;`);
    let load = `A[ai${i} + q]`;
    if (!v.alignA) {
      decl.push(`let as${i} = ae${i} % 4u;`, `var ap${i} = A[min(ai${i}, lastA)];`);
      step.push(`let an${i} = A[min(ai${i} + q + 1u, lastA)];`);
      load = `sh4(ap${i}, an${i}, as${i})`;
    }
    step.push(`let a${i} = ${ragged ? `select(${ZERO4}, ${load}, kIn)` : load};`);
    if (!v.alignA) step.push(`ap${i} = an${i};`);
  }
  if (layout === "nk") {
    // W [N, K]: one vec4<f16> of 4 consecutive k per column per step. Columns past N are
    // clamped to the last one (their outputs are not stored); the zero padding of each row
    // covers k up to the stride, and A is zeroed past K anyway.
    for (let j = 0; j < tn; j++) {
      decl.push(`let wi${j} = min(n0 + ${j}u, p.n - 1u) * p.sw + k0 / 4u;`);
      step.push(`let w${j} = vec4<f32>(W[wi${j} + q]);`);
    }
    for (let i = 0; i < tm; i++) {
      for (let j = 0; j < tn; j++) {
        decl.push(`var c${i}_${j} = 0.0;`);
        // The 4 FMAs of one accumulator together (k innermost), as in matmul.ts.
        for (let kk = 0; kk < 4; kk++) fma.push(`c${i}_${j} = fma(a${i}[${kk}], w${j}[${kk}], c${i}_${j});`);
        store.push(storeOne(v, i, `${j}u`, `c${i}_${j}`));
      }
    }
  } else {
    // W [K, N]: per k, the tile's columns as tn/4 vec4<f16> of one row (neighbouring threads
    // read neighbouring vec4s). Groups past the row are clamped (not stored); rows past K
    // (ragged last step) are clamped to the buffer and zeroed.
    const groups = tn / 4;
    for (let h = 0; h < groups; h++) decl.push(`let g${h} = min(n0 / 4u + ${h}u, p.sw - 1u);`);
    for (let kk = 0; kk < 4; kk++) {
      step.push(`let wr${kk} = (k + ${kk}u) * p.sw;`);
      for (let h = 0; h < groups; h++) {
        const load = `vec4<f32>(W[min(wr${kk} + g${h}, lastW)])`;
        step.push(`let w${kk}_${h} = ${ragged ? `select(${ZERO4}, ${load}, kIn[${kk}])` : load};`);
      }
    }
    for (let i = 0; i < tm; i++) {
      for (let h = 0; h < groups; h++) {
        decl.push(`var c${i}_${h} = ${ZERO4};`);
        for (let kk = 0; kk < 4; kk++) {
          fma.push(`c${i}_${h} = fma(vec4<f32>(a${i}[${kk}]), w${kk}_${h}, c${i}_${h});`);
        }
        for (let e = 0; e < 4; e++) store.push(storeOne(v, i, `${4 * h + e}u`, `c${i}_${h}[${e}]`));
      }
    }
  }
  return /* wgsl */ `enable f16;
struct P { m: u32, n: u32, k: u32, sw: u32, kc: u32, tilesN: u32, tilesM: u32, threads: u32, sOut: u32 }
@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> W: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
${v.bias ? "@group(0) @binding(3) var<storage, read> bias: array<f32>;\n" : ""}@group(0) @binding(${
    v.bias ? 4 : 3
  }) var<uniform> p: P;

// Elements s..s+3 of the 8 elements a ++ b (s < 4).
fn sh4(a: vec4<f32>, b: vec4<f32>, s: u32) -> vec4<f32> {
  let r = select(a, vec4<f32>(a.yzw, b.x), s == 1u);
  return select(select(r, vec4<f32>(a.zw, b.xy), s == 2u), vec4<f32>(a.w, b.xyz), s == 3u);
}

@compute @workgroup_size(${v.wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let t = (wid.x + wid.y * nwg.x) * ${v.wg}u + lid;
  if (t >= p.threads) { return; }
  // Column tile fastest (neighbouring threads read neighbouring weights), then row tile, split.
  let n0 = (t % p.tilesN) * ${tn}u;
  let m0 = ((t / p.tilesN) % p.tilesM) * ${tm}u;
  let s = t / (p.tilesN * p.tilesM);
  let k0 = s * p.kc;
  let k1 = min(p.k, k0 + p.kc);
  let lastA = arrayLength(&A) - 1u;
  let lastW = arrayLength(&W) - 1u;
  ${decl.join("\n  ")}
  var q = 0u;
  for (var k = k0; k < k1; k += 4u) {
    ${ragged ? "let kIn = vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(k1);" : ""}
    ${step.join("\n    ")}
    ${fma.join("\n    ")}
    q += 1u;
  }
  let cBase = s * p.sOut;
  ${store.join("\n  ")}
}`;
}

/** The guarded store of output (m0 + i, n0 + j): C (+ bias), or this split's partial block. */
function storeOne(v: Variant, i: number, j: string, value: string): string {
  const bias = v.bias && !v.partial ? ` + bias[n0 + ${j}]` : "";
  return `if (m0 + ${i}u < p.m && n0 + ${j} < p.n) { C[cBase + (m0 + ${i}u) * p.n + n0 + ${j}] = ${value}${bias}; }`;
}

const REDUCE_WG = 64;

/** C = Σ_s partial[s] (+ bias), the splits added in order. */
function reduceWgsl(bias: boolean): string {
  return /* wgsl */ `
struct R { total: u32, n: u32, splits: u32, sOut: u32 }
@group(0) @binding(0) var<storage, read> part: array<f32>;
@group(0) @binding(1) var<storage, read_write> C: array<f32>;
${bias ? "@group(0) @binding(2) var<storage, read> bias: array<f32>;\n" : ""}@group(0) @binding(${
    bias ? 3 : 2
  }) var<uniform> p: R;
${LINEAR_MAIN(REDUCE_WG)}
  if (gid >= p.total) { return; }
  var acc = 0.0;
  for (var s = 0u; s < p.splits; s++) { acc += part[s * p.sOut + gid]; }
  C[gid] = acc${bias ? " + bias[gid % p.n]" : ""};
}`;
}

/** Dimensions of one product `C[m, n] = A[m, k] · op(W)`. */
export interface HalfMatmulDims {
  m: number;
  n: number;
  k: number;
  layout: HalfLayout;
}

/**
 * Encodes `C = A · op(W) (+ bias)`: A f32 [M, K] (a pooled buffer, so a whole number of vec4),
 * W an f16 matrix stored [K, N] ("kn") or [N, K] ("nk") in the padded layout, C f32 [M, N], bias
 * f32 [N]. Any M, N, K ≥ 1 (K = 0 gives C = bias, or 0). `plan` overrides the default plan
 * (tests and benches).
 */
export function halfMatmulKernel(
  ctx: GpuContext,
  a: GPUBuffer,
  w: HalfOperand,
  c: GPUBuffer,
  dims: HalfMatmulDims,
  options: { bias?: GPUBuffer; plan?: Partial<HalfMatmulPlan> } = {},
): void {
  const { m, n, k, layout } = dims;
  for (const [name, x] of [["M", m], ["N", n], ["K", k]] as const) {
    if (!Number.isInteger(x) || x < 0) {
      throw new RangeError(`f16 matmul: ${name} must be a non-negative integer, got ${x}`);
    }
  }
  const [wk, wn] = layout === "kn" ? [w.rows, w.cols] : [w.cols, w.rows];
  if (wk !== k || wn !== n) {
    throw new RangeError(
      `f16 matmul: the weight [${w.rows}, ${w.cols}] read as "${layout}" is [K=${wk}, N=${wn}], not [K=${k}, N=${n}]`,
    );
  }
  if (m === 0 || n === 0) return;
  if (a.size % 16 !== 0) {
    throw new RangeError("f16 matmul: A must be a pooled buffer (a whole number of vec4)");
  }
  if (k === 0) {
    // An empty sum: C = bias (or 0). The reduce pass over no splits writes exactly that; its
    // partials are a dummy buffer (C cannot be bound twice).
    const dummy = ctx.pool.acquire(16, "f16 matmul K = 0");
    reduce(ctx, dummy, c, m * n, n, 0, 0, options.bias);
    ctx.releaseLater(dummy);
    return;
  }
  const plan = { ...planHalfMatmul(ctx, m, n, k, layout), ...options.plan };
  const { tm, tn, wg, kChunk } = plan;
  const splits = Math.ceil(k / kChunk);
  if (kChunk % 4 !== 0 || kChunk < 4 || (layout === "kn" && tn % 4 !== 0)) {
    throw new RangeError(
      `f16 matmul: bad plan ${JSON.stringify(plan)} (kChunk and, for "kn", tn multiples of 4)`,
    );
  }
  const variant: Variant = {
    layout,
    tm,
    tn,
    wg,
    partial: splits > 1,
    bias: !!options.bias && splits === 1,
    alignA: k % 4 === 0,
    ragged: k % 4 !== 0,
  };
  const tilesM = Math.ceil(m / tm);
  const tilesN = Math.ceil(n / tn);
  const threads = tilesM * tilesN * splits;
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  const groups = Math.ceil(threads / wg);
  if (groups > max * max) {
    throw new GpuLimitError(`f16 matmul: ${groups} workgroups exceed ${max}² per dispatch`);
  }
  const total = m * n;
  const out = splits === 1 ? c : ctx.pool.acquire(splits * total * 4, "f16 split-K partials");
  const code = cachedWgsl(`f16 matmul ${JSON.stringify(variant)}`, () => halfMatmulWgsl(variant));
  const sw = halfStride(w.cols) / 4;
  const params = packParams([m, n, k, sw, kChunk, tilesN, tilesM, threads, total]);
  const buffers = variant.bias ? [a, w.buffer, out, options.bias!] : [a, w.buffer, out];
  ctx.dispatch(ctx.pipeline(code), buffers, params, splitGrid(groups, max));
  if (splits === 1) return;
  reduce(ctx, out, c, total, n, splits, total, options.bias);
  ctx.releaseLater(out);
}

function reduce(
  ctx: GpuContext,
  part: GPUBuffer,
  c: GPUBuffer,
  total: number,
  n: number,
  splits: number,
  sOut: number,
  bias?: GPUBuffer,
): void {
  const code = cachedWgsl(`f16 split-K reduce ${!!bias}`, () => reduceWgsl(!!bias));
  launchLinear(
    ctx,
    code,
    bias ? [part, c, bias] : [part, c],
    packParams([total, n, splits, sOut]),
    total,
    REDUCE_WG,
  );
}

// ---------------------------------------------------------------------------------------------
// Conversions and the embedding gather.

// f32 bits → f16 bits, round to nearest with ties to even (a port of numberToFloat16Bits in
// models/half_float.ts): NaN stays NaN, values past the f16 range become ±inf, values below
// half the smallest subnormal ±0.
const TO_HALF_FN = /* wgsl */ `
fn toHalf(bits: u32) -> u32 {
  let sign = (bits >> 16u) & 0x8000u;
  let e = (bits >> 23u) & 0xffu;
  var m = bits & 0x7fffffu;
  if (e == 0xffu) { return sign | 0x7c00u | select(0u, 0x200u, m != 0u); }
  let he = i32(e) - 112;
  if (he >= 31) { return sign | 0x7c00u; }
  if (he <= 0) {
    if (he < -10) { return sign; }
    m = m | 0x800000u;
    let shift = u32(14 - he);
    let kept = m >> shift;
    let rest = m & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    return sign | (kept + select(0u, 1u, rest > half || (rest == half && (kept & 1u) == 1u)));
  }
  let kept = (u32(he) << 10u) | (m >> 13u);
  let rest = m & 0x1fffu;
  // A carry out of the mantissa moves to the next exponent, or to infinity: both correct.
  return sign | (kept + select(0u, 1u, rest > 0x1000u || (rest == 0x1000u && (kept & 1u) == 1u)));
}`;

const FROM_F32_WGSL = /* wgsl */ `
struct P { pairs: u32, cols: u32, stride: u32 }
@group(0) @binding(0) var<storage, read> src: array<u32>;       // f32 bits, [rows, cols]
@group(0) @binding(1) var<storage, read_write> dst: array<u32>; // 2 halves each, [rows, stride]
@group(0) @binding(2) var<uniform> p: P;
${TO_HALF_FN}
${LINEAR_MAIN(256)}
  if (gid >= p.pairs) { return; }
  let e = 2u * gid;
  let r = e / p.stride;
  let c = e % p.stride; // even, and the stride is even: both halves are in row r
  var lo = 0u;
  var hi = 0u;
  if (c < p.cols) { lo = toHalf(src[r * p.cols + c]); }
  if (c + 1u < p.cols) { hi = toHalf(src[r * p.cols + c + 1u]); }
  dst[gid] = lo | (hi << 16u);
}`;

/**
 * Converts a row-major f32 [rows, cols] matrix to the padded f16 layout (round to nearest, ties to
 * even; ±inf past ±65504). Needs no `shader-f16`. `dst` must hold `rows × halfStride(cols)` halves.
 */
export function halfFromFloat32Kernel(
  ctx: GpuContext,
  src: GPUBuffer,
  rows: number,
  cols: number,
  dst: GPUBuffer,
): void {
  const stride = halfStride(cols);
  const pairs = (rows * stride) / 2;
  launchLinear(ctx, FROM_F32_WGSL, [src, dst], packParams([pairs, cols, stride]), pairs);
}

const TO_F32_WGSL = /* wgsl */ `enable f16;
struct P { n: u32, cols: u32, stride: u32 }
@group(0) @binding(0) var<storage, read> W: array<f16>;
@group(0) @binding(1) var<storage, read_write> O: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  O[gid] = f32(W[(gid / p.cols) * p.stride + gid % p.cols]);
}`;

/** Widens a padded f16 [rows, cols] matrix to row-major f32 (exact). */
export function halfToFloat32Kernel(ctx: GpuContext, w: HalfOperand, out: GPUBuffer): void {
  const n = w.rows * w.cols;
  launchLinear(ctx, TO_F32_WGSL, [w.buffer, out], packParams([n, w.cols, halfStride(w.cols)]), n);
}

const GATHER_WGSL = /* wgsl */ `enable f16;
struct P { n: u32, cols: u32, rows: u32, stride: u32 }
@group(0) @binding(0) var<storage, read> W: array<f16>;
@group(0) @binding(1) var<storage, read> I: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  let row = i32(I[gid / p.cols]);
  var v = 0.0;
  if (row >= 0 && row < i32(p.rows)) { v = f32(W[u32(row) * p.stride + gid % p.cols]); }
  O[gid] = v;
}`;

/** `out[i, :] = f32(W[ids[i], :])` for `count` ids (f32 integers); zeros for ids out of range. */
export function halfGatherKernel(
  ctx: GpuContext,
  w: HalfOperand,
  ids: GPUBuffer,
  count: number,
  out: GPUBuffer,
): void {
  const n = count * w.cols;
  launchLinear(
    ctx,
    GATHER_WGSL,
    [w.buffer, ids, out],
    packParams([n, w.cols, w.rows, halfStride(w.cols)]),
    n,
  );
}

// ---------------------------------------------------------------------------------------------
// The z-step decode's pick against an f16 output layer.

// The WGSL and launch are candidates.ts's, with the weight read as f16 [V, halfStride(dim)].
const PICK_BY_DOT_WGSL = pickByDotWgsl("f16");

/**
 * `pickCandidateByDotKernel` of candidates.ts for an f16 output layer `weight` [V, dim]: for each
 * row b, among `candidates[b, t, :]` the id with the highest logit `W[id] · h + bias[id]` (h the
 * last step of `hidden` [B, steps, dim]); writes it to `chosen[b, t]` and `next[b]`.
 */
export function pickCandidateByDotHalfKernel(
  ctx: GpuContext,
  hidden: GPUBuffer,
  weight: HalfOperand,
  bias: GPUBuffer | null,
  candidates: GPUBuffer,
  chosen: GPUBuffer,
  next: GPUBuffer,
  dims: { batch: number; k: number; positions: number; t: number; steps: number },
): void {
  launchPickByDot(
    ctx,
    PICK_BY_DOT_WGSL,
    { hidden, weight: weight.buffer, bias: bias ?? hidden, candidates, chosen, next },
    {
      ...dims,
      vocab: weight.rows,
      dim: weight.cols,
      hasBias: bias !== null,
      stride: halfStride(weight.cols),
    },
  );
}
