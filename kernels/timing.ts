/**
 * GPU time from timestamp queries: a {@link GpuTimer} times a region of the context's command
 * stream by asking the adapter to write a timestamp at the beginning and the end of every compute
 * pass opened inside it (`timestampWrites`, through `GpuContext.passTimestamps`), and reads the
 * values back later, after the work ran.
 *
 * What it measures: the sum of the passes' durations (the time the GPU spent inside our compute
 * passes, gaps between passes and copies left out) and the span from the first pass's beginning
 * to the last pass's end (gaps, copies and the queue's idle time between submits included).
 *
 * Works only where the device has the `timestamp-query` feature (requested by `createContext`
 * when the adapter offers it); elsewhere the timer is inert and {@link GpuTimer.read} returns
 * null. WebGPU defines the values in nanoseconds; wgpu (Deno) passes on the driver's ticks, which
 * are nanoseconds on NVIDIA and Mesa lavapipe (timestampPeriod 1) but may not be on other drivers.
 *
 * Seen in Deno 2.9.6: lavapipe (Vulkan) and llvmpipe (GL) both offer the feature and write
 * plausible per-pass times (a pass of 10 dispatches measures about 10× a pass of one); the
 * readback costs one extra submit and one map per {@link GpuTimer.read}.
 *
 * @module
 */
import type { GpuContext } from "./device.ts";

/** What a {@link GpuTimer} measured over the regions since its last read. */
export interface GpuTime {
  /** Compute passes that were timed. */
  passes: number;
  /** Passes opened in a region after the query capacity was used up (not timed). */
  untimed: number;
  /** Sum of the timed passes' durations, in milliseconds. */
  sumMs: number;
  /** First pass's beginning to last pass's end, in milliseconds. */
  spanMs: number;
  /**
   * Why the values cannot be trusted (all zero, going backwards...), or null when they look
   * sane. `sumMs` and `spanMs` are still filled in, as read.
   */
  problem: string | null;
}

/** Options of {@link GpuTimer}. */
export interface GpuTimerOptions {
  /** Timestamps per query set (two per pass; at most 4096, WebGPU's limit). Default 4096. */
  chunk?: number;
  /** Query sets the timer may create before it stops timing passes. Default 16 (32,768 passes). */
  maxChunks?: number;
}

/** WebGPU's largest query set. */
const MAX_QUERY_SET = 4096;

/**
 * Times regions of a context's command stream on the GPU (see the module comment).
 *
 * ```ts
 * const timer = new GpuTimer(ctx);
 * timer.begin();
 * step();            // encodes kernels into ctx
 * timer.end();
 * const t = await timer.read(); // null without timestamp-query
 * ```
 *
 * Several begin/end regions may be recorded before one read: the read sums them. Only one timer
 * may be open on a context at a time. Passes encoded by other code with its own encoder are not
 * seen.
 */
export class GpuTimer {
  /** True when the device has `timestamp-query`; otherwise every method is a no-op. */
  readonly available: boolean;
  private readonly ctx: GpuContext;
  private readonly chunk: number;
  private readonly maxChunks: number;
  private readonly sets: GPUQuerySet[] = [];
  /** Timestamps written since the last read (two per pass). */
  private used = 0;
  private untimed = 0;
  private open = false;
  private reading = false;
  private resolveBuffer: GPUBuffer | null = null;
  private stagingBuffer: GPUBuffer | null = null;
  private bufferBytes = 0;

  /** A timer on `ctx`; it measures nothing (and says so) without the `timestamp-query` feature. */
  constructor(ctx: GpuContext, options: GpuTimerOptions = {}) {
    this.ctx = ctx;
    this.available = ctx.features.has("timestamp-query");
    const chunk = options.chunk ?? MAX_QUERY_SET;
    if (!Number.isInteger(chunk) || chunk < 2 || chunk > MAX_QUERY_SET || chunk % 2 !== 0) {
      throw new RangeError(`GpuTimer: chunk ${chunk} must be an even integer in [2, ${MAX_QUERY_SET}]`);
    }
    this.chunk = chunk;
    this.maxChunks = options.maxChunks ?? 16;
  }

  /** True between {@link begin} and {@link end}. */
  get active(): boolean {
    return this.open;
  }

  /**
   * Starts a region: ends the context's open pass (so work encoded before is not counted) and
   * times every pass opened until {@link end}.
   */
  begin(): void {
    if (!this.available) return;
    if (this.open) throw new Error("GpuTimer.begin: the timer is already running (call end() first)");
    if (this.ctx.passTimestamps !== null) {
      throw new Error("GpuTimer.begin: another timer is running on this context");
    }
    this.ctx.endPass();
    this.open = true;
    this.ctx.passTimestamps = () => this.nextWrites();
  }

  /** Ends the region: ends the open pass (its end timestamp is written) and stops timing. */
  end(): void {
    if (!this.available) return;
    if (!this.open) throw new Error("GpuTimer.end: the timer is not running (call begin() first)");
    this.ctx.endPass();
    this.ctx.passTimestamps = null;
    this.open = false;
  }

  /** The timestamp writes of the next pass: two query slots, or none once the capacity is used up. */
  private nextWrites(): GPUComputePassTimestampWrites | undefined {
    const index = this.used % this.chunk;
    const set = Math.floor(this.used / this.chunk);
    if (set >= this.maxChunks) {
      this.untimed++;
      return undefined;
    }
    if (set === this.sets.length) {
      this.sets.push(this.ctx.device.createQuerySet({ type: "timestamp", count: this.chunk }));
    }
    this.used += 2;
    return { querySet: this.sets[set], beginningOfPassWriteIndex: index, endOfPassWriteIndex: index + 1 };
  }

  /**
   * Submits the context's open batch, resolves the timestamps of every region since the last
   * read, and waits for them. Returns null when the device has no timestamp queries. Resets the
   * timer for the next regions.
   */
  async read(): Promise<GpuTime | null> {
    if (!this.available) return null;
    if (this.open) throw new Error("GpuTimer.read: end() the region first");
    if (this.reading) throw new Error("GpuTimer.read: a read is already in progress");
    const used = this.used;
    const untimed = this.untimed;
    this.used = 0;
    this.untimed = 0;
    if (used === 0) return { passes: 0, untimed, sumMs: 0, spanMs: 0, problem: null };
    this.reading = true;
    try {
      // The timed passes sit in the context's batch: submit it, so the resolve is queued after it.
      this.ctx.flush();
      // Each set resolves at a multiple of `stride` bytes (resolve offsets are 256-aligned).
      const stride = Math.ceil((this.chunk * 8) / 256) * 256;
      const sets = Math.ceil(used / this.chunk);
      const bytes = sets * stride;
      const { resolve, staging } = this.buffers(bytes);
      const encoder = this.ctx.device.createCommandEncoder();
      for (let s = 0; s < sets; s++) {
        encoder.resolveQuerySet(
          this.sets[s],
          0,
          Math.min(this.chunk, used - s * this.chunk),
          resolve,
          s * stride,
        );
      }
      encoder.copyBufferToBuffer(resolve, 0, staging, 0, bytes);
      this.ctx.device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ, 0, bytes);
      const mapped = staging.getMappedRange(0, bytes);
      const values = new BigUint64Array(used);
      for (let s = 0; s < sets; s++) {
        const count = Math.min(this.chunk, used - s * this.chunk);
        values.set(new BigUint64Array(mapped, s * stride, count), s * this.chunk);
      }
      staging.unmap();
      this.ctx.throwPendingErrors();
      return { ...summarizeTimestamps(values), untimed };
    } finally {
      this.reading = false;
    }
  }

  /** Resolve and staging buffers of at least `bytes` bytes (kept, grown when a read needs more). */
  private buffers(bytes: number): { resolve: GPUBuffer; staging: GPUBuffer } {
    if (!this.resolveBuffer || !this.stagingBuffer || this.bufferBytes < bytes) {
      this.resolveBuffer?.destroy();
      this.stagingBuffer?.destroy();
      // Room for a few more sets than asked, so a growing region does not re-create them each read.
      const size = bytes * 2;
      this.resolveBuffer = this.ctx.device.createBuffer({
        size,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      this.stagingBuffer = this.ctx.device.createBuffer({
        size,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      this.bufferBytes = size;
    }
    return { resolve: this.resolveBuffer, staging: this.stagingBuffer };
  }

  /** Frees the query sets and buffers (ending a running region first). */
  dispose(): void {
    if (this.open) this.end();
    // Passes still in the open batch name the query sets: submit them before the sets go.
    if (this.used > 0) this.ctx.flush();
    for (const s of this.sets) s.destroy();
    this.sets.length = 0;
    this.resolveBuffer?.destroy();
    this.stagingBuffer?.destroy();
    this.resolveBuffer = this.stagingBuffer = null;
    this.bufferBytes = 0;
  }
}

/**
 * Sums pass durations from resolved timestamps, laid out as (beginning, end) pairs in pass order,
 * and says when they look meaningless: all zero (an adapter that accepts the queries but never
 * writes them), an end before its beginning, or every pass lasting 0 ns.
 */
export function summarizeTimestamps(values: BigUint64Array): Omit<GpuTime, "untimed"> {
  const passes = values.length >> 1;
  if (passes === 0) return { passes: 0, sumMs: 0, spanMs: 0, problem: null };
  let sum = 0n;
  let first = values[0];
  let last = values[1];
  let backwards = 0;
  let zeros = 0;
  for (let p = 0; p < passes; p++) {
    const b = values[2 * p], e = values[2 * p + 1];
    if (b === 0n && e === 0n) zeros++;
    if (e < b) backwards++;
    else sum += e - b;
    if (b < first) first = b;
    if (e > last) last = e;
  }
  const sumMs = Number(sum) / 1e6;
  const spanMs = last > first ? Number(last - first) / 1e6 : 0;
  let problem: string | null = null;
  if (zeros === passes) problem = "the adapter wrote only zero timestamps";
  else if (zeros > 0) problem = `${zeros} of ${passes} passes have zero timestamps`;
  else if (backwards > 0) problem = `${backwards} of ${passes} passes end before they begin`;
  else if (sum === 0n) problem = "every pass lasted 0 ns (the timestamps do not advance)";
  return { passes, sumMs, spanMs, problem };
}

/** A GPU time for tables: milliseconds, or "n/a" without timestamps (or with meaningless ones). */
export function formatGpuTime(t: GpuTime | null, digits = 3): string {
  if (!t || t.problem !== null || t.passes === 0) return "n/a";
  return t.sumMs.toFixed(digits);
}
