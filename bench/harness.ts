/**
 * The bench harness: what a bench suite is, how a GPU workload is timed (wall time, CPU encode
 * time, GPU time from timestamp queries), and how results are printed (one table per run, or one
 * JSON object per line with `--json`).
 *
 * A suite is a separate file in bench/ exporting a {@link BenchSuite}; bench/main.ts lists the
 * suites. To add one (attention, the x-step, generation...), write `bench/<name>.ts` with a suite
 * that calls `report()` once per entry, and add it to the list in main.ts.
 */
import type { GpuContext } from "../kernels/device.ts";
import { GpuTimer } from "../kernels/timing.ts";

/** One line of bench output. Fields that do not apply are left out. */
export interface BenchResult {
  /** What ran, e.g. "matmul vec4" or "softmax". */
  name: string;
  /** The problem size, e.g. "1024x1024x1024" (M×N×K) or "4096x1024". */
  shape: string;
  /** Median wall-clock milliseconds per run, GPU→CPU sync included (amortised over the iterations of one sync). */
  ms?: number;
  /**
   * Median GPU milliseconds per run: the summed durations of its compute passes, from timestamp
   * queries (absent where the adapter has none).
   */
  gpuMs?: number;
  /** Median CPU milliseconds per run spent encoding its commands (before the submit). */
  encodeMs?: number;
  /** Median CPU milliseconds per run spent submitting them (see {@link Timing.submitMs}). */
  submitMs?: number;
  /** Arithmetic throughput. */
  gflops?: number;
  /** Memory throughput (bytes read + written by the kernel, once each). */
  gbps?: number;
  /** Tokens per second (generation, training steps). */
  tokensPerSecond?: number;
  /** The adapter's name (and the backend when chosen with DENO_WEBGPU_BACKEND). */
  adapter: string;
  /** Why an entry was not run (e.g. its estimated time was too long for a CPU adapter). */
  skipped?: string;
  /** Anything else worth saying about the entry (e.g. why it has no GPU time). */
  note?: string;
}

/** Options every suite receives (from the command line). */
export interface BenchOptions {
  /** Run only entries whose name contains this (case-insensitive); empty = all. */
  filter: string;
  /** Matrix sizes for the matmul ladder. */
  sizes: number[];
  /** Skip an entry whose estimated total time (warm-up + repeats) is above this many seconds. */
  maxSeconds: number;
  /** Timed repeats per entry (the median is reported). */
  repeats: number;
}

/** A group of bench entries (one file in bench/). */
export interface BenchSuite {
  name: string;
  run(ctx: GpuContext, options: BenchOptions, report: (r: BenchResult) => void): Promise<void>;
}

/** What {@link timeGpu} measured. */
export interface Timing {
  /** Median milliseconds per run. */
  ms: number;
  /** Runs encoded per GPU→CPU sync. */
  iterations: number;
  /** Milliseconds of the first run (pipeline compilation included). */
  firstMs: number;
  /** Median CPU milliseconds per run spent encoding it (in `run`: recording commands, no submit). */
  encodeMs: number;
  /**
   * Median CPU milliseconds per run spent in the flush after it (parameter upload and
   * `queue.submit`). Usually small; a driver whose queue is full blocks here (lavapipe does).
   */
  submitMs: number;
  /**
   * Median GPU milliseconds per run: the summed durations of the run's compute passes, from
   * timestamp queries. Undefined without `timestamp-query` or when the timestamps look wrong.
   */
  gpuMs?: number;
  /** Why `gpuMs` is missing, when the adapter has timestamp queries. */
  gpuProblem?: string;
}

const timers = new WeakMap<GpuContext, GpuTimer>();

/** The context's bench timer (one per context: only one timer may be open on it at a time). */
export function benchTimer(ctx: GpuContext): GpuTimer {
  let t = timers.get(ctx);
  if (!t) {
    t = new GpuTimer(ctx);
    timers.set(ctx, t);
  }
  return t;
}

/**
 * Times `run` (which encodes GPU work into the context's batch). One warm-up run compiles the
 * pipelines; then the number of runs per GPU→CPU sync is doubled until a batch takes `batchMs`,
 * so the sync (about 12 ms on a real GPU) is amortised, not subtracted. Each run is submitted on
 * its own (a submit does not wait), as a training step would be, which also lets the buffer pool
 * recycle the runs' outputs. Returns the median time per run over `repeats` batches, with the
 * CPU time spent encoding the runs and, where the adapter has timestamp queries, the GPU time
 * of their passes (measured in the same batches; read back after the batch's clock stopped).
 */
export async function timeGpu(
  ctx: GpuContext,
  run: () => void,
  options: { repeats?: number; batchMs?: number; maxIterations?: number; timestamps?: boolean } = {},
): Promise<Timing> {
  const repeats = options.repeats ?? 5;
  const batchMs = options.batchMs ?? 250;
  const maxIterations = options.maxIterations ?? 1024;
  const timer = options.timestamps === false ? null : benchTimer(ctx);
  let encode = 0;
  let submit = 0;
  const batch = async (n: number) => {
    encode = 0;
    submit = 0;
    const t = performance.now();
    for (let i = 0; i < n; i++) {
      const e = performance.now();
      run();
      const f = performance.now();
      ctx.flush();
      encode += f - e;
      submit += performance.now() - f;
    }
    await ctx.sync();
    return performance.now() - t;
  };
  const firstMs = await batch(1);
  let iterations = 1;
  // Calibrate on compiled runs. Deciding on the first run instead (which may include compiling
  // the pipelines) left fast kernels at one run per sync: on the H200 a 0.62 ms 2048³ matmul
  // measured 12.7 ms, the sync's cost (docs/gpu/run6, run7).
  let elapsed = await batch(1);
  while (elapsed < batchMs && iterations < maxIterations) {
    iterations = Math.min(maxIterations, iterations * 2);
    elapsed = await batch(iterations);
  }
  const samples: number[] = [];
  const encodes: number[] = [];
  const submits: number[] = [];
  const gpu: number[] = [];
  let gpuProblem: string | undefined;
  for (let r = 0; r < repeats; r++) {
    timer?.begin();
    let ms: number;
    try {
      ms = await batch(iterations);
    } finally {
      timer?.end();
    }
    samples.push(ms / iterations);
    encodes.push(encode / iterations);
    submits.push(submit / iterations);
    const t = await timer?.read();
    if (t && t.problem === null && t.untimed === 0) gpu.push(t.sumMs / iterations);
    else if (t) gpuProblem = t.problem ?? `${t.untimed} passes past the timer's capacity`;
  }
  return {
    ms: median(samples),
    iterations,
    firstMs,
    encodeMs: median(encodes),
    submitMs: median(submits),
    gpuMs: gpu.length > 0 ? median(gpu) : undefined,
    gpuProblem: gpu.length > 0 ? undefined : gpuProblem,
  };
}

/** Median of a non-empty list. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** True when an entry called `name` passes the `--filter`. */
export function selected(options: BenchOptions, name: string): boolean {
  return options.filter === "" || name.toLowerCase().includes(options.filter.toLowerCase());
}

/** The fields of a {@link BenchResult} that a {@link Timing} fills in. */
export type TimingField = "ms" | "gpuMs" | "encodeMs" | "submitMs" | "note";

/** Those fields from a {@link Timing} (the note says why GPU time is missing, if it is). */
export function timingFields(t: Timing): Pick<BenchResult, TimingField> {
  return {
    ms: t.ms,
    gpuMs: t.gpuMs,
    encodeMs: t.encodeMs,
    submitMs: t.submitMs,
    note: t.gpuProblem === undefined ? undefined : `no GPU time: ${t.gpuProblem}`,
  };
}

/** Milliseconds with about three significant digits. */
function fmtMs(v: number | undefined): string {
  if (v === undefined) return "";
  return v.toFixed(v < 1 ? 4 : v < 10 ? 3 : v < 1000 ? 1 : 0);
}

/** The throughput cell: GFLOP/s, GB/s or tokens/s, whichever the entry has. */
function fmtRate(r: BenchResult): string {
  const n = (v: number) => v.toFixed(v < 10 ? 2 : v < 1000 ? 1 : 0);
  if (r.gflops !== undefined) return `${n(r.gflops)} GFLOP/s`;
  if (r.gbps !== undefined) return `${n(r.gbps)} GB/s`;
  if (r.tokensPerSecond !== undefined) return `${n(r.tokensPerSecond)} tok/s`;
  return "";
}

/**
 * All results of a run as one aligned table: kernel or step, shape, wall ms, GPU ms, encode ms,
 * submit ms, throughput, adapter, and a note (why an entry was skipped or has no GPU time). Column widths
 * follow the content.
 */
export function formatTable(rows: BenchResult[]): string {
  const head = ["kernel / step", "shape", "ms", "GPU ms", "encode ms", "submit ms", "throughput"];
  head.push("adapter", "");
  const right = head.map((_, i) => i >= 2 && i <= 6);
  const cells = rows.map((r) => [
    r.name,
    r.shape,
    fmtMs(r.ms),
    fmtMs(r.gpuMs),
    fmtMs(r.encodeMs),
    fmtMs(r.submitMs),
    fmtRate(r),
    r.adapter,
    r.skipped ? `skipped: ${r.skipped}` : r.note ?? "",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) =>
    c.map((v, i) => (right[i] ? v.padStart(widths[i]) : v.padEnd(widths[i]))).join("  ").trimEnd();
  const top = line(head);
  return [top, "-".repeat(top.length), ...cells.map(line)].join("\n");
}

/**
 * One result as a JSON line: `{name, shape, ms, gpuMs, encodeMs, submitMs, gflops, gbps,
 * tokensPerSecond, adapter, skipped, note}` without the fields that do not apply.
 */
export function formatJson(r: BenchResult): string {
  const round = (
    v: number | undefined,
    digits: number,
  ) => (v === undefined ? undefined : Number(v.toFixed(digits)));
  return JSON.stringify({
    name: r.name,
    shape: r.shape,
    ms: round(r.ms, 4),
    gpuMs: round(r.gpuMs, 4),
    encodeMs: round(r.encodeMs, 4),
    submitMs: round(r.submitMs, 4),
    gflops: round(r.gflops, 3),
    gbps: round(r.gbps, 3),
    tokensPerSecond: round(r.tokensPerSecond, 2),
    adapter: r.adapter,
    skipped: r.skipped,
    note: r.note,
  });
}
