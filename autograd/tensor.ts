/**
 * Tensor: a contiguous f32 array on the GPU with a shape, plus the autograd bookkeeping
 * (`requiresGrad`, `grad`, and the {@link GradNode} that produced it).
 *
 * Memory is explicit. A tensor holds a pooled GPU buffer until `dispose()` is called, the
 * tensor goes out of a `using` block, or the {@link scope} it was created in closes.
 */
import type { GpuContext } from "../kernels/device.ts";
import { GpuLimitError } from "../kernels/device.ts";
import { formatBytes } from "../kernels/pool.ts";
import { autogradState } from "./grad_mode.ts";

/** How a tensor was computed: its inputs and the rule that maps its gradient to theirs. */
export interface GradNode {
  /** Op name, for error messages and debugging. */
  op: string;
  /** The tensors the op read, in the order `backward` returns their gradients. */
  inputs: Tensor[];
  /**
   * Given dLoss/dOutput, returns dLoss/dInput for each input (null where an input needs none).
   * Runs with gradient recording off; may return `gOut` itself.
   */
  backward: (gOut: Tensor) => (Tensor | null)[];
}

/** Raised when shapes of op inputs do not agree; the message names both shapes. */
export class ShapeError extends Error {
  /** Error name, for messages. */
  override name = "ShapeError";
}

/** Options for tensor constructors. */
export interface TensorOptions {
  /** Track gradients with respect to this tensor (a leaf: parameter or input). */
  requiresGrad?: boolean;
  /** A name used in error messages ("tensor 'wte' needs 154 MB ..."). */
  name?: string;
}

let nextId = 1;

/** Number of elements of a shape. */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new ShapeError(`invalid dimension ${d} in shape [${shape}]`);
    n *= d;
  }
  return n;
}

/** "[2, 3]" for messages. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/**
 * An f32 array on the GPU with a shape (row-major), and its place in the autograd graph.
 * Make one with {@link Tensor.from}, {@link Tensor.zeros}, {@link Tensor.full} or
 * {@link Tensor.empty}; ops return new tensors. Read the data back with {@link Tensor.read}
 * (one GPU→CPU synchronisation). A tensor owns its buffer until {@link Tensor.dispose}, the end
 * of a `using` block, or the close of the {@link scope} it was made in ({@link Tensor.keep}
 * exempts it).
 *
 * @example
 * ```ts
 * const x = Tensor.from(ctx, [1, 2, 3, 4, 5, 6], [2, 3], { requiresGrad: true });
 * console.log(x.shape, await x.read()); // [2, 3] Float32Array(6)
 * x.dispose();
 * ```
 */
export class Tensor {
  /** Unique per process, in creation order (the tape sorts by it). */
  readonly id = nextId++;
  /** The device holding the data. */
  readonly ctx: GpuContext;
  /** Dimensions, outermost first; the data is row-major f32. */
  readonly shape: readonly number[];
  /** Number of elements (product of `shape`). */
  readonly size: number;
  /** Optional name (a parameter's), shown in messages and leak reports. */
  name?: string;
  /** Whether `backward` computes a gradient for this tensor (leaves) or through it. */
  requiresGrad: boolean;
  /** Accumulated gradient (for leaves after `backward`). Owned by this tensor. */
  grad: Tensor | null = null;
  /** The op that produced this tensor, when it was recorded for autograd. */
  node: GradNode | null = null;
  private buf: GPUBuffer | null;
  /** Not disposed by the enclosing scope (parameters, gradients, results the caller keeps). */
  kept = false;

  /** Wraps a pooled buffer. Use the static constructors instead of calling this. */
  constructor(ctx: GpuContext, buffer: GPUBuffer, shape: readonly number[], options: TensorOptions = {}) {
    this.ctx = ctx;
    this.buf = buffer;
    this.shape = Object.freeze([...shape]);
    this.size = shapeSize(shape);
    this.name = options.name;
    this.requiresGrad = options.requiresGrad ?? false;
    const scopes = autogradState(ctx).scopes;
    const top = scopes[scopes.length - 1];
    if (top) top.add(this);
  }

  /** The GPU buffer (throws if disposed). Its size is rounded up to the pool's size class. */
  get buffer(): GPUBuffer {
    if (!this.buf) throw new Error(`tensor ${this.label} was used after dispose()`);
    return this.buf;
  }

  /** True once disposed. */
  get disposed(): boolean {
    return this.buf === null;
  }

  /** Name or id, for messages. */
  get label(): string {
    return this.name ? `'${this.name}'` : `#${this.id} ${fmtShape(this.shape)}`;
  }

  /** Bytes of payload (4 per element). */
  get bytes(): number {
    return this.size * 4;
  }

  /** Number of dimensions. */
  get rank(): number {
    return this.shape.length;
  }

  /** An uninitialised tensor (contents are whatever the pooled buffer held). */
  static empty(ctx: GpuContext, shape: readonly number[], options: TensorOptions = {}): Tensor {
    const size = shapeSize(shape);
    checkBindingLimit(ctx, size * 4, options.name ?? `tensor ${fmtShape(shape)}`);
    const buf = ctx.pool.acquire(Math.max(4, size * 4), options.name);
    return new Tensor(ctx, buf, shape, options);
  }

  /** A tensor with the given values (copied to the GPU). */
  static from(
    ctx: GpuContext,
    data: ArrayLike<number>,
    shape: readonly number[],
    options: TensorOptions = {},
  ): Tensor {
    const size = shapeSize(shape);
    if (data.length !== size) {
      throw new ShapeError(`data has ${data.length} values but shape ${fmtShape(shape)} needs ${size}`);
    }
    const t = Tensor.empty(ctx, shape, options);
    if (size > 0) {
      const f32 = data instanceof Float32Array ? data : Float32Array.from(data);
      ctx.writeBuffer(t.buffer, 0, f32);
    }
    return t;
  }

  /** A tensor of zeros. */
  static zeros(ctx: GpuContext, shape: readonly number[], options: TensorOptions = {}): Tensor {
    return Tensor.full(ctx, shape, 0, options);
  }

  /** A tensor filled with one value (filled on the GPU). */
  static full(ctx: GpuContext, shape: readonly number[], value: number, options: TensorOptions = {}): Tensor {
    const t = Tensor.empty(ctx, shape, options);
    fillBuffer(ctx, t.buffer, t.size, value);
    return t;
  }

  /** Copies the values to the CPU (submits pending work and waits for it). */
  read(): Promise<Float32Array> {
    // Not `async`: a read inside a step-graph capture must throw where it is called.
    this.ctx.assertNotCapturing();
    return this.readAsync();
  }

  /** The read itself, after the capture check in {@link read}. */
  private async readAsync(): Promise<Float32Array> {
    if (this.size === 0) return new Float32Array(0);
    return new Float32Array(await this.ctx.readBuffer(this.buffer, 0, this.bytes));
  }

  /** Reads a one-element tensor as a number. */
  item(): Promise<number> {
    this.ctx.assertNotCapturing();
    return this.itemAsync();
  }

  /** The read itself, after the capture check in {@link item}. */
  private async itemAsync(): Promise<number> {
    if (this.size !== 1) {
      throw new ShapeError(`item() needs a one-element tensor, got ${fmtShape(this.shape)}`);
    }
    return (await this.read())[0];
  }

  /** Overwrites the values from the CPU. */
  write(data: ArrayLike<number>): void {
    if (data.length !== this.size) {
      throw new ShapeError(`write of ${data.length} values into tensor ${this.label} of ${this.size}`);
    }
    const f32 = data instanceof Float32Array ? data : Float32Array.from(data);
    this.ctx.writeBuffer(this.buffer, 0, f32);
  }

  /** Keeps this tensor alive past the enclosing scope. Returns `this`. */
  keep(): this {
    this.kept = true;
    return this;
  }

  /** Returns the buffer to the pool (and the gradient's, if any). Safe to call twice. */
  dispose(): void {
    if (!this.buf) return;
    // Work already encoded may still read this buffer: give it back after the next submit.
    this.ctx.releaseLater(this.buf);
    this.buf = null;
    this.node = null;
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /** Frees the buffer at the end of a `using` block. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Frees the gradient. */
  zeroGrad(): void {
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /** A new tensor sharing nothing with this one, detached from the graph. */
  detach(): Tensor {
    const t = Tensor.empty(this.ctx, this.shape);
    this.ctx.copyBuffer(this.buffer, 0, t.buffer, 0, this.bytes);
    return t;
  }

  /** `Tensor(name [shape])`, for messages. */
  toString(): string {
    return `Tensor(${this.label}${this.requiresGrad ? ", requiresGrad" : ""})`;
  }
}

/** Throws a {@link GpuLimitError} naming the tensor when it does not fit one storage binding. */
export function checkBindingLimit(ctx: GpuContext, bytes: number, what: string): void {
  const limit = ctx.limits.maxStorageBufferBindingSize;
  if (bytes > limit) {
    throw new GpuLimitError(
      `${what} needs ${formatBytes(bytes)}, more than this adapter's ${formatBytes(limit)} storage binding ` +
        `limit; split it (e.g. load the embedding in row chunks) or use an adapter with a larger limit`,
    );
  }
}

const FILL_WGSL = /* wgsl */ `
struct P { n: u32, value: f32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: P;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (i < p.n) { out[i] = p.value; }
}`;

/** Fills the first `n` floats of a buffer with `value` (encoded into the open batch). */
export function fillBuffer(ctx: GpuContext, buffer: GPUBuffer, n: number, value: number): void {
  if (n === 0) return;
  const params = new ArrayBuffer(8);
  new Uint32Array(params, 0, 1)[0] = n;
  new Float32Array(params, 4, 1)[0] = value;
  const groups = Math.ceil(n / 256);
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  const gy = Math.ceil(groups / max);
  ctx.dispatch(ctx.pipeline(FILL_WGSL), [buffer], new Uint8Array(params), [Math.ceil(groups / gy), gy]);
}

/**
 * Runs `fn` in a scope: every tensor created inside is disposed when it returns, except the
 * returned value(s) and tensors marked with `keep()`. Works with async functions too.
 */
export function scope<T>(ctx: GpuContext, fn: () => T): T {
  const created = new Set<{ dispose(): void }>();
  autogradState(ctx).scopes.push(created);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    closeScope(ctx, created, undefined);
    throw e;
  }
  if (result instanceof Promise) {
    return result.then(
      (v) => {
        closeScope(ctx, created, v);
        return v;
      },
      (e) => {
        closeScope(ctx, created, undefined);
        throw e;
      },
    ) as T;
  }
  closeScope(ctx, created, result);
  return result;
}

function closeScope(ctx: GpuContext, created: Set<{ dispose(): void }>, result: unknown): void {
  const scopes = autogradState(ctx).scopes;
  const i = scopes.lastIndexOf(created);
  if (i >= 0) scopes.splice(i, 1);
  const survivors = new Set<unknown>();
  collectTensors(result, survivors, 0);
  const parent = scopes[scopes.length - 1];
  for (const t of created) {
    const tensor = t as Tensor;
    if (survivors.has(t) || tensor.kept) {
      // Returned tensors belong to the enclosing scope now.
      if (parent && !tensor.kept) parent.add(t);
      continue;
    }
    t.dispose();
  }
}

function collectTensors(v: unknown, out: Set<unknown>, depth: number): void {
  if (depth > 4 || v === null || typeof v !== "object") return;
  if (v instanceof Tensor) {
    out.add(v);
    return;
  }
  if (Array.isArray(v)) { for (const x of v) collectTensors(x, out, depth + 1); }
  else if (v instanceof Map) { for (const x of v.values()) collectTensors(x, out, depth + 1); }
  else if (Object.getPrototypeOf(v) === Object.prototype) {
    for (const x of Object.values(v as Record<string, unknown>)) collectTensors(x, out, depth + 1);
  }
}
