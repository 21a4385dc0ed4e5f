/**
 * The bench harness: what a bench suite is, how a GPU workload is timed, and how results are
 * printed (a table, or one JSON object per line with `--json`).
 *
 * A suite is a separate file in bench/ exporting a {@link BenchSuite}; bench/main.ts lists the
 * suites. To add one (attention, the x-step, generation...), write `bench/<name>.ts` with a suite
 * that calls `report()` once per entry, and add it to the list in main.ts.
 */
import type { GpuContext } from "../kernels/device.ts";

/** One line of bench output. Fields that do not apply are left out. */
export interface BenchResult {
  /** What ran, e.g. "matmul vec4" or "softmax". */
  name: string;
  /** The problem size, e.g. "1024x1024x1024" (M×N×K) or "4096x1024". */
  shape: string;
  /** Median wall-clock milliseconds per run, GPU→CPU sync included (amortised over the iterations of one sync). */
  ms?: number;
  /** Arithmetic throughput. */
  gflops?: number;
  /** Memory throughput (bytes read + written by the kernel, once each). */
  gbps?: number;
  /** The adapter's name (and the backend when chosen with DENO_WEBGPU_BACKEND). */
  adapter: string;
  /** Why an entry was not run (e.g. its estimated time was too long for a CPU adapter). */
  skipped?: string;
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
}

/**
 * Times `run` (which encodes GPU work into the context's batch). One warm-up run compiles the
 * pipelines; then the number of runs per GPU→CPU sync is doubled until a batch takes `batchMs`,
 * so the sync (about 12 ms on a real GPU) is amortised, not subtracted. Each run is submitted on
 * its own (a submit does not wait), as a training step would be, which also lets the buffer pool
 * recycle the runs' outputs. Returns the median time per run over `repeats` batches.
 */
export async function timeGpu(
  ctx: GpuContext,
  run: () => void,
  options: { repeats?: number; batchMs?: number; maxIterations?: number } = {},
): Promise<Timing> {
  const repeats = options.repeats ?? 5;
  const batchMs = options.batchMs ?? 250;
  const maxIterations = options.maxIterations ?? 1024;
  const batch = async (n: number) => {
    const t = performance.now();
    for (let i = 0; i < n; i++) {
      run();
      ctx.flush();
    }
    await ctx.sync();
    return performance.now() - t;
  };
  const firstMs = await batch(1);
  let iterations = 1;
  let elapsed = firstMs;
  if (firstMs < batchMs) {
    // Calibrate on compiled runs.
    elapsed = await batch(1);
    while (elapsed < batchMs && iterations < maxIterations) {
      iterations = Math.min(maxIterations, iterations * 2);
      elapsed = await batch(iterations);
    }
  }
  const samples: number[] = [];
  for (let r = 0; r < repeats; r++) samples.push((await batch(iterations)) / iterations);
  return { ms: median(samples), iterations, firstMs };
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

const COLUMNS = [
  ["kernel", 30],
  ["shape", 16],
  ["ms", 10],
  ["GFLOP/s", 9],
  ["GB/s", 8],
] as const;

/** The header of the table printed by {@link formatRow}. */
export function formatHeader(adapter: string): string {
  const head = COLUMNS.map(([h, w], i) => (i < 2 ? h.padEnd(w) : h.padStart(w))).join("  ");
  return `adapter: ${adapter}\n${head}\n${"-".repeat(head.length)}`;
}

/** One result as a table row. */
export function formatRow(r: BenchResult): string {
  const num = (v: number | undefined, digits: number) => (v === undefined ? "" : v.toFixed(digits));
  const cells = [
    r.name.padEnd(COLUMNS[0][1]),
    r.shape.padEnd(COLUMNS[1][1]),
    num(r.ms, r.ms !== undefined && r.ms < 10 ? 3 : 1).padStart(COLUMNS[2][1]),
    num(r.gflops, 2).padStart(COLUMNS[3][1]),
    num(r.gbps, 2).padStart(COLUMNS[4][1]),
  ];
  return cells.join("  ") + (r.skipped ? `  skipped: ${r.skipped}` : "");
}

/** One result as a JSON line: `{name, shape, ms, gflops, gbps, adapter}` without the fields that do not apply. */
export function formatJson(r: BenchResult): string {
  const round = (
    v: number | undefined,
    digits: number,
  ) => (v === undefined ? undefined : Number(v.toFixed(digits)));
  return JSON.stringify({
    name: r.name,
    shape: r.shape,
    ms: round(r.ms, 4),
    gflops: round(r.gflops, 3),
    gbps: round(r.gbps, 3),
    adapter: r.adapter,
    skipped: r.skipped,
  });
}
