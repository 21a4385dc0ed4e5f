/**
 * Counter-based Gaussian noise on the GPU: element i of a stream with seed s is a pure function
 * of (s, i), so a dense noise tensor (the DP noise of the target gradient, V×d) can be
 * regenerated from its seed instead of being stored or uploaded.
 */
import type { GpuContext } from "./device.ts";
import { launchLinear, LINEAR_MAIN, packParams } from "./launch.ts";

// PCG-style integer hash (Jarzynski & Olano, "Hash Functions for GPU Rendering", 2020) applied
// twice to (seed, index, stream) → two uniforms → Box–Muller.
const GAUSSIAN_WGSL = /* wgsl */ `
struct P { n: u32, seedLo: u32, seedHi: u32, offset: u32, sigma: f32 }
@group(0) @binding(0) var<storage, read_write> O: array<f32>;
@group(0) @binding(1) var<uniform> p: P;
fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}
fn uniform01(a: u32) -> f32 {
  // 24 random bits → (0, 1]; never 0 so log() is finite.
  return (f32(a >> 8u) + 1.0) / 16777216.0;
}
${LINEAR_MAIN(256)}
  if (gid >= p.n) { return; }
  let i = gid + p.offset;
  let h1 = pcg(pcg(i ^ p.seedLo) + p.seedHi);
  let h2 = pcg(h1 ^ 0x9e3779b9u);
  let u1 = uniform01(h1);
  let u2 = uniform01(h2);
  O[gid] = p.sigma * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}`;

/**
 * Writes `n` N(0, std²) values into `out`: element k is the stream's value at index
 * `offset + k`, so a big tensor can be generated in chunks that agree with one whole call.
 */
export function gaussianKernel(
  ctx: GpuContext,
  out: GPUBuffer,
  n: number,
  seed: number,
  std: number,
  offset = 0,
): void {
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 4294967296) >>> 0;
  launchLinear(ctx, GAUSSIAN_WGSL, [out], packParams([n, lo, hi ^ 0x85ebca6b, offset, { f: std }]), n);
}
