/**
 * Matmul kernels: `C[b] = op(A[b]) · op(B[b]) (+ bias)` with `op` = identity or transpose for each
 * operand independently, row-major storage, a batch stride per operand (0 = one matrix shared by
 * every batch entry, e.g. a weight) and any M, N, K.
 *
 * A ladder of variants, from the simplest to the fastest, kept side by side so the bench can show
 * what each step buys (llm.c's `dev/cuda` style):
 *
 * - `naive`: one thread per output, every operand read straight from global memory.
 * - `tiled`: 16×16 output tiles; the workgroup stages 16×16 tiles of A and B in shared memory.
 * - `vec4`: register blocking without shared memory: each thread computes a TM×TN tile of C, k is
 *   unrolled by 4, and each operand is read as vec4 along its contiguous axis when that axis is a
 *   multiple of 4.
 * - `blocked`: register blocking with shared memory, the classic GPU kernel: BK-deep slices of A
 *   and B are copied to shared memory as vec4 in the operands' own layout, and each thread computes
 *   a TM×TN tile of C from vec4 reads of those slices.
 *
 * {@link defaultMatmulVariant} picks `vec4` on CPU adapters and `blocked` on GPUs.
 *
 * What makes a kernel fast differs between GPUs and the CPU adapters (Mesa llvmpipe/lavapipe,
 * 8-wide SIMD over invocations). On Mesa 22.3 every storage-buffer load whose address is not a
 * compile-time constant becomes a loop over the 8 SIMD lanes with a bounds check per lane, even
 * when all lanes read the same address: a vec4 load costs about as much as 200 8-wide FMAs, and
 * not much more than a scalar load (bench/load_costs.ts measures this). So on CPU the speed is set
 * by the number of load instructions per FMA: `vec4` with 12×12 outputs per thread does 24 vec4
 * loads per 576 FMAs. Workgroup memory is cheaper to read (no bounds check), but the copy into it
 * and the barriers (a coroutine switch per 8 lanes) cost more than that saves, so `blocked` loses
 * on CPU while it is the fast one on GPUs. docs/bench-cpu.md has the measurements.
 *
 * Every kernel decodes its tile from a linear workgroup index (`wid.x + wid.y·nwg.x`), so the
 * grid splits over two dimensions whatever the batch and matrix sizes (see `splitGrid`).
 */
import { type GpuContext, GpuLimitError, splitGrid } from "./device.ts";
import { packParams } from "./launch.ts";
import { planSkinnyMatmul, skinnyMatmulKernel, type SkinnyPlan, skinnyRouting } from "./matmul_skinny.ts";

/** The matmul variants, from the simplest to the most optimised. */
export const MATMUL_VARIANTS = ["naive", "tiled", "vec4", "blocked"] as const;
/** One of {@link MATMUL_VARIANTS}. */
export type MatmulVariant = (typeof MATMUL_VARIANTS)[number];

/** Shapes and layout of one (batched) matmul launch. */
export interface MatmulDims {
  /** Number of independent products (≥ 1). */
  batch: number;
  /** Rows of op(A) and C. */
  m: number;
  /** Columns of op(B) and C. */
  n: number;
  /** Columns of op(A) = rows of op(B). */
  k: number;
  /** A is stored as [K, M] (row-major) and used transposed. */
  transA?: boolean;
  /** B is stored as [N, K] (row-major) and used transposed. */
  transB?: boolean;
  /** Elements between consecutive A matrices (default M·K; 0 = shared by every batch entry). */
  strideA?: number;
  /** Elements between consecutive B matrices (default K·N; 0 = shared). */
  strideB?: number;
}

/** Tunable sizes of the register-blocked variants (`vec4`, `blocked`). */
export interface MatmulTuning {
  /** Rows of C per thread. */
  tm: number;
  /** Columns of C per thread. */
  tn: number;
  /** Threads per workgroup along N and along M. */
  wgx: number;
  /** Threads per workgroup along M. */
  wgy: number;
  /** `blocked`: depth of the k slices staged in shared memory (a multiple of 4). */
  bk: number;
}

/** Tuning of `blocked`: 8×8 outputs per thread, 8×8 threads (64×64 tiles), 16-deep k slices (8 KiB). */
export const BLOCKED_TUNING: MatmulTuning = { tm: 8, tn: 8, wgx: 8, wgy: 8, bk: 16 };
/** Tuning of `vec4`: 12×12 outputs per thread, 2×4 threads (one 8-lane SIMD vector on llvmpipe). */
export const VEC4_TUNING: MatmulTuning = { tm: 12, tn: 12, wgx: 2, wgy: 4, bk: 4 };
/**
 * Tuning of `vec4` for large products: 24×24 outputs per thread do half the loads per FMA of
 * 12×12. With the FMA order of `vec4Wgsl` (k innermost) they ran ~50% faster than before at 1024³
 * on lavapipe (28.8 vs 19.5 CPU-equivalent GFLOP/s), but a 24×24 layout takes 15–30 s to compile
 * cold (about 2 s once Mesa's on-disk shader cache has it), against 0.3–3 s for 12×12, so they are
 * used only when M, N and K are all at least {@link VEC4_LARGE_FROM} and both operands are read
 * as vec4. Smaller products (512³, the models' 320×1024×256) also ran 15–50% faster with 16×16 to
 * 24×24 tiles: kernels/autotune.ts measures that per adapter and shape class and caches the choice
 * (docs/bench-cpu.md, "FMA order and autotuned tiles"). 24×32 rather than 24×24: the autotuner's
 * best at 1024³ (31.1 vs 26.3 CPU-equivalent GFLOP/s), and 24.0 vs 19.3 GFLOP/s wall-clock in four
 * alternating rounds on an idle lavapipe (load 0.9–1.2).
 */
export const VEC4_LARGE_TUNING: MatmulTuning = { tm: 24, tn: 32, wgx: 2, wgy: 4, bk: 4 };
/** Smallest M, N and K for which `vec4` uses {@link VEC4_LARGE_TUNING}. */
export const VEC4_LARGE_FROM = 768;

/** The static tuning of a variant for a launch's dims (what runs when nothing was tuned). */
export function defaultTuning(variant: MatmulVariant, dims?: MatmulDims, cpuAdapter = true): MatmulTuning {
  if (variant === "blocked") return dims && smallForBlocked(dims) ? BLOCKED_SMALL_TUNING : BLOCKED_TUNING;
  if (variant !== "vec4") return BLOCKED_TUNING;
  // Only with vec4 loads on both sides: the scalar-load fallback of a 24×24 tile is 192 loads per
  // step of 4 k, which takes tens of seconds to compile.
  const vec = dims && vec4Operands(dims);
  // CPU adapters only: 576+ accumulators per thread overflow a GPU's registers (on an H200 the
  // vec4 ladder ran at 41 GFLOP/s at 1024³ with them, 4,961 with 12×12; docs/gpu/run7, run8).
  const large = cpuAdapter && dims && vec?.vecA && vec.vecB &&
    Math.min(dims.m, dims.n, dims.k) >= VEC4_LARGE_FROM;
  return large ? VEC4_LARGE_TUNING : VEC4_TUNING;
}

/**
 * Tuning of `blocked` for products too small to fill a GPU with 64×64 tiles: 32×32 tiles (4×4 per
 * thread, 8×8 threads). On an H200 (docs/gpu/run5) they ran the x-step's products 1.6–2.3× faster
 * than 64×64 tiles: e.g. 330×1024×256 in 0.152 vs 0.325 ms, the logits 10×50257×128 in 0.175 vs
 * 0.300 ms (M = 10 leaves 54 of 64 tile rows empty).
 */
export const BLOCKED_SMALL_TUNING: MatmulTuning = { tm: 4, tn: 4, wgx: 8, wgy: 8, bk: 16 };

/** Fewer 64×64 tiles than this (about two per SM of a large GPU) counts as small for `blocked`. */
const BLOCKED_SMALL_BELOW = 264;

/** 64×64 tiles of a product, and the fraction of their outputs that lie inside C. */
function blockedTiles(dims: MatmulDims): { tiles: number; useful: number } {
  const bm = BLOCKED_TUNING.tm * BLOCKED_TUNING.wgy, bn = BLOCKED_TUNING.tn * BLOCKED_TUNING.wgx;
  const tm = Math.ceil(dims.m / bm), tn = Math.ceil(dims.n / bn);
  return { tiles: tm * tn * dims.batch, useful: (dims.m * dims.n) / (tm * bm * tn * bn) };
}

/** Whether `blocked` should use {@link BLOCKED_SMALL_TUNING}: few 64×64 tiles, or mostly empty ones. */
function smallForBlocked(dims: MatmulDims): boolean {
  const { tiles, useful } = blockedTiles(dims);
  return tiles < BLOCKED_SMALL_BELOW || useful < 0.5;
}

/**
 * Picks the tuning of one launch, or undefined for the static default. kernels/autotune.ts installs
 * one per context with the tilings it measured for this adapter.
 */
export type MatmulTuningLookup = (variant: MatmulVariant, dims: MatmulDims) => MatmulTuning | undefined;

const tuningLookups = new WeakMap<GpuContext, MatmulTuningLookup>();

/**
 * Installs the context's tuning lookup (null removes it). {@link matmulKernel} asks it before the
 * static defaults, except for launches that pass their own `tuning`.
 */
export function setMatmulTuningLookup(ctx: GpuContext, lookup: MatmulTuningLookup | null): void {
  if (lookup) tuningLookups.set(ctx, lookup);
  else tuningLookups.delete(ctx);
}

/** The context's installed tuning lookup, if any. */
export function matmulTuningLookup(ctx: GpuContext): MatmulTuningLookup | undefined {
  return tuningLookups.get(ctx);
}

/** Options for {@link matmulKernel}. */
export interface MatmulKernelOptions {
  /** Which kernel (default: {@link defaultMatmulVariant} for the context's adapter). */
  variant?: MatmulVariant;
  /** A bias of N elements added to every row of C (fused into the store). */
  bias?: GPUBuffer;
  /** `vec4`: the FMA order, k innermost (default on CPU adapters) or outermost (GPUs); for tests. */
  kInner?: boolean;
  /** Override the variant's default tile sizes (bench sweeps). */
  tuning?: Partial<MatmulTuning>;
}

/**
 * The fastest variant for the context's adapter: `vec4` on CPU adapters, where shared memory does
 * not pay (a barrier is a coroutine switch per 8 lanes), `blocked` on GPUs (see docs/bench-cpu.md).
 */
export function defaultMatmulVariant(ctx: GpuContext): MatmulVariant {
  return ctx.isCpuAdapter ? "vec4" : "blocked";
}

interface Layout {
  transA: boolean;
  transB: boolean;
  bias: boolean;
}

const PARAMS_STRUCT = /* wgsl */ `
struct P { m: u32, n: u32, k: u32, batch: u32, sA: u32, sB: u32, sC: u32, tilesN: u32, tilesM: u32 }`;

/**
 * Where a variant reads its parameters: `uniform`, or `storage` for the vec4 variant (see
 * {@link VEC4_PARAM_SPACE}). A storage read is copied into a local once, in the prologue.
 */
type ParamSpace = "uniform" | "storage";

/** The bindings: A and B as `array<f32>`, or as `array<vec4<f32>>` when `vecA`/`vecB`. */
function bindings(l: Layout, vecA = false, vecB = false, space: ParamSpace = "uniform"): string {
  const elem = (v: boolean) => (v ? "vec4<f32>" : "f32");
  const params = space === "uniform" ? "var<uniform> p: P;" : "var<storage, read> params: P;";
  return /* wgsl */ `${PARAMS_STRUCT}
@group(0) @binding(0) var<storage, read> A: array<${elem(vecA)}>;
@group(0) @binding(1) var<storage, read> B: array<${elem(vecB)}>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
${l.bias ? "@group(0) @binding(3) var<storage, read> bias: array<f32>;\n" : ""}@group(0) @binding(${
    l.bias ? 4 : 3
  }) ${params}`;
}

/**
 * Entry point prologue shared by all variants: the linear tile index, its (tn, tm, batch)
 * coordinates, and the base offsets of the three matrices. The early return depends only on the
 * workgroup, so it keeps the rest of the shader in uniform control flow.
 */
function prologue(wgSize: string, space: ParamSpace = "uniform"): string {
  return /* wgsl */ `
@compute @workgroup_size(${wgSize})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {${space === "storage" ? "\n  let p = params;" : ""}
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= p.tilesN * p.tilesM * p.batch) { return; }
  let tn = tile % p.tilesN;
  let tm = (tile / p.tilesN) % p.tilesM;
  let bt = tile / (p.tilesN * p.tilesM);
  let aBase = bt * p.sA;
  let bBase = bt * p.sB;
  let cBase = bt * p.sC;`;
}

/** WGSL index of op(A)[m][k], relative to A's base. */
function aAt(l: Layout, m: string, k: string): string {
  return l.transA ? `(${k}) * p.m + (${m})` : `(${m}) * p.k + (${k})`;
}

/** WGSL index of op(B)[k][n], relative to B's base. */
function bAt(l: Layout, k: string, n: string): string {
  return l.transB ? `(${n}) * p.k + (${k})` : `(${k}) * p.n + (${n})`;
}

/** The store of one output, with the bias when fused. */
const storeC = (l: Layout, m: string, n: string, v: string) =>
  `C[cBase + (${m}) * p.n + (${n})] = ${v}${l.bias ? ` + bias[${n}]` : ""};`;

// ---------------------------------------------------------------------------------------------
// naive: one thread per output.

const NAIVE_T = 16;

function naiveWgsl(l: Layout): string {
  return /* wgsl */ `${bindings(l)}
${prologue(`${NAIVE_T * NAIVE_T}`)}
  let row = tm * ${NAIVE_T}u + lid / ${NAIVE_T}u;
  let col = tn * ${NAIVE_T}u + lid % ${NAIVE_T}u;
  if (row >= p.m || col >= p.n) { return; }
  var acc = 0.0;
  for (var k = 0u; k < p.k; k++) {
    acc = fma(A[aBase + ${aAt(l, "row", "k")}], B[bBase + ${bAt(l, "k", "col")}], acc);
  }
  ${storeC(l, "row", "col", "acc")}
}`;
}

// ---------------------------------------------------------------------------------------------
// tiled: 16×16 tiles of A and B in shared memory, one output per thread.

const TILE = 16;

function tiledWgsl(l: Layout): string {
  return /* wgsl */ `${bindings(l)}
var<workgroup> As: array<f32, ${TILE * TILE}>;
var<workgroup> Bs: array<f32, ${TILE * TILE}>;
${prologue(`${TILE * TILE}`)}
  let ty = lid / ${TILE}u;
  let tx = lid % ${TILE}u;
  let row = tm * ${TILE}u + ty;
  let col = tn * ${TILE}u + tx;
  var acc = 0.0;
  for (var k0 = 0u; k0 < p.k; k0 += ${TILE}u) {
    // Out-of-range elements load as 0 so partial tiles need no special inner loop.
    let ka = k0 + tx;
    let kb = k0 + ty;
    As[ty * ${TILE}u + tx] = select(0.0, A[aBase + ${aAt(l, "min(row, p.m - 1u)", "min(ka, p.k - 1u)")}],
                                    row < p.m && ka < p.k);
    Bs[ty * ${TILE}u + tx] = select(0.0, B[bBase + ${bAt(l, "min(kb, p.k - 1u)", "min(col, p.n - 1u)")}],
                                    col < p.n && kb < p.k);
    workgroupBarrier();
    for (var kk = 0u; kk < ${TILE}u; kk++) {
      acc = fma(As[ty * ${TILE}u + kk], Bs[kk * ${TILE}u + tx], acc);
    }
    workgroupBarrier();
  }
  if (row < p.m && col < p.n) { ${storeC(l, "row", "col", "acc")} }
}`;
}

// ---------------------------------------------------------------------------------------------
// blocked: BM×BN output tiles per workgroup, a TM×TN register tile per thread, BK-deep slices of
// A and B staged in shared memory as vec4 in the operands' own memory layout (so a global vec4
// is copied as is, never transposed).

/**
 * One operand as stored: `rows × cols` row-major per batch entry, where exactly one of the two
 * axes is the contraction axis k. `kAxis` says which.
 */
interface Stored {
  name: "A" | "B";
  /** Stored rows and contiguous columns (WGSL expressions). */
  rows: string;
  cols: string;
  kAxis: "rows" | "cols";
  base: string;
  /** Bound as `array<vec4<f32>>` (contiguous axis and batch stride are multiples of 4). */
  vec: boolean;
}

function storedA(l: Layout, vec: boolean): Stored {
  return l.transA
    ? { name: "A", rows: "p.k", cols: "p.m", kAxis: "rows", base: "aBase", vec }
    : { name: "A", rows: "p.m", cols: "p.k", kAxis: "cols", base: "aBase", vec };
}
function storedB(l: Layout, vec: boolean): Stored {
  return l.transB
    ? { name: "B", rows: "p.n", cols: "p.k", kAxis: "cols", base: "bBase", vec }
    : { name: "B", rows: "p.k", cols: "p.n", kAxis: "rows", base: "bBase", vec };
}

/**
 * WGSL expression of the 4 consecutive stored elements at (row `r`, columns `c..c+3`), `c` a
 * multiple of 4. Elements past K along the contraction axis read as 0 (they meet the other
 * operand's values in the dot product); rows/columns past M or N are clamped into range: they only
 * feed outputs that the guarded store discards.
 */
function fetch4(o: Stored, r: string, c: string): string {
  if (o.vec) {
    if (o.kAxis === "cols") {
      // K % 4 == 0: the whole vec4 is either inside K or past it.
      return `select(vec4<f32>(0.0), ${o.name}[(${o.base} + min(${r}, ${o.rows} - 1u) * ${o.cols} + min(${c}, ${o.cols} - 4u)) / 4u], ${c} < ${o.cols})`;
    }
    return `select(vec4<f32>(0.0), ${o.name}[(${o.base} + min(${r}, ${o.rows} - 1u) * ${o.cols} + min(${c}, ${o.cols} - 4u)) / 4u], ${r} < ${o.rows})`;
  }
  const comps = [0, 1, 2, 3].map((q) => {
    const idx = `${o.base} + min(${r}, ${o.rows} - 1u) * ${o.cols} + min(${c} + ${q}u, ${o.cols} - 1u)`;
    const valid = o.kAxis === "cols" ? `${c} + ${q}u < ${o.cols}` : `${r} < ${o.rows}`;
    return `select(0.0, ${o.name}[${idx}], ${valid})`;
  });
  return `vec4<f32>(${comps.join(", ")})`;
}

/** Row stride, in vec4, of a shared tile with `cols` floats per row (see {@link blockedWgsl}). */
function sharedStride(cols: number, kContiguous: boolean): number {
  return cols / 4 + (kContiguous ? 1 : 0);
}

function blockedWgsl(l: Layout, t: MatmulTuning, vecA: boolean, vecB: boolean): string {
  const { tm, tn, wgx, wgy, bk } = t;
  const bm = tm * wgy;
  const bn = tn * wgx;
  const threads = wgx * wgy;
  const A = storedA(l, vecA);
  const B = storedB(l, vecB);
  // Shared tiles keep the stored layout: [tile rows][tile cols / 4] vec4. Where the tile's rows
  // run along M or N (k contiguous), threads of one warp read different rows at the same k: the
  // row stride gets one vec4 of padding so those reads fall in different banks on a GPU.
  const aTile = l.transA
    ? { r: bk, c: bm, r0: "k0", c0: "m0", stride: sharedStride(bm, false) }
    : { r: bm, c: bk, r0: "m0", c0: "k0", stride: sharedStride(bk, true) };
  const bTile = l.transB
    ? { r: bn, c: bk, r0: "n0", c0: "k0", stride: sharedStride(bk, true) }
    : { r: bk, c: bn, r0: "k0", c0: "n0", stride: sharedStride(bn, false) };
  const copy = (o: Stored, tile: typeof aTile, dst: string) => {
    const count = (tile.r * tile.c) / 4;
    const out: string[] = [];
    for (let e = 0; e < Math.ceil(count / threads); e++) {
      const idx = `lid + ${e * threads}u`;
      const stmt = `{ let e = ${idx}; let r = e / ${tile.c / 4}u; let c = e % ${tile.c / 4}u;
      ${dst}[r * ${tile.stride}u + c] = ${fetch4(o, `${tile.r0} + r`, `${tile.c0} + c * 4u`)}; }`;
      out.push((e + 1) * threads > count ? `if (${idx} < ${count}u) ${stmt}` : stmt);
    }
    return out.join("\n    ");
  };
  // A thread's rows and columns of C are strided across the tile (row ty + wgy·i, column
  // tx + wgx·j, or groups of 4 where an operand is read as vec4 along M or N), so neighbouring
  // threads read neighbouring rows of the shared tiles.
  const rowOf = (i: number) => (l.transA ? `4u * (ty + ${wgy * (i >> 2)}u) + ${i & 3}u` : `ty + ${wgy * i}u`);
  const colOf = (j: number) => (l.transB ? `tx + ${wgx * j}u` : `4u * (tx + ${wgx * (j >> 2)}u) + ${j & 3}u`);
  const inner: string[] = [];
  let a: (i: number, kk: number) => string;
  if (l.transA) {
    for (let g = 0; g < tm / 4; g++) {
      for (let kk = 0; kk < 4; kk++) {
        inner.push(`let a${g}_${kk} = As[(kq + ${kk}u) * ${aTile.stride}u + ty + ${wgy * g}u];`);
      }
    }
    a = (i, kk) => `a${i >> 2}_${kk}[${i & 3}]`;
  } else {
    for (let i = 0; i < tm; i++) inner.push(`let a${i} = As[(${rowOf(i)}) * ${aTile.stride}u + kq / 4u];`);
    a = (i, kk) => `a${i}[${kk}]`;
  }
  let b: (kk: number, j: number) => string;
  if (l.transB) {
    for (let j = 0; j < tn; j++) inner.push(`let b${j} = Bs[(${colOf(j)}) * ${bTile.stride}u + kq / 4u];`);
    b = (kk, j) => `b${j}[${kk}]`;
  } else {
    for (let h = 0; h < tn / 4; h++) {
      for (let kk = 0; kk < 4; kk++) {
        inner.push(`let b${h}_${kk} = Bs[(kq + ${kk}u) * ${bTile.stride}u + tx + ${wgx * h}u];`);
      }
    }
    b = (kk, j) => `b${j >> 2}_${kk}[${j & 3}]`;
  }
  for (let kk = 0; kk < 4; kk++) {
    for (let i = 0; i < tm; i++) {
      for (let j = 0; j < tn; j++) inner.push(`c${i}_${j} = fma(${a(i, kk)}, ${b(kk, j)}, c${i}_${j});`);
    }
  }
  const accs: string[] = [];
  const store: string[] = [];
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn; j++) {
      accs.push(`var c${i}_${j} = 0.0;`);
      const m = `m0 + ${rowOf(i)}`;
      const n = `n0 + ${colOf(j)}`;
      store.push(`if (${m} < p.m && ${n} < p.n) { ${storeC(l, m, n, `c${i}_${j}`)} }`);
    }
  }
  return /* wgsl */ `${bindings(l, vecA, vecB)}
var<workgroup> As: array<vec4<f32>, ${aTile.r * aTile.stride}>;
var<workgroup> Bs: array<vec4<f32>, ${bTile.r * bTile.stride}>;
${prologue(`${threads}`)}
  let tx = lid % ${wgx}u;
  let ty = lid / ${wgx}u;
  let m0 = tm * ${bm}u;
  let n0 = tn * ${bn}u;
  ${accs.join(" ")}
  for (var k0 = 0u; k0 < p.k; k0 += ${bk}u) {
    ${copy(A, aTile, "As")}
    ${copy(B, bTile, "Bs")}
    workgroupBarrier();
    for (var kq = 0u; kq < ${bk}u; kq += 4u) {
      ${inner.join("\n      ")}
    }
    workgroupBarrier();
  }
  ${store.join("\n  ")}
}`;
}

// ---------------------------------------------------------------------------------------------
// vec4: a TM×TN register tile per thread, k unrolled by 4, operands read as vec4 along their
// contiguous axis when it is a multiple of 4, no shared memory (the fastest on CPU adapters).

/** Whether an operand can be bound as `array<vec4<f32>>`: its contiguous axis and batch stride are multiples of 4. */
export function vec4Operands(dims: MatmulDims): { vecA: boolean; vecB: boolean } {
  const { m, n, k } = dims;
  const sA = dims.strideA ?? m * k;
  const sB = dims.strideB ?? k * n;
  return {
    vecA: (dims.transA ? m : k) % 4 === 0 && sA % 4 === 0,
    vecB: (dims.transB ? k : n) % 4 === 0 && sB % 4 === 0,
  };
}

/**
 * The vec4 kernel (the CPU adapters' default) reads its parameters from storage, not a uniform.
 * Mesa 22.3's lavapipe takes a uniform that bounds a loop (here K) as "inlinable", and for some
 * launches it then compiles a new variant with the values folded in at every dispatch and never
 * frees it: Aᵀ·B at 128×384×720 grew by ~0.2 MB per launch with 12×12 tiles and by 2–5 MB with
 * 16×16 to 24×32 ones; fine-tuning gpt2-d128 grew by 23 MB a step (24 GB in ~1,000 steps). A
 * storage read is never inlined: fine-tuning then ran with flat memory and 17% faster, synth 13%
 * faster, same outputs (docs/bench-cpu.md, "Host memory"). tests/kernels/matmul_memory_test.ts.
 */
const VEC4_PARAM_SPACE: ParamSpace = "storage";

function vec4Wgsl(l: Layout, t: MatmulTuning, vecA: boolean, vecB: boolean, kInner: boolean): string {
  const { tm, tn, wgx, wgy } = t;
  const bm = tm * wgy;
  const bn = tn * wgx;
  const decl: string[] = [];
  const body: string[] = [];
  const tail: string[] = [];
  const store: string[] = [];
  // Rows and columns are clamped so every load stays in bounds without a branch; the clamped
  // duplicates compute values that the guarded store discards.
  for (let i = 0; i < tm; i++) decl.push(`let r${i} = min(m0 + ${i}u, p.m - 1u);`);
  for (let j = 0; j < tn; j++) decl.push(`let q${j} = min(n0 + ${j}u, p.n - 1u);`);
  for (let i = 0; i < tm; i++) for (let j = 0; j < tn; j++) decl.push(`var c${i}_${j} = 0.0;`);
  // a(i, kk): WGSL expression of op(A)[row i][k + kk] after the loads of one unrolled step.
  let a: (i: number, kk: number) => string;
  if (vecA && !l.transA) {
    // Row-major A, K % 4 == 0: one vec4 holds 4 consecutive k of one row.
    decl.push(...Array.from({ length: tm }, (_, i) => `let ra${i} = (aBase + r${i} * p.k) / 4u;`));
    for (let i = 0; i < tm; i++) body.push(`let a${i} = A[ra${i} + k / 4u];`);
    a = (i, kk) => `a${i}[${kk}]`;
  } else if (vecA) {
    // A stored [K, M], M % 4 == 0: one vec4 holds 4 consecutive rows at one k. Groups start at a
    // multiple of 4 and are clamped to the last aligned group.
    decl.push(...Array.from({ length: tm / 4 }, (_, g) => `let ga${g} = min(m0 + ${4 * g}u, p.m - 4u);`));
    for (let g = 0; g < tm / 4; g++) {
      for (let kk = 0; kk < 4; kk++) {
        body.push(`let a${g}_${kk} = A[(aBase + (k + ${kk}u) * p.m + ga${g}) / 4u];`);
      }
    }
    a = (i, kk) => `a${i >> 2}_${kk}[${i & 3}]`;
  } else {
    for (let i = 0; i < tm; i++) {
      for (let kk = 0; kk < 4; kk++) {
        body.push(`let a${i}_${kk} = A[aBase + ${aAt(l, `r${i}`, `k + ${kk}u`)}];`);
      }
    }
    a = (i, kk) => `a${i}_${kk}`;
  }
  let b: (kk: number, j: number) => string;
  if (vecB && !l.transB) {
    // Row-major B, N % 4 == 0: one vec4 holds 4 consecutive columns at one k.
    decl.push(...Array.from({ length: tn / 4 }, (_, h) => `let gb${h} = min(n0 + ${4 * h}u, p.n - 4u);`));
    for (let h = 0; h < tn / 4; h++) {
      for (let kk = 0; kk < 4; kk++) {
        body.push(`let b${h}_${kk} = B[(bBase + (k + ${kk}u) * p.n + gb${h}) / 4u];`);
      }
    }
    b = (kk, j) => `b${j >> 2}_${kk}[${j & 3}]`;
  } else if (vecB) {
    // B stored [N, K], K % 4 == 0: one vec4 holds 4 consecutive k of one column.
    decl.push(...Array.from({ length: tn }, (_, j) => `let cb${j} = (bBase + q${j} * p.k) / 4u;`));
    for (let j = 0; j < tn; j++) body.push(`let b${j} = B[cb${j} + k / 4u];`);
    b = (kk, j) => `b${j}[${kk}]`;
  } else {
    for (let j = 0; j < tn; j++) {
      for (let kk = 0; kk < 4; kk++) {
        body.push(`let b${kk}_${j} = B[bBase + ${bAt(l, `k + ${kk}u`, `q${j}`)}];`);
      }
    }
    b = (kk, j) => `b${kk}_${j}`;
  }
  // On CPU adapters the 4 FMAs of one accumulator are emitted together (k innermost). Tiles this
  // large keep more accumulators than the CPU has registers; with k outermost each one was
  // reloaded and spilled 4 times per step. On llvmpipe this order ran 24×24 tiles ~50% faster at
  // 1024³ (every layout) and 12×12 ones 0–15% faster (docs/bench-cpu.md, "FMA order and autotuned
  // tiles"). GPUs keep k outermost, the order all GPU figures were measured with (the k-innermost
  // order was not timed on a GPU on its own).
  if (kInner) {
    for (let i = 0; i < tm; i++) {
      for (let j = 0; j < tn; j++) {
        for (let kk = 0; kk < 4; kk++) body.push(`c${i}_${j} = fma(${a(i, kk)}, ${b(kk, j)}, c${i}_${j});`);
      }
    }
  } else {
    for (let kk = 0; kk < 4; kk++) {
      for (let i = 0; i < tm; i++) {
        for (let j = 0; j < tn; j++) body.push(`c${i}_${j} = fma(${a(i, kk)}, ${b(kk, j)}, c${i}_${j});`);
      }
    }
  }
  // The last K % 4 steps (only when neither operand is vectorised along k), one k at a time.
  const scalarA = (i: number) => {
    const idx = `aBase + ${aAt(l, `r${i}`, "k")}`;
    return vecA ? `A[(${idx}) / 4u][(${idx}) % 4u]` : `A[${idx}]`;
  };
  const scalarB = (j: number) => {
    const idx = `bBase + ${bAt(l, "k", `q${j}`)}`;
    return vecB ? `B[(${idx}) / 4u][(${idx}) % 4u]` : `B[${idx}]`;
  };
  for (let i = 0; i < tm; i++) tail.push(`let a${i} = ${scalarA(i)};`);
  for (let j = 0; j < tn; j++) tail.push(`let b${j} = ${scalarB(j)};`);
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn; j++) tail.push(`c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`);
  }
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn; j++) {
      store.push(
        `if (m0 + ${i}u < p.m && n0 + ${j}u < p.n) { ${
          storeC(l, `m0 + ${i}u`, `n0 + ${j}u`, `c${i}_${j}`)
        } }`,
      );
    }
  }
  return /* wgsl */ `${bindings(l, vecA, vecB, VEC4_PARAM_SPACE)}
${prologue(`${wgx * wgy}`, VEC4_PARAM_SPACE)}
  let m0 = tm * ${bm}u + (lid / ${wgx}u) * ${tm}u;
  let n0 = tn * ${bn}u + (lid % ${wgx}u) * ${tn}u;
  ${decl.join("\n  ")}
  let k4 = p.k & ~3u;
  var k = 0u;
  for (; k < k4; k += 4u) {
    ${body.join("\n    ")}
  }
  for (; k < p.k; k++) {
    ${tail.join("\n    ")}
  }
  ${store.join("\n  ")}
}`;
}

/** Output tile (rows × columns of C per workgroup) and threads per workgroup of a variant. */
function tileOf(variant: MatmulVariant, t: MatmulTuning): { bm: number; bn: number; threads: number } {
  switch (variant) {
    case "naive":
      return { bm: NAIVE_T, bn: NAIVE_T, threads: NAIVE_T * NAIVE_T };
    case "tiled":
      return { bm: TILE, bn: TILE, threads: TILE * TILE };
    case "blocked":
      return { bm: t.tm * t.wgy, bn: t.tn * t.wgx, threads: t.wgx * t.wgy };
    case "vec4":
      return { bm: t.tm * t.wgy, bn: t.tn * t.wgx, threads: t.wgx * t.wgy };
  }
}

/** The WGSL source of one variant for one layout (exported for tests and the bench). */
export function matmulWgsl(
  variant: MatmulVariant,
  layout: {
    transA?: boolean;
    transB?: boolean;
    bias?: boolean;
    vecA?: boolean;
    vecB?: boolean;
    /** `vec4`: emit each accumulator's 4 FMAs together (CPU adapters; default true), see vec4Wgsl. */
    kInner?: boolean;
  },
  tuning: MatmulTuning = defaultTuning(variant),
): string {
  const l: Layout = { transA: !!layout.transA, transB: !!layout.transB, bias: !!layout.bias };
  switch (variant) {
    case "naive":
      return naiveWgsl(l);
    case "tiled":
      return tiledWgsl(l);
    case "blocked":
      return blockedWgsl(l, tuning, !!layout.vecA, !!layout.vecB);
    case "vec4":
      return vec4Wgsl(l, tuning, !!layout.vecA, !!layout.vecB, layout.kInner ?? true);
  }
}

function checkTuning(ctx: GpuContext, variant: MatmulVariant, t: MatmulTuning): void {
  const { threads } = tileOf(variant, t);
  if (threads > ctx.limits.maxComputeInvocationsPerWorkgroup) {
    throw new GpuLimitError(
      `matmul ${variant}: ${threads} threads per workgroup exceed the adapter's ${ctx.limits.maxComputeInvocationsPerWorkgroup}`,
    );
  }
  if (variant === "blocked") {
    if (t.tm % 4 || t.tn % 4 || t.bk % 4) {
      throw new RangeError(`matmul blocked: tm, tn and bk must be multiples of 4`);
    }
    // Upper bound: both tiles with their padded row stride.
    const shared = 16 * (t.tm * t.wgy + t.tn * t.wgx) * (t.bk / 4 + 1);
    if (shared > ctx.limits.maxComputeWorkgroupStorageSize) {
      throw new GpuLimitError(
        `matmul blocked: ${shared} bytes of shared tiles exceed the adapter's ${ctx.limits.maxComputeWorkgroupStorageSize}`,
      );
    }
  }
}

/** Tile workgroups below which a long-K product is split along K (llvmpipe: 2 cores; a GPU: ~132 SMs). */
const SPLIT_K_BELOW = { cpu: 16, gpu: 132 };
/** Shortest K worth splitting: below it, the tile kernel's few workgroups finish quickly anyway. */
const SPLIT_K_FROM = { cpu: 512, gpu: 2048 };

/**
 * Which kernel runs a product by default: the tile kernel ("tile"), or the skinny / split-K kernel
 * of matmul_skinny.ts with its plan. Explicit `variant` or `tuning` options always get the tile
 * kernels (benches and tests compare them). The skinny kernel is chosen
 * - on CPU adapters, when more than half of the tile kernel's outputs would lie outside C (M or N
 *   well below the 48×24 tile: the logits [10, 128] · [128, 50257] computed 48 rows for 10), when
 *   an operand's contiguous axis is not a multiple of 4 (a vocabulary of 50,257), or when a long
 *   K runs in fewer tiles than it takes to keep both cores busy;
 * - on GPUs (`ctx.cpuKernels` false), for long K in fewer 64×64 tiles than the GPU has SMs
 *   (`dLogits · W`, M = 10, N = 128, K = 50,257, ran as 2 workgroups, each looping over all of
 *   K), and for small products whose B is not transposed: on an H200 (docs/gpu/run5) the skinny
 *   kernel beat 32×32 `blocked` tiles there (330×512×128: 0.089 vs 0.157 ms; the dR products
 *   10×50257×K: 0.08 vs 0.13–0.15 ms) but lost badly with Bᵀ (the logits h·Wᵀ: 6.0 vs 0.18 ms).
 */
export function chooseMatmulPath(
  ctx: GpuContext,
  a: GPUBuffer,
  b: GPUBuffer,
  dims: MatmulDims,
  options: MatmulKernelOptions = {},
): "tile" | SkinnyPlan {
  if (options.variant || options.tuning || dims.k === 0 || !skinnyRouting.enabled) return "tile";
  const variant = defaultMatmulVariant(ctx);
  const { bm, bn } = tileOf(
    variant,
    tuningLookups.get(ctx)?.(variant, dims) ?? defaultTuning(variant, dims, ctx.isCpuAdapter),
  );
  const { batch, m, n, k } = dims;
  const tilesM = Math.ceil(m / bm);
  const tilesN = Math.ceil(n / bn);
  const tileGroups = tilesM * tilesN * batch;
  const cpu = ctx.cpuKernels;
  const useful = (m * n) / (tilesM * bm * tilesN * bn);
  // The tile kernels read an operand whose contiguous axis is not a multiple of 4 with scalar
  // loads; the skinny kernel reads it as shifted vec4s (1.6–2× faster on llvmpipe at 1021³).
  const vec = vec4Operands(dims);
  const skinny = cpu && (useful < 0.5 || !vec.vecA || !vec.vecB);
  const longK = cpu
    ? tileGroups < SPLIT_K_BELOW.cpu && k >= SPLIT_K_FROM.cpu
    : blockedTiles(dims).tiles < SPLIT_K_BELOW.gpu && k >= SPLIT_K_FROM.gpu;
  const smallGpu = !cpu && !dims.transB && smallForBlocked(dims);
  if (!skinny && !longK && !smallGpu) return "tile";
  return planSkinnyMatmul(ctx, dims, a, b) ?? "tile";
}

/**
 * Encodes `C[b] = op(A[b]) · op(B[b]) (+ bias)` for `b < batch` into the context's open batch.
 * `c` receives `batch × M × N` contiguous values. Without an explicit variant, skinny and long-K
 * products go to the kernel of matmul_skinny.ts (see {@link chooseMatmulPath}).
 */
export function matmulKernel(
  ctx: GpuContext,
  a: GPUBuffer,
  b: GPUBuffer,
  c: GPUBuffer,
  dims: MatmulDims,
  options: MatmulKernelOptions = {},
): void {
  const { batch, m, n, k } = dims;
  for (const [name, v] of [["batch", batch], ["M", m], ["N", n], ["K", k]] as const) {
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(`matmul: ${name} must be a non-negative integer, got ${v}`);
    }
  }
  if (batch === 0 || m === 0 || n === 0) return;
  const path = chooseMatmulPath(ctx, a, b, dims, options);
  if (path !== "tile") return skinnyMatmulKernel(ctx, a, b, c, dims, path, options.bias);
  const variant = options.variant ?? defaultMatmulVariant(ctx);
  // A launch's own tuning (bench sweeps, the autotuner's candidates) is relative to the static
  // default, so it means the same whatever was tuned; otherwise the installed table comes first.
  const tuning = options.tuning
    ? { ...defaultTuning(variant, dims, ctx.isCpuAdapter), ...options.tuning }
    : tuningLookups.get(ctx)?.(variant, dims) ?? defaultTuning(variant, dims, ctx.isCpuAdapter);
  checkTuning(ctx, variant, tuning);
  const vec = vec4Operands(dims);
  const layout = {
    transA: !!dims.transA,
    transB: !!dims.transB,
    bias: !!options.bias,
    // A vec4 that spans rows (A transposed) or columns (B as stored) needs whole groups of 4.
    vecA: vec.vecA && (!dims.transA || (tuning.tm % 4 === 0 && m >= 4)),
    vecB: vec.vecB && (dims.transB || (tuning.tn % 4 === 0 && n >= 4)),
    kInner: options.kInner ?? ctx.isCpuAdapter,
  };
  // K = 0 is an empty sum (C = 0, + bias): the naive kernel's loop is then empty and reads nothing.
  const v: MatmulVariant = k === 0 ? "naive" : variant;
  const { bm, bn } = tileOf(v, tuning);
  const tilesM = Math.ceil(m / bm);
  const tilesN = Math.ceil(n / bn);
  const groups = tilesM * tilesN * batch;
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (groups > max * max) throw new GpuLimitError(`matmul: ${groups} workgroups exceed ${max}² per dispatch`);
  const params = packParams([
    m,
    n,
    k,
    batch,
    dims.strideA ?? m * k,
    dims.strideB ?? k * n,
    m * n,
    tilesN,
    tilesM,
  ]);
  const buffers = options.bias ? [a, b, c, options.bias] : [a, b, c];
  ctx.dispatch(ctx.pipeline(matmulWgsl(v, layout, tuning)), buffers, params, splitGrid(groups, max));
}

/** Floating-point operations of a matmul (one multiply and one add per term). */
export function matmulFlops(batch: number, m: number, n: number, k: number): number {
  return 2 * batch * m * n * k;
}
