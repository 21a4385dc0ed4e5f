/**
 * Embedding lookup: `out[..., :] = weight[ids[...], :]`, with a deterministic scatter-add
 * backward for the weight (ids get no gradient).
 *
 * Ids live on the GPU as f32 integers (GRADMM's z-step produces them there). When the caller
 * also has them on the CPU (`hostIds`), they are range-checked up front and the backward builds
 * a CSR list (distinct id → its positions, in order) and sums one (id, column) per thread;
 * without them the backward runs a column-parallel kernel that needs no readback. Both sum in
 * position order, so they give the same bits, run after run.
 */
import {
  embeddingGatherKernel,
  embeddingScatterColumnKernel,
  embeddingScatterCsrKernel,
} from "../../kernels/embedding.ts";
import type { HostTensor } from "../reference.ts";
import { record } from "../tape.ts";
import { fmtShape, ShapeError, Tensor } from "../tensor.ts";

/** Options for {@link embedding}. */
export interface EmbeddingOptions {
  /**
   * The same ids on the CPU, if the caller has them: they are checked against the vocabulary
   * (a clear error instead of silent zero rows) and make the backward parallel over ids.
   */
  hostIds?: ArrayLike<number>;
  /**
   * The table row that `weight`'s first row is, when `weight` is one row chunk of a table too
   * large for one binding. Ids outside the chunk give zero rows (sum the chunks' outputs) and no
   * gradient; they are not an error.
   */
  rowOffset?: number;
}

/** Ids must be exact in f32. */
const MAX_ID = 1 << 24;

function checkHostIds(hostIds: ArrayLike<number>, ids: Tensor, rows: number, chunked: boolean): void {
  if (hostIds.length !== ids.size) {
    throw new ShapeError(
      `embedding: hostIds has ${hostIds.length} values but the ids tensor of shape ${
        fmtShape(ids.shape)
      } has ${ids.size}`,
    );
  }
  for (let n = 0; n < hostIds.length; n++) {
    const id = hostIds[n];
    const bad = !Number.isInteger(id) || id < 0 || id >= MAX_ID || (!chunked && id >= rows);
    if (bad) {
      throw new RangeError(
        `embedding: id ${id} at position ${n} is outside the vocabulary [0, ${rows}); ` +
          `check the tokenizer matches the model`,
      );
    }
  }
}

/**
 * The CSR list for the backward, as one u32 array: the chunk-relative row of each distinct id
 * (ascending), the start of each one's positions, then the positions in increasing order.
 */
export function embeddingCsr(hostIds: ArrayLike<number>, rows: number, rowOffset = 0): {
  list: Uint32Array;
  unique: number;
} {
  const counts = new Map<number, number>();
  for (let n = 0; n < hostIds.length; n++) {
    const r = hostIds[n] - rowOffset;
    if (r >= 0 && r < rows) counts.set(r, (counts.get(r) ?? 0) + 1);
  }
  const uniq = [...counts.keys()].sort((a, b) => a - b);
  const u = uniq.length;
  let total = 0;
  const start = new Map<number, number>();
  for (const r of uniq) {
    start.set(r, total);
    total += counts.get(r)!;
  }
  const list = new Uint32Array(2 * u + 1 + total);
  uniq.forEach((r, k) => {
    list[k] = r;
    list[u + k] = start.get(r)!;
  });
  list[2 * u] = total;
  const fill = new Map(start);
  for (let n = 0; n < hostIds.length; n++) {
    const r = hostIds[n] - rowOffset;
    if (r >= 0 && r < rows) {
      const at = fill.get(r)!;
      list[2 * u + 1 + at] = n;
      fill.set(r, at + 1);
    }
  }
  return { list, unique: u };
}

/**
 * Looks up rows of `weight` [V, d] for `ids` (any shape, f32 integers on the GPU): the result has
 * shape `[...ids.shape, d]`. Out-of-range ids give zero rows on the GPU; with `hostIds` they
 * raise a RangeError first. Gradients flow to `weight` only.
 */
export function embedding(weight: Tensor, ids: Tensor, options: EmbeddingOptions = {}): Tensor {
  if (weight.rank !== 2) {
    throw new ShapeError(`embedding: the weight must be [rows, dim], got ${fmtShape(weight.shape)}`);
  }
  if (weight.ctx !== ids.ctx) {
    throw new Error(`embedding: ${weight.label} and ${ids.label} live on different contexts`);
  }
  const [rows, dim] = weight.shape;
  const rowOffset = options.rowOffset ?? 0;
  if (!Number.isInteger(rowOffset) || rowOffset < 0) {
    throw new RangeError(`embedding: rowOffset ${rowOffset} must be ≥ 0`);
  }
  if (ids.size >= MAX_ID) {
    throw new RangeError(`embedding: ${ids.size} ids is more than one call supports (2^24)`);
  }
  if (options.hostIds) checkHostIds(options.hostIds, ids, rows, options.rowOffset !== undefined);
  // Our own copy: the caller may reuse its array before the backward runs.
  const hostIds = options.hostIds ? Int32Array.from(options.hostIds) : undefined;
  const ctx = weight.ctx;
  const out = Tensor.empty(ctx, [...ids.shape, dim]);
  embeddingGatherKernel(ctx, weight.buffer, rows, dim, ids.buffer, ids.size, out.buffer, rowOffset);
  return record(out, "embedding", [weight, ids], (g) => {
    const gw = Tensor.zeros(ctx, weight.shape);
    if (hostIds) {
      const { list, unique } = embeddingCsr(hostIds, rows, rowOffset);
      if (unique > 0) {
        const buf = ctx.pool.acquire(list.byteLength, "embedding CSR list");
        ctx.writeBuffer(buf, 0, list);
        embeddingScatterCsrKernel(ctx, g.buffer, dim, buf, unique, gw.buffer);
        ctx.releaseLater(buf);
      }
    } else {
      embeddingScatterColumnKernel(ctx, g.buffer, dim, ids.buffer, ids.size, rows, gw.buffer, rowOffset);
    }
    return [gw, null];
  });
}

/** Float64 reference of {@link embedding} (zero rows for ids outside the chunk). */
export function embeddingRef(weight: HostTensor, ids: HostTensor, rowOffset = 0): HostTensor {
  const [rows, dim] = weight.shape;
  const n = ids.data.length;
  const data = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) {
    const r = ids.data[i] - rowOffset;
    if (r < 0 || r >= rows) continue;
    for (let j = 0; j < dim; j++) data[i * dim + j] = weight.data[r * dim + j];
  }
  return { data, shape: [...ids.shape, dim] };
}
