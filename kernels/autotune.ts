/**
 * Matmul tile autotuner: for one adapter, the fastest tuning of the register-blocked matmul
 * (`vec4` on CPU adapters, `blocked` on GPUs) for each coarse shape class, measured once and
 * cached on disk.
 *
 * How it is used. Measuring needs asynchronous readbacks, so it cannot happen inside a kernel
 * launch: a caller runs `await autotune(ctx, shapes)` up front (the CLI's `tune` command, or a
 * command after loading its model, with the shapes of the model's matmuls from
 * {@link recordMatmulShapes}). `autotune` loads the cache, measures only the classes it lacks
 * (leaving out those too small to matter and those `matmulKernel` sends to its skinny/split-K
 * kernel, which has no tiles), saves them, and installs the
 * table on the context; from then on `matmulKernel` takes the tuning of a launch's class from it
 * before falling back to the static defaults. `measure: false` only loads and installs the cache.
 * Nothing is tuned unless a caller asks, so tests stay cheap; `autotuneMode` (host/autotune.ts) reads the
 * GRADMM_AUTOTUNE switch that commands honour.
 *
 * Shape classes are coarse: the variant, each of batch, M, N and K rounded up to a power of two,
 * the transpose layout and which operands are read as vec4. A model's few distinct matmuls and the
 * big squares each get their own class, and shapes in one class run well with the same tiles.
 *
 * Measuring one class (on one representative shape): the static default runs first and is checked
 * against a float64 CPU product on sampled entries; every candidate's output must then match the
 * default's over the whole of C, or it is rejected (a wrong kernel must never win). Candidates run
 * interleaved, round after round, within a time budget per class; on CPU adapters they are ranked
 * by process CPU time, which other processes on the machine disturb much less than wall time.
 * Compile time matters on llvmpipe (a 24×24 tile takes 2–10 s to compile): a candidate whose
 * compile exceeds `maxCompileMs` is rejected and so are all larger ones. A candidate replaces the
 * default only when it is at least `minGain` faster.
 *
 * The cache is one JSON text per adapter in a {@link TuningStore} (host/autotune.ts keeps them as
 * files in a folder; without a store nothing persists), named by a hash of the adapter
 * (description, vendor, architecture, device), the runtime ({@link TuningRuntime}: the WebGPU
 * backend, since Mesa's GL and Vulkan CPU adapters describe themselves alike, and the runtime's
 * version) and a hash of the WGSL the matmul generators produce, so a kernel change invalidates
 * it. A corrupt or unreadable entry is reported as a warning and rebuilt.
 *
 * Platform-neutral: the store, the runtime's identity and a CPU-time clock are passed in.
 */
import type { GpuContext } from "./device.ts";
import {
  BLOCKED_TUNING,
  chooseMatmulPath,
  defaultMatmulVariant,
  defaultTuning,
  MATMUL_VARIANTS,
  type MatmulDims,
  matmulFlops,
  matmulKernel,
  type MatmulTuning,
  matmulTuningLookup,
  type MatmulVariant,
  matmulWgsl,
  setMatmulTuningLookup,
  VEC4_LARGE_TUNING,
  VEC4_TUNING,
  vec4Operands,
} from "./matmul.ts";

// ---------------------------------------------------------------------------------------------
// Shape classes and the table.

/** Smallest power of two ≥ x (1 for x ≤ 1). */
function pow2(x: number): number {
  return x <= 1 ? 1 : 2 ** Math.ceil(Math.log2(x));
}

/**
 * The shape class of a launch, e.g. `vec4 b1 m512 n1024 k256 nt vv`: the variant, batch, M, N and
 * K each rounded up to a power of two, the layout (`n`/`t` for A then B) and whether A and B are
 * read as vec4 (`v`) or as scalars (`s`).
 */
export function matmulShapeClass(variant: MatmulVariant, dims: MatmulDims): string {
  const { vecA, vecB } = vec4Operands(dims);
  const layout = `${dims.transA ? "t" : "n"}${dims.transB ? "t" : "n"}`;
  return `${variant} b${pow2(dims.batch)} m${pow2(dims.m)} n${pow2(dims.n)} k${pow2(dims.k)} ${layout} ${
    vecA ? "v" : "s"
  }${vecB ? "v" : "s"}`;
}

/**
 * How candidates were timed and ranked: `cpu` = process CPU time divided by the core count
 * ("CPU-equivalent", on CPU adapters), `wall` = wall-clock time.
 */
export type TuningClock = "cpu" | "wall";

/** One tuned shape class. */
export interface TunedEntry {
  /** The matmul variant the class was tuned for. */
  variant: MatmulVariant;
  /** The tuning chosen for the class (the static default when nothing beat it). */
  tuning: MatmulTuning;
  /** The static default it was compared with. */
  defaultTuning: MatmulTuning;
  /**
   * GFLOP/s of the chosen tuning and of the default on {@link TunedEntry.shape}, on
   * {@link TunedEntry.clock} (medians of the rounds).
   */
  gflops: number;
  /** GFLOP/s of the static default on the same shape and clock. */
  defaultGflops: number;
  /** The same on the wall clock (what a loaded machine's other processes disturb). */
  wallGflops: number;
  /** Median time of the default divided by the chosen one's, on {@link TunedEntry.clock}. */
  speedup: number;
  /** The clock candidates were ranked by: process CPU time on CPU adapters, else wall time. */
  clock: TuningClock;
  /**
   * Compile time of the chosen tuning's pipeline (first launch minus a steady one), ms; null when
   * it was already compiled in this process before it was measured.
   */
  compileMs: number | null;
  /** The shape it was measured on. */
  shape: MatmulDims;
  /** ISO date of the measurement. */
  measuredAt: string;
}

/** Tuned entries by shape class; {@link installMatmulTuning} makes `matmulKernel` use them. */
export class MatmulTuningTable {
  /** Entries by shape-class key (see `matmulShapeClass`). */
  readonly entries: Map<string, TunedEntry> = new Map();

  /** The tuned tuning for a launch, or undefined when its class was not tuned. */
  lookup(variant: MatmulVariant, dims: MatmulDims): MatmulTuning | undefined {
    return this.entries.get(matmulShapeClass(variant, dims))?.tuning;
  }
}

/** Makes `matmulKernel` on `ctx` take tunings from `table` (null: back to the static defaults). */
export function installMatmulTuning(ctx: GpuContext, table: MatmulTuningTable | null): void {
  setMatmulTuningLookup(ctx, table ? (variant, dims) => table.lookup(variant, dims) : null);
}

/**
 * Runs `fn` and returns, with its result, every distinct matmul shape launched meanwhile without
 * an explicit tuning (those the table is asked about), in first-seen order.
 */
export async function recordMatmulShapes<T>(
  ctx: GpuContext,
  fn: () => T | Promise<T>,
): Promise<{ result: T; shapes: MatmulDims[] }> {
  const previous = matmulTuningLookup(ctx);
  const seen = new Map<string, MatmulDims>();
  setMatmulTuningLookup(ctx, (variant, dims) => {
    const d: MatmulDims = {
      batch: dims.batch,
      m: dims.m,
      n: dims.n,
      k: dims.k,
      transA: !!dims.transA,
      transB: !!dims.transB,
      strideA: dims.strideA ?? dims.m * dims.k,
      strideB: dims.strideB ?? dims.k * dims.n,
    };
    const key = JSON.stringify(d);
    if (!seen.has(key)) seen.set(key, d);
    return previous?.(variant, dims);
  });
  try {
    const result = await fn();
    return { result, shapes: [...seen.values()] };
  } finally {
    setMatmulTuningLookup(ctx, previous ?? null);
  }
}

// ---------------------------------------------------------------------------------------------
// Candidates.

const t = (tm: number, tn: number, wgx = 2, wgy = 4, bk = 4): MatmulTuning => ({ tm, tn, wgx, wgy, bk });

/**
 * `vec4` candidates. Workgroups stay one or two 8-lane SIMD vectors (llvmpipe runs 8 invocations
 * per vector; see kernels/matmul.ts). Tiles above 12×12 are tried only when both operands are read
 * as vec4: their scalar-load fallback takes tens of seconds to compile.
 */
const VEC4_CANDIDATES: MatmulTuning[] = [
  t(8, 8),
  t(12, 12),
  t(16, 8),
  t(8, 16),
  t(12, 12, 4, 2),
  t(16, 16),
  t(24, 16),
  t(16, 24),
  t(24, 24),
  t(24, 24, 4, 2),
  t(32, 16),
  t(16, 32),
  t(24, 32),
  t(32, 24),
  t(32, 32),
];
/** Largest `vec4` tile (tm·tn) tried when an operand falls back to scalar loads. */
const VEC4_SCALAR_MAX = 144;

/** `blocked` candidates (GPUs): the shared-memory tiles of bench/matmul_tune.ts. */
const BLOCKED_CANDIDATES: MatmulTuning[] = [
  BLOCKED_TUNING,
  t(4, 4, 16, 16, 16),
  t(4, 4, 16, 16, 8),
  t(8, 4, 16, 16, 8),
  t(4, 8, 16, 16, 8),
  t(8, 8, 16, 16, 8),
  t(8, 8, 8, 8, 32),
  t(8, 8, 16, 8, 16),
  t(8, 8, 8, 16, 16),
  t(12, 12, 8, 8, 8),
];

const sameTuning = (a: MatmulTuning, b: MatmulTuning) =>
  a.tm === b.tm && a.tn === b.tn && a.wgx === b.wgx && a.wgy === b.wgy && a.bk === b.bk;

/**
 * The candidates for one shape: the static default first, then the others from the nearest to the
 * default's size (outputs per thread) outwards, smaller first on ties, so that a budget that runs
 * out leaves out the least likely ones. Tiles much larger than C along M or N are left out: they
 * would mostly compute padding. `naive` and `tiled` have nothing to tune.
 */
export function matmulCandidates(ctx: GpuContext, variant: MatmulVariant, dims: MatmulDims): MatmulTuning[] {
  const def = defaultTuning(variant, dims);
  if (variant === "naive" || variant === "tiled") return [def];
  const { vecA, vecB } = vec4Operands(dims);
  const pool = variant === "vec4" ? VEC4_CANDIDATES : BLOCKED_CANDIDATES;
  const fits = (c: MatmulTuning) =>
    c.wgx * c.wgy <= ctx.limits.maxComputeInvocationsPerWorkgroup &&
    (variant !== "vec4" || (vecA && vecB) || c.tm * c.tn <= VEC4_SCALAR_MAX) &&
    (c.tm * c.wgy <= Math.max(2 * dims.m, def.tm * def.wgy)) &&
    (c.tn * c.wgx <= Math.max(2 * dims.n, def.tn * def.wgx));
  const distance = (c: MatmulTuning) => Math.abs(Math.log(c.tm * c.tn) - Math.log(def.tm * def.tn));
  const rest = pool.filter((c) => fits(c) && !sameTuning(c, def))
    .sort((a, b) => distance(a) - distance(b) || a.tm * a.tn - b.tm * b.tn);
  return [def, ...rest];
}

// ---------------------------------------------------------------------------------------------
// Measuring one class.

/** Launches one product with a given tuning (a seam for tests, which inject a wrong kernel). */
export type MatmulLauncher = (
  ctx: GpuContext,
  a: GPUBuffer,
  b: GPUBuffer,
  c: GPUBuffer,
  dims: MatmulDims,
  variant: MatmulVariant,
  tuning: MatmulTuning,
) => void;

const defaultLauncher: MatmulLauncher = (ctx, a, b, c, dims, variant, tuning) =>
  matmulKernel(ctx, a, b, c, dims, { variant, tuning });

/** What happened to one candidate. */
export interface CandidateResult {
  /** The tile sizes tried. */
  tuning: MatmulTuning;
  /**
   * `ok`: measured; `wrong`: its output differed from the default's; `error`: it failed to
   * compile or launch; `slow-compile`: its compile exceeded `maxCompileMs`; `skipped`: not tried
   * (out of budget, or larger than a candidate that compiled too slowly).
   */
  status: "ok" | "wrong" | "error" | "slow-compile" | "skipped";
  /** GFLOP/s on the ranking clock (see {@link TuningClock}), median of the rounds, when measured. */
  gflops?: number;
  /** Compile time, ms, when this launch compiled the pipeline (see {@link TunedEntry.compileMs}). */
  compileMs?: number;
  /** What went wrong (`wrong`, `error`, `slow-compile`) or why it was skipped. */
  message?: string;
}

/** The outcome of one class in {@link autotune}. */
export interface ClassReport {
  /** The shape-class key. */
  cls: string;
  /** The shape the class was measured on (its largest recorded launch). */
  shape: MatmulDims;
  /** `cached`: taken from the cache file; `tuned`: measured now; `skipped`: see `message`. */
  status: "cached" | "tuned" | "skipped";
  /** The entry now installed for the class (absent when skipped). */
  entry?: TunedEntry;
  /** Every candidate tried now, with its outcome (empty when cached). */
  candidates: CandidateResult[];
  /** Why the class was skipped. */
  message?: string;
  /** Time spent measuring this class, ms. */
  elapsedMs: number;
}

/** Progress of {@link autotune}, for a command to print. */
export type AutotuneEvent =
  | { type: "class"; cls: string; shape: MatmulDims; index: number; count: number; candidates: number }
  | { type: "candidate"; cls: string; result: CandidateResult }
  | { type: "done"; report: ClassReport };

/**
 * Where tuning tables persist between runs, by entry name (host/autotune.ts: files in a folder).
 * `read` gives null for an absent entry and throws for any other failure; `write` replaces an
 * entry whole (atomically where the medium allows).
 */
export interface TuningStore {
  /** A label for one entry (a file path), for reports and warnings. */
  locate(name: string): string;
  /** The entry's text, or null when there is none. */
  read(name: string): Promise<string | null>;
  /** Replaces the entry with `text`. */
  write(name: string, text: string): Promise<void>;
}

/**
 * What identifies the runtime in the cache key, besides the adapter: the WebGPU backend (Deno:
 * DENO_WEBGPU_BACKEND, "" when unset) and the runtime's version (the Deno version, or a
 * browser's user agent).
 */
export interface TuningRuntime {
  /** The WebGPU backend (DENO_WEBGPU_BACKEND; "" when unset). */
  backend: string;
  /** The runtime's version (Deno's, or a browser's user agent). */
  version: string;
}

/** Options of {@link loadMatmulTuning}. */
export interface TuningCacheOptions {
  /** Where the cache lives; null or absent = no persistent cache. */
  store?: TuningStore | null;
  /** The runtime in the cache key; default: backend "" and the user agent. */
  runtime?: TuningRuntime;
}

/** Options of {@link autotune}. */
export interface AutotuneOptions extends TuningCacheOptions {
  /**
   * Process CPU time so far, ms. On CPU adapters candidates are ranked by it (other processes on
   * the machine disturb it much less than wall time); without it, by wall time.
   */
  cpuTime?: () => number;
  /** Measure the classes the cache lacks (default true); false only loads and installs the cache. */
  measure?: boolean;
  /** Measure the given classes again even when cached. */
  retune?: boolean;
  /** Variant to tune (default: the adapter's default variant). */
  variant?: MatmulVariant;
  /** Approximate time budget per class, ms (default 10 s on CPU adapters, 2 s on GPUs). */
  budgetMs?: number;
  /** Reject candidates whose pipeline takes longer to compile, ms (default 5 s on CPU, 1 s on GPU). */
  maxCompileMs?: number;
  /**
   * Classes whose largest shape has fewer floating-point operations are not measured (default
   * 2^18): their launches cost about the dispatch, whatever the tiles.
   */
  minFlops?: number;
  /** Smallest relative gain over the default for a candidate to replace it (default 0.03). */
  minGain?: number;
  /** Candidates to try instead of {@link matmulCandidates} (the default is always tried first). */
  candidates?: MatmulTuning[];
  /** Launches a product (default `matmulKernel`); tests inject wrong kernels through it. */
  launcher?: MatmulLauncher;
  /** Called as classes and candidates are measured. */
  onProgress?: (event: AutotuneEvent) => void;
  /** Called with cache problems (corrupt file, unwritable directory); they are also in the report. */
  onWarning?: (message: string) => void;
}

/** What {@link autotune} did. */
export interface AutotuneReport {
  /** The cache entry's location (null without a store). */
  file: string | null;
  /** How the cache file was found before tuning. */
  cacheStatus: CacheStatus;
  /** Whether the cache file was (re)written. */
  saved: boolean;
  /** One report per requested shape class. */
  classes: ClassReport[];
  /** Cache problems met (also passed to `onWarning`). */
  warnings: string[];
  /** The installed table (every entry of the cache, not only the requested classes). */
  table: MatmulTuningTable;
}

/** Deterministic values in [-1, 1) (a 32-bit LCG: fast, and the same every run). */
function fillRandom(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = (x >>> 8) / 8388608 - 1;
  }
  return out;
}

interface Operands {
  a: GPUBuffer;
  b: GPUBuffer;
  c: GPUBuffer;
  hostA: Float32Array;
  hostB: Float32Array;
  dims: Required<MatmulDims>;
}

function fullDims(d: MatmulDims): Required<MatmulDims> {
  return {
    batch: d.batch,
    m: d.m,
    n: d.n,
    k: d.k,
    transA: !!d.transA,
    transB: !!d.transB,
    strideA: d.strideA ?? d.m * d.k,
    strideB: d.strideB ?? d.k * d.n,
  };
}

/** Elements an operand's buffer must hold: the last batch entry's offset plus one matrix. */
const operandSize = (stride: number, batch: number, matrix: number) => stride * (batch - 1) + matrix;

function makeOperands(ctx: GpuContext, shape: MatmulDims): Operands | string {
  const dims = fullDims(shape);
  const { batch, m, n, k } = dims;
  const sizes = [
    operandSize(dims.strideA, batch, m * k),
    operandSize(dims.strideB, batch, k * n),
    batch * m * n,
  ];
  const limit = Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize);
  if (sizes.some((s) => s * 4 > limit)) return `an operand exceeds the ${limit}-byte binding limit`;
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  // Sizes rounded up to 16 bytes like the buffer pool's, which matmulKernel's routing looks at.
  const [a, b, c] = sizes.map((s) =>
    ctx.device.createBuffer({ size: Math.max(16, Math.ceil(s / 4) * 16), usage })
  );
  const hostA = fillRandom(sizes[0], 1);
  const hostB = fillRandom(sizes[1], 2);
  ctx.writeBuffer(a, 0, hostA);
  ctx.writeBuffer(b, 0, hostB);
  return { a, b, c, hostA, hostB, dims };
}

/**
 * Checks `c` (the default's output): every entry finite, and 64 sampled entries equal to float64
 * products. Returns a description of the first mismatch, or null.
 */
function checkSamples(o: Operands, c: Float32Array): string | null {
  const { batch, m, n, k, transA, transB, strideA, strideB } = o.dims;
  // C was filled with NaN before the launch: an output left unwritten shows here.
  const missing = c.findIndex((v) => !Number.isFinite(v));
  if (missing >= 0) return `C[${missing}] = ${c[missing]}`;
  let x = 12345;
  for (let s = 0; s < 64; s++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const bt = x % batch;
    const i = (x >>> 7) % m;
    const j = Math.floor((x / 7) % n);
    let sum = 0, abs = 0;
    for (let kk = 0; kk < k; kk++) {
      const av = o.hostA[bt * strideA + (transA ? kk * m + i : i * k + kk)];
      const bv = o.hostB[bt * strideB + (transB ? j * k + kk : kk * n + j)];
      sum += av * bv;
      abs += Math.abs(av * bv);
    }
    const got = c[(bt * m + i) * n + j];
    // f32 accumulation error grows like √K · ε · Σ|terms|.
    if (!(Math.abs(got - sum) <= 1e-5 * Math.sqrt(k) * Math.max(1, abs))) {
      return `C[${bt}][${i}][${j}] = ${got}, float64 reference ${sum}`;
    }
  }
  return null;
}

/** Largest |c − ref| over C, or a message when it exceeds the tolerance (NaN included). */
function compareOutputs(c: Float32Array, ref: Float32Array, k: number): string | null {
  let maxRef = 0;
  for (let i = 0; i < ref.length; i++) maxRef = Math.max(maxRef, Math.abs(ref[i]));
  // Summation order differs between tilings: allow a few ulps of the result's scale per √K.
  const tol = 2e-5 * Math.sqrt(Math.max(1, k)) * (1 + maxRef);
  for (let i = 0; i < c.length; i++) {
    if (!(Math.abs(c[i] - ref[i]) <= tol)) return `C[${i}] = ${c[i]}, default kernel ${ref[i]}`;
  }
  return null;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

interface Measured {
  result: CandidateResult;
  iters: number;
  /** Times per run, ms: the ranking clock and wall clock. */
  clock: number[];
  wall: number[];
}

async function tuneClass(
  ctx: GpuContext,
  cls: string,
  shape: MatmulDims,
  position: { index: number; count: number },
  variant: MatmulVariant,
  o: Required<Pick<AutotuneOptions, "budgetMs" | "maxCompileMs" | "minGain" | "launcher">> & AutotuneOptions,
): Promise<ClassReport> {
  const start = performance.now();
  const candidates = o.candidates
    ? [
      defaultTuning(variant, shape),
      ...o.candidates.filter((c) => !sameTuning(c, defaultTuning(variant, shape))),
    ]
    : matmulCandidates(ctx, variant, shape);
  const report: ClassReport = { cls, shape, status: "skipped", candidates: [], elapsedMs: 0 };
  const skip = (message: string) => {
    report.message = message;
    return report;
  };
  const ops = makeOperands(ctx, shape);
  if (typeof ops === "string") return skip(ops);
  const cpuTime = o.cpuTime;
  const clock: TuningClock = ctx.isCpuAdapter && cpuTime ? "cpu" : "wall";
  const cores = navigator.hardwareConcurrency || 1;
  const sampleMs = ctx.isCpuAdapter ? 150 : 25;
  const bytesC = ops.dims.batch * ops.dims.m * ops.dims.n * 4;
  const nan = new Float32Array(bytesC / 4).fill(NaN);
  try {
    // matmulKernel sends skinny and long-K products to its split-K kernel, which has no tiles.
    if (chooseMatmulPath(ctx, ops.a, ops.b, ops.dims) !== "tile") {
      return skip("runs on the skinny/split-K kernel, which has no tiles to tune");
    }
    o.onProgress?.({ type: "class", cls, shape, ...position, candidates: candidates.length });
    const run = (tuning: MatmulTuning) => o.launcher(ctx, ops.a, ops.b, ops.c, ops.dims, variant, tuning);
    let reference: Float32Array | null = null;
    // Tiles that compiled too slowly: any tile at least as large in both directions is skipped.
    const slow: MatmulTuning[] = [];
    const measured: Measured[] = [];
    for (const [ci, tuning] of candidates.entries()) {
      const result: CandidateResult = { tuning, status: "skipped" };
      report.candidates.push(result);
      const isDefault = ci === 0;
      // Half the budget for compiling and checking; the other half (at least 3 rounds) for timing.
      if (!isDefault && performance.now() - start > o.budgetMs / 2) {
        result.message = "out of time budget";
      } else if (slow.some((x) => tuning.tm >= x.tm && tuning.tn >= x.tn)) {
        result.message = "a tile no larger compiled too slowly";
      } else {
        try {
          ctx.writeBuffer(ops.c, 0, nan);
          await ctx.sync();
          const compiled = ctx.pipelineCount;
          const t0 = performance.now();
          run(tuning);
          const out = new Float32Array(await ctx.readBuffer(ops.c, 0, bytesC));
          const first = performance.now() - t0;
          const t1 = performance.now();
          run(tuning);
          await ctx.sync();
          const once = performance.now() - t1;
          // Only when this launch compiled it: pipelines are cached per process.
          if (ctx.pipelineCount > compiled) result.compileMs = Math.max(0, first - once);
          const wrong = reference ? compareOutputs(out, reference, ops.dims.k) : checkSamples(ops, out);
          if (wrong) {
            result.status = "wrong";
            result.message = wrong;
            if (!reference) {
              return skip(`the default kernel disagrees with a float64 product: ${wrong}`);
            }
          } else if (!isDefault && (result.compileMs ?? 0) > o.maxCompileMs) {
            result.status = "slow-compile";
            slow.push(tuning);
          } else {
            result.status = "ok";
            if (!reference) reference = out;
            const iters = Math.max(1, Math.min(100, Math.round(sampleMs / Math.max(once, 0.01))));
            measured.push({ result, iters, clock: [], wall: [] });
          }
        } catch (e) {
          result.status = "error";
          result.message = (e as Error).message.split("\n")[0];
          if (!reference) return skip(`the default tuning failed: ${result.message}`);
        }
      }
      o.onProgress?.({ type: "candidate", cls, result });
    }
    // Interleaved rounds: a change of machine load during the sweep hits every candidate alike.
    for (let round = 0; round < 9 && (round < 3 || performance.now() - start < o.budgetMs); round++) {
      for (const m of measured) {
        const t0 = performance.now();
        const c0 = cpuTime?.() ?? 0;
        for (let i = 0; i < m.iters; i++) run(m.result.tuning);
        await ctx.sync();
        const wall = (performance.now() - t0) / m.iters;
        const used = (cpuTime?.() ?? 0) - c0;
        m.wall.push(wall);
        m.clock.push(clock === "cpu" ? used / m.iters / cores : wall);
      }
    }
    const flops = matmulFlops(ops.dims.batch, ops.dims.m, ops.dims.n, ops.dims.k);
    for (const m of measured) m.result.gflops = flops / median(m.clock) / 1e6;
    const def = measured[0];
    let best = def;
    for (const m of measured) if (median(m.clock) < median(best.clock)) best = m;
    if (median(best.clock) > median(def.clock) * (1 - o.minGain)) best = def;
    report.status = "tuned";
    report.entry = {
      variant,
      tuning: best.result.tuning,
      defaultTuning: def.result.tuning,
      gflops: best.result.gflops!,
      defaultGflops: def.result.gflops!,
      wallGflops: flops / median(best.wall) / 1e6,
      speedup: median(def.clock) / median(best.clock),
      clock,
      compileMs: best.result.compileMs ?? null,
      shape: ops.dims,
      measuredAt: new Date().toISOString(),
    };
    return report;
  } finally {
    for (const b of [ops.a, ops.b, ops.c]) b.destroy();
    report.elapsedMs = performance.now() - start;
  }
}

// ---------------------------------------------------------------------------------------------
// The cache file.

/** What identifies a cache file's validity: the adapter, the runtime and the kernels. */
export interface CacheKey {
  adapter: string;
  vendor: string;
  architecture: string;
  device: string;
  /** {@link TuningRuntime.backend}. */
  backend: string;
  /** {@link TuningRuntime.version} (the field keeps its first name, so existing caches stay valid). */
  deno: string;
  /** SHA-256 of the WGSL the matmul generators produce for a fixed set of layouts and tunings. */
  kernels: string;
}

const FORMAT = "gradmm-ts matmul tuning";
const FORMAT_VERSION = 1;

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

let kernelHash: Promise<string> | null = null;

/** Hash of the generated matmul WGSL: every variant and layout, at a few tunings. */
export function matmulKernelHash(): Promise<string> {
  if (!kernelHash) {
    const sources: string[] = [];
    for (const variant of MATMUL_VARIANTS) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          for (const vec of [false, true]) {
            for (const tuning of [VEC4_TUNING, VEC4_LARGE_TUNING, BLOCKED_TUNING, t(8, 4, 2, 4, 8)]) {
              const layout = { transA, transB, bias: vec, vecA: vec, vecB: vec };
              sources.push(matmulWgsl(variant, layout, tuning));
            }
          }
        }
      }
    }
    kernelHash = sha256(sources.join("\n\u0000\n"));
  }
  return kernelHash;
}

/** The runtime used when the caller gives none: no backend name, the user agent as version. */
function defaultRuntime(): TuningRuntime {
  return { backend: "", version: globalThis.navigator?.userAgent ?? "" };
}

/** The cache key of a context on a runtime. */
export async function cacheKey(
  ctx: GpuContext,
  runtime: TuningRuntime = defaultRuntime(),
): Promise<CacheKey> {
  const a = ctx.adapter;
  return {
    adapter: a.description,
    vendor: a.vendor,
    architecture: a.architecture,
    device: a.device,
    backend: runtime.backend,
    deno: runtime.version,
    kernels: await matmulKernelHash(),
  };
}

/** The cache entry name of a context: one per key, so adapters and versions coexist. */
export async function cacheEntryName(ctx: GpuContext, runtime?: TuningRuntime): Promise<string> {
  const key = await cacheKey(ctx, runtime);
  return `matmul-tuning-${(await sha256(JSON.stringify(key))).slice(0, 16)}.json`;
}

/** How a cache file was found: absent, usable, written for another key, or not readable/valid. */
export type CacheStatus = "none" | "missing" | "loaded" | "stale" | "corrupt";

const isPositiveInt = (x: unknown, max: number) =>
  Number.isInteger(x) && (x as number) > 0 && (x as number) <= max;

function tuningProblem(ctx: GpuContext, t: MatmulTuning | undefined): string | null {
  if (
    !t || !isPositiveInt(t.tm, 64) || !isPositiveInt(t.tn, 64) || !isPositiveInt(t.wgx, 1024) ||
    !isPositiveInt(t.wgy, 1024) || !isPositiveInt(t.bk, 256)
  ) return "tuning fields must be small positive integers";
  if (t.wgx * t.wgy > ctx.limits.maxComputeInvocationsPerWorkgroup) return "workgroup too large";
  if (t.tm % 4 || t.tn % 4 || t.bk % 4) return "tm, tn and bk must be multiples of 4";
  return null;
}

/** Why a cached entry cannot be used as is, or null when it is sound for this context. */
function entryProblem(ctx: GpuContext, cls: string, e: TunedEntry): string | null {
  if (!e || typeof e !== "object") return "not an object";
  if (!MATMUL_VARIANTS.includes(e.variant)) return `unknown variant ${JSON.stringify(e.variant)}`;
  const bad = tuningProblem(ctx, e.tuning) ?? tuningProblem(ctx, e.defaultTuning);
  if (bad) return bad;
  const s = e.shape;
  if (!s || ![s.batch, s.m, s.n, s.k].every((x) => isPositiveInt(x, 2 ** 31))) return "bad shape";
  if (matmulShapeClass(e.variant, s) !== cls) return "its shape is not of its class";
  const numbers = [e.gflops, e.defaultGflops, e.wallGflops, e.speedup];
  if (!numbers.every((x) => typeof x === "number" && Number.isFinite(x))) return "bad figures";
  if (e.compileMs !== null && typeof e.compileMs !== "number") return "bad compile time";
  if (e.clock !== "cpu" && e.clock !== "wall") return "bad clock";
  if (typeof e.measuredAt !== "string") return "bad date";
  return null;
}

/** What {@link loadMatmulTuning} found. */
export interface LoadResult {
  /** The tunings found (empty when the cache had none). */
  table: MatmulTuningTable;
  /** The entry's location ({@link TuningStore.locate}), null without a store. */
  file: string | null;
  /** How the cache entry was found. */
  status: CacheStatus;
  /** Problems met reading it (a corrupt or stale entry). */
  warnings: string[];
}

/** An open cache entry: where it is, and how to rewrite it. */
interface CacheEntry {
  loaded: LoadResult;
  save: ((table: MatmulTuningTable) => Promise<void>) | null;
}

async function readCache(ctx: GpuContext, options: TuningCacheOptions): Promise<CacheEntry> {
  const table = new MatmulTuningTable();
  const store = options.store;
  if (!store) return { loaded: { table, file: null, status: "none", warnings: [] }, save: null };
  const runtime = options.runtime ?? defaultRuntime();
  const name = await cacheEntryName(ctx, runtime);
  const file = store.locate(name);
  const save = async (t: MatmulTuningTable) => {
    const data = {
      format: FORMAT,
      version: FORMAT_VERSION,
      key: await cacheKey(ctx, runtime),
      entries: Object.fromEntries([...t.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    };
    await store.write(name, JSON.stringify(data, null, 1) + "\n");
  };
  const warnings: string[] = [];
  const result = (status: CacheStatus): CacheEntry => ({ loaded: { table, file, status, warnings }, save });
  let text: string | null;
  try {
    text = await store.read(name);
  } catch (e) {
    warnings.push(`cannot read the matmul tuning cache ${file} (${(e as Error).message}); ignoring it`);
    return result("corrupt");
  }
  if (text === null) return result("missing");
  let data: { format?: string; version?: number; key?: CacheKey; entries?: Record<string, TunedEntry> };
  try {
    data = JSON.parse(text);
    if (!data || typeof data !== "object" || data.format !== FORMAT || typeof data.entries !== "object") {
      throw new Error("not a matmul tuning cache");
    }
  } catch (e) {
    warnings.push(`the matmul tuning cache ${file} is corrupt (${(e as Error).message}); it will be rebuilt`);
    return result("corrupt");
  }
  if (
    data.version !== FORMAT_VERSION ||
    JSON.stringify(data.key) !== JSON.stringify(await cacheKey(ctx, runtime))
  ) {
    return result("stale");
  }
  for (const [cls, e] of Object.entries(data.entries ?? {})) {
    const problem = entryProblem(ctx, cls, e);
    if (problem) warnings.push(`matmul tuning cache: dropping entry '${cls}': ${problem}`);
    else table.entries.set(cls, e);
  }
  return result("loaded");
}

/**
 * Loads the context's cached tunings from `options.store` (without measuring anything) and
 * installs them. Problems with the entry are returned as warnings, never thrown.
 */
export async function loadMatmulTuning(
  ctx: GpuContext,
  options: TuningCacheOptions = {},
): Promise<LoadResult> {
  const { loaded } = await readCache(ctx, options);
  installMatmulTuning(ctx, loaded.table);
  return loaded;
}

// ---------------------------------------------------------------------------------------------
// The entry point.

/**
 * Tunes the matmul classes of `shapes` that the cache lacks (or all of them with `retune`),
 * saves the cache, and installs every cached tuning on `ctx` for `matmulKernel` to use. Each
 * class is measured on the largest of its shapes. Cache problems become warnings; a class that
 * cannot be measured is reported as skipped and keeps the static default.
 */
export async function autotune(
  ctx: GpuContext,
  shapes: MatmulDims[],
  options: AutotuneOptions = {},
): Promise<AutotuneReport> {
  const cpu = ctx.isCpuAdapter;
  const o = {
    ...options,
    budgetMs: options.budgetMs ?? (cpu ? 10_000 : 2_000),
    maxCompileMs: options.maxCompileMs ?? (cpu ? 5_000 : 1_000),
    minGain: options.minGain ?? 0.03,
    launcher: options.launcher ?? defaultLauncher,
  };
  const variant = options.variant ?? defaultMatmulVariant(ctx);
  const { loaded, save } = await readCache(ctx, options);
  const warnings = [...loaded.warnings];
  for (const w of loaded.warnings) options.onWarning?.(w);
  const table = loaded.table;
  // One representative per class: the shape with the most work.
  const classes = new Map<string, MatmulDims>();
  for (const s of shapes) {
    if (s.batch <= 0 || s.m <= 0 || s.n <= 0 || s.k <= 0) continue;
    const cls = matmulShapeClass(variant, s);
    const prev = classes.get(cls);
    if (!prev || matmulFlops(s.batch, s.m, s.n, s.k) > matmulFlops(prev.batch, prev.m, prev.n, prev.k)) {
      classes.set(cls, s);
    }
  }
  const reports: ClassReport[] = [];
  let saved = false;
  let index = 0;
  for (const [cls, shape] of classes) {
    index++;
    const cached = table.entries.get(cls);
    if (cached && !options.retune) {
      const r: ClassReport = { cls, shape, status: "cached", entry: cached, candidates: [], elapsedMs: 0 };
      reports.push(r);
      o.onProgress?.({ type: "done", report: r });
      continue;
    }
    if (options.measure === false) continue;
    if (matmulFlops(shape.batch, shape.m, shape.n, shape.k) < (options.minFlops ?? 2 ** 18)) {
      const r: ClassReport = {
        cls,
        shape,
        status: "skipped",
        candidates: [],
        elapsedMs: 0,
        message: "too small to matter",
      };
      reports.push(r);
      o.onProgress?.({ type: "done", report: r });
      continue;
    }
    const r = await tuneClass(ctx, cls, shape, { index, count: classes.size }, variant, o);
    reports.push(r);
    o.onProgress?.({ type: "done", report: r });
    if (r.entry) {
      table.entries.set(cls, r.entry);
      if (save) {
        // Saved after each class, so an interrupted run keeps what it measured.
        try {
          await save(table);
          saved = true;
        } catch (e) {
          const w = `cannot write the matmul tuning cache ${loaded.file}: ${(e as Error).message}`;
          if (!warnings.includes(w)) {
            warnings.push(w);
            options.onWarning?.(w);
          }
        }
      }
    }
  }
  installMatmulTuning(ctx, table);
  return { file: loaded.file, cacheStatus: loaded.status, saved, classes: reports, warnings, table };
}
