/**
 * Data-movement kernels behind the shape ops: a general axis permutation, and a copy of a
 * block of rows between two buffers at given offsets and row strides (concat, slice, select
 * and their backwards are all such block copies).
 */
import type { GpuContext } from "./device.ts";
import { launchLinear, LINEAR_MAIN, MAX_RANK, packParams, padDims } from "./launch.ts";

const PERMUTE_WGSL = /* wgsl */ `
struct P { n: u32, rank: u32, _p0: u32, _p1: u32, oshape: array<vec4u, 2>, istride: array<vec4u, 2> }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> O: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  var rem = gid;
  var src = 0u;
  for (var d = i32(p.rank) - 1; d >= 0; d--) {
    let k = u32(d);
    let s = p.oshape[k / 4u][k % 4u];
    src += (rem % s) * p.istride[k / 4u][k % 4u];
    rem = rem / s;
  }
  O[gid] = X[src];
}`;

/**
 * `out = x.permute(dims)`: output dimension `d` is input dimension `dims[d]`. `shape` is the
 * input's shape; `out` must hold the same number of elements.
 */
export function permuteKernel(
  ctx: GpuContext,
  x: GPUBuffer,
  shape: readonly number[],
  dims: readonly number[],
  out: GPUBuffer,
): void {
  const r = shape.length;
  if (r > MAX_RANK) throw new RangeError(`permute: rank ${r} exceeds the maximum of ${MAX_RANK}`);
  const strides = new Array(r).fill(1);
  for (let d = r - 2; d >= 0; d--) strides[d] = strides[d + 1] * shape[d + 1];
  const n = shape.reduce((a, b) => a * b, 1);
  const params = packParams([
    n,
    r,
    0,
    0,
    ...padDims(dims.map((d) => shape[d]), 1),
    ...padDims(dims.map((d) => strides[d])),
  ]);
  launchLinear(ctx, PERMUTE_WGSL, [x, out], params, n);
}

const COPY_ROWS_WGSL = /* wgsl */ `
struct P { n: u32, rowLen: u32, srcOff: u32, srcStride: u32, dstOff: u32, dstStride: u32 }
@group(0) @binding(0) var<storage, read> S: array<f32>;
@group(0) @binding(1) var<storage, read_write> D: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  let r = gid / p.rowLen;
  let j = gid % p.rowLen;
  D[p.dstOff + r * p.dstStride + j] = S[p.srcOff + r * p.srcStride + j];
}`;

/** Where a block of rows sits in a buffer: first element, and the distance between rows (in floats). */
export interface RowBlock {
  offset: number;
  stride: number;
}

/**
 * Copies `rows` rows of `rowLen` floats from `src` to `dst`:
 * `dst[dst.offset + r·dst.stride + j] = src[src.offset + r·src.stride + j]`. Elements of `dst`
 * outside the block are left untouched.
 */
export function copyRowsKernel(
  ctx: GpuContext,
  src: GPUBuffer,
  srcBlock: RowBlock,
  dst: GPUBuffer,
  dstBlock: RowBlock,
  rows: number,
  rowLen: number,
): void {
  const n = rows * rowLen;
  if (n === 0) return;
  const params = packParams([n, rowLen, srcBlock.offset, srcBlock.stride, dstBlock.offset, dstBlock.stride]);
  launchLinear(ctx, COPY_ROWS_WGSL, [src, dst], params, n);
}
