/**
 * Differential privacy for the target gradient (docs/algorithm.md#dp): per-example clipping of the
 * concatenated output-layer gradient, then Gaussian noise on the averaged target.
 */
import { gaussianKernel } from "../kernels/random.ts";
import type { GpuContext } from "../kernels/device.ts";
import { Tensor } from "../autograd/tensor.ts";

/** DP settings (CLI: --dp-epsilon, --dp-delta, --dp-clip). */
export interface DpOptions {
  /** Privacy budget ε of the whole run (> 0; smaller is more private). */
  epsilon: number;
  /** Failure probability δ of the (ε, δ) guarantee, e.g. 1e-5. */
  delta: number;
  /** Per-example clipping norm C. */
  clip: number;
  /** Seed of the noise stream. */
  seed: number;
  /** σ from (ε, δ): "analytic" (default, Balle & Wang) or "official" (the paper code's formula). */
  calibration?: DpCalibration;
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
 * concatenated matched gradient: ‖r_i‖·sqrt(‖h_i‖² + 1) for [weight; bias], ‖r_i‖·‖h_i‖ for models
 * whose output layer has no bias (only the weight is matched there); docs/algorithm.md#dp.
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
  /** Standard deviation of the noise per element. */
  sigma: number;
  /** Noise added to the weight gradient, [V, d]. */
  weight: Tensor;
  /** Noise added to the bias gradient, [V], or null without an output bias. */
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

// ---- Analytic Gaussian mechanism (Balle & Wang, ICML 2018, Theorem 8)
//
// A Gaussian mechanism with sensitivity Δ and noise σ is (ε, δ)-DP exactly when
//   Φ(Δ/(2σ) − εσ/Δ) − e^ε Φ(−Δ/(2σ) − εσ/Δ) ≤ δ,
// a condition that is tight (it is the hockey-stick divergence of the two shifted Gaussians). The
// classical bound σ = Δ·sqrt(2 ln(1.25/δ))/ε is sufficient only for ε ≤ 1 and adds more noise.

/** ln Φ(t) for the standard normal CDF, accurate in float64 far into the lower tail. */
export function logNormalCdf(t: number): number {
  // Φ(t) = erfc(−t/√2)/2.
  return logErfc(-t / Math.SQRT2) - Math.LN2;
}

/** The standard normal CDF Φ(t). */
export function normalCdf(t: number): number {
  return Math.exp(logNormalCdf(t));
}

/**
 * ln erfc(x). For x < 2 through erf's everywhere-positive series (no cancellation):
 * erf(x) = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1)); for x ≥ 2 through the continued
 * fraction erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))) (modified Lentz), which
 * keeps full relative accuracy however small erfc is.
 */
function logErfc(x: number): number {
  if (x < 2) {
    if (x < -6) return Math.log(2) + Math.log1p(-Math.exp(logErfc(-x)) / 2);
    const ax = Math.abs(x);
    let term = ax, total = ax;
    for (let n = 1; n < 200 && term > 1e-17 * total; n++) {
      term *= (2 * ax * ax) / (2 * n + 1);
      total += term;
    }
    const erfAbs = (2 / Math.sqrt(Math.PI)) * Math.exp(-ax * ax) * total;
    return Math.log(x >= 0 ? 1 - erfAbs : 1 + erfAbs);
  }
  // Lentz's algorithm for 1/(x + a1/(x + a2/(x + …))), a_n = n/2.
  const tiny = 1e-300;
  let f = x, c = x, d = 0;
  for (let n = 1; n < 500; n++) {
    const a = n / 2;
    d = x + a * d;
    d = Math.abs(d) < tiny ? tiny : d;
    c = x + a / c;
    c = Math.abs(c) < tiny ? tiny : c;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return -x * x - Math.log(f) - 0.5 * Math.log(Math.PI);
}

/**
 * The smallest δ for which the Gaussian mechanism with noise σ and sensitivity Δ is (ε, δ)-DP:
 * Φ(Δ/(2σ) − εσ/Δ) − e^ε Φ(−Δ/(2σ) − εσ/Δ) (Balle & Wang 2018, Theorem 8).
 */
export function gaussianDelta(epsilon: number, sigma: number, sensitivity: number): number {
  const a = sensitivity / (2 * sigma);
  const b = (epsilon * sigma) / sensitivity;
  const first = normalCdf(a - b);
  const second = Math.exp(epsilon + logNormalCdf(-a - b));
  return Math.max(0, first - second);
}

function checkBudget(epsilon: number, delta: number, sensitivity: number): void {
  if (!(epsilon > 0) || !Number.isFinite(epsilon) || !(delta > 0 && delta < 1)) {
    throw new RangeError(`DP needs epsilon > 0 and 0 < delta < 1, got epsilon=${epsilon}, delta=${delta}`);
  }
  if (!(sensitivity > 0) || !Number.isFinite(sensitivity)) {
    throw new RangeError(`DP needs a positive finite sensitivity, got ${sensitivity}`);
  }
}

/**
 * Noise scale σ of the analytic Gaussian mechanism: the smallest σ with
 * {@link gaussianDelta}(ε, σ, Δ) ≤ δ, found by bisection (δ(σ) falls as σ grows). σ is linear in
 * Δ, so the search runs at Δ = 1 and scales. The returned σ satisfies the condition (it is the
 * upper end of the final bracket, within a relative 1e-12 of the exact root).
 */
export function analyticGaussianSigma(epsilon: number, delta: number, sensitivity: number): number {
  checkBudget(epsilon, delta, sensitivity);
  let hi = 1;
  while (gaussianDelta(epsilon, hi, 1) > delta) hi *= 2;
  let lo = hi / 2;
  while (gaussianDelta(epsilon, lo, 1) <= delta && lo > 1e-12) lo /= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-12 * hi; i++) {
    const mid = (lo + hi) / 2;
    if (gaussianDelta(epsilon, mid, 1) <= delta) hi = mid;
    else lo = mid;
  }
  return hi * sensitivity;
}

/**
 * The ε actually spent by a Gaussian mechanism of noise σ and sensitivity Δ at a given δ (the
 * smallest ε with {@link gaussianDelta} ≤ δ, by bisection): how the official formula's σ reads
 * under the tight accounting.
 */
export function gaussianEpsilon(sigma: number, delta: number, sensitivity: number): number {
  checkBudget(1, delta, sensitivity);
  if (!(sigma > 0)) throw new RangeError(`σ must be positive, got ${sigma}`);
  if (gaussianDelta(0, sigma, sensitivity) <= delta) return 0;
  let hi = 1;
  while (gaussianDelta(hi, sigma, sensitivity) > delta) hi *= 2;
  let lo = 0;
  for (let i = 0; i < 200 && hi - lo > 1e-12 * hi; i++) {
    const mid = (lo + hi) / 2;
    if (gaussianDelta(mid, sigma, sensitivity) <= delta) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** How σ is calibrated from (ε, δ): the analytic mechanism (default) or the official formula. */
export type DpCalibration = "analytic" | "official";

/** σ for a class target under the chosen calibration. */
export function calibratedSigma(
  calibration: DpCalibration,
  epsilon: number,
  delta: number,
  sensitivity: number,
): number {
  return calibration === "official"
    ? gaussianSigma(epsilon, delta, sensitivity)
    : analyticGaussianSigma(epsilon, delta, sensitivity);
}

/** One class target's release, as recorded in the privacy accounting. */
export interface ClassRelease {
  /** The class (its label word). */
  label: string;
  /** Real examples in the class target (N). */
  examples: number;
  /** Sensitivity C/N of the clipped mean. */
  sensitivity: number;
  /** Noise standard deviation per element of this release. */
  sigma: number;
  /** ε this release spends at the run's δ under the tight (analytic) accounting. */
  epsilon: number;
}

/** The (ε, δ) a synth run spent, and on what assumptions. */
export interface PrivacyAccount {
  /** ε of the whole run (every class release composed). */
  epsilon: number;
  /** δ of the whole run. */
  delta: number;
  /** How σ was derived from (ε, δ). */
  calibration: DpCalibration;
  /** How the class releases compose (each class is a disjoint set of examples). */
  composition: string;
  /** The neighbouring relation the guarantee is stated for (add/remove or replace one example). */
  neighbouring: string;
  /** One entry per class target released. */
  releases: ClassRelease[];
  /** What the run read from raw real data outside the Gaussian mechanism (not covered by (ε, δ)). */
  notCovered: string[];
}

/**
 * The run's privacy account. Each class target is one Gaussian release computed from that class's
 * examples only; the classes hold disjoint examples, so by parallel composition the run spends the
 * largest per-class ε (at the common δ). Everything computed from the noisy targets afterwards
 * (initialisation, ADMM, decoding, reported matching losses) is post-processing and spends nothing.
 * The sensitivity C/N assumes zero-out neighbours (one example's clipped gradient replaced by 0,
 * class sizes public); under replace-one neighbours it doubles.
 */
export function privacyAccount(
  releases: ClassRelease[],
  delta: number,
  calibration: DpCalibration,
  notCovered: string[],
): PrivacyAccount {
  return {
    epsilon: Math.max(0, ...releases.map((r) => r.epsilon)),
    delta,
    calibration,
    composition: "parallel: one Gaussian release per class target on disjoint examples",
    neighbouring: "zero-out (one example's clipped gradient replaced by 0; class sizes public); " +
      "sensitivity C/N; under replace-one neighbours it would be 2C/N",
    releases,
    notCovered,
  };
}
