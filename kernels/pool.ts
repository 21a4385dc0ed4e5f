/**
 * A pool of GPU storage buffers by size class. Creating a WebGPU buffer costs tens of
 * microseconds and fragments memory; a training step allocates the same sizes every time, so
 * released buffers are kept and handed out again.
 */

/** Counters that tests and benches read to check that loops do not leak. */
export interface PoolStats {
  /** Bytes in buffers currently handed out. */
  bytesLive: number;
  /** Bytes in buffers waiting in the pool for reuse. */
  bytesPooled: number;
  /** Buffers created with `device.createBuffer` so far. */
  allocations: number;
  /** Requests served from the pool without creating a buffer. */
  reuses: number;
  /** Buffers currently handed out. */
  buffersLive: number;
}

/**
 * Raised when the GPU could not allocate a buffer. WebGPU reports it asynchronously, so it is
 * thrown by the next allocation (or {@link BufferPool.checkOutOfMemory}) after the failed one.
 */
export class GpuOutOfMemoryError extends Error {
  /** Error name, for messages. */
  override name = "GpuOutOfMemoryError";
}

/** Every tensor buffer can be read by kernels, written by kernels and copied in and out. */
export const TENSOR_USAGE = 0x0080 /* STORAGE */ | 0x0004 /* COPY_SRC */ | 0x0008; /* COPY_DST */

/**
 * Keep at most this many free buffers of one size class (later releases are destroyed). A free
 * list never holds more than the class's peak of live buffers, so the cap only bounds what a
 * transient peak leaves behind. It was 32: a gpt2-d128 training step has more live activations of
 * one class than that, so ~80 buffers were destroyed and re-created every step (fine-tuning ran
 * 13% faster on llvmpipe with 256, and allocated nothing after the first step).
 */
export const MAX_FREE_PER_CLASS = 256;

/**
 * Rounds a request up to its size class: powers of two up to 1 MiB, then steps of 1/8 of the
 * enclosing power of two, so large weights waste at most 12.5%.
 */
export function sizeClass(bytes: number): number {
  const b = Math.max(16, Math.ceil(bytes / 16) * 16);
  if (b <= 1 << 20) return 2 ** Math.ceil(Math.log2(b));
  const p = 2 ** Math.floor(Math.log2(b));
  const step = p / 8;
  return Math.ceil(b / step) * step;
}

/**
 * GPU buffers by size class ({@link sizeClass}): released buffers are kept and handed out again
 * instead of being destroyed, so a training or ADMM loop allocates nothing after its first step.
 * Tracks live and pooled bytes ({@link PoolStats}) and the first out-of-memory failure.
 */
export class BufferPool {
  private free = new Map<number, GPUBuffer[]>();
  private live = new Set<GPUBuffer>();
  /** Buffers a captured step graph still encodes: their release waits until they are unpinned. */
  private pins = new Map<GPUBuffer, number>();
  private releasedWhilePinned = new Set<GPUBuffer>();
  private stats_: PoolStats = { bytesLive: 0, bytesPooled: 0, allocations: 0, reuses: 0, buffersLive: 0 };
  /** Most bytes held at once (live + pooled), see {@link peakBytes}. */
  private peak = 0;
  /** The first out-of-memory failure, once WebGPU has reported it (sticky: the buffer is unusable). */
  private outOfMemory: string | null = null;

  /** A pool allocating from `device`, refusing buffers above `maxBufferSize` bytes. */
  constructor(private device: GPUDevice, private maxBufferSize: number) {}

  /** A buffer of at least `bytes` bytes (its `size` is the size class). */
  acquire(bytes: number, label?: string): GPUBuffer {
    this.checkOutOfMemory();
    const cls = sizeClass(bytes);
    if (cls > this.maxBufferSize) {
      throw new RangeError(
        `${label ?? "buffer"} needs ${formatBytes(bytes)}, more than this adapter's maximum buffer size ` +
          `${formatBytes(this.maxBufferSize)}`,
      );
    }
    const list = this.free.get(cls);
    let buf = list?.pop();
    if (buf) {
      this.stats_.reuses++;
      this.stats_.bytesPooled -= cls;
    } else {
      this.device.pushErrorScope("out-of-memory");
      buf = this.device.createBuffer({ size: cls, usage: TENSOR_USAGE, label });
      const held = this.stats_.bytesLive + this.stats_.bytesPooled;
      this.device.popErrorScope().then((err) => {
        if (!err || this.outOfMemory) return;
        this.outOfMemory =
          `GPU out of memory: allocating ${formatBytes(cls)} for ${label ?? "a buffer"} failed ` +
          `with ${formatBytes(held)} already held by this engine; use a smaller model, batch or sequence, ` +
          `or a GPU with more memory (WebGPU: ${err.message})`;
        // Also printed here: the error is thrown only by the next allocation or check.
        console.error(this.outOfMemory);
      });
      this.stats_.allocations++;
    }
    this.live.add(buf);
    this.stats_.bytesLive += cls;
    this.stats_.buffersLive++;
    this.peak = Math.max(this.peak, this.stats_.bytesLive + this.stats_.bytesPooled);
    return buf;
  }

  /** Gives a buffer back; it may be handed out again by the next `acquire` of its class. */
  release(buf: GPUBuffer): void {
    if (this.pins.has(buf)) {
      // A captured graph still writes it on every replay: hand it out again only once unpinned.
      if (this.live.has(buf)) this.releasedWhilePinned.add(buf);
      return;
    }
    if (!this.live.delete(buf)) return; // released twice: ignore
    this.stats_.bytesLive -= buf.size;
    this.stats_.buffersLive--;
    const list = this.free.get(buf.size) ?? [];
    if (list.length >= MAX_FREE_PER_CLASS) {
      buf.destroy();
      return;
    }
    list.push(buf);
    this.free.set(buf.size, list);
    this.stats_.bytesPooled += buf.size;
  }

  /**
   * Keeps `buf` out of circulation: a release while it is pinned is held back until the last
   * {@link unpin}. Captured step graphs (kernels/graph.ts) pin every buffer they encode, so no
   * other tensor can be handed a buffer that a replay will overwrite.
   */
  pin(buf: GPUBuffer): void {
    this.pins.set(buf, (this.pins.get(buf) ?? 0) + 1);
  }

  /** Undoes one {@link pin}; a release that was held back happens now. */
  unpin(buf: GPUBuffer): void {
    const n = this.pins.get(buf);
    if (n === undefined) return;
    if (n > 1) {
      this.pins.set(buf, n - 1);
      return;
    }
    this.pins.delete(buf);
    if (this.releasedWhilePinned.delete(buf)) this.release(buf);
  }

  /** Destroys every pooled (free) buffer. Live buffers are untouched. */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.stats_.bytesPooled = 0;
  }

  /** The most bytes this pool held at once (handed out + pooled) since creation or {@link resetPeak}. */
  get peakBytes(): number {
    return this.peak;
  }

  /** Starts a new peak measurement from what is held now. */
  resetPeak(): void {
    this.peak = this.stats_.bytesLive + this.stats_.bytesPooled;
  }

  /**
   * Throws a {@link GpuOutOfMemoryError} if an earlier allocation failed (WebGPU reports it
   * asynchronously: call after `await ctx.sync()` to check everything allocated so far).
   */
  checkOutOfMemory(): void {
    if (this.outOfMemory) throw new GpuOutOfMemoryError(this.outOfMemory);
  }

  /** A snapshot of the counters. */
  get stats(): PoolStats {
    return { ...this.stats_ };
  }
}

/** "1.5 MiB" style sizes for error messages. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}
