/**
 * Matmul kernels for the shapes that the tile kernels of matmul.ts handle badly: skinny products
 * (M or N much smaller than the tile, e.g. the logits [10, 128] · [128, 50257] of a batch of 10
 * sequences) and long-K products with few output tiles (e.g. `dH = dLogits · W`, M = 10, N = 128,
 * K = 50,257, or the Gram products `R Rᵀ` over a vocabulary), which the tile kernels run with a
 * handful of workgroups, each looping over all of K.
 *
 * One kernel does both. Every thread computes a TM×TN register tile of C over one chunk of K
 * ("split"): the tile is sized to the product (TM = M when M ≤ 16, so nothing is computed for
 * rows that do not exist) and K is cut into as many splits as it takes to give the adapter enough
 * threads. With one split the thread stores C (+ bias) itself; with several, each split writes
 * its partial tile to a pooled scratch buffer [splits, batch·M·N] and a second, small kernel sums
 * the splits in a fixed order and adds the bias: deterministic, no atomics (WGSL has none for
 * f32).
 *
 * Loads. On llvmpipe every storage load is a per-lane loop (kernels/matmul.ts, docs/bench-cpu.md),
 * so operands are read as vec4 along their contiguous axis even when that axis is not a multiple
 * of 4 (a vocabulary of 50,257): a row that starts at flat index e is read as the aligned vec4s
 * around it and shifted by `e % 4` with `select`s (`sh4`). Along K the next vec4 of a row is
 * carried over to the following step, so a misaligned row costs one vec4 load per 4 k, as an
 * aligned one does. Reads that may run past the end of an operand (the last vec4 of a row group,
 * the carried vec4) are clamped to the buffer and only feed outputs that are never stored; when K
 * is not a multiple of 4, the values that the last step reads past K are replaced by 0. This needs
 * every operand buffer to be a whole number of vec4 (pool buffers are), which
 * {@link planSkinnyMatmul} checks.
 *
 * GPUs get the same kernel with 64-thread workgroups, smaller tiles and many more splits, and a
 * reduce pass in which 4 threads share each group of outputs; `matmulKernel` routes only long-K
 * products with few tiles to it there (see `chooseMatmulPath` in matmul.ts).
 */
import type { MatmulDims } from "./matmul.ts";
import { type GpuContext, GpuLimitError, splitGrid } from "./device.ts";
import { cachedWgsl, packParams } from "./launch.ts";

/**
 * Whether `matmulKernel` may route products to this kernel (default true). Benches set it to
 * false to time the tile kernels alone on the same workload.
 */
export const skinnyRouting = { enabled: true };

/** How a product is cut up for the skinny / split-K kernel. */
export interface SkinnyPlan {
  /** Rows and columns of C per thread. */
  tm: number;
  tn: number;
  /** Chunks of K summed by the reduce pass (1 = the product kernel stores C itself). */
  splits: number;
  /** Length of each chunk of K (a multiple of 4; the last chunk may be shorter). */
  kChunk: number;
  /** Threads per workgroup of the product kernel. */
  wg: number;
  /** Threads that share one group of 4 outputs in the reduce pass (1 on CPU adapters). */
  reduceLanes: number;
}

// CPU adapters (llvmpipe: 8-wide SIMD, one worker per core): 8-thread workgroups (one SIMD
// vector); up to 192 accumulators per thread (10×19 for M = 10: larger tiles were no faster on
// the x-step's products and take longer to compile, smaller ones do more loads per FMA); 128
// threads, enough for both cores, in chunks of K long enough that the partial sums cost little
// next to the loads of the chunk.
const CPU = { wg: 8, maxTm: 16, maxAcc: 192, maxTn: 32, threads: 128, minChunk: 256, maxSplits: 1024 };
// GPUs: 64-thread workgroups, at most 64 accumulators per thread (registers set the occupancy),
// ~16K threads to keep ~132 SMs busy on the memory reads, at most 256 splits (the reduce pass reads
// each of them).
const GPU = { wg: 64, maxTm: 16, maxAcc: 64, maxTn: 16, threads: 16384, minChunk: 128, maxSplits: 256 };

/** Threads per workgroup of the reduce pass: groups of 4 outputs × lanes over the splits. */
const REDUCE_GROUPS = { cpu: 8, gpu: 64 };

/**
 * Rows or columns per tile: at most `max`, and as even as possible over the tiles (x = 130,
 * max = 16: 9 tiles of 15, not 8 of 16 and one of 2), rounded up to a multiple of 4 where the
 * operand is read in groups of 4.
 */
function balanced(x: number, max: number, multipleOf4: boolean): number {
  const cap = multipleOf4 ? Math.max(4, max & ~3) : Math.max(1, max);
  const t = Math.ceil(x / Math.ceil(x / cap));
  return multipleOf4 ? Math.ceil(t / 4) * 4 : t;
}

/**
 * The plan for one product on this context's kernel family (`ctx.cpuKernels`): the per-thread
 * tile, the number of splits of K and the workgroup sizes. Returns null when the operands cannot
 * be read as vec4 (a buffer whose size is not a multiple of 16 bytes).
 */
export function planSkinnyMatmul(
  ctx: GpuContext,
  dims: MatmulDims,
  a: GPUBuffer,
  b: GPUBuffer,
): SkinnyPlan | null {
  if (a.size % 16 !== 0 || b.size % 16 !== 0) return null;
  const { batch, m, n, k } = dims;
  const cfg = ctx.cpuKernels ? CPU : GPU;
  // An operand read across rows (A transposed, B as stored) is read in groups of 4 rows/columns.
  const tm = balanced(m, cfg.maxTm, !!dims.transA && m >= 4);
  const tn = balanced(n, Math.min(cfg.maxTn, Math.floor(cfg.maxAcc / tm)), !dims.transB && n >= 4);
  const tiles = Math.ceil(m / tm) * Math.ceil(n / tn) * batch;
  const wanted = Math.ceil(cfg.threads / tiles);
  let splits = Math.max(1, Math.min(wanted, Math.floor(k / cfg.minChunk), cfg.maxSplits));
  const kChunk = Math.ceil(k / splits / 4) * 4;
  splits = Math.ceil(k / kChunk); // no empty chunk
  return {
    tm,
    tn,
    splits,
    kChunk,
    wg: cfg.wg,
    reduceLanes: ctx.cpuKernels ? 1 : 4,
  };
}

// ---------------------------------------------------------------------------------------------
// Code generation.

interface KernelLayout {
  transA: boolean;
  transB: boolean;
  /** Fused bias in the store (only with one split). */
  bias: boolean;
  tm: number;
  tn: number;
  wg: number;
  /** The operand's rows start on vec4 boundaries, so no shift is needed. */
  alignA: boolean;
  alignB: boolean;
  /**
   * K is not a multiple of 4: the last step of the last split runs past K, and the values it
   * reads there are replaced by 0 (they may be another row's data, or stale data past the end of
   * a pooled buffer, even Inf or NaN).
   */
  ragged: boolean;
}

/** WGSL for one operand: declarations before the k loop, and the loads of one step of 4 k. */
interface OperandCode {
  decl: string[];
  step: string[];
  /** Value of row/column `x` (of the thread's tile) at k + kk inside the step. */
  at: (x: number, kk: number) => string;
}

const ZERO4 = "vec4<f32>(0.0)";

/**
 * An operand stored with k contiguous (A as is, B transposed): one vec4 per row of the tile per
 * step, at `rowStart + k`. Misaligned rows keep the previous vec4 in `p` and shift.
 */
function kContiguous(
  name: "A" | "B",
  t: number,
  base: string,
  row: (x: number) => string,
  aligned: boolean,
  ragged: boolean,
): OperandCode {
  const v = name.toLowerCase();
  const code: OperandCode = { decl: [], step: [], at: (x, kk) => `${v}${x}[${kk}]` };
  for (let x = 0; x < t; x++) {
    code.decl.push(`let ${v}i${x} = (${base} + (${row(x)}) * p.k + k0) / 4u;`);
    let load = `${name}[${v}i${x} + q]`;
    if (!aligned) {
      code.decl.push(
        `let ${v}s${x} = (${base} + (${row(x)}) * p.k + k0) % 4u;`,
        `var ${v}p${x} = ${name}[min(${v}i${x}, last${name})];`,
      );
      code.step.push(`let ${v}n${x} = ${name}[min(${v}i${x} + q + 1u, last${name})];`);
      load = `sh4(${v}p${x}, ${v}n${x}, ${v}s${x})`;
    }
    code.step.push(`let ${v}${x} = ${ragged ? `select(${ZERO4}, ${load}, kIn)` : load};`);
    if (!aligned) code.step.push(`${v}p${x} = ${v}n${x};`);
  }
  return code;
}

/**
 * An operand stored with its M (A transposed) or N (B as stored) axis contiguous: per k, the
 * tile's `t` consecutive elements of one stored row, as ceil(t/4) vec4 (plus one more to shift
 * when misaligned). Reads past the end of the operand are clamped to the buffer.
 */
function rowContiguous(
  name: "A" | "B",
  t: number,
  base: string,
  stride: string,
  x0: string,
  aligned: boolean,
  ragged: boolean,
): OperandCode {
  const v = name.toLowerCase();
  const groups = Math.ceil(t / 4);
  const code: OperandCode = { decl: [], step: [], at: (x, kk) => `${v}${kk}_${x >> 2}[${x & 3}]` };
  for (let kk = 0; kk < 4; kk++) {
    code.step.push(`let ${v}e${kk} = ${base} + (k + ${kk}u) * ${stride} + ${x0};`);
    const loads: string[] = [];
    if (aligned) {
      for (let g = 0; g < groups; g++) loads.push(`${name}[min(${v}e${kk} / 4u + ${g}u, last${name})]`);
    } else {
      code.step.push(`let ${v}i${kk} = ${v}e${kk} / 4u;`, `let ${v}s${kk} = ${v}e${kk} % 4u;`);
      for (let g = 0; g <= groups; g++) {
        code.step.push(`let ${v}w${kk}_${g} = ${name}[min(${v}i${kk} + ${g}u, last${name})];`);
      }
      for (let g = 0; g < groups; g++) loads.push(`sh4(${v}w${kk}_${g}, ${v}w${kk}_${g + 1}, ${v}s${kk})`);
    }
    loads.forEach((load, g) => {
      code.step.push(`let ${v}${kk}_${g} = ${ragged ? `select(${ZERO4}, ${load}, kIn[${kk}])` : load};`);
    });
  }
  return code;
}

const PARAMS = /* wgsl */ `
struct P { m: u32, n: u32, k: u32, batch: u32, sA: u32, sB: u32, tilesN: u32, tilesM: u32,
           kc: u32, sOut: u32, threads: u32 }`;

/** The WGSL of the product kernel for one layout and tile (exported for tests). */
export function skinnyMatmulWgsl(l: KernelLayout): string {
  const { tm, tn, ragged } = l;
  const A = l.transA
    ? rowContiguous("A", tm, "aBase", "p.m", "m0", l.alignA, ragged)
    : kContiguous("A", tm, "aBase", (i) => `min(m0 + ${i}u, p.m - 1u)`, l.alignA, ragged);
  const B = l.transB
    ? kContiguous("B", tn, "bBase", (j) => `min(n0 + ${j}u, p.n - 1u)`, l.alignB, ragged)
    : rowContiguous("B", tn, "bBase", "p.n", "n0", l.alignB, ragged);
  const acc: string[] = [];
  const fma: string[] = [];
  const store: string[] = [];
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn; j++) {
      acc.push(`var c${i}_${j} = 0.0;`);
      // The 4 FMAs of one accumulator are emitted together: with more accumulators than
      // registers, k outermost would reload and spill each one 4 times per step (as in vec4).
      for (let kk = 0; kk < 4; kk++) {
        fma.push(`c${i}_${j} = fma(${A.at(i, kk)}, ${B.at(j, kk)}, c${i}_${j});`);
      }
      const bias = l.bias ? ` + bias[n0 + ${j}u]` : "";
      store.push(
        `if (m0 + ${i}u < p.m && n0 + ${j}u < p.n) { C[cBase + (m0 + ${i}u) * p.n + n0 + ${j}u] = c${i}_${j}${bias}; }`,
      );
    }
  }
  return /* wgsl */ `${PARAMS}
@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
${l.bias ? "@group(0) @binding(3) var<storage, read> bias: array<f32>;\n" : ""}@group(0) @binding(${
    l.bias ? 4 : 3
  }) var<uniform> p: P;

// Elements s..s+3 of the 8 elements a ++ b (s < 4): 4 consecutive floats from two aligned vec4.
fn sh4(a: vec4<f32>, b: vec4<f32>, s: u32) -> vec4<f32> {
  let r = select(a, vec4<f32>(a.yzw, b.x), s == 1u);
  return select(select(r, vec4<f32>(a.zw, b.xy), s == 2u), vec4<f32>(a.w, b.xyz), s == 3u);
}

@compute @workgroup_size(${l.wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let t = (wid.x + wid.y * nwg.x) * ${l.wg}u + lid;
  if (t >= p.threads) { return; }
  // Thread t: column tile fastest (neighbouring threads read neighbouring columns), then row
  // tile, batch entry and split of K.
  let tnI = t % p.tilesN;
  let r1 = t / p.tilesN;
  let tmI = r1 % p.tilesM;
  let r2 = r1 / p.tilesM;
  let bt = r2 % p.batch;
  let s = r2 / p.batch;
  let m0 = tmI * ${tm}u;
  let n0 = tnI * ${tn}u;
  let k0 = s * p.kc;
  let k1 = min(p.k, k0 + p.kc);
  let aBase = bt * p.sA;
  let bBase = bt * p.sB;
  let cBase = s * p.sOut + bt * p.m * p.n;
  let lastA = arrayLength(&A) - 1u;
  let lastB = arrayLength(&B) - 1u;
  ${A.decl.join("\n  ")}
  ${B.decl.join("\n  ")}
  ${acc.join(" ")}
  var q = 0u;
  for (var k = k0; k < k1; k += 4u) {
    ${ragged ? "let kIn = vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(k1);" : ""}
    ${A.step.join("\n    ")}
    ${B.step.join("\n    ")}
    ${fma.join("\n    ")}
    q += 1u;
  }
  ${store.join("\n  ")}
}`;
}

/** The WGSL of the reduce pass: C = Σ_s partial[s] (+ bias), 4 outputs per group of lanes. */
export function splitReduceWgsl(groups: number, lanes: number, bias: boolean): string {
  const combine = lanes === 1 ? "" : /* wgsl */ `
  sh[lid] = acc;
  workgroupBarrier();
  if (lane != 0u) { return; }
  acc = ${Array.from({ length: lanes }, (_, r) => `sh[lid + ${r * groups}u]`).join(" + ")};`;
  return /* wgsl */ `
struct R { total: u32, n: u32, splits: u32, sOut4: u32 }
@group(0) @binding(0) var<storage, read> part: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> C: array<f32>;
${bias ? "@group(0) @binding(2) var<storage, read> bias: array<f32>;\n" : ""}@group(0) @binding(${
    bias ? 3 : 2
  }) var<uniform> p: R;
${lanes > 1 ? `var<workgroup> sh: array<vec4<f32>, ${groups * lanes}>;` : ""}

@compute @workgroup_size(${groups * lanes})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let o = (wid.x + wid.y * nwg.x) * ${groups}u + lid % ${groups}u;
  let lane = lid / ${groups}u;
  var acc = vec4<f32>(0.0);
  // Lane r sums splits r, r + lanes, ...; the lanes are then added in order: a fixed order.
  if (o * 4u < p.total) {
    for (var s = lane; s < p.splits; s += ${lanes}u) { acc += part[s * p.sOut4 + o]; }
  }${combine}
  for (var c = 0u; c < 4u; c++) {
    let i = o * 4u + c;
    if (i < p.total) { C[i] = acc[c]${bias ? " + bias[i % p.n]" : ""}; }
  }
}`;
}

/** Whether rows of an operand start on vec4 boundaries at every batch entry and split. */
function alignedRows(rowStride: number, batchStride: number, batch: number, tile?: number): boolean {
  return rowStride % 4 === 0 && (batch === 1 || batchStride % 4 === 0) &&
    (tile === undefined || tile % 4 === 0);
}

/**
 * Encodes `C[b] = op(A[b]) · op(B[b]) (+ bias)` with the skinny / split-K kernel and the given
 * plan (from {@link planSkinnyMatmul}; tests pass others). Same contract as `matmulKernel`; K ≥ 1.
 */
export function skinnyMatmulKernel(
  ctx: GpuContext,
  a: GPUBuffer,
  b: GPUBuffer,
  c: GPUBuffer,
  dims: MatmulDims,
  plan: SkinnyPlan,
  bias?: GPUBuffer,
): void {
  const { batch, m, n, k } = dims;
  const { tm, tn, splits, kChunk, wg } = plan;
  if (kChunk % 4 !== 0 || splits < 1 || (splits - 1) * kChunk >= k || splits * kChunk < k) {
    throw new RangeError(`skinny matmul: ${splits} splits of ${kChunk} do not cover K = ${k}`);
  }
  const sA = dims.strideA ?? m * k;
  const sB = dims.strideB ?? k * n;
  const layout: KernelLayout = {
    transA: !!dims.transA,
    transB: !!dims.transB,
    bias: !!bias && splits === 1,
    tm,
    tn,
    wg,
    alignA: dims.transA ? alignedRows(m, sA, batch, tm) : alignedRows(k, sA, batch),
    alignB: dims.transB ? alignedRows(k, sB, batch) : alignedRows(n, sB, batch, tn),
    ragged: k % 4 !== 0,
  };
  const tilesM = Math.ceil(m / tm);
  const tilesN = Math.ceil(n / tn);
  const threads = tilesM * tilesN * batch * splits;
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  const groups = Math.ceil(threads / wg);
  if (groups > max * max) throw new GpuLimitError(`matmul: ${groups} workgroups exceed ${max}² per dispatch`);
  const total = batch * m * n;
  // Each split's partial block starts on a vec4 boundary so the reduce reads vec4.
  const sOut = Math.ceil(total / 4) * 4;
  const out = splits === 1 ? c : ctx.pool.acquire(splits * sOut * 4, "split-K partials");
  const code = cachedWgsl(`skinny ${JSON.stringify(layout)}`, () => skinnyMatmulWgsl(layout));
  const params = packParams([m, n, k, batch, sA, sB, tilesN, tilesM, kChunk, sOut, threads]);
  const buffers = layout.bias ? [a, b, out, bias!] : [a, b, out];
  ctx.dispatch(ctx.pipeline(code), buffers, params, splitGrid(groups, max));
  if (splits === 1) return;
  const reduceGroups = plan.reduceLanes === 1 ? REDUCE_GROUPS.cpu : REDUCE_GROUPS.gpu;
  const reduce = cachedWgsl(
    `split-K reduce ${reduceGroups} ${plan.reduceLanes} ${!!bias}`,
    () => splitReduceWgsl(reduceGroups, plan.reduceLanes, !!bias),
  );
  const rParams = packParams([total, n, splits, sOut / 4]);
  const rGroups = Math.ceil(sOut / 4 / reduceGroups);
  ctx.dispatch(ctx.pipeline(reduce), bias ? [out, c, bias] : [out, c], rParams, splitGrid(rGroups, max));
  ctx.releaseLater(out);
}
