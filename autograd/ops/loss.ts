/**
 * Cross-entropy of logits against integer class targets: the forward (a fused, stable
 * log-sum-exp per row), the backward `(softmax(x) − onehot(t)) · g / count` written directly into
 * the logits' gradient, and the float64 CPU reference.
 */
import {
  crossEntropyBackwardKernel,
  crossEntropyRowsKernel,
  crossEntropyTotalKernel,
  type TargetSpec,
} from "../../kernels/loss.ts";
import type { HostTensor } from "../reference.ts";
import { record } from "../tape.ts";
import { fmtShape, ShapeError, Tensor } from "../tensor.ts";
import { logSumExpRef } from "./softmax.ts";

/** Options for {@link crossEntropy}. */
export interface CrossEntropyOptions {
  /**
   * "mean" (default): average over the rows whose target counts (0 when none does);
   * "sum": their sum; "none": one loss per row, shaped like the targets.
   */
  reduction?: "mean" | "sum" | "none";
  /** Rows whose target equals this contribute no loss, no gradient and do not count in the mean. */
  ignoreIndex?: number;
}

/** Raised when a target known on the CPU is not a class index (nor the ignore index). */
export class TargetRangeError extends RangeError {
  /** Error name, for messages. */
  override name = "TargetRangeError";
}

/** Checks targets known on the CPU; throws a {@link TargetRangeError} naming the first bad one. */
export function checkTargets(targets: ArrayLike<number>, classes: number, ignoreIndex?: number): void {
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i];
    if (t === ignoreIndex) continue;
    if (!Number.isInteger(t) || t < 0 || t >= classes) {
      throw new TargetRangeError(
        `crossEntropy: target ${t} at row ${i} is not a class index in [0, ${classes})` +
          (ignoreIndex === undefined
            ? "; pass ignoreIndex to skip rows"
            : ` nor the ignore index ${ignoreIndex}`),
      );
    }
  }
}

/**
 * Cross-entropy between `logits` (`[N, C]`, or `[..., C]` with targets shaped like the leading
 * dimensions) and class `targets` (`[N]`: a tensor of exact integers in f32, or numbers on the
 * CPU). Targets given on the CPU are checked (an out-of-range one throws); on the GPU an
 * out-of-range target is treated like an ignored one (zero loss and gradient, not counted).
 * The gradient flows to the logits only.
 */
export function crossEntropy(
  logits: Tensor,
  targets: Tensor | ArrayLike<number>,
  options: CrossEntropyOptions = {},
): Tensor {
  const reduction = options.reduction ?? "mean";
  if (!["mean", "sum", "none"].includes(reduction)) {
    throw new TypeError(`crossEntropy: reduction must be "mean", "sum" or "none", got "${reduction}"`);
  }
  if (logits.rank < 2) {
    throw new ShapeError(`crossEntropy: logits must be [N, C], got shape ${fmtShape(logits.shape)}`);
  }
  const classes = logits.shape[logits.rank - 1];
  const lead = logits.shape.slice(0, -1);
  const rows = lead.reduce((a, b) => a * b, 1);
  const targetShape = targets instanceof Tensor ? [...targets.shape] : [targets.length];
  const targetCount = targetShape.reduce((a, b) => a * b, 1);
  const sameLead = targetShape.length === lead.length && targetShape.every((d, i) => d === lead[i]);
  if (targetCount !== rows || (targetShape.length !== 1 && !sameLead)) {
    throw new ShapeError(
      `crossEntropy: targets of shape ${fmtShape(targetShape)} do not match logits of shape ` +
        `${fmtShape(logits.shape)} (expected ${fmtShape(lead)} or [${rows}])`,
    );
  }
  if (classes === 0) {
    throw new ShapeError(`crossEntropy: logits of shape ${fmtShape(logits.shape)} have no classes`);
  }
  const spec: TargetSpec = { classes, ignoreIndex: options.ignoreIndex ?? null };
  const ctx = logits.ctx;

  // Targets known on the CPU are validated and uploaded; the upload is freed after the forward
  // and redone by the backward, so the op holds no tensor nobody owns.
  let hostTargets: Float32Array | null = null;
  if (!(targets instanceof Tensor)) {
    checkTargets(targets, classes, options.ignoreIndex);
    hostTargets = Float32Array.from(targets);
  } else if (targets.ctx !== ctx) {
    throw new Error(
      `crossEntropy: logits ${logits.label} and targets ${targets.label} live on different GPU contexts`,
    );
  }
  const targetTensor = () => (hostTargets ? Tensor.from(ctx, hostTargets, [rows]) : (targets as Tensor));

  const t = targetTensor();
  let out: Tensor;
  if (reduction === "none") {
    out = Tensor.empty(ctx, targetShape.length === 1 ? [rows] : lead);
    crossEntropyRowsKernel(ctx, logits.buffer, t.buffer, out.buffer, rows, spec);
  } else {
    const perRow = Tensor.empty(ctx, [rows]);
    crossEntropyRowsKernel(ctx, logits.buffer, t.buffer, perRow.buffer, rows, spec);
    out = Tensor.empty(ctx, [1]);
    crossEntropyTotalKernel(ctx, perRow.buffer, t.buffer, out.buffer, rows, spec, reduction);
    perRow.dispose();
  }
  if (hostTargets) t.dispose();

  return record(out, "crossEntropy", [logits], (g) => {
    const tb = targetTensor();
    // The scalar that multiplies g[0]: 1 for a sum, 1/count for a mean (computed on the GPU, so
    // targets that live there need no readback). Unused for "none".
    let scale: Tensor;
    if (reduction === "mean") {
      scale = Tensor.empty(ctx, [1]);
      crossEntropyTotalKernel(ctx, tb.buffer, tb.buffer, scale.buffer, rows, spec, "inverseCount");
    } else {
      scale = reduction === "sum" ? Tensor.full(ctx, [1], 1) : g;
    }
    const gx = Tensor.empty(ctx, logits.shape);
    crossEntropyBackwardKernel(
      ctx,
      logits.buffer,
      tb.buffer,
      g.buffer,
      scale.buffer,
      gx.buffer,
      rows,
      spec,
      reduction === "none",
    );
    if (scale !== g) scale.dispose();
    if (hostTargets) tb.dispose();
    return [gx];
  });
}

/** Float64 reference of {@link crossEntropy} (targets as numbers or a host tensor). */
export function crossEntropyRef(
  logits: HostTensor,
  targets: ArrayLike<number> | HostTensor,
  options: CrossEntropyOptions = {},
): HostTensor {
  const reduction = options.reduction ?? "mean";
  const t = "data" in targets ? targets.data : targets;
  const classes = logits.shape[logits.shape.length - 1];
  const rows = t.length;
  const losses = new Float64Array(rows);
  let count = 0;
  let total = 0;
  for (let i = 0; i < rows; i++) {
    const c = t[i];
    if (c === options.ignoreIndex || !Number.isInteger(c) || c < 0 || c >= classes) continue;
    losses[i] = logSumExpRef(logits.data, i * classes, classes) - logits.data[i * classes + c];
    total += losses[i];
    count++;
  }
  if (reduction === "none") return { data: losses, shape: "shape" in targets ? [...targets.shape] : [rows] };
  const value = reduction === "sum" ? total : total / Math.max(count, 1);
  return { data: Float64Array.of(value), shape: [1] };
}
