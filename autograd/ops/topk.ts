/**
 * Top-k over the last axis: the k largest values of each row, sorted descending (ties broken by
 * the lower index), and their indices as f32 integers. The values are differentiable: their
 * gradient is scattered back into the selected positions.
 */
import { MAX_TOPK, MAX_TOPK_ROW, topkKernel, topkScatterKernel } from "../../kernels/topk.ts";
import type { HostTensor } from "../reference.ts";
import { record } from "../tape.ts";
import { fmtShape, ShapeError, Tensor } from "../tensor.ts";

/** The result of {@link topk}: both of shape `[...x.shape[:-1], k]`. */
export interface TopK {
  /** The k largest values of each row, in descending order. */
  values: Tensor;
  /** Positions in the last axis, as f32 integers. Keep it alive until `values`' backward has run. */
  indices: Tensor;
}

function checkTopk(shape: readonly number[], k: number): [number, number] {
  if (shape.length === 0) throw new ShapeError("topk: needs at least one axis, got a scalar");
  const n = shape[shape.length - 1];
  if (!Number.isInteger(k) || k < 1 || k > n) {
    throw new RangeError(
      `topk: k = ${k} must be between 1 and the row length ${n} of shape ${fmtShape(shape)}`,
    );
  }
  if (k > MAX_TOPK) throw new RangeError(`topk: k = ${k} is more than the supported ${MAX_TOPK}`);
  if (n > MAX_TOPK_ROW) throw new RangeError(`topk: rows of ${n} are longer than the supported 2^24`);
  return [shape.slice(0, -1).reduce((a, b) => a * b, 1), n];
}

/**
 * The `k` largest entries along the last axis of `x`, sorted descending; equal values keep the
 * lower index first. Deterministic. Gradients flow through `values` to `x`.
 */
export function topk(x: Tensor, k: number): TopK {
  const [rows, n] = checkTopk(x.shape, k);
  const shape = [...x.shape.slice(0, -1), k];
  const values = Tensor.empty(x.ctx, shape);
  const indices = Tensor.empty(x.ctx, shape);
  topkKernel(x.ctx, x.buffer, rows, n, k, values.buffer, indices.buffer);
  record(values, "topk", [x], (g) => {
    const gx = Tensor.zeros(x.ctx, x.shape);
    topkScatterKernel(x.ctx, g.buffer, indices.buffer, rows, n, k, gx.buffer);
    return [gx];
  });
  return { values, indices };
}

/** Float64 reference of {@link topk}: a stable sort of each row by value, descending. */
export function topkRef(x: HostTensor, k: number): { values: HostTensor; indices: HostTensor } {
  const [rows, n] = checkTopk(x.shape, k);
  const shape = [...x.shape.slice(0, -1), k];
  const values = new Float64Array(rows * k);
  const indices = new Float64Array(rows * k);
  for (let r = 0; r < rows; r++) {
    const row = x.data.subarray(r * n, (r + 1) * n);
    const order = [...Array(n).keys()].sort((a, b) => row[b] - row[a] || a - b);
    for (let i = 0; i < k; i++) {
      values[r * k + i] = row[order[i]];
      indices[r * k + i] = order[i];
    }
  }
  return { values: { data: values, shape }, indices: { data: indices, shape: [...shape] } };
}
