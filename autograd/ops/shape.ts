/**
 * Shape ops: reshape, permute/transpose, concat, slice and select. Each makes a new contiguous
 * tensor (tensors own their buffers, so there are no views); each backward is the inverse data
 * movement, and each has a float64 reference next to it.
 */
import { copyRowsKernel, permuteKernel } from "../../kernels/shape.ts";
import { type HostTensor, stridesOf } from "../reference.ts";
import { record } from "../tape.ts";
import { fmtShape, ShapeError, shapeSize, Tensor } from "../tensor.ts";

/** Normalises a possibly negative axis (`-1` = last) and checks it against `rank`. */
export function normAxis(op: string, axis: number, rank: number, shape: readonly number[]): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) {
    throw new ShapeError(`${op}: axis ${axis} is out of range for a tensor of shape ${fmtShape(shape)}`);
  }
  return a;
}

/** `[outer, dim, inner]`: the sizes before, at and after `axis`. */
function splitAt(shape: readonly number[], axis: number): [number, number, number] {
  return [shapeSize(shape.slice(0, axis)), shape[axis], shapeSize(shape.slice(axis + 1))];
}

// ---------------------------------------------------------------------------------------------
// reshape: same values in the same order; the backward reshapes the gradient back.

/** Resolves a target shape that may contain one `-1` for a tensor of `size` elements. */
export function resolveShape(op: string, from: readonly number[], to: readonly number[]): number[] {
  const size = shapeSize(from);
  const free = to.filter((d) => d === -1).length;
  if (free > 1) throw new ShapeError(`${op}: only one -1 is allowed in ${fmtShape(to)}`);
  const known = to.reduce((a, d) => (d === -1 ? a : a * d), 1);
  const bad = to.some((d) => d !== -1 && (!Number.isInteger(d) || d < 0));
  let out = [...to];
  if (!bad && free === 1 && known > 0 && size % known === 0) {
    out = to.map((d) => (d === -1 ? size / known : d));
  }
  if (bad || out.includes(-1) || shapeSize(out) !== size) {
    throw new ShapeError(`${op}: cannot reshape a tensor of shape ${fmtShape(from)} to ${fmtShape(to)}`);
  }
  return out;
}

/** The same values with another shape (one dimension may be -1). Copies the data. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const target = resolveShape("reshape", x.shape, shape);
  const out = Tensor.empty(x.ctx, target);
  x.ctx.copyBuffer(x.buffer, 0, out.buffer, 0, x.bytes);
  return record(out, "reshape", [x], (g) => [reshape(g, x.shape)]);
}
/** Float64 reference of {@link reshape}. */
export function reshapeRef(x: HostTensor, shape: readonly number[]): HostTensor {
  return { data: Float64Array.from(x.data), shape: resolveShape("reshape", x.shape, shape) };
}

// ---------------------------------------------------------------------------------------------
// permute: output dim d = input dim dims[d]; the backward permutes by the inverse permutation.

function checkPermutation(x: readonly number[], dims: readonly number[]): number[] {
  const r = x.length;
  const norm = dims.map((d) => (d < 0 ? d + r : d));
  const ok = dims.length === r && norm.every((d) => Number.isInteger(d) && d >= 0 && d < r) &&
    new Set(norm).size === r;
  if (!ok) {
    throw new ShapeError(
      `permute: ${fmtShape(dims)} is not a permutation of the axes of shape ${fmtShape(x)}`,
    );
  }
  return norm;
}

/** Reorders the axes: output axis `d` is input axis `dims[d]` (like `torch.permute`). */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  const p = checkPermutation(x.shape, dims);
  const out = Tensor.empty(x.ctx, p.map((d) => x.shape[d]));
  permuteKernel(x.ctx, x.buffer, x.shape, p, out.buffer);
  const inverse = new Array(p.length);
  p.forEach((d, i) => (inverse[d] = i));
  return record(out, "permute", [x], (g) => [permute(g, inverse)]);
}
/** Float64 reference of {@link permute}. */
export function permuteRef(x: HostTensor, dims: readonly number[]): HostTensor {
  const p = checkPermutation(x.shape, dims);
  const shape = p.map((d) => x.shape[d]);
  const inStrides = stridesOf(x.shape);
  const n = x.data.length;
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let rem = i;
    let src = 0;
    for (let d = shape.length - 1; d >= 0; d--) {
      src += (rem % shape[d]) * inStrides[p[d]];
      rem = Math.floor(rem / shape[d]);
    }
    data[i] = x.data[src];
  }
  return { data, shape };
}

function swapDims(rank: number, shape: readonly number[], dim0: number, dim1: number): number[] {
  const a = normAxis("transpose", dim0, rank, shape);
  const b = normAxis("transpose", dim1, rank, shape);
  const dims = [...Array(rank).keys()];
  [dims[a], dims[b]] = [dims[b], dims[a]];
  return dims;
}

/** Swaps two axes (negative axes count from the end). */
export function transpose(x: Tensor, dim0: number, dim1: number): Tensor {
  return permute(x, swapDims(x.rank, x.shape, dim0, dim1));
}
/** Float64 reference of {@link transpose}. */
export function transposeRef(x: HostTensor, dim0: number, dim1: number): HostTensor {
  return permuteRef(x, swapDims(x.shape.length, x.shape, dim0, dim1));
}

// ---------------------------------------------------------------------------------------------
// concat: the backward slices the gradient back into the inputs' pieces.

function concatShape(
  shapes: readonly (readonly number[])[],
  axis: number,
): { shape: number[]; axis: number } {
  if (shapes.length === 0) throw new ShapeError("concat: needs at least one tensor");
  const first = shapes[0];
  const a = normAxis("concat", axis, first.length, first);
  let total = 0;
  for (const s of shapes) {
    const same = s.length === first.length && s.every((d, i) => i === a || d === first[i]);
    if (!same) {
      throw new ShapeError(
        `concat along axis ${axis}: shapes ${fmtShape(first)} and ${fmtShape(s)} differ outside that axis`,
      );
    }
    total += s[a];
  }
  const shape = [...first];
  shape[a] = total;
  return { shape, axis: a };
}

/** Joins tensors of equal shape (except along `axis`) along `axis`. */
export function concat(xs: readonly Tensor[], axis: number): Tensor {
  const { shape, axis: a } = concatShape(xs.map((x) => x.shape), axis);
  const ctx = xs[0].ctx;
  for (const x of xs) if (x.ctx !== ctx) throw new Error(`concat: ${x.label} lives on another GPU context`);
  const out = Tensor.empty(ctx, shape);
  const [outer, total, inner] = splitAt(shape, a);
  let at = 0;
  for (const x of xs) {
    const len = x.shape[a];
    copyRowsKernel(
      ctx,
      x.buffer,
      { offset: 0, stride: len * inner },
      out.buffer,
      { offset: at * inner, stride: total * inner },
      outer,
      len * inner,
    );
    at += len;
  }
  const starts: number[] = [];
  at = 0;
  for (const x of xs) {
    starts.push(at);
    at += x.shape[a];
  }
  return record(
    out,
    "concat",
    [...xs],
    (g) => xs.map((x, i) => (x.requiresGrad ? slice(g, a, starts[i], starts[i] + x.shape[a]) : null)),
  );
}
/** Float64 reference of {@link concat}. */
export function concatRef(xs: readonly HostTensor[], axis: number): HostTensor {
  const { shape, axis: a } = concatShape(xs.map((x) => x.shape), axis);
  const [outer, total, inner] = splitAt(shape, a);
  const data = new Float64Array(shapeSize(shape));
  let at = 0;
  for (const x of xs) {
    const len = x.shape[a];
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < len * inner; j++) {
        data[o * total * inner + at * inner + j] = x.data[o * len * inner + j];
      }
    }
    at += len;
  }
  return { data, shape };
}

// ---------------------------------------------------------------------------------------------
// slice / select: the backward writes the gradient into a zero tensor of the input's shape.

/** Normalises Python-style `start`/`end` (negatives count from the end) and checks them. */
function sliceBounds(
  shape: readonly number[],
  axis: number,
  start: number,
  end: number,
): [number, number, number] {
  const a = normAxis("slice", axis, shape.length, shape);
  const n = shape[a];
  const s = start < 0 ? start + n : start;
  const e = end < 0 ? end + n : end;
  if (!Number.isInteger(s) || !Number.isInteger(e) || s < 0 || e > n || s > e) {
    throw new ShapeError(
      `slice [${start}, ${end}) is out of range for axis ${axis} of shape ${fmtShape(shape)}`,
    );
  }
  return [a, s, e];
}

/** Copies `x[..., start:end, ...]` (along `axis`) into a tensor of shape `outShape`. */
function sliceInto(x: Tensor, a: number, s: number, e: number, outShape: readonly number[]): Tensor {
  const out = Tensor.empty(x.ctx, outShape);
  const [outer, n, inner] = splitAt(x.shape, a);
  const len = e - s;
  copyRowsKernel(
    x.ctx,
    x.buffer,
    { offset: s * inner, stride: n * inner },
    out.buffer,
    { offset: 0, stride: len * inner },
    outer,
    len * inner,
  );
  return record(out, "slice", [x], (g) => {
    const gx = Tensor.zeros(x.ctx, x.shape);
    copyRowsKernel(
      x.ctx,
      g.buffer,
      { offset: 0, stride: len * inner },
      gx.buffer,
      { offset: s * inner, stride: n * inner },
      outer,
      len * inner,
    );
    return [gx];
  });
}

/** `x[..., start:end, ...]` along `axis` (negative bounds count from the end, as in Python). */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  const [a, s, e] = sliceBounds(x.shape, axis, start, end);
  const shape = [...x.shape];
  shape[a] = e - s;
  return sliceInto(x, a, s, e, shape);
}
/** Float64 reference of {@link slice}. */
export function sliceRef(x: HostTensor, axis: number, start: number, end: number): HostTensor {
  const [a, s, e] = sliceBounds(x.shape, axis, start, end);
  const [outer, n, inner] = splitAt(x.shape, a);
  const len = e - s;
  const shape = [...x.shape];
  shape[a] = len;
  const data = new Float64Array(outer * len * inner);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < len * inner; j++) data[o * len * inner + j] = x.data[o * n * inner + s * inner + j];
  }
  return { data, shape };
}

/** `x[..., index, ...]`: one position along `axis`, which is removed from the shape. */
export function select(x: Tensor, axis: number, index: number): Tensor {
  const a = normAxis("select", axis, x.rank, x.shape);
  const i = index < 0 ? index + x.shape[a] : index;
  if (!Number.isInteger(i) || i < 0 || i >= x.shape[a]) {
    throw new ShapeError(
      `select: index ${index} is out of range for axis ${axis} of shape ${fmtShape(x.shape)}`,
    );
  }
  const [, s, e] = sliceBounds(x.shape, a, i, i + 1);
  return sliceInto(x, a, s, e, x.shape.filter((_, k) => k !== a));
}
/** Float64 reference of {@link select}. */
export function selectRef(x: HostTensor, axis: number, index: number): HostTensor {
  const a = normAxis("select", axis, x.shape.length, x.shape);
  const i = index < 0 ? index + x.shape[a] : index;
  const r = sliceRef(x, a, i, i + 1);
  return { data: r.data, shape: x.shape.filter((_, k) => k !== a) };
}
