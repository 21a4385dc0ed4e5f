/**
 * Reductions along one axis (sum, mean, max, argmax) and over everything (sumAll, meanAll). For
 * each: the forward (a GPU kernel), the backward rule, and the float64 CPU reference.
 *
 * Axes may be negative (−1 is the last). The reduced axis is dropped unless `keepDim`, in which
 * case it stays with size 1 (so the result broadcasts against the input).
 */
import { expandAxisKernel, maxAxisKernel, scatterArgKernel, sumAxisKernel } from "../../kernels/reduce.ts";
import type { HostTensor } from "../reference.ts";
import { record } from "../tape.ts";
import { fmtShape, ShapeError, Tensor } from "../tensor.ts";

/** Resolves a possibly negative axis against `shape`, or throws a ShapeError naming both. */
export function normalizeAxis(op: string, shape: readonly number[], axis: number): number {
  const r = shape.length;
  if (!Number.isInteger(axis) || axis < -r || axis >= r) {
    throw new ShapeError(`${op}: axis ${axis} is out of range for a tensor of shape ${fmtShape(shape)}`);
  }
  return axis < 0 ? axis + r : axis;
}

/** `[outer, n, inner]`: the sizes before, along and after `axis`. */
export function splitAtAxis(shape: readonly number[], axis: number): [number, number, number] {
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  return [outer, shape[axis], inner];
}

/** `shape` without `axis` (or with it set to 1 when `keepDim`). */
export function reducedShape(shape: readonly number[], axis: number, keepDim: boolean): number[] {
  return keepDim ? shape.map((d, i) => (i === axis ? 1 : d)) : shape.filter((_, i) => i !== axis);
}

/** Shared forward of sum and mean: `scale` is 1 or 1/n. */
function sumScaled(op: string, x: Tensor, axis: number, keepDim: boolean, mean: boolean): Tensor {
  const ax = normalizeAxis(op, x.shape, axis);
  const [outer, n, inner] = splitAtAxis(x.shape, ax);
  if (mean && n === 0) throw new ShapeError(`mean: axis ${axis} of shape ${fmtShape(x.shape)} is empty`);
  const scale = mean ? 1 / n : 1;
  const out = Tensor.empty(x.ctx, reducedShape(x.shape, ax, keepDim));
  sumAxisKernel(x.ctx, x.buffer, out.buffer, outer, n, inner, scale);
  // d/dx of Σ_k x[o, k, c] · scale is scale for every k: spread g back along the axis.
  return record(out, op, [x], (g) => {
    const gx = Tensor.empty(x.ctx, x.shape);
    expandAxisKernel(x.ctx, g.buffer, gx.buffer, outer, n, inner, scale);
    return [gx];
  });
}

// ---------------------------------------------------------------------------------------------
// sum

/** Sum along `axis`. */
export function sum(x: Tensor, axis: number, keepDim = false): Tensor {
  return sumScaled("sum", x, axis, keepDim, false);
}
/** Float64 reference of {@link sum}. */
export function sumRef(x: HostTensor, axis: number, keepDim = false): HostTensor {
  return reduceRef(x, axis, keepDim, (v) => v.reduce((a, b) => a + b, 0));
}

// mean

/** Mean along `axis`. */
export function mean(x: Tensor, axis: number, keepDim = false): Tensor {
  return sumScaled("mean", x, axis, keepDim, true);
}
/** Float64 reference of {@link mean}. */
export function meanRef(x: HostTensor, axis: number, keepDim = false): HostTensor {
  return reduceRef(x, axis, keepDim, (v) => v.reduce((a, b) => a + b, 0) / v.length);
}

// max: the gradient goes to the first position of the maximum (ties: lowest index), as in
// PyTorch's `max(dim)`.

/** Maximum along `axis`; the backward sends the gradient to the first arg-max. */
export function max(x: Tensor, axis: number, keepDim = false): Tensor {
  const ax = normalizeAxis("max", x.shape, axis);
  const [outer, n, inner] = splitAtAxis(x.shape, ax);
  if (n === 0) throw new ShapeError(`max: axis ${axis} of shape ${fmtShape(x.shape)} is empty`);
  const shape = reducedShape(x.shape, ax, keepDim);
  const out = Tensor.empty(x.ctx, shape);
  // The arg-max is not kept for the backward (it would be a tensor nobody owns): the backward
  // recomputes it, one more reduction.
  const idx = Tensor.empty(x.ctx, shape);
  maxAxisKernel(x.ctx, x.buffer, out.buffer, idx.buffer, outer, n, inner);
  idx.dispose();
  return record(out, "max", [x], (g) => {
    const values = Tensor.empty(x.ctx, shape);
    const at = Tensor.empty(x.ctx, shape);
    maxAxisKernel(x.ctx, x.buffer, values.buffer, at.buffer, outer, n, inner);
    const gx = Tensor.empty(x.ctx, x.shape);
    scatterArgKernel(x.ctx, g.buffer, at.buffer, gx.buffer, outer, n, inner);
    values.dispose();
    at.dispose();
    return [gx];
  });
}
/** Float64 reference of {@link max}. */
export function maxRef(x: HostTensor, axis: number, keepDim = false): HostTensor {
  return reduceRef(x, axis, keepDim, (v) => v.reduce((a, b) => (b > a ? b : a), -Infinity));
}

// argmax: not differentiable.

/** Index of the first maximum along `axis`, as exact integers stored in f32. No gradient. */
export function argmax(x: Tensor, axis: number, keepDim = false): Tensor {
  const ax = normalizeAxis("argmax", x.shape, axis);
  const [outer, n, inner] = splitAtAxis(x.shape, ax);
  if (n === 0) throw new ShapeError(`argmax: axis ${axis} of shape ${fmtShape(x.shape)} is empty`);
  const shape = reducedShape(x.shape, ax, keepDim);
  const values = Tensor.empty(x.ctx, shape);
  const idx = Tensor.empty(x.ctx, shape);
  maxAxisKernel(x.ctx, x.buffer, values.buffer, idx.buffer, outer, n, inner);
  values.dispose();
  return idx;
}
/** Float64 reference of {@link argmax}. */
export function argmaxRef(x: HostTensor, axis: number, keepDim = false): HostTensor {
  return reduceRef(x, axis, keepDim, (v) => v.reduce((best, b, i) => (b > v[best] ? i : best), 0));
}

// sumAll / meanAll: every element, result of shape [1].

function sumAllScaled(op: string, x: Tensor, mean: boolean): Tensor {
  if (mean && x.size === 0) {
    throw new ShapeError(`meanAll: the tensor of shape ${fmtShape(x.shape)} is empty`);
  }
  const scale = mean ? 1 / x.size : 1;
  const out = Tensor.empty(x.ctx, [1]);
  if (x.size === 0) out.write([0]);
  else sumAxisKernel(x.ctx, x.buffer, out.buffer, 1, x.size, 1, scale);
  return record(out, op, [x], (g) => {
    const gx = Tensor.empty(x.ctx, x.shape);
    expandAxisKernel(x.ctx, g.buffer, gx.buffer, 1, x.size, 1, scale);
    return [gx];
  });
}

/** Sum of all elements, shape [1]. */
export function sumAll(x: Tensor): Tensor {
  return sumAllScaled("sumAll", x, false);
}
/** Float64 reference of {@link sumAll}. */
export function sumAllRef(x: HostTensor): HostTensor {
  return { data: Float64Array.of(x.data.reduce((a, b) => a + b, 0)), shape: [1] };
}

/** Mean of all elements, shape [1]. */
export function meanAll(x: Tensor): Tensor {
  return sumAllScaled("meanAll", x, true);
}
/** Float64 reference of {@link meanAll}. */
export function meanAllRef(x: HostTensor): HostTensor {
  return { data: Float64Array.of(x.data.reduce((a, b) => a + b, 0) / x.data.length), shape: [1] };
}

/** Applies `f` to every line of `x` along `axis` (float64, for the references). */
export function reduceRef(
  x: HostTensor,
  axis: number,
  keepDim: boolean,
  f: (values: number[]) => number,
): HostTensor {
  const ax = normalizeAxis("reduceRef", x.shape, axis);
  const [outer, n, inner] = splitAtAxis(x.shape, ax);
  const data = new Float64Array(outer * inner);
  const line = new Array<number>(n);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < inner; c++) {
      for (let k = 0; k < n; k++) line[k] = x.data[(o * n + k) * inner + c];
      data[o * inner + c] = f(line);
    }
  }
  return { data, shape: reducedShape(x.shape, ax, keepDim) };
}
