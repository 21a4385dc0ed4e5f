import {
  analyticGaussianSigma,
  clipFactors,
  drawNoise,
  gaussianDelta,
  gaussianEpsilon,
  gaussianSigma,
  normalCdf,
  privacyAccount,
} from "../../admm/dp.ts";
import { synthPrivacy } from "../../admm/synth.ts";
import { ctx, gpuTest } from "../helpers.ts";

Deno.test("DP σ: the spec's worked example (N=25, ε=0.05, δ=1e-4, C=1 → σ≈3.47) and the ε>1 branch", () => {
  const s = gaussianSigma(0.05, 1e-4, 1 / 25);
  if (Math.abs(s - 3.475) > 0.01) throw new Error(`σ = ${s}, expected ≈ 3.475`);
  // The analytic bound for ε > 1 is linear in the sensitivity and shrinks as ε grows.
  const a = gaussianSigma(2, 1e-5, 1);
  const b = gaussianSigma(2, 1e-5, 0.5);
  if (Math.abs(a - 2 * b) > 1e-12) throw new Error("σ is not linear in the sensitivity");
  if (!(gaussianSigma(4, 1e-5, 1) < a)) throw new Error("σ does not shrink with ε");
  // By hand: c = sqrt(ln(2/(sqrt(1.00016)-1))) = sqrt(ln 25001) = 3.1823, σ = (c + sqrt(c²+2))/(2·√2) = 2.3563.
  if (Math.abs(a - 2.3563) > 1e-3) throw new Error(`σ(ε=2, δ=1e-5) = ${a}, expected ≈ 2.3563`);
});

Deno.test("DP clipping: factors from ‖r‖·sqrt(‖h‖²+1) with bias, ‖r‖·‖h‖ without", () => {
  const f = clipFactors(Float64Array.of(2, 0.1), Float64Array.of(3, 1), 1, true);
  const want0 = 1 / (2 * Math.sqrt(10) + 1e-6);
  if (Math.abs(f[0] - want0) > 1e-12 || f[1] !== 1) throw new Error(`factors ${f}`);
  const g = clipFactors(Float64Array.of(2), Float64Array.of(3), 1, false);
  if (Math.abs(g[0] - 1 / (6 + 1e-6)) > 1e-12) throw new Error(`factor ${g[0]}`);
});

Deno.test({
  name: "DP noise on the GPU: mean 0 and standard deviation σ, reproducible from the seed",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const sigma = 3.47;
    const rows = 1001, dim = 97; // ~97k samples, not a multiple of the workgroup size
    const a = drawNoise(c, rows, dim, true, sigma, 1234);
    const v = await a.weight.read();
    let s = 0, s2 = 0;
    for (const x of v) {
      s += x;
      s2 += x * x;
    }
    const n = v.length;
    const mean = s / n;
    const std = Math.sqrt(s2 / n - mean * mean);
    if (Math.abs(mean) > (4 * sigma) / Math.sqrt(n)) throw new Error(`mean ${mean} too far from 0`);
    // Standard error of the std estimate ≈ σ/sqrt(2n) ≈ 0.0079 here; allow 4 of them.
    if (Math.abs(std - sigma) > 4 * sigma / Math.sqrt(2 * n)) {
      throw new Error(`std ${std}, expected ${sigma}`);
    }
    // Tails: about 4.55% beyond 2σ for a Gaussian.
    const tail = v.filter((x) => Math.abs(x) > 2 * sigma).length / n;
    if (Math.abs(tail - 0.0455) > 0.004) throw new Error(`fraction beyond 2σ is ${tail}`);
    const b = drawNoise(c, rows, dim, true, sigma, 1234);
    const w = await b.weight.read();
    if (!v.every((x, i) => x === w[i])) throw new Error("same seed gave different noise");
    const bias = await a.bias!.read();
    if (bias.length !== rows || bias[0] === v[0]) {
      throw new Error("bias noise is not a separate part of the stream");
    }
    for (const t of [a.weight, a.bias, b.weight, b.bias]) t?.dispose();
  },
});

/** Standard normal density. */
function pdf(x: number): number {
  return Math.exp(-x * x / 2) / Math.sqrt(2 * Math.PI);
}

/**
 * An independent δ of the Gaussian mechanism: the hockey-stick divergence
 * ∫ max(0, p(x) − e^ε q(x)) dx of p = N(0, σ²) and q = N(Δ, σ²), by composite Simpson integration
 * over the region p > e^ε q (x < Δ/2 − εσ²/Δ), which uses only the Gaussian density.
 */
function hockeyStickDelta(epsilon: number, sigma: number, sensitivity: number): number {
  const top = sensitivity / 2 - (epsilon * sigma * sigma) / sensitivity;
  const bottom = top - 40 * sigma;
  const f = (x: number) =>
    Math.max(0, pdf(x / sigma) / sigma - Math.exp(epsilon) * pdf((x - sensitivity) / sigma) / sigma);
  const n = 200_000;
  const h = (top - bottom) / n;
  let s = f(bottom) + f(top);
  for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * f(bottom + i * h);
  return (s * h) / 3;
}

Deno.test("normal CDF: textbook values and tail accuracy", () => {
  const known: [number, number][] = [
    [0, 0.5],
    [1.96, 0.9750021048517795],
    [-1, 0.15865525393145707],
    [-5, 2.866515718791939e-7],
    [-10, 7.619853024160527e-24],
  ];
  for (const [t, want] of known) {
    const got = normalCdf(t);
    if (Math.abs(got - want) > 1e-13 * want) throw new Error(`Φ(${t}) = ${got}, expected ${want}`);
  }
});

Deno.test("analytic Gaussian mechanism: σ meets the exact condition tightly, checked by integration", () => {
  for (
    const [eps, delta, sens] of [[0.05, 1e-4, 1 / 25], [0.5, 1e-5, 1], [1, 1e-5, 1], [3, 1e-6, 0.2], [
      8,
      1e-5,
      1,
    ]]
  ) {
    const sigma = analyticGaussianSigma(eps, delta, sens);
    const at = gaussianDelta(eps, sigma, sens);
    if (!(at <= delta)) throw new Error(`ε=${eps}: δ(σ) = ${at} > ${delta}`);
    // Tight: 0.1% less noise breaks the guarantee.
    const below = gaussianDelta(eps, sigma * 0.999, sens);
    if (!(below > delta)) throw new Error(`ε=${eps}: σ is not the smallest (δ(0.999σ) = ${below})`);
    const integral = hockeyStickDelta(eps, sigma, sens);
    if (Math.abs(integral - delta) > 1e-6 * delta) {
      throw new Error(`ε=${eps}: the hockey-stick integral gives δ = ${integral}, expected ${delta}`);
    }
    // ε and σ invert each other.
    const back = gaussianEpsilon(sigma, delta, sens);
    if (Math.abs(back - eps) > 1e-8 * eps) throw new Error(`ε=${eps}: inverted to ${back}`);
  }
});

Deno.test("analytic Gaussian mechanism: less noise than the classical bound, which is loose", () => {
  for (const [eps, delta] of [[0.05, 1e-4], [0.3, 1e-5], [1, 1e-5], [1, 1e-8]]) {
    const analytic = analyticGaussianSigma(eps, delta, 1);
    const classical = gaussianSigma(eps, delta, 1); // the official formula (classical for ε ≤ 1)
    if (!(analytic < classical)) throw new Error(`ε=${eps}: analytic ${analytic} ≥ classical ${classical}`);
    // The classical σ really spends less than the ε it was calibrated for.
    if (!(gaussianEpsilon(classical, delta, 1) < eps)) throw new Error(`ε=${eps}: classical σ is not loose`);
  }
  // Linear in the sensitivity, and shrinking as ε grows.
  const a = analyticGaussianSigma(2, 1e-5, 1);
  if (Math.abs(a - 2 * analyticGaussianSigma(2, 1e-5, 0.5)) > 1e-9 * a) {
    throw new Error("σ is not linear in Δ");
  }
  if (!(analyticGaussianSigma(4, 1e-5, 1) < a)) throw new Error("σ does not shrink with ε");
});

Deno.test("privacy account: parallel composition spends the largest per-class ε", () => {
  const d = 1e-5;
  const releases = [25, 20].map((n, c) => {
    const sens = 1 / n;
    const sigma = analyticGaussianSigma(0.5, d, sens);
    return {
      label: `c${c}`,
      examples: n,
      sensitivity: sens,
      sigma,
      epsilon: gaussianEpsilon(sigma, d, sens),
    };
  });
  const acc = privacyAccount(releases, d, "analytic", []);
  if (Math.abs(acc.epsilon - 0.5) > 1e-8) throw new Error(`run ε ${acc.epsilon}, expected 0.5`);
  const louder = { ...releases[0], epsilon: 0.9 };
  if (privacyAccount([releases[1], louder], d, "analytic", []).epsilon !== 0.9) {
    throw new Error("the run's ε is not the maximum over classes");
  }
  let threw = false;
  try {
    analyticGaussianSigma(0, d, 1);
  } catch (e) {
    threw = e instanceof RangeError;
  }
  if (!threw) throw new Error("ε = 0 was accepted");
});

Deno.test("synth privacy account: per-class σ for C/N, official calibration spends less ε, length flagged", () => {
  const dp = { epsilon: 1, delta: 1e-5, clip: 1 };
  const acc = synthPrivacy(dp, [25, 20], ["bad", "great"], true);
  if (acc.releases[0].sigma !== analyticGaussianSigma(1, 1e-5, 1 / 25)) throw new Error("σ of class 0");
  if (Math.abs(acc.epsilon - 1) > 1e-8 || acc.delta !== 1e-5) throw new Error(`account ${acc.epsilon}`);
  if (!acc.notCovered.some((s) => s.includes("--length"))) throw new Error("data-derived length not flagged");
  if (synthPrivacy(dp, [25, 20], ["bad", "great"], false).notCovered.some((s) => s.includes("--length"))) {
    throw new Error("a fixed length was flagged");
  }
  const official = synthPrivacy({ ...dp, calibration: "official" }, [25, 20], ["bad", "great"], false);
  if (!(official.epsilon < 1 && official.releases[1].sigma > acc.releases[1].sigma)) {
    throw new Error(`official formula: ε ${official.epsilon}, σ ${official.releases[1].sigma}`);
  }
});
