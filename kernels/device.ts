/**
 * The device layer: one {@link GpuContext} wraps a WebGPU adapter + device, its real limits,
 * a buffer pool, a pipeline cache and the command batch that kernels append to.
 *
 * Kernels never submit on their own: they encode into the context's open batch, which is
 * submitted by {@link GpuContext.flush} (once per step) or implicitly before a readback or an
 * upload. That keeps the number of submits (and GPU→CPU syncs, ~12 ms each in Deno on a real
 * GPU) to a minimum.
 */
import { BufferPool } from "./pool.ts";

/** Raised when no WebGPU adapter can be found or the device cannot be created. */
export class GpuUnavailableError extends Error {
  /** Error name, for messages. */
  override name = "GpuUnavailableError";
}

/** Raised when a tensor or buffer does not fit the adapter's limits. */
export class GpuLimitError extends Error {
  /** Error name, for messages. */
  override name = "GpuLimitError";
}

/** Raised when WebGPU rejected a shader, pipeline or command: a bug in a kernel launcher. */
export class GpuValidationError extends Error {
  /** Error name, for messages. */
  override name = "GpuValidationError";
}

/** Raised after the device was lost (driver reset, out of memory, destroyed). */
export class GpuDeviceLostError extends Error {
  /** Error name, for messages. */
  override name = "GpuDeviceLostError";
}

/** Raised when a captured step graph (kernels/graph.ts) meets something it cannot replay. */
export class GraphCaptureError extends Error {
  /** Error name, for messages. */
  override name = "GraphCaptureError";
}

/**
 * What a {@link GpuContext} tells the step graph being captured (kernels/graph.ts implements it):
 * every dispatch, copy and upload, and the live segments that are re-run at each replay.
 */
export interface CaptureRecorder {
  /** Records one compute dispatch: its pipeline, bound buffers, uniform parameters and grid. */
  dispatch(
    pipeline: GPUComputePipeline,
    buffers: GPUBuffer[],
    params: ArrayBufferView | null,
    grid: [number, number, number],
  ): void;
  /** Records a buffer-to-buffer copy. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void;
  /** Records a CPU→GPU write of `data`. */
  upload(dst: GPUBuffer, offset: number, data: ArrayBufferView): void;
  /** Records a segment that is encoded again, live, at every replay. */
  live(encode: () => void): void;
}

/** Limits we request at the adapter's real values instead of the WebGPU defaults. */
export const REQUESTED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxUniformBufferBindingSize",
  "maxBindGroups",
] as const;

/** The device's limits that the engine uses, as plain numbers. */
export type DeviceLimits = Record<(typeof REQUESTED_LIMITS)[number], number> & {
  minUniformBufferOffsetAlignment: number;
};

/** What the adapter says about itself. */
export interface AdapterDescription {
  /** e.g. "nvidia", "mesa" (may be empty). */
  vendor: string;
  /** e.g. "hopper", "llvmpipe" (may be empty). */
  architecture: string;
  /** Device name or id (may be empty). */
  device: string;
  /** Human-readable name, e.g. "NVIDIA H200" or "llvmpipe (LLVM 15.0.6, 256 bits)". */
  description: string;
  /** True for a software adapter offered as a fallback. */
  isFallbackAdapter: boolean;
}

/** Options for {@link createContext}. */
export interface ContextOptions {
  /** Prefer the discrete GPU (default) or the integrated one. */
  powerPreference?: GPUPowerPreference;
  /** Request `shader-f16` when the adapter has it (default true). */
  enableF16?: boolean;
  /**
   * Treat the storage binding limit as this many bytes when it is lower than the adapter's (the
   * engine then splits or refuses tensors above it as it would on a smaller adapter): for
   * testing the row-chunked paths on small models, or exercising them on a big GPU.
   */
  maxStorageBufferBindingSize?: number;
}

const OPTIONAL_FEATURES: GPUFeatureName[] = ["shader-f16", "timestamp-query"];

const PARAM_ALIGN = 256; // also satisfies every adapter's minUniformBufferOffsetAlignment

/**
 * A WebGPU device with everything the engine needs to run kernels on it. Pass it explicitly to
 * tensor constructors; {@link defaultContext} gives a shared one.
 */
export class GpuContext {
  /** The WebGPU device every kernel runs on. */
  readonly device: GPUDevice;
  /** What the adapter says about itself. */
  readonly adapter: AdapterDescription;
  /** The limits the device was created with (the adapter's real values for {@link REQUESTED_LIMITS}). */
  readonly limits: DeviceLimits;
  /** Enabled optional features (`shader-f16`, `timestamp-query`). */
  readonly features: ReadonlySet<string>;
  /** The buffer pool tensors allocate from. */
  readonly pool: BufferPool;
  /** Set when the device was lost; every later call throws it. */
  lostReason: string | null = null;
  /** Number of command buffers submitted so far (for tests and benches). */
  submits = 0;
  /** Number of compute dispatches encoded so far. */
  dispatches = 0;
  /**
   * Pick the kernel variants tuned for CPU adapters (one thread per short row, one thread per
   * attention query, ...) instead of the GPU ones. Defaults to {@link isCpuAdapter}; tests set
   * it to cover both variants on one adapter.
   */
  cpuKernels: boolean;

  private pendingErrors: string[] = [];
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  /** The pipeline last set on the open pass. */
  private passPipeline: GPUComputePipeline | null = null;
  /** Compiled pipelines by entry point, then by WGSL source. */
  private pipelines = new Map<string, Map<string, GPUComputePipeline>>();
  private compiledPipelines = 0;
  private sources = new WeakMap<GPUComputePipeline, string>();
  /** Bind group layout 0 of each pipeline (asked for on every dispatch). */
  private layouts = new WeakMap<GPUComputePipeline, GPUBindGroupLayout>();
  private paramChunks: Uint8Array[] = [];
  private paramBytes = 0;
  private paramBuffer: GPUBuffer | null = null;
  private paramBufferSize = 0;
  /** Buffers to release to the pool once the current batch is submitted. */
  private releaseAfterSubmit: GPUBuffer[] = [];
  /**
   * Asked for the timestamp writes of every compute pass when it opens (kernels/timing.ts sets
   * it while a timed region is open); null = passes are not timed.
   */
  passTimestamps: (() => GPUComputePassTimestampWrites | undefined) | null = null;
  /** The step graph being captured, if any (kernels/graph.ts); it sees every command encoded. */
  recorder: CaptureRecorder | null = null;

  /** Wraps an existing device; {@link createContext} finds the adapter and creates one for you. */
  constructor(device: GPUDevice, adapter: AdapterDescription, limits: DeviceLimits, features: Set<string>) {
    this.device = device;
    this.adapter = adapter;
    this.limits = limits;
    this.features = features;
    this.pool = new BufferPool(device, limits.maxBufferSize);
    this.cpuKernels = this.isCpuAdapter;
    device.lost.then((info) => {
      this.lostReason = `${info.reason ?? "unknown"}: ${info.message}`;
    });
    // Validation errors mean a bug in a kernel launcher; surface them loudly instead of
    // silently producing zeros.
    // They are collected and thrown at the next readback, so a broken kernel fails loudly.
    device.addEventListener("uncapturederror", (ev) => {
      this.pendingErrors.push((ev as GPUUncapturedErrorEvent).error.message);
    });
  }

  /** True when the adapter is a CPU implementation (llvmpipe, lavapipe, SwiftShader, WARP). */
  get isCpuAdapter(): boolean {
    const d = `${this.adapter.description} ${this.adapter.vendor}`.toLowerCase();
    return this.adapter.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader|warp|software/.test(d);
  }

  /** A short human-readable name of the adapter, e.g. "NVIDIA H200" or "llvmpipe (LLVM 15.0.6, 256 bits)". */
  get adapterName(): string {
    return this.adapter.description || this.adapter.device || this.adapter.vendor || "unknown adapter";
  }

  /** Throws if the device was lost. */
  checkAlive(): void {
    if (this.lostReason !== null) {
      throw new GpuDeviceLostError(
        `the WebGPU device was lost (${this.lostReason}); create a new context (restart the process)`,
      );
    }
  }

  /** Returns a compute pipeline for the given WGSL source, compiling it once. */
  pipeline(code: string, entryPoint = "main"): GPUComputePipeline {
    // Keyed by the source itself, not a concatenation with the entry point: a launcher passes
    // the same (cached) string object every time, whose hash the engine keeps.
    let byCode = this.pipelines.get(entryPoint);
    if (!byCode) {
      byCode = new Map();
      this.pipelines.set(entryPoint, byCode);
    }
    let p = byCode.get(code);
    if (!p) {
      const module = this.device.createShaderModule({ code });
      p = this.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint } });
      byCode.set(code, p);
      this.sources.set(p, code);
      this.compiledPipelines++;
    }
    return p;
  }

  /** The WGSL source a pipeline was compiled from (profiles name kernels by it). */
  sourceOf(pipeline: GPUComputePipeline): string | undefined {
    return this.sources.get(pipeline);
  }

  /** Number of distinct pipelines compiled so far. */
  get pipelineCount(): number {
    return this.compiledPipelines;
  }

  /**
   * Stores a kernel's small parameter block (u32/i32/f32 words) in the batch's uniform arena and
   * returns where it lives. The arena is uploaded once, right before the batch is submitted.
   */
  params(words: ArrayBufferView): { offset: number; size: number } {
    const bytes = new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
    const size = Math.max(16, Math.ceil(bytes.byteLength / 16) * 16);
    const offset = this.paramBytes;
    const padded = new Uint8Array(Math.ceil(size / PARAM_ALIGN) * PARAM_ALIGN);
    padded.set(bytes);
    this.paramChunks.push(padded);
    this.paramBytes += padded.byteLength;
    return { offset, size };
  }

  /** The uniform buffer that backs the current batch's parameters (grown as needed). */
  private ensureParamBuffer(): GPUBuffer {
    // Bind groups reference the arena at encode time, so it exists before any dispatch.
    if (!this.paramBuffer) {
      this.paramBufferSize = 1 << 20;
      this.paramBuffer = this.device.createBuffer({
        size: this.paramBufferSize,
        // STORAGE too: the vec4 matmul reads its parameters as storage (kernels/matmul.ts).
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      });
    }
    return this.paramBuffer;
  }

  /**
   * Encodes one compute dispatch into the open batch. `grid` is the number of workgroups along
   * x (and y); grids above the per-dimension limit are split by the caller with {@link splitGrid}.
   */
  dispatch(
    pipeline: GPUComputePipeline,
    buffers: GPUBuffer[],
    params: ArrayBufferView | null,
    grid: [number, number?, number?],
  ): void {
    this.checkAlive();
    const [gx, gy = 1, gz = 1] = grid;
    if (gx === 0 || gy === 0 || gz === 0) return;
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    if (gx > max || gy > max || gz > max) {
      throw new GpuLimitError(`dispatch grid ${gx}×${gy}×${gz} exceeds ${max} workgroups per dimension`);
    }
    // Parameters must fit the current arena; if not, submit what we have and start a new one.
    if (params && this.paramBytes + PARAM_ALIGN * 2 > this.paramBufferSize && this.paramBuffer) {
      this.flush();
    }
    this.recorder?.dispatch(pipeline, buffers, params, [gx, gy, gz]);
    const slot = params ? this.params(params) : null;
    this.encodeDispatch(pipeline, this.bindGroupFor(pipeline, buffers, slot), [gx, gy, gz]);
  }

  /** Encodes a dispatch whose bind group is already made (step-graph replays use it directly). */
  encodeDispatch(
    pipeline: GPUComputePipeline,
    bindGroup: GPUBindGroup,
    grid: [number, number, number],
  ): void {
    const pass = this.openPass();
    // Consecutive dispatches of one kernel (a replayed step has runs of them) skip the rebind.
    if (pipeline !== this.passPipeline) {
      pass.setPipeline(pipeline);
      this.passPipeline = pipeline;
    }
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
    this.dispatches++;
  }

  /**
   * Runs `encode` now; while a step graph is being captured, the graph re-runs it at every replay
   * instead of replaying the commands it encoded. For work whose parameters change from step to
   * step (an optimiser's step count): `encode` must take its buffers from its closure, not from
   * tensors that may be gone by the time of a replay.
   */
  live(encode: () => void): void {
    if (this.recorder) this.recorder.live(encode);
    else encode();
  }

  /** Bind group layout 0 of a pipeline (asked for once per pipeline). */
  bindGroupLayout(pipeline: GPUComputePipeline): GPUBindGroupLayout {
    let layout = this.layouts.get(pipeline);
    if (!layout) {
      layout = pipeline.getBindGroupLayout(0);
      this.layouts.set(pipeline, layout);
    }
    return layout;
  }

  /** The open compute pass of the batch, opened (with timestamp writes, when timed) if needed. */
  private openPass(): GPUComputePassEncoder {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (!this.pass) {
      const timestampWrites = this.passTimestamps?.();
      this.pass = this.encoder.beginComputePass(timestampWrites ? { timestampWrites } : undefined);
      this.passPipeline = null;
    }
    return this.pass;
  }

  /** Ends the open compute pass, so the next dispatch opens a new one (timed regions use it). */
  endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  /**
   * The bind group of `buffers` (bindings 0..n-1) and the parameter slot (binding n). Created per
   * dispatch: caching them by (buffers, slot) was tried and reused only a third of them in the
   * x-step (pooled buffers come back in a different order each step), for ~1 ms per step.
   */
  private bindGroupFor(
    pipeline: GPUComputePipeline,
    buffers: GPUBuffer[],
    slot: { offset: number; size: number } | null,
  ): GPUBindGroup {
    const layout = this.bindGroupLayout(pipeline);
    const entries: GPUBindGroupEntry[] = buffers.map((buffer, i) => ({ binding: i, resource: { buffer } }));
    if (slot) {
      entries.push({ binding: buffers.length, resource: { buffer: this.ensureParamBuffer(), ...slot } });
    }
    return this.device.createBindGroup({ layout, entries });
  }

  /** Encodes a buffer-to-buffer copy into the open batch. */
  copyBuffer(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.checkAlive();
    if (bytes === 0) return;
    this.recorder?.copy(src, srcOffset, dst, dstOffset, bytes);
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    this.endPass();
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /** Returns a buffer to the pool after the open batch (which may still read it) is submitted. */
  releaseLater(buffer: GPUBuffer): void {
    this.releaseAfterSubmit.push(buffer);
  }

  /** Submits the open batch (if any). Cheap: it does not wait for the GPU. */
  flush(): void {
    this.checkAlive();
    if (this.encoder) {
      if (this.pass) this.pass.end();
      if (this.paramBuffer && this.paramBytes > 0) {
        const all = new Uint8Array(this.paramBytes);
        let o = 0;
        for (const c of this.paramChunks) {
          all.set(c, o);
          o += c.byteLength;
        }
        this.device.queue.writeBuffer(this.paramBuffer, 0, all);
      }
      this.device.queue.submit([this.encoder.finish()]);
      this.submits++;
    }
    this.encoder = null;
    this.pass = null;
    // One arena serves every batch: writeBuffer is ordered on the queue after the previous
    // submit, so the GPU has consumed the old parameters before they are overwritten.
    this.paramChunks = [];
    this.paramBytes = 0;
    for (const b of this.releaseAfterSubmit) this.pool.release(b);
    this.releaseAfterSubmit = [];
  }

  /** Writes bytes into a device buffer, after submitting pending work that may still read it. */
  writeBuffer(buffer: GPUBuffer, offset: number, data: ArrayBufferView): void {
    this.recorder?.upload(buffer, offset, data);
    this.flush();
    this.device.queue.writeBuffer(
      buffer,
      offset,
      data.buffer as ArrayBuffer,
      data.byteOffset,
      data.byteLength,
    );
  }

  /**
   * Copies `bytes` bytes of a device buffer back to the CPU (submits and waits). Throws
   * synchronously inside a step-graph capture, so the capture fails where the read is.
   */
  readBuffer(buffer: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    this.assertNotCapturing();
    return this.readBack(buffer, offset, bytes);
  }

  /** Throws {@link GraphCaptureError} while a step graph is captured (read-backs cannot be replayed). */
  assertNotCapturing(): void {
    if (this.recorder) {
      throw new GraphCaptureError(
        "a read-back inside a captured step graph: the replay could not repeat it; read after the step",
      );
    }
  }

  /** Copies `bytes` from `buffer` into a staging buffer and maps it: one GPU→CPU synchronisation. */
  private async readBack(buffer: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    this.checkAlive();
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    const staging = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.copyBuffer(buffer, offset, staging, 0, size);
    this.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (e) {
      this.checkAlive();
      throw e;
    }
    const out = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    this.throwPendingErrors();
    return out;
  }

  /** Waits until all submitted work has finished. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.throwPendingErrors();
  }

  /** Throws the WebGPU validation errors reported since the last check (a kernel bug). */
  throwPendingErrors(): void {
    if (this.pendingErrors.length === 0) return;
    const msgs = [...new Set(this.pendingErrors)];
    this.pendingErrors = [];
    throw new GpuValidationError(
      `WebGPU reported ${msgs.length} error(s):\n${msgs.join("\n").slice(0, 4000)}`,
    );
  }
}

/**
 * Splits `n` workgroups into a 2-D grid whose x size stays within the per-dimension limit.
 * Kernels compute their linear workgroup index as `wid.x + wid.y * nwg.x` and return early when
 * it is past the end.
 */
export function splitGrid(n: number, max = 65535): [number, number] {
  if (n <= max) return [Math.max(1, n), 1];
  const y = Math.ceil(n / max);
  const x = Math.ceil(n / y);
  return [x, y];
}

/** Creates a context on the best adapter available. */
export async function createContext(options: ContextOptions = {}): Promise<GpuContext> {
  const gpu = (globalThis.navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) {
    throw new GpuUnavailableError(
      "WebGPU is not available in this runtime (navigator.gpu is undefined). Use Deno 2.9 or later " +
        "(older versions need --unstable-webgpu), or a browser with WebGPU.",
    );
  }
  const adapter = await gpu.requestAdapter({
    powerPreference: options.powerPreference ?? "high-performance",
  });
  if (!adapter) {
    throw new GpuUnavailableError(
      "no WebGPU adapter was found. On Linux without a GPU install Mesa's software drivers " +
        "(Debian/Ubuntu: `apt-get install -y mesa-vulkan-drivers libgl1-mesa-dri`); with an NVIDIA GPU " +
        "install the Vulkan loader (`libvulkan1`) and the driver's Vulkan ICD.",
    );
  }
  const requiredLimits: Record<string, number> = {};
  const al = adapter.limits as unknown as Record<string, number>;
  for (const k of REQUESTED_LIMITS) if (typeof al[k] === "number") requiredLimits[k] = al[k];
  const wanted = OPTIONAL_FEATURES.filter((f) =>
    adapter.features.has(f) && (f !== "shader-f16" || options.enableF16 !== false)
  );
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredLimits, requiredFeatures: wanted });
  } catch (e) {
    throw new GpuUnavailableError(`the adapter refused to create a device: ${(e as Error).message}`);
  }
  const dl = device.limits as unknown as Record<string, number>;
  const limits = { minUniformBufferOffsetAlignment: dl.minUniformBufferOffsetAlignment } as DeviceLimits;
  for (const k of REQUESTED_LIMITS) (limits as Record<string, number>)[k] = dl[k];
  const lowered = options.maxStorageBufferBindingSize;
  if (lowered !== undefined) {
    if (!(Number.isInteger(lowered) && lowered >= 4 && lowered % 4 === 0)) {
      device.destroy();
      throw new RangeError(
        `maxStorageBufferBindingSize must be a positive multiple of 4 bytes, got ${lowered}`,
      );
    }
    // Only the engine's view is lowered: WebGPU does not accept limits below its defaults.
    limits.maxStorageBufferBindingSize = Math.min(limits.maxStorageBufferBindingSize, lowered);
  }
  const info = adapter.info;
  const desc: AdapterDescription = {
    vendor: info?.vendor ?? "",
    architecture: info?.architecture ?? "",
    device: info?.device ?? "",
    description: info?.description ?? "",
    isFallbackAdapter: Boolean((info as unknown as { isFallbackAdapter?: boolean })?.isFallbackAdapter),
  };
  return new GpuContext(device, desc, limits, new Set([...device.features] as string[]));
}

let shared: Promise<GpuContext> | null = null;

/** The process-wide default context, created on first use. */
export function defaultContext(): Promise<GpuContext> {
  if (!shared) {
    shared = createContext();
    shared.catch(() => {
      shared = null;
    });
  }
  return shared;
}
