/**
 * Gather along the last axis: `out[..., j] = x[..., index[..., j]]`, e.g. a few tokens'
 * log-probabilities out of a full-vocabulary row, so only those come back to the CPU. The
 * backward scatter-adds the gradient into the gathered positions (repeated indices add up);
 * `index` gets no gradient.
 */
import { gatherLastKernel, gatherLastScatterKernel } from "../../kernels/gather.ts";
import type { HostTensor } from "../reference.ts";
import { record } from "../tape.ts";
import { fmtShape, ShapeError, shapeSize, Tensor } from "../tensor.ts";

/** Row length limit: indices must be exact f32 integers. */
const MAX_GATHER_ROW = 1 << 24;

/** Checks the shapes and returns `[rows, n, m]`. */
function checkGather(x: readonly number[], index: readonly number[]): [number, number, number] {
  const sameLead = x.length >= 1 && index.length === x.length &&
    x.slice(0, -1).every((d, i) => d === index[i]);
  if (!sameLead) {
    throw new ShapeError(
      `gatherLast: index ${fmtShape(index)} must have the shape of x ${fmtShape(x)} except in the last axis`,
    );
  }
  const n = x[x.length - 1];
  if (n > MAX_GATHER_ROW) {
    throw new RangeError(`gatherLast: rows of ${n} are longer than the supported 2^24 (f32 indices)`);
  }
  return [shapeSize(x.slice(0, -1)), n, index[index.length - 1]];
}

/**
 * `out[..., j] = x[..., index[..., j]]` along the last axis. `index` has x's shape except in the
 * last axis (length m, any m ≥ 0) and holds f32 integer ids, as `topk(...).indices` does; the
 * result has index's shape. An index that is not an integer in [0, n) gives 0 (and no gradient)
 * rather than an error, since the ids live on the GPU. Gradients flow to `x` only; keep `index`
 * alive until the backward has run.
 */
export function gatherLast(x: Tensor, index: Tensor): Tensor {
  const [rows, n, m] = checkGather(x.shape, index.shape);
  if (x.ctx !== index.ctx) {
    throw new Error(`gatherLast: ${x.label} and ${index.label} live on different contexts`);
  }
  const dims = { rows, n, m };
  const out = Tensor.empty(x.ctx, index.shape);
  gatherLastKernel(x.ctx, x.buffer, index.buffer, out.buffer, dims);
  return record(out, "gatherLast", [x, index], (g) => {
    if (!x.requiresGrad) return [null, null];
    const gx = Tensor.zeros(x.ctx, x.shape);
    gatherLastScatterKernel(x.ctx, g.buffer, index.buffer, gx.buffer, dims);
    return [gx, null];
  });
}

/** Float64 reference of {@link gatherLast} (0 where the index is not an integer in [0, n)). */
export function gatherLastRef(x: HostTensor, index: HostTensor): HostTensor {
  const [rows, n, m] = checkGather(x.shape, index.shape);
  const data = new Float64Array(rows * m);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < m; j++) {
      const c = index.data[r * m + j];
      if (Number.isInteger(c) && c >= 0 && c < n) data[r * m + j] = x.data[r * n + c];
    }
  }
  return { data, shape: [...index.shape] };
}
