/**
 * Softmax and log-softmax over the last axis. For each: the forward (a GPU kernel), the backward
 * rule, and the float64 CPU reference. Both are numerically stable (the row maximum is
 * subtracted before exponentiating), so inputs like ±1e4 or −3.4e38 masks stay finite.
 */
import { softmaxBackwardKernel, softmaxKernel } from "../../kernels/softmax.ts";
import type { HostTensor } from "../reference.ts";
import { record } from "../tape.ts";
import { fmtShape, ShapeError, Tensor } from "../tensor.ts";

/** `[rows, n]` of a tensor seen as rows along its last axis. */
function lastAxisRows(op: string, x: Tensor): [number, number] {
  if (x.rank === 0) throw new ShapeError(`${op}: needs at least one axis, got shape ${fmtShape(x.shape)}`);
  const n = x.shape[x.rank - 1];
  return [n === 0 ? 0 : x.size / n, n];
}

function softmaxLike(op: string, x: Tensor, log: boolean): Tensor {
  const [rows, n] = lastAxisRows(op, x);
  const out = Tensor.empty(x.ctx, x.shape);
  softmaxKernel(x.ctx, x.buffer, out.buffer, rows, n, log);
  // The backward needs only the output: y for softmax, log y for log-softmax.
  return record(out, op, [x], (g) => {
    const gx = Tensor.empty(x.ctx, x.shape);
    softmaxBackwardKernel(x.ctx, out.buffer, g.buffer, gx.buffer, rows, n, log);
    return [gx];
  });
}

// softmax: y = exp(x − max) / Σ exp(x − max);  dx = y ⊙ (g − Σ g ⊙ y)

/** Softmax over the last axis. */
export function softmax(x: Tensor): Tensor {
  return softmaxLike("softmax", x, false);
}
/** Float64 reference of {@link softmax}. */
export function softmaxRef(x: HostTensor): HostTensor {
  const out = logSoftmaxRef(x);
  return { data: out.data.map(Math.exp), shape: out.shape };
}

// logSoftmax: y = x − max − log Σ exp(x − max);  dx = g − softmax(x) · Σ g

/** Log-softmax over the last axis. */
export function logSoftmax(x: Tensor): Tensor {
  return softmaxLike("logSoftmax", x, true);
}
/** Float64 reference of {@link logSoftmax}. */
export function logSoftmaxRef(x: HostTensor): HostTensor {
  const n = x.shape[x.shape.length - 1];
  const data = new Float64Array(x.data.length);
  for (let start = 0; start < data.length; start += n) {
    const lse = logSumExpRef(x.data, start, n);
    for (let k = 0; k < n; k++) data[start + k] = x.data[start + k] - lse;
  }
  return { data, shape: [...x.shape] };
}

/** Stable float64 log Σ exp over `data[start .. start+n)`. */
export function logSumExpRef(data: ArrayLike<number>, start: number, n: number): number {
  let m = -Infinity;
  for (let k = 0; k < n; k++) m = Math.max(m, data[start + k]);
  let s = 0;
  for (let k = 0; k < n; k++) s += Math.exp(data[start + k] - m);
  return m + Math.log(s);
}
