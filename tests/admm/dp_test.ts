import { clipFactors, drawNoise, gaussianSigma } from "../../admm/dp.ts";
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
