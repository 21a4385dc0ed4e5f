/**
 * Embedding kernels: the row gather of the forward, and two deterministic scatter-adds for the
 * weight gradient (no float atomics, so every run sums in the same order and gives the same bits).
 *
 * Ids are f32 holding exact integers. A weight may be one row chunk of a larger table
 * (`rowOffset`): ids outside the chunk read as zero rows and contribute no gradient, which is
 * also what an out-of-range id gets.
 */
import type { GpuContext } from "./device.ts";
import { launchLinear, LINEAR_MAIN, packParams } from "./launch.ts";

const GATHER_WGSL = /* wgsl */ `
struct P { n: u32, d: u32, rows: u32, rowOffset: u32 }
@group(0) @binding(0) var<storage, read> W: array<f32>;
@group(0) @binding(1) var<storage, read> I: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  let pos = gid / p.d;
  let j = gid % p.d;
  let row = i32(I[pos]) - i32(p.rowOffset);
  var v = 0.0;
  if (row >= 0 && row < i32(p.rows)) { v = W[u32(row) * p.d + j]; }
  O[gid] = v;
}`;

/**
 * `out[n, :] = W[ids[n] - rowOffset, :]` for `count` ids, zeros where the id is outside
 * `[rowOffset, rowOffset + rows)`.
 */
export function embeddingGatherKernel(
  ctx: GpuContext,
  weight: GPUBuffer,
  rows: number,
  dim: number,
  ids: GPUBuffer,
  count: number,
  out: GPUBuffer,
  rowOffset = 0,
): void {
  const n = count * dim;
  launchLinear(ctx, GATHER_WGSL, [weight, ids, out], packParams([n, dim, rows, rowOffset]), n);
}

const SCATTER_CSR_WGSL = /* wgsl */ `
struct P { n: u32, d: u32, unique: u32 }
@group(0) @binding(0) var<storage, read> G: array<f32>;
// [row of each unique id (unique), start of its positions (unique + 1), positions (count)]
@group(0) @binding(1) var<storage, read> L: array<u32>;
@group(0) @binding(2) var<storage, read_write> GW: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${LINEAR_MAIN(64)}
  if (gid >= p.n) { return; }
  let u = gid / p.d;
  let j = gid % p.d;
  let posBase = 2u * p.unique + 1u;
  var acc = 0.0;
  for (var k = L[p.unique + u]; k < L[p.unique + u + 1u]; k++) {
    acc += G[L[posBase + k] * p.d + j];
  }
  GW[L[u] * p.d + j] = acc;
}`;

/**
 * Weight gradient from a CSR list built on the CPU: `list` holds the (chunk-relative) row of each
 * distinct id, the start of its positions, and the positions in increasing order. One thread per
 * (distinct id, column) sums its positions in order. Rows not in the list are left untouched
 * (the caller zero-fills `gradWeight`).
 */
export function embeddingScatterCsrKernel(
  ctx: GpuContext,
  grad: GPUBuffer,
  dim: number,
  list: GPUBuffer,
  unique: number,
  gradWeight: GPUBuffer,
): void {
  const n = unique * dim;
  launchLinear(ctx, SCATTER_CSR_WGSL, [grad, list, gradWeight], packParams([n, dim, unique]), n, 64);
}

const SCATTER_COLUMN_WGSL = /* wgsl */ `
struct P { d: u32, count: u32, rows: u32, rowOffset: u32 }
@group(0) @binding(0) var<storage, read> G: array<f32>;
@group(0) @binding(1) var<storage, read> I: array<f32>;
@group(0) @binding(2) var<storage, read_write> GW: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${LINEAR_MAIN(64)}
  if (gid >= p.d) { return; }
  // This thread owns column gid of the whole gradient, so its read-modify-writes never race.
  for (var n = 0u; n < p.count; n++) {
    let row = i32(I[n]) - i32(p.rowOffset);
    if (row >= 0 && row < i32(p.rows)) {
      let k = u32(row) * p.d + gid;
      GW[k] = GW[k] + G[n * p.d + gid];
    }
  }
}`;

/**
 * Weight gradient without a CPU copy of the ids: one thread per column walks all positions in
 * order (parallel over columns only, but no readback). Adds into a zero-filled `gradWeight`;
 * the summation order is the same as the CSR kernel's, so both give identical results.
 */
export function embeddingScatterColumnKernel(
  ctx: GpuContext,
  grad: GPUBuffer,
  dim: number,
  ids: GPUBuffer,
  count: number,
  rows: number,
  gradWeight: GPUBuffer,
  rowOffset = 0,
): void {
  launchLinear(
    ctx,
    SCATTER_COLUMN_WGSL,
    [grad, ids, gradWeight],
    packParams([dim, count, rows, rowOffset]),
    dim,
    64,
  );
}
