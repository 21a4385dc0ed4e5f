/**
 * Matrices larger than one storage binding, held as row chunks.
 *
 * WebGPU binds a buffer to a kernel only up to `maxStorageBufferBindingSize` bytes (128 MiB on
 * most adapters, 2 GiB on big NVIDIA cards). A model's vocabulary matrices ([V, d] input
 * embedding and output layer) are the tensors that outgrow it first: phi-1.5's are
 * 51,200 × 2,048 f32 = 400 MiB. {@link RowChunks} holds such a matrix as consecutive row blocks,
 * each an ordinary {@link Tensor} within the limit, and the helpers here run the ops that use a
 * vocabulary matrix chunk by chunk with existing differentiable ops, so autograd works unchanged:
 *
 * - {@link gatherRows}: embedding lookup (each chunk gathers the ids in its row range, the
 *   partial results are summed).
 * - {@link linearRows}: `h · Wᵀ + b` (one product per chunk, concatenated along the vocabulary;
 *   the output [rows, V] itself must fit one binding).
 * - {@link mergeChunkTopk}: a top-k over the whole vocabulary from per-chunk top-k results.
 *
 * A matrix that fits one binding stays a plain Tensor ({@link RowMatrix} is either), and every
 * helper takes the unchunked path for it: small models pay nothing.
 *
 * @module
 */
import type { GpuContext } from "../kernels/device.ts";
import { GpuLimitError } from "../kernels/device.ts";
import { formatBytes, sizeClass } from "../kernels/pool.ts";
import { add, addScalar } from "../autograd/ops/elementwise.ts";
import { embedding } from "../autograd/ops/embedding.ts";
import { linear } from "../autograd/ops/matmul.ts";
import { concat, reshape, slice } from "../autograd/ops/shape.ts";
import { type TopK, topk } from "../autograd/ops/topk.ts";
import { fmtShape, ShapeError, Tensor } from "../autograd/tensor.ts";
import { embeddingHalf, HalfMatrix, HalfPrecisionError } from "../autograd/half.ts";

/**
 * A [rows, cols] f32 matrix stored as consecutive row blocks (chunk i holds rows
 * `starts[i] .. starts[i] + chunks[i].shape[0]`). The chunks are kept alive (not disposed by
 * scopes) until {@link RowChunks.dispose}; gradients, when the chunks require them, land on each
 * chunk's own `grad`.
 */
export class RowChunks {
  /** [rows, cols] of the whole matrix. */
  readonly shape: readonly [number, number];
  /** The row blocks, in order; each is [rowsOfChunk, cols]. */
  readonly chunks: readonly Tensor[];
  /** First row of each chunk. */
  readonly starts: readonly number[];
  /** Name for messages (the checkpoint tensor's name). */
  readonly name?: string;

  /** Wraps row blocks that share the column count; they become owned by this object. */
  constructor(chunks: readonly Tensor[], name?: string) {
    if (chunks.length === 0) throw new ShapeError(`RowChunks ${name ?? ""}: needs at least one chunk`);
    const cols = chunks[0].shape[1];
    const starts: number[] = [];
    let rows = 0;
    for (const c of chunks) {
      if (c.rank !== 2 || c.shape[1] !== cols) {
        throw new ShapeError(
          `RowChunks ${name ?? ""}: every chunk must be [rows, ${cols}], got ${fmtShape(c.shape)}`,
        );
      }
      if (c.ctx !== chunks[0].ctx) {
        throw new Error(`RowChunks ${name ?? ""}: chunks live on different contexts`);
      }
      starts.push(rows);
      rows += c.shape[0];
      c.keep();
    }
    this.chunks = Object.freeze([...chunks]);
    this.starts = Object.freeze(starts);
    this.shape = Object.freeze([rows, cols]) as readonly [number, number];
    this.name = name;
  }

  /** The context the chunks live on. */
  get ctx(): GpuContext {
    return this.chunks[0].ctx;
  }

  /** Bytes of payload of the whole matrix. */
  get bytes(): number {
    return this.shape[0] * this.shape[1] * 4;
  }

  /** Sets `requiresGrad` on every chunk. */
  set requiresGrad(v: boolean) {
    for (const c of this.chunks) c.requiresGrad = v;
  }

  /** True when every chunk requires a gradient. */
  get requiresGrad(): boolean {
    return this.chunks.every((c) => c.requiresGrad);
  }

  /** "'name' [V, d] in n row chunks" for messages. */
  get label(): string {
    return `${this.name ? `'${this.name}' ` : ""}${fmtShape(this.shape)} in ${this.chunks.length} row chunks`;
  }

  /** The whole matrix on the CPU, row-major (for saving and tests). */
  async read(): Promise<Float32Array> {
    const out = new Float32Array(this.shape[0] * this.shape[1]);
    for (let i = 0; i < this.chunks.length; i++) {
      out.set(await this.chunks[i].read(), this.starts[i] * this.shape[1]);
    }
    return out;
  }

  /** The gradient of the whole matrix on the CPU (zeros for chunks without one), or null if none has one. */
  async readGrad(): Promise<Float32Array | null> {
    if (this.chunks.every((c) => !c.grad)) return null;
    const out = new Float32Array(this.shape[0] * this.shape[1]);
    for (let i = 0; i < this.chunks.length; i++) {
      const g = this.chunks[i].grad;
      if (g) out.set(await g.read(), this.starts[i] * this.shape[1]);
    }
    return out;
  }

  /** Frees every chunk's gradient. */
  zeroGrad(): void {
    for (const c of this.chunks) c.zeroGrad();
  }

  /** Frees every chunk. Safe to call twice. */
  dispose(): void {
    for (const c of this.chunks) c.dispose();
  }

  /** Frees every chunk at the end of a `using` block. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * A [rows, cols] matrix: one tensor when it fits a storage binding, else {@link RowChunks}; or,
 * for a model loaded with f16 weights, one frozen {@link HalfMatrix} (never chunked).
 */
export type RowMatrix = Tensor | RowChunks | HalfMatrix;

/** The blocks of a matrix with their first rows (one block for a plain tensor or an f16 matrix). */
export function rowBlocks(m: RowMatrix): { tensor: Tensor | HalfMatrix; start: number }[] {
  if (m instanceof Tensor || m instanceof HalfMatrix) return [{ tensor: m, start: 0 }];
  return m.chunks.map((tensor, i) => ({ tensor, start: m.starts[i] }));
}

/**
 * The matrix as one tensor. Throws a {@link GpuLimitError} naming `what` when it is held in row
 * chunks (code that needs the whole matrix in one binding cannot run on it).
 */
export function wholeTensor(m: RowMatrix, what: string): Tensor {
  if (m instanceof Tensor) return m;
  if (m instanceof HalfMatrix) {
    throw new HalfPrecisionError(
      `${what} ${m.label} is stored as f16 (the model was loaded with f16 weights), and this code path ` +
        `needs it as an f32 tensor; go through the f16-aware helpers (models/chunked.ts: gatherRows, ` +
        `linearRows; HalfMatrix.toFloat32 for a copy) or load the model with f32 weights`,
    );
  }
  throw new GpuLimitError(
    `${what} ${m.label} is larger than one storage binding (${
      formatBytes(m.chunks[0].ctx.limits.maxStorageBufferBindingSize)
    }), ` +
      `so it is held in row chunks and this code path cannot use it; go through the chunk-aware helpers ` +
      `(models/chunked.ts: gatherRows, linearRows) or the model's embedRows / headRows`,
  );
}

/**
 * How many chunks, of how many rows each, a [rows, cols] f32 matrix needs so that every chunk's
 * pooled buffer (its size class) stays within `maxBytes`: as few chunks as possible, with rows
 * spread evenly (the last may be shorter). One chunk when the whole matrix fits.
 */
export function chunkRows(
  rows: number,
  cols: number,
  maxBytes: number,
): { count: number; rowsPerChunk: number } {
  const rowBytes = cols * 4;
  if (!(maxBytes >= rowBytes)) {
    throw new GpuLimitError(
      `one row of ${cols} f32 values (${formatBytes(rowBytes)}) is larger than the ${
        formatBytes(maxBytes)
      } ` +
        `chunk limit; a matrix this wide cannot be split by rows`,
    );
  }
  // The pool rounds buffers up to a size class, and kernels bind whole buffers.
  const fits = (n: number) => sizeClass(n * rowBytes) <= maxBytes;
  let count = Math.max(1, Math.ceil((rows * rowBytes) / maxBytes));
  while (!fits(Math.ceil(rows / count))) count++;
  return { count, rowsPerChunk: Math.ceil(rows / count) };
}

/** The chunk-size limit of `ctx`: its binding limit, or `maxChunkBytes` when lower. */
export function chunkLimit(ctx: GpuContext, maxChunkBytes?: number): number {
  const limit = ctx.limits.maxStorageBufferBindingSize;
  if (maxChunkBytes === undefined) return limit;
  if (!(Number.isInteger(maxChunkBytes) && maxChunkBytes > 0)) {
    throw new RangeError(`maxChunkBytes must be a positive integer, got ${maxChunkBytes}`);
  }
  return Math.min(limit, maxChunkBytes);
}

/**
 * Makes a [rows, cols] matrix on `ctx`, one tensor when its buffer fits `maxBytes`, else row
 * chunks. `fill(tensor, startRow)` writes each block's values (an upload, a random kernel, ...).
 */
export function makeRowMatrix(
  ctx: GpuContext,
  shape: readonly [number, number],
  maxBytes: number,
  fill: (t: Tensor, startRow: number) => void,
  options: { name?: string; requiresGrad?: boolean } = {},
): Tensor | RowChunks {
  const [rows, cols] = shape;
  const { count, rowsPerChunk } = chunkRows(rows, cols, maxBytes);
  if (count === 1) {
    const t = Tensor.empty(ctx, shape, options).keep();
    fill(t, 0);
    return t;
  }
  const chunks: Tensor[] = [];
  try {
    for (let start = 0; start < rows; start += rowsPerChunk) {
      const n = Math.min(rowsPerChunk, rows - start);
      const t = Tensor.empty(ctx, [n, cols], {
        name: `${options.name ?? "matrix"}[${start}:${start + n}]`,
        requiresGrad: options.requiresGrad,
      }).keep();
      chunks.push(t);
      fill(t, start);
    }
  } catch (e) {
    for (const t of chunks) t.dispose();
    throw e;
  }
  return new RowChunks(chunks, options.name);
}

/**
 * Uploads a row-major [rows, cols] matrix, in row chunks when it does not fit `maxBytes` (see
 * {@link makeRowMatrix}).
 */
export function uploadRowMatrix(
  ctx: GpuContext,
  data: Float32Array,
  shape: readonly [number, number],
  maxBytes: number,
  options: { name?: string; requiresGrad?: boolean } = {},
): Tensor | RowChunks {
  const cols = shape[1];
  if (data.length !== shape[0] * cols) {
    throw new ShapeError(
      `data has ${data.length} values but shape ${fmtShape(shape)} needs ${shape[0] * cols}`,
    );
  }
  return makeRowMatrix(ctx, shape, maxBytes, (t, start) => {
    t.write(data.subarray(start * cols, (start + t.shape[0]) * cols));
  }, options);
}

/**
 * `m[ids]`: rows of a [V, d] matrix for `ids` (any shape, f32 integers) → `[...ids.shape, d]`.
 * Chunked: each chunk gathers the ids in its row range (zero rows elsewhere) and the partial
 * results are summed; gradients reach each chunk's rows.
 */
export function gatherRows(m: RowMatrix, ids: Tensor): Tensor {
  if (m instanceof Tensor) return embedding(m, ids);
  if (m instanceof HalfMatrix) return embeddingHalf(m, ids); // frozen: no gradient to the table
  let out: Tensor | null = null;
  for (let i = 0; i < m.chunks.length; i++) {
    const part = embedding(m.chunks[i], ids, { rowOffset: m.starts[i] });
    out = out ? add(out, part) : part;
  }
  return out!;
}

/**
 * The output layer `h · Wᵀ (+ b)` for `h` [..., d] and W [V, d] (`out_in` layout): [..., V].
 * Chunked: one product per chunk (with its slice of the bias), concatenated along the
 * vocabulary; autograd sums the chunks' contributions to dL/dh.
 */
export function linearRows(h: Tensor, m: RowMatrix, bias?: Tensor | null): Tensor {
  if (m instanceof Tensor || m instanceof HalfMatrix) {
    return linear(h, m, bias ?? undefined, { weightLayout: "out_in" });
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== m.shape[0])) {
    throw new ShapeError(`linearRows: bias ${fmtShape(bias.shape)} does not match ${m.label}`);
  }
  const parts = m.chunks.map((c, i) => {
    const b = bias ? slice(bias, 0, m.starts[i], m.starts[i] + c.shape[0]) : undefined;
    return linear(h, c, b, { weightLayout: "out_in" });
  });
  return concat(parts, h.rank - 1);
}

/**
 * The top-`k` of rows whose entries are split over column blocks, from each block's own top-k:
 * `parts[i]` holds the values and (block-local) indices of block i, whose first column is
 * `starts[i]`; each may hold fewer than k entries when its block is narrower. Returns the global
 * top-k indices [rows, k] (f32 integers), sorted by value descending, equal values by the lower
 * index, exactly as one top-k over the whole row would order them.
 */
export function mergeChunkTopk(parts: readonly TopK[], starts: readonly number[], k: number): Tensor {
  if (parts.length === 1 && starts[0] === 0) return parts[0].indices;
  const rows = parts[0].values.shape[0];
  // Within a block ties are already by lower index, and blocks are concatenated in column
  // order, so the merged top-k's "lower position first" is "lower global index first".
  const values = concat(parts.map((p) => p.values), 1); // [rows, K]
  const globalIds = concat(parts.map((p, i) => addScalar(p.indices, starts[i])), 1); // [rows, K]
  const width = values.shape[1];
  const { indices: pos } = topk(values, k); // positions in [0, K)
  // Take along the row: global id = globalIds[r, pos[r, j]], gathered as row r·K + pos of a
  // [rows·K, 1] table (f32-exact below 2^24 entries).
  if (rows * width >= 1 << 24) {
    throw new RangeError(`mergeChunkTopk: ${rows}×${width} candidates exceed what one gather indexes (2^24)`);
  }
  const rowBase = Tensor.from(values.ctx, Float32Array.from({ length: rows }, (_, r) => r * width), [
    rows,
    1,
  ]);
  const flatPos = add(pos, rowBase);
  const picked = embedding(reshape(globalIds, [rows * width, 1]), flatPos); // [rows, k, 1]
  return reshape(picked, [rows, k]);
}
