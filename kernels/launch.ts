/**
 * Small helpers shared by every kernel launcher: packing parameter blocks and launching
 * one-thread-per-element kernels over grids that may exceed 65,535 workgroups per dimension.
 */
import { type GpuContext, splitGrid } from "./device.ts";

/**
 * WGSL for the linear invocation index of a 1-D launch whose workgroups were split over x and
 * y (see {@link launchLinear}). Declares `gid` inside `main`.
 */
export const LINEAR_MAIN = (wg: number) => /* wgsl */ `
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let gid = (wid.x + wid.y * nwg.x) * ${wg}u + lid;`;

/**
 * Launches `threads` invocations of a kernel written with {@link LINEAR_MAIN}: workgroups of
 * `wg` threads, split into a 2-D grid when more than the per-dimension limit are needed.
 */
export function launchLinear(
  ctx: GpuContext,
  code: string,
  buffers: GPUBuffer[],
  params: ArrayBufferView | null,
  threads: number,
  wg = 256,
): void {
  if (threads <= 0) return;
  const groups = Math.ceil(threads / wg);
  ctx.dispatch(
    ctx.pipeline(code),
    buffers,
    params,
    splitGrid(groups, ctx.limits.maxComputeWorkgroupsPerDimension),
  );
}

const wgslVariants = new Map<string, string>();

/**
 * The WGSL of one kernel variant, generated on first use and reused after. Launchers that build
 * their source from a template call this on every dispatch with a key naming the variant, so a
 * step does not rebuild (and the pipeline cache does not re-hash) kilobytes of source per call.
 * The key must determine the source completely.
 */
export function cachedWgsl(key: string, build: () => string): string {
  let code = wgslVariants.get(key);
  if (code === undefined) {
    code = build();
    wgslVariants.set(key, code);
  }
  return code;
}

/** Builds a parameter block from 32-bit fields: integers as u32 (or i32 if negative), `{f: x}` as f32. */
export function packParams(fields: (number | { f: number })[]): Uint8Array {
  const buf = new ArrayBuffer(Math.max(16, Math.ceil((fields.length * 4) / 16) * 16));
  const u = new Uint32Array(buf);
  const i32 = new Int32Array(buf);
  const f = new Float32Array(buf);
  fields.forEach((v, k) => {
    if (typeof v === "number") {
      if (!Number.isInteger(v)) {
        throw new TypeError(`parameter ${k} (${v}) must be an integer; wrap floats as {f: x}`);
      }
      if (v < 0) i32[k] = v;
      else u[k] = v;
    } else f[k] = v.f;
  });
  return new Uint8Array(buf);
}

/** Maximum tensor rank the broadcasting kernels accept. */
export const MAX_RANK = 8;

/** Pads a shape or stride list to MAX_RANK entries (for `array<vec4u, 2>` uniform fields). */
export function padDims(dims: readonly number[], fill = 0): number[] {
  if (dims.length > MAX_RANK) throw new RangeError(`rank ${dims.length} exceeds the maximum of ${MAX_RANK}`);
  return [...dims, ...new Array(MAX_RANK - dims.length).fill(fill)];
}
