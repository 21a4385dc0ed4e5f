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

/** Every tensor buffer can be read by kernels, written by kernels and copied in and out. */
export const TENSOR_USAGE = 0x0080 /* STORAGE */ | 0x0004 /* COPY_SRC */ | 0x0008; /* COPY_DST */

/** Keep at most this many free buffers of one size class (older ones are destroyed). */
const MAX_FREE_PER_CLASS = 32;

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

export class BufferPool {
  private free = new Map<number, GPUBuffer[]>();
  private live = new Set<GPUBuffer>();
  private stats_: PoolStats = { bytesLive: 0, bytesPooled: 0, allocations: 0, reuses: 0, buffersLive: 0 };

  constructor(private device: GPUDevice, private maxBufferSize: number) {}

  /** A buffer of at least `bytes` bytes (its `size` is the size class). */
  acquire(bytes: number, label?: string): GPUBuffer {
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
      this.device.popErrorScope().then((err) => {
        if (err) console.error(`GPU out of memory allocating ${formatBytes(cls)} for ${label ?? "a buffer"}`);
      });
      this.stats_.allocations++;
    }
    this.live.add(buf);
    this.stats_.bytesLive += cls;
    this.stats_.buffersLive++;
    return buf;
  }

  /** Gives a buffer back; it may be handed out again by the next `acquire` of its class. */
  release(buf: GPUBuffer): void {
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

  /** Destroys every pooled (free) buffer. Live buffers are untouched. */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.stats_.bytesPooled = 0;
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
