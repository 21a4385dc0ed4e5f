/**
 * Differential privacy for the target gradient (gradmm-spec.md §4): per-example clipping of the
 * concatenated output-layer gradient, then Gaussian noise on the averaged target.
 */
import { gaussianKernel } from "../kernels/random.ts";
import type { GpuContext } from "../kernels/device.ts";
import { Tensor } from "../autograd/tensor.ts";

/** DP settings (CLI: --dp-epsilon, --dp-delta, --dp-clip). */
export interface DpOptions {
  epsilon: number;
  delta: number;
  /** Per-example clipping norm C. */
  clip: number;
  /** Seed of the noise stream. */
  seed: number;
}

/**
 * Noise scale σ of the Gaussian mechanism with sensitivity `sensitivity` (= C/N), exactly as the
 * official code: the classical bound for ε ≤ 1 and an analytic bound for ε > 1.
 */
export function gaussianSigma(epsilon: number, delta: number, sensitivity: number): number {
  if (!(epsilon > 0) || !(delta > 0 && delta < 1)) {
    throw new RangeError(`DP needs epsilon > 0 and 0 < delta < 1, got epsilon=${epsilon}, delta=${delta}`);
  }
  if (epsilon <= 1) return (sensitivity * Math.sqrt(2 * Math.log(1.25 / delta))) / epsilon;
  const c = Math.sqrt(Math.log(2 / (Math.sqrt(16 * delta + 1) - 1)));
  return ((c + Math.sqrt(c * c + epsilon)) * sensitivity) / (epsilon * Math.SQRT2);
}

/**
 * Per-example clipping factors min(1, C / (n_i + 1e-6)), where n_i is the norm of example i's
 * concatenated matched gradient: ‖r_i‖·sqrt(‖h_i‖² + 1) for [weight; bias] (§13.3), ‖r_i‖·‖h_i‖ for
 * models whose output layer has no bias (only the weight is matched there).
 */
export function clipFactors(
  rNorms: Float64Array,
  hNorms: Float64Array,
  clip: number,
  withBias: boolean,
): Float64Array {
  const out = new Float64Array(rNorms.length);
  for (let i = 0; i < out.length; i++) {
    const n = rNorms[i] * Math.sqrt(hNorms[i] * hNorms[i] + (withBias ? 1 : 0));
    out[i] = Math.min(1, clip / (n + 1e-6));
  }
  return out;
}

/** The dense noise of a private target: weight [V, d] and (optionally) bias [V]. */
export interface TargetNoise {
  sigma: number;
  weight: Tensor;
  bias: Tensor | null;
}

/** Draws the noise tensors from the seeded GPU stream (weight from index 0, bias after it). */
export function drawNoise(
  ctx: GpuContext,
  rows: number,
  dim: number,
  withBias: boolean,
  sigma: number,
  seed: number,
): TargetNoise {
  const weight = Tensor.empty(ctx, [rows, dim], { name: "dp-noise-weight" });
  gaussianKernel(ctx, weight.buffer, rows * dim, seed, sigma);
  let bias: Tensor | null = null;
  if (withBias) {
    bias = Tensor.empty(ctx, [rows], { name: "dp-noise-bias" });
    gaussianKernel(ctx, bias.buffer, rows, seed, sigma, rows * dim);
  }
  return { sigma, weight, bias };
}
