/**
 * Optimiser kernels: the fused Adam/AdamW update (one dispatch per parameter, moments updated in
 * place) and the three kernels of global gradient-norm clipping (partial sums of squares, a
 * final one-workgroup reduction that also computes the clip scale, and the in-place scale).
 *
 * Nothing here reads back: the clip scale stays in a one-element GPU buffer that the scale
 * kernel reads, so clipping and the optimiser step encode into the same batch as the backward.
 */
import type { GpuContext } from "./device.ts";
import { launchLinear, LINEAR_MAIN, packParams } from "./launch.ts";

const ADAM_WGSL = /* wgsl */ `
struct P { n: u32, beta1: f32, beta2: f32, eps: f32,
           stepSize: f32, sqrtBc2: f32, l2: f32, decay: f32 }
@group(0) @binding(0) var<storage, read_write> W: array<f32>;
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read_write> M: array<f32>;
@group(0) @binding(3) var<storage, read_write> V: array<f32>;
@group(0) @binding(4) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  let w = W[gid];
  // Adam's L2 weight decay folds into the gradient (so it also enters the moments).
  let g = G[gid] + p.l2 * w;
  let m = p.beta1 * M[gid] + (1.0 - p.beta1) * g;
  let v = p.beta2 * V[gid] + (1.0 - p.beta2) * g * g;
  M[gid] = m;
  V[gid] = v;
  // AdamW decays the weight itself before the Adam update (decay = 1 - lr·wd), as PyTorch does.
  // eps sits outside the square root and after the bias correction of v, as in PyTorch.
  W[gid] = w * p.decay - p.stepSize * m / (sqrt(v) / p.sqrtBc2 + p.eps);
}`;

/** Scalars of one Adam update, already folded on the CPU in float64. */
export interface AdamStepScalars {
  beta1: number;
  beta2: number;
  eps: number;
  /** `lr / (1 - beta1^t)`. */
  stepSize: number;
  /** `sqrt(1 - beta2^t)`. */
  sqrtBc2: number;
  /** Coupled (L2) weight decay added to the gradient: Adam's `weightDecay`, 0 for AdamW. */
  l2: number;
  /** Multiplier applied to the weight before the update: `1 - lr·wd` for AdamW, 1 for Adam. */
  decay: number;
}

/**
 * In place, for the first `n` elements: updates the moments `m`, `v` from the gradient `g` and
 * applies one Adam step to the weights `w` (encoded into the open batch).
 */
export function adamStepKernel(
  ctx: GpuContext,
  w: GPUBuffer,
  g: GPUBuffer,
  m: GPUBuffer,
  v: GPUBuffer,
  n: number,
  s: AdamStepScalars,
): void {
  const params = packParams([
    n,
    { f: s.beta1 },
    { f: s.beta2 },
    { f: s.eps },
    { f: s.stepSize },
    { f: s.sqrtBc2 },
    { f: s.l2 },
    { f: s.decay },
  ]);
  launchLinear(ctx, ADAM_WGSL, [w, g, m, v], params, n);
}

/** Threads per workgroup of the reduction kernels (also the size of their shared arrays). */
const REDUCE_WG = 256;
/** At most this many partial sums per tensor: enough workgroups to fill a large GPU. */
export const MAX_PARTIALS_PER_TENSOR = 256;

const SUM_SQUARES_WGSL = /* wgsl */ `
struct P { n: u32, offset: u32, groups: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
var<workgroup> sh: array<f32, ${REDUCE_WG}>;
@compute @workgroup_size(${REDUCE_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  let stride = p.groups * ${REDUCE_WG}u;
  for (var i = wid.x * ${REDUCE_WG}u + lid; i < p.n; i += stride) {
    let x = X[i];
    acc += x * x;
  }
  sh[lid] = acc;
  workgroupBarrier();
  // Tree sum: pairs of similar magnitude, so the rounding error grows like log(n), not n.
  for (var s = ${REDUCE_WG / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) { sh[lid] += sh[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) { partials[p.offset + wid.x] = sh[0]; }
}`;

/** How many partial sums {@link sumSquaresKernel} writes for a tensor of `n` elements. */
export function partialsFor(n: number): number {
  // About 8 elements per thread before the tree sum; capped so the final reduction stays small.
  return Math.min(MAX_PARTIALS_PER_TENSOR, Math.max(1, Math.ceil(n / (REDUCE_WG * 8))));
}

/**
 * Writes `partialsFor(n)` partial sums of `x[i]²` (i < n) into `partials[offset ...]`. Their
 * total is the squared L2 norm of `x`.
 */
export function sumSquaresKernel(
  ctx: GpuContext,
  x: GPUBuffer,
  n: number,
  partials: GPUBuffer,
  offset: number,
): void {
  const groups = partialsFor(n);
  ctx.dispatch(ctx.pipeline(SUM_SQUARES_WGSL), [x, partials], packParams([n, offset, groups]), [groups]);
}

const CLIP_SCALE_WGSL = /* wgsl */ `
struct P { count: u32, maxNorm: f32, clip: u32 }
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> normOut: array<f32>;
@group(0) @binding(2) var<storage, read_write> scaleOut: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
var<workgroup> sh: array<f32, ${REDUCE_WG}>;
@compute @workgroup_size(${REDUCE_WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var i = lid; i < p.count; i += ${REDUCE_WG}u) { acc += partials[i]; }
  sh[lid] = acc;
  workgroupBarrier();
  for (var s = ${REDUCE_WG / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) { sh[lid] += sh[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let norm = sqrt(sh[0]);
    normOut[0] = norm;
    // PyTorch's clip_grad_norm_: scale = min(1, maxNorm / (norm + 1e-6)).
    var scale = 1.0;
    if (p.clip != 0u) { scale = min(1.0, p.maxNorm / (norm + 1e-6)); }
    scaleOut[0] = scale;
  }
}`;

/**
 * Sums the first `count` partial sums of squares and writes `norm = sqrt(total)` into
 * `normOut[0]`, and `scale = min(1, maxNorm / (norm + 1e-6))` into `scaleOut[0]` (1 when
 * `maxNorm` is infinite, i.e. only the norm is wanted).
 */
export function clipScaleKernel(
  ctx: GpuContext,
  partials: GPUBuffer,
  count: number,
  normOut: GPUBuffer,
  scaleOut: GPUBuffer,
  maxNorm: number,
): void {
  const clip = Number.isFinite(maxNorm) ? 1 : 0;
  const params = packParams([count, { f: clip ? maxNorm : 0 }, clip]);
  ctx.dispatch(ctx.pipeline(CLIP_SCALE_WGSL), [partials, normOut, scaleOut], params, [1]);
}

const SCALE_BY_WGSL = /* wgsl */ `
struct P { n: u32, index: u32 }
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
@group(0) @binding(1) var<storage, read> S: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  X[gid] = X[gid] * S[p.index];
}`;

/** In place: `x[i] *= s[index]` for i < n, with the factor read on the GPU (no readback). */
export function scaleByKernel(ctx: GpuContext, x: GPUBuffer, n: number, s: GPUBuffer, index: number): void {
  launchLinear(ctx, SCALE_BY_WGSL, [x, s], packParams([n, index]), n);
}
