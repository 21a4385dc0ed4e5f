/**
 * Frozen half-precision weight matrices: {@link HalfMatrix} holds a [rows, cols] matrix as IEEE
 * f16 on the GPU (half the memory of f32), and the ops that read one compute in f32
 * (kernels/matmul_f16.ts widens each weight as it is loaded and accumulates in f32).
 *
 * Only weights are half: activations, norms, biases, gradients and optimiser state stay f32
 * {@link Tensor}s. A half matrix is never trained: it has no gradient, and asking for one
 * (`requiresGrad = true`) throws. Gradients still flow *through* it to the input of the ops that
 * use it (`linear`'s dx), which is all GRADMM's x-step needs.
 *
 * The ops: `linear(x, w: HalfMatrix, b)` (autograd/ops/matmul.ts routes it to
 * {@link linearHalf}) and {@link embeddingHalf}.
 *
 * @module
 */
import type { GpuContext } from "../kernels/device.ts";
import {
  halfFromFloat32Kernel,
  halfGatherKernel,
  type HalfLayout,
  halfMatmulKernel,
  type HalfOperand,
  halfStride,
  halfToFloat32Kernel,
} from "../kernels/matmul_f16.ts";
import { record } from "./tape.ts";
import { checkBindingLimit, fmtShape, ShapeError, Tensor } from "./tensor.ts";
import { sumToShape } from "./ops/elementwise.ts";

/** The WebGPU feature that f16 storage in shaders needs. */
export const F16_FEATURE = "shader-f16";

/** Largest finite f16 value; f32 values of magnitude ≥ 65,520 round to ±inf. */
export const F16_MAX = 65504;

/** Raised when half-precision weights cannot be used: a missing feature, or a weight out of f16 range. */
export class HalfPrecisionError extends Error {
  /** Error name, for messages and `instanceof`-free checks. */
  override name = "HalfPrecisionError";
  /** The CLI prints it without a stack trace. */
  readonly userFacing = true;
}

/** Throws a {@link HalfPrecisionError} naming the missing feature when `ctx` cannot run f16 kernels. */
export function assertHalfSupported(ctx: GpuContext): void {
  if (ctx.features.has(F16_FEATURE)) return;
  throw new HalfPrecisionError(
    `f16 weights need the WebGPU feature "${F16_FEATURE}", which this device (${ctx.adapterName}) does ` +
      `not have (the adapter lacks it, or the context was created with enableF16: false); ` +
      `use f32 weights (--weights f32, the default)`,
  );
}

/**
 * A [rows, cols] weight matrix stored as f16 on the GPU (rows padded to a multiple of 4 halves;
 * see kernels/matmul_f16.ts). Long-lived: it is not registered in tensor scopes; free it with
 * {@link dispose}.
 */
export class HalfMatrix {
  /** The device holding the matrix. */
  readonly ctx: GpuContext;
  /** [rows, cols] of the logical (unpadded) matrix. */
  readonly shape: readonly [number, number];
  /** Optional name (the checkpoint tensor's), for messages. */
  readonly name?: string;
  /** Always null: a half matrix is frozen (it has no gradient). */
  readonly grad: null = null;
  private buf: GPUBuffer | null;

  private constructor(ctx: GpuContext, buffer: GPUBuffer, shape: readonly [number, number], name?: string) {
    this.ctx = ctx;
    this.buf = buffer;
    this.shape = Object.freeze([shape[0], shape[1]]) as readonly [number, number];
    this.name = name;
  }

  /** A pooled buffer for a [rows, cols] half matrix, after the feature and binding-limit checks. */
  private static allocate(ctx: GpuContext, shape: readonly number[], name?: string): GPUBuffer {
    assertHalfSupported(ctx);
    if (shape.length !== 2 || !shape.every((d) => Number.isInteger(d) && d > 0)) {
      throw new ShapeError(
        `HalfMatrix ${name ?? ""}: the shape must be [rows, cols] ≥ 1, got ${fmtShape(shape)}`,
      );
    }
    const bytes = shape[0] * halfStride(shape[1]) * 2;
    checkBindingLimit(ctx, bytes, `f16 matrix ${name ? `'${name}' ` : ""}${fmtShape(shape)}`);
    return ctx.pool.acquire(bytes, name);
  }

  /**
   * Rounds a row-major f32 matrix to f16 (to nearest, ties to even; magnitudes below 2⁻²⁴ become
   * 0, those below 2⁻¹⁴ lose precision as subnormals) on the GPU. A value that would overflow to
   * ±inf (|x| ≥ 65,520) throws a {@link HalfPrecisionError} naming the matrix and the value:
   * such a model must stay f32.
   */
  static fromFloat32(
    ctx: GpuContext,
    data: Float32Array,
    shape: readonly number[],
    options: { name?: string } = {},
  ): HalfMatrix {
    const size = shape.reduce((a, b) => a * b, 1);
    if (data.length !== size) {
      throw new ShapeError(
        `HalfMatrix: data has ${data.length} values but shape ${fmtShape(shape)} needs ${size}`,
      );
    }
    for (let i = 0; i < data.length; i++) {
      const x = data[i];
      // Infinite weights stay infinite (as in f32); finite ones must not become infinite.
      if (Math.abs(x) >= 65520 && Number.isFinite(x)) {
        throw new HalfPrecisionError(
          `${options.name ? `'${options.name}'` : "a weight matrix"} holds ${x} (element ${i}), beyond the ` +
            `f16 range of ±${F16_MAX}: it would become ±inf; load this model with f32 weights`,
        );
      }
    }
    const buffer = HalfMatrix.allocate(ctx, shape, options.name);
    // The f32 source is a transient buffer outside the pool, destroyed once converted, so that
    // loading leaves only the f16 copy behind.
    const src = ctx.device.createBuffer({
      size: Math.max(16, Math.ceil(data.byteLength / 16) * 16),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      label: `${options.name ?? "matrix"} (f32 staging)`,
    });
    try {
      ctx.writeBuffer(src, 0, data);
      halfFromFloat32Kernel(ctx, src, shape[0], shape[1], buffer);
      ctx.flush();
    } catch (e) {
      ctx.pool.release(buffer);
      throw e;
    } finally {
      // WebGPU frees it only after the submitted conversion has run.
      src.destroy();
    }
    return new HalfMatrix(ctx, buffer, shape as [number, number], options.name);
  }

  /**
   * Rounds a 2-D f32 tensor to f16 on the GPU (ties to even). Values beyond ±65,504 become ±inf
   * without a check (use {@link fromFloat32} for checked loading); for weights made on the GPU
   * (random-weight benchmarks).
   */
  static fromTensor(t: Tensor, options: { name?: string } = {}): HalfMatrix {
    if (t.rank !== 2) {
      throw new ShapeError(`HalfMatrix.fromTensor: needs a 2-D tensor, got ${fmtShape(t.shape)}`);
    }
    const name = options.name ?? t.name;
    const buffer = HalfMatrix.allocate(t.ctx, t.shape, name);
    halfFromFloat32Kernel(t.ctx, t.buffer, t.shape[0], t.shape[1], buffer);
    return new HalfMatrix(t.ctx, buffer, t.shape as [number, number], name);
  }

  /** The GPU buffer (throws if disposed). */
  get buffer(): GPUBuffer {
    if (!this.buf) throw new Error(`f16 matrix ${this.label} was used after dispose()`);
    return this.buf;
  }

  /** What the kernels need: the buffer and the logical shape. */
  get operand(): HalfOperand {
    return { buffer: this.buffer, rows: this.shape[0], cols: this.shape[1] };
  }

  /** Number of elements. */
  get size(): number {
    return this.shape[0] * this.shape[1];
  }

  /** Bytes of payload, row padding included (2 per element). */
  get bytes(): number {
    return this.shape[0] * halfStride(this.shape[1]) * 2;
  }

  /** Always 2. */
  get rank(): number {
    return 2;
  }

  /** Always false: half matrices are frozen. */
  get requiresGrad(): boolean {
    return false;
  }

  /** Setting true throws: a half matrix cannot be trained (load the model with f32 weights). */
  set requiresGrad(v: boolean) {
    if (v) {
      throw new HalfPrecisionError(
        `f16 matrix ${this.label} cannot require a gradient: f16 weights are frozen (gradients flow only ` +
          `to the inputs of the ops that use them); load the model with f32 weights to train it`,
      );
    }
  }

  /** True once disposed. */
  get disposed(): boolean {
    return this.buf === null;
  }

  /** Name or shape, for messages. */
  get label(): string {
    return this.name ? `'${this.name}'` : fmtShape(this.shape);
  }

  /** The values widened to a new f32 tensor [rows, cols] (exact), in the current scope. */
  toFloat32(): Tensor {
    const t = Tensor.empty(this.ctx, this.shape);
    halfToFloat32Kernel(this.ctx, this.operand, t.buffer);
    return t;
  }

  /** The values widened to f32, row-major (for saving and tests). */
  async read(): Promise<Float32Array> {
    const t = this.toFloat32();
    try {
      return await t.read();
    } finally {
      t.dispose();
    }
  }

  /** Returns the buffer to the pool. Safe to call twice. */
  dispose(): void {
    if (!this.buf) return;
    this.ctx.releaseLater(this.buf);
    this.buf = null;
  }

  /** Frees the buffer at the end of a `using` block. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** `HalfMatrix(name [rows, cols])`, for messages. */
  toString(): string {
    return `HalfMatrix(${this.label}${this.name ? ` ${fmtShape(this.shape)}` : ""})`;
  }
}

/**
 * `x · op(W) (+ bias)` for an f16 weight (the f16 branch of `linear`, which has checked the
 * shapes): W stored [in, out] ("in_out") or [out, in] ("out_in"). The backward gives x and the
 * bias their gradients; W gets none (it is frozen).
 */
export function linearHalf(
  x: Tensor,
  w: HalfMatrix,
  bias: Tensor | undefined,
  weightLayout: "in_out" | "out_in",
): Tensor {
  const ctx = x.ctx;
  const [inF, outF] = weightLayout === "in_out" ? w.shape : [w.shape[1], w.shape[0]];
  // x [rows, in] · W: "in_out" W is [K, N]; its transpose in the backward is the other layout.
  const forward: HalfLayout = weightLayout === "in_out" ? "kn" : "nk";
  const backwardLayout: HalfLayout = forward === "kn" ? "nk" : "kn";
  const rows = x.size / Math.max(1, inF);
  const out = Tensor.empty(ctx, [...x.shape.slice(0, -1), outF]);
  halfMatmulKernel(ctx, x.buffer, w.operand, out.buffer, { m: rows, n: outF, k: inF, layout: forward }, {
    bias: bias?.buffer,
  });
  return record(out, "linear (f16 weight)", bias ? [x, bias] : [x], (g) => {
    let gx: Tensor | null = null;
    if (x.requiresGrad) {
      // dx = g · op(W)ᵀ, one product over all rows.
      gx = Tensor.empty(ctx, x.shape);
      halfMatmulKernel(ctx, g.buffer, w.operand, gx.buffer, {
        m: rows,
        n: inF,
        k: outF,
        layout: backwardLayout,
      });
    }
    const gb = bias?.requiresGrad ? sumToShape(g, bias.shape) : null;
    return bias ? [gx, gb] : [gx];
  });
}

/**
 * Rows of an f16 matrix [V, d] for `ids` (any shape, f32 integers) widened to f32:
 * `[...ids.shape, d]`, zero rows for ids out of range. Not differentiable (the table is frozen,
 * ids have no gradient).
 */
export function embeddingHalf(w: HalfMatrix, ids: Tensor): Tensor {
  if (w.ctx !== ids.ctx) throw new Error(`embedding: ${w.label} and ${ids.label} live on different contexts`);
  if (ids.size >= 1 << 24) {
    throw new RangeError(`embedding: ${ids.size} ids is more than one call supports (2^24)`);
  }
  const out = Tensor.empty(w.ctx, [...ids.shape, w.shape[1]]);
  halfGatherKernel(w.ctx, w.operand, ids.buffer, ids.size, out.buffer);
  return out;
}
