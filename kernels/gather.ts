/**
 * Gather along the last axis (`out[r, j] = x[r, index[r, j]]`) and its backward, a deterministic
 * scatter-add (no float atomics: each row's gradient is summed by one thread, in index order).
 *
 * Indices are f32 holding exact integers, like every id tensor here. An index that is not an
 * integer in [0, n) reads as 0 in the forward and contributes no gradient: a bad id never reads
 * or writes outside its row.
 */
import type { GpuContext } from "./device.ts";
import { launchLinear, LINEAR_MAIN, packParams } from "./launch.ts";

/** Threads per workgroup for both kernels (small: a gather has no reuse to share). */
const WG = 64;

// The one validity test both kernels use: `c` is an exact integer in [0, n). Done in f32, as
// u32() of a negative or fractional value would silently land inside the row.
const VALID_INDEX = /* wgsl */ `
fn validIndex(c: f32, n: u32) -> bool {
  return c >= 0.0 && c < f32(n) && c == floor(c);
}`;

const GATHER_WGSL = /* wgsl */ `
struct P { total: u32, n: u32, m: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;    // [rows, n]
@group(0) @binding(1) var<storage, read> I: array<f32>;    // [rows, m] f32 integer ids
@group(0) @binding(2) var<storage, read_write> O: array<f32>; // [rows, m]
@group(0) @binding(3) var<uniform> p: P;
${VALID_INDEX}
${LINEAR_MAIN(WG)}
  if (gid >= p.total) { return; }
  let c = I[gid];
  var v = 0.0;
  if (validIndex(c, p.n)) { v = X[(gid / p.m) * p.n + u32(c)]; }
  O[gid] = v;
}`;

/**
 * `out[r, j] = x[r, index[r, j]]` for `rows` rows of `x` (length `n`) and of `index` / `out`
 * (length `m`); 0 where the index is not an integer in [0, n).
 */
export function gatherLastKernel(
  ctx: GpuContext,
  x: GPUBuffer,
  index: GPUBuffer,
  out: GPUBuffer,
  dims: { rows: number; n: number; m: number },
): void {
  const total = dims.rows * dims.m;
  launchLinear(ctx, GATHER_WGSL, [x, index, out], packParams([total, dims.n, dims.m]), total, WG);
}

const SCATTER_ADD_WGSL = /* wgsl */ `
struct P { rows: u32, n: u32, m: u32 }
@group(0) @binding(0) var<storage, read> G: array<f32>;       // [rows, m]
@group(0) @binding(1) var<storage, read> I: array<f32>;       // [rows, m]
@group(0) @binding(2) var<storage, read_write> GX: array<f32>; // [rows, n], zero-filled
@group(0) @binding(3) var<uniform> p: P;
${VALID_INDEX}
${LINEAR_MAIN(WG)}
  if (gid >= p.rows) { return; }
  // This thread owns row gid of the gradient, so repeated indices add without racing.
  for (var j = 0u; j < p.m; j++) {
    let c = I[gid * p.m + j];
    if (validIndex(c, p.n)) {
      let k = gid * p.n + u32(c);
      GX[k] = GX[k] + G[gid * p.m + j];
    }
  }
}`;

/**
 * Backward of {@link gatherLastKernel}: `gradX[r, index[r, j]] += grad[r, j]` into a zero-filled
 * `gradX`, summing repeated indices of a row in j order. One thread per row: linear work, and
 * rows are many where this is used (it would be slow for a few rows with very large m).
 */
export function gatherLastScatterKernel(
  ctx: GpuContext,
  grad: GPUBuffer,
  index: GPUBuffer,
  gradX: GPUBuffer,
  dims: { rows: number; n: number; m: number },
): void {
  const params = packParams([dims.rows, dims.n, dims.m]);
  launchLinear(ctx, SCATTER_ADD_WGSL, [grad, index, gradX], params, dims.rows, WG);
}
