/**
 * Rotary position embedding kernel (Hugging Face "rotate_half" layout): for i < rotaryDim/2 the
 * pair (i, i + rotaryDim/2) of every head vector is rotated by the angle `pos · invFreq[i]`;
 * dimensions from rotaryDim on pass through. The backward is the same kernel rotating by the
 * negative angle (`sign = -1`).
 *
 * Matching transformers to ~1e-6 needs the same angle and an accurate cosine of it:
 * transformers computes `pos · inv_freq` in f32 and takes an accurate f32 cos/sin of that rounded
 * angle. GPU cos/sin are only specified on [-π, π] (NVIDIA's hardware approximation loses about
 * |x|·2^-22 beyond it), so the kernel first reduces the f32 angle by 2π with a three-part
 * Cody–Waite constant, exact for angles up to about 1e5 radians.
 */
import type { GpuContext } from "./device.ts";
import { launchLinear, LINEAR_MAIN } from "./launch.ts";

/** The most rotated pairs (rotaryDim / 2) one launch supports (they travel in the uniform block). */
export const MAX_ROTARY_PAIRS = 128;

/**
 * 2π as C1 + C2 + C3 where C1 and C2 have 10 significant bits, so k·C1 and k·C2 are exact in f32
 * for |k| < 2^14 (angles below ~1e5 rad).
 */
function twoPiParts(): [number, number, number] {
  const twoPi = 2 * Math.PI;
  const q1 = 2 ** -7; // 2π ∈ [4, 8): 10 significant bits leave a quantum of 2^(2-9)
  const c1 = Math.round(twoPi / q1) * q1;
  const q2 = 2 ** -19; // the rest is ≈ 0.0019 ∈ [2^-10, 2^-9)
  const c2 = Math.round((twoPi - c1) / q2) * q2;
  const c3 = Math.fround(twoPi - c1 - c2);
  return [c1, c2, c3];
}
const [C1, C2, C3] = twoPiParts();

const ROPE_WGSL = /* wgsl */ `
struct P {
  n: u32, heads: u32, seq: u32, headDim: u32,
  rotaryDim: u32, posBatchStride: u32, sign: f32, _p: u32,
  invFreq: array<vec4f, ${MAX_ROTARY_PAIRS / 4}>,
}
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> POS: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@group(0) @binding(3) var<uniform> p: P;

// cos and sin of an f32 angle, reduced to [-π, π] first (see the file comment).
fn cosSin(a: f32) -> vec2f {
  let k = round(a * ${1 / (2 * Math.PI)});
  let r = ((a - k * (${C1})) - k * (${C2})) - k * (${C3});
  return vec2f(cos(r), sin(r));
}

${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  let j = gid % p.headDim;
  if (j >= p.rotaryDim) { O[gid] = X[gid]; return; }
  let row = gid / p.headDim;              // (b, h, t) flattened
  let t = row % p.seq;
  let b = row / (p.seq * p.heads);
  let half = p.rotaryDim / 2u;
  let i = select(j - half, j, j < half);
  let pos = POS[b * p.posBatchStride + t];
  let angle = pos * p.invFreq[i / 4u][i % 4u];
  let cs = cosSin(angle);
  let s = cs.y * p.sign;
  let base = row * p.headDim;
  if (j < half) {
    O[gid] = X[gid] * cs.x - X[base + j + half] * s;
  } else {
    O[gid] = X[gid] * cs.x + X[base + i] * s;
  }
}`;

/** Geometry of one rope launch. */
export interface RopeDims {
  batch: number;
  heads: number;
  seq: number;
  headDim: number;
  rotaryDim: number;
  /** 0 when one positions row is shared by the whole batch, else `seq`. */
  posBatchStride: number;
}

/**
 * `out = rotate(x)` for x of shape [batch, heads, seq, headDim] with the f32 inverse frequencies
 * `invFreq` (rotaryDim / 2 of them); `sign = -1` rotates backwards (the gradient).
 */
export function ropeKernel(
  ctx: GpuContext,
  x: GPUBuffer,
  positions: GPUBuffer,
  out: GPUBuffer,
  dims: RopeDims,
  invFreq: Float32Array,
  sign: 1 | -1,
): void {
  const half = dims.rotaryDim / 2;
  if (invFreq.length !== half || half > MAX_ROTARY_PAIRS) {
    throw new RangeError(
      `rope: ${invFreq.length} frequencies for rotaryDim ${dims.rotaryDim} (at most ${2 * MAX_ROTARY_PAIRS})`,
    );
  }
  const n = dims.batch * dims.heads * dims.seq * dims.headDim;
  const buf = new ArrayBuffer(32 + MAX_ROTARY_PAIRS * 4);
  const u = new Uint32Array(buf);
  u.set([n, dims.heads, dims.seq, dims.headDim, dims.rotaryDim, dims.posBatchStride]);
  new Float32Array(buf, 24, 1)[0] = sign;
  new Float32Array(buf, 32, half).set(invFreq);
  launchLinear(ctx, ROPE_WGSL, [x, positions, out], new Uint8Array(buf), n);
}
