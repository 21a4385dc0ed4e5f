/**
 * The target gradient of one class (docs/algorithm.md#target-gradient): the mean output-layer gradient of the
 * real examples at the last position, kept in factored form (residuals R* and hidden states H*,
 * see admm/matching.ts), optionally clipped per example and noised for differential privacy.
 */
import { mul, sub } from "../autograd/ops/elementwise.ts";
import { sum } from "../autograd/ops/reduce.ts";
import { concat, reshape, slice } from "../autograd/ops/shape.ts";
import { softmax } from "../autograd/ops/softmax.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import { GpuLimitError } from "../kernels/device.ts";
import { formatBytes } from "../kernels/pool.ts";
import type { CausalLM } from "../models/model.ts";
import { leftPad } from "../models/padding.ts";
import { calibratedSigma, clipFactors, type DpOptions, drawNoise, gaussianEpsilon } from "./dp.ts";
import { makeTarget, oneHot, type TargetGradient } from "./matching.ts";
import { noGrad } from "../autograd/grad_mode.ts";

/** Residuals p − y [N, V] and last hidden states [N, d] of tokenised examples, in chunks of `chunk`. */
export async function lastLayerFactors(
  model: CausalLM,
  rows: number[][],
  labelIds: number[],
  padId: number,
  chunk = 16,
): Promise<{ residuals: Tensor; hidden: Tensor }> {
  const ctx = model.ctx;
  const vocab = model.headRows.shape[0];
  return await noGrad(ctx, () =>
    scope(ctx, () => {
      const rs: Tensor[] = [];
      const hs: Tensor[] = [];
      for (let start = 0; start < rows.length; start += chunk) {
        const part = rows.slice(start, start + chunk);
        const { ids, mask, positions, length } = leftPad(part, padId);
        const n = part.length;
        const out = model.forward({
          ids: Tensor.from(ctx, ids, [n, length]),
          attentionMask: Tensor.from(ctx, mask, [n, length]),
          positionIds: Tensor.from(ctx, positions, [n, length]),
          logits: "last",
        });
        const d = out.lastHidden.shape[2];
        hs.push(reshape(slice(out.lastHidden, 1, length - 1, length), [n, d]));
        const logits = reshape(out.logits!, [n, vocab]);
        rs.push(sub(softmax(logits), oneHot(ctx, labelIds.slice(start, start + chunk), vocab)));
      }
      const residuals = rs.length === 1 ? rs[0] : concat(rs, 0);
      const hidden = hs.length === 1 ? hs[0] : concat(hs, 0);
      return { residuals, hidden };
    }));
}

/** What a user should see about a target: size, and for DP the noise it bought. */
export interface TargetReport {
  /** Real examples the target was computed from. */
  examples: number;
  /** ‖T_W‖ of the clean (clipped) mean gradient. */
  signalNorm: number;
  /** σ per element (DP only). */
  sigma?: number;
  /** Sensitivity C/N of the clipped mean (DP only). */
  sensitivity?: number;
  /** ε this release spends at the run's δ under the tight accounting (DP only). */
  epsilonSpent?: number;
  /** Expected norm of the weight noise, σ·sqrt(V·d) (DP only). */
  noiseNorm?: number;
  /** How many examples the clipping scaled down (DP only). */
  clipped?: number;
}

/**
 * Builds the class target from tokenised real examples (text + suffix) whose label token is
 * `labelId`. With `dp`, each example's gradient is clipped to norm `dp.clip` and Gaussian noise of
 * scale σ(ε, δ, C/N) is added to the mean (dense, drawn on the GPU from `dp.seed`); σ comes from
 * the analytic Gaussian mechanism unless `dp.calibration` is "official". The report's
 * `signalNorm` and `clipped` are read from the raw examples: diagnostics, not private.
 */
export async function computeTarget(
  model: CausalLM,
  rows: number[][],
  labelId: number,
  padId: number,
  dp?: DpOptions,
): Promise<{ target: TargetGradient; report: TargetReport }> {
  const ctx = model.ctx;
  if (rows.length === 0) throw new RangeError("a class target needs at least one real example");
  const withBias = model.headBias !== null;
  const noiseBytes = model.headRows.shape[0] * model.headRows.shape[1] * 4;
  if (dp && noiseBytes > ctx.limits.maxStorageBufferBindingSize) {
    // The dense noise is one [V, d] tensor; it is not split into row chunks like the weights.
    const limit = formatBytes(ctx.limits.maxStorageBufferBindingSize);
    throw new GpuLimitError(
      `differential privacy adds dense noise of the output layer's size (${formatBytes(noiseBytes)}), more ` +
        `than this adapter's ${limit} storage binding limit; DP targets are not supported for models this ` +
        `large on this adapter (run without --dp, or on an adapter with a larger limit)`,
    );
  }
  let { residuals, hidden } = await lastLayerFactors(model, rows, rows.map(() => labelId), padId);
  const n = rows.length;
  const report: TargetReport = { examples: n, signalNorm: 0 };
  if (dp) {
    // Per-example norms are tiny to read back (2N numbers) and make the clipping exact.
    const [rn, hn] = await noGrad(ctx, () =>
      scope(ctx, async () => [
        await sum(mul(residuals, residuals), 1).read(),
        await sum(mul(hidden, hidden), 1).read(),
      ]));
    const factors = clipFactors(
      Float64Array.from(rn, Math.sqrt),
      Float64Array.from(hn, Math.sqrt),
      dp.clip,
      withBias,
    );
    report.clipped = factors.filter((f) => f < 1).length;
    const scaled = noGrad(ctx, () => mul(residuals, Tensor.from(ctx, Float32Array.from(factors), [n, 1])));
    residuals.dispose();
    residuals = scaled;
  }
  residuals.keep();
  hidden.keep();
  const clean = makeTarget(residuals, hidden, withBias, null);
  report.signalNorm = Math.sqrt(await clean.normW2.read().then((v) => v[0]));
  if (!dp) return { target: clean, report };
  clean.normW2.dispose();
  clean.normB2?.dispose();
  const [rowsV, dim] = model.headRows.shape;
  const sensitivity = dp.clip / n;
  const sigma = calibratedSigma(dp.calibration ?? "analytic", dp.epsilon, dp.delta, sensitivity);
  const noise = drawNoise(ctx, rowsV, dim, withBias, sigma, dp.seed);
  noise.weight.keep();
  noise.bias?.keep();
  report.sigma = sigma;
  report.sensitivity = sensitivity;
  report.epsilonSpent = gaussianEpsilon(sigma, dp.delta, sensitivity);
  report.noiseNorm = sigma * Math.sqrt(rowsV * dim);
  return { target: makeTarget(residuals, hidden, withBias, noise), report };
}

/** Frees a target's tensors. */
export function disposeTarget(t: TargetGradient): void {
  t.residuals.dispose();
  t.hidden.dispose();
  t.normW2.dispose();
  t.normB2?.dispose();
  t.noise?.weight.dispose();
  t.noise?.bias?.dispose();
}
