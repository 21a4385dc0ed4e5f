/**
 * Step graphs: capture the commands one training step encodes, then replay them without running
 * the step's TypeScript again (the idea of CUDA graphs, for WebGPU).
 *
 * Why: a GRADMM x-step is ~150 small dispatches. Running it through the autograd costs, per
 * dispatch, the op's bookkeeping, a parameter block, a new bind group and three encoder calls;
 * on a fast GPU that CPU work, not the kernels, sets the step time. A replay reuses the bind
 * groups and parameter blocks made at capture and only encodes `setPipeline`, `setBindGroup`
 * and `dispatchWorkgroups` per kernel.
 *
 * What a replay repeats: every dispatch and buffer copy of the captured step, on the same
 * buffers, with the same parameters; uploads made during the capture (`Tensor.from`, `write`)
 * are repeated as copies from a constant buffer. What it does not repeat: TypeScript state.
 * Work whose parameters change per step goes through {@link GpuContext.live}, which the graph
 * calls again at each replay (the Adam step: its step count and learning rate).
 *
 * Rules for the captured function: no read-backs (they throw {@link GraphCaptureError}), and no
 * one-time initialisation, which would be redone at every replay: capture a steady-state step
 * (e.g. the second one, after the optimiser created its moments).
 *
 * Buffer safety: every buffer the graph encodes is pinned in the pool until {@link StepGraph.dispose},
 * so a tensor disposed meanwhile cannot hand its buffer to other work that a replay would then
 * overwrite. Buffers released during the capture are therefore not reused within it either.
 */
import { type CaptureRecorder, type GpuContext, GraphCaptureError } from "./device.ts";

const PARAM_ALIGN = 256;

type Command =
  | {
    kind: "dispatch";
    pipeline: GPUComputePipeline;
    buffers: GPUBuffer[];
    params: Uint8Array | null;
    grid: [number, number, number];
  }
  | { kind: "copy"; src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; bytes: number }
  | { kind: "live"; encode: () => void };

/** A command ready to encode: a dispatch with its bind group made, a copy, or a live segment. */
type Replayable =
  | {
    kind: "dispatch";
    pipeline: GPUComputePipeline;
    bindGroup: GPUBindGroup;
    grid: [number, number, number];
    params: Uint8Array | null;
  }
  | { kind: "copy"; src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; bytes: number }
  | { kind: "live"; encode: () => void };

/** Records what a context encodes while a step is captured (see {@link StepGraph.capture}). */
class Recorder implements CaptureRecorder {
  readonly commands: Command[] = [];
  readonly pinned = new Set<GPUBuffer>();
  readonly constants: GPUBuffer[] = [];
  /** > 0 while a live segment runs: its commands are re-run at replay, not recorded. */
  private liveDepth = 0;

  constructor(private ctx: GpuContext) {}

  private pin(buf: GPUBuffer): void {
    if (this.pinned.has(buf)) return;
    this.pinned.add(buf);
    this.ctx.pool.pin(buf);
  }

  dispatch(
    pipeline: GPUComputePipeline,
    buffers: GPUBuffer[],
    params: ArrayBufferView | null,
    grid: [number, number, number],
  ): void {
    for (const b of buffers) this.pin(b);
    if (this.liveDepth > 0) return;
    // Copy the parameter block: launchers may reuse the array they passed.
    const bytes = params
      ? new Uint8Array(params.buffer.slice(params.byteOffset, params.byteOffset + params.byteLength))
      : null;
    this.commands.push({ kind: "dispatch", pipeline, buffers: [...buffers], params: bytes, grid });
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.pin(src);
    this.pin(dst);
    if (this.liveDepth > 0) return;
    this.commands.push({ kind: "copy", src, srcOffset, dst, dstOffset, bytes });
  }

  upload(dst: GPUBuffer, offset: number, data: ArrayBufferView): void {
    if (this.liveDepth > 0) {
      this.pin(dst);
      return;
    }
    // Replayed as a copy from a constant buffer holding the uploaded bytes.
    const bytes = Math.ceil(data.byteLength / 4) * 4;
    const constant = this.ctx.device.createBuffer({
      size: Math.max(4, bytes),
      usage: GPUBufferUsage.COPY_SRC,
      mappedAtCreation: true,
    });
    new Uint8Array(constant.getMappedRange()).set(
      new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    );
    constant.unmap();
    this.constants.push(constant);
    this.pin(dst);
    if (bytes > 0) {
      this.commands.push({ kind: "copy", src: constant, srcOffset: 0, dst, dstOffset: offset, bytes });
    }
  }

  live(encode: () => void): void {
    this.commands.push({ kind: "live", encode });
    this.liveDepth++;
    try {
      encode();
    } finally {
      this.liveDepth--;
    }
  }
}

/** The commands of one captured step, replayable any number of times. */
export class StepGraph {
  private constructor(
    private readonly ctx: GpuContext,
    private readonly commands: Replayable[],
    private readonly pinned: GPUBuffer[],
    private readonly owned: GPUBuffer[],
    /** Number of kernels a replay encodes from the recording (live segments not counted). */
    readonly dispatchCount: number,
  ) {}

  private disposed = false;

  /**
   * Runs `step` once (its work is encoded and runs as usual) while recording what it encodes,
   * and returns the recording as a graph together with what `step` returned.
   */
  static capture<T>(ctx: GpuContext, step: () => T): { graph: StepGraph; result: T } {
    if (ctx.recorder) throw new GraphCaptureError("a step graph is already being captured on this context");
    const rec = new Recorder(ctx);
    ctx.recorder = rec;
    let result: T;
    try {
      result = step();
    } catch (e) {
      ctx.recorder = null;
      for (const b of rec.pinned) ctx.pool.unpin(b);
      for (const b of rec.constants) b.destroy();
      throw e;
    }
    ctx.recorder = null;
    if (result instanceof Promise) {
      throw new GraphCaptureError("the captured step must be synchronous (a step graph cannot await)");
    }
    return { graph: StepGraph.build(ctx, rec), result };
  }

  /** Makes the bind groups and the uniform buffer holding every recorded parameter block. */
  private static build(ctx: GpuContext, rec: Recorder): StepGraph {
    let paramBytes = 0;
    const offsets: number[] = [];
    for (const c of rec.commands) {
      if (c.kind === "dispatch" && c.params) {
        offsets.push(paramBytes);
        paramBytes += Math.ceil(Math.max(16, c.params.byteLength) / PARAM_ALIGN) * PARAM_ALIGN;
      }
    }
    const owned = [...rec.constants];
    let paramBuffer: GPUBuffer | null = null;
    if (paramBytes > 0) {
      paramBuffer = ctx.device.createBuffer({
        size: paramBytes,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.STORAGE, // as GpuContext's parameter arena
        mappedAtCreation: true,
      });
      const view = new Uint8Array(paramBuffer.getMappedRange());
      let k = 0;
      for (const c of rec.commands) if (c.kind === "dispatch" && c.params) view.set(c.params, offsets[k++]);
      paramBuffer.unmap();
      owned.push(paramBuffer);
    }
    const commands: Replayable[] = [];
    let k = 0;
    let dispatches = 0;
    for (const c of rec.commands) {
      if (c.kind !== "dispatch") {
        commands.push(c);
        continue;
      }
      const entries: GPUBindGroupEntry[] = c.buffers.map((buffer, i) => ({
        binding: i,
        resource: { buffer },
      }));
      if (c.params) {
        const size = Math.max(16, Math.ceil(c.params.byteLength / 16) * 16);
        entries.push({
          binding: c.buffers.length,
          resource: { buffer: paramBuffer!, offset: offsets[k++], size },
        });
      }
      const bindGroup = ctx.device.createBindGroup({ layout: ctx.bindGroupLayout(c.pipeline), entries });
      commands.push({ kind: "dispatch", pipeline: c.pipeline, bindGroup, grid: c.grid, params: c.params });
      dispatches++;
    }
    return new StepGraph(ctx, commands, [...rec.pinned], owned, dispatches);
  }

  /**
   * Encodes the captured step again into the context's open batch (nothing is submitted).
   * `skip` leaves out the commands with those indices: for profiles that measure what a group
   * of kernels costs in context (the step's results are then meaningless).
   */
  replay(skip?: ReadonlySet<number>): void {
    if (this.disposed) throw new GraphCaptureError("replay() of a disposed step graph");
    const ctx = this.ctx;
    if (ctx.recorder) throw new GraphCaptureError("replay() while another step graph is being captured");
    ctx.checkAlive();
    for (let i = 0; i < this.commands.length; i++) {
      if (skip?.has(i)) continue;
      const c = this.commands[i];
      if (c.kind === "dispatch") ctx.encodeDispatch(c.pipeline, c.bindGroup, c.grid);
      else if (c.kind === "copy") ctx.copyBuffer(c.src, c.srcOffset, c.dst, c.dstOffset, c.bytes);
      else c.encode();
    }
  }

  /** Number of recorded commands (dispatches, copies and live segments). */
  get length(): number {
    return this.commands.length;
  }

  /** What command `i` is, for profiles: its kind, the pipeline, the grid and the first parameter words. */
  describe(i: number): { kind: string; pipeline?: GPUComputePipeline; grid?: number[]; params?: number[] } {
    const c = this.commands[i];
    if (c.kind !== "dispatch") return { kind: c.kind };
    const words = c.params
      ? [...new Uint32Array(c.params.buffer, c.params.byteOffset, c.params.byteLength >> 2)]
      : [];
    return { kind: "dispatch", pipeline: c.pipeline, grid: c.grid, params: words };
  }

  /** Encodes command `i` alone (a kernel profile times each command on its own). */
  replayCommand(i: number): void {
    if (this.disposed) throw new GraphCaptureError("replayCommand() of a disposed step graph");
    const c = this.commands[i];
    if (c.kind === "dispatch") this.ctx.encodeDispatch(c.pipeline, c.bindGroup, c.grid);
    else if (c.kind === "copy") this.ctx.copyBuffer(c.src, c.srcOffset, c.dst, c.dstOffset, c.bytes);
    else c.encode();
  }

  /**
   * Frees the graph's own buffers and unpins the buffers it encoded (those whose tensors were
   * disposed meanwhile go back to the pool now). Work already encoded still runs correctly.
   */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    // Submit first: replays still in the open batch read the graph's buffers.
    this.ctx.flush();
    for (const b of this.pinned) this.ctx.pool.unpin(b);
    for (const b of this.owned) b.destroy();
  }

  /** Releases the graph's buffers at the end of a `using` block. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
