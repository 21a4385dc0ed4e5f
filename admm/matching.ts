/**
 * GRADMM's matching loss in closed form (docs/algorithm.md#closed-form).
 *
 * Only the output layer's gradient at the last position is matched. For one sequence with last
 * hidden state h (after the final norm) and residual r = softmax(W h + b) − onehot(label), that
 * gradient is r hᵀ (weight) and r (bias). So for a batch the gradient is G_W = Rᵀ H / B, and every
 * inner product and norm the loss needs is a sum over small Gram matrices:
 *
 *   ⟨T_W, G_W⟩ = Σ (R* Rᵀ) ⊙ (H* Hᵀ) / (N B)        ‖G_W‖² = Σ (R Rᵀ) ⊙ (H Hᵀ) / B²
 *   ⟨T_b, G_b⟩ = Σ R* Rᵀ / (N B)                     ‖G_b‖² = Σ R Rᵀ / B²
 *
 * Written with ordinary differentiable ops, the loss is an explicit function of H; its gradient
 * with respect to H (and through the model, to the input embeddings) comes from ONE ordinary
 * backward pass. No V×d matrix is formed, and no double backward is needed.
 */
import { add, addScalar, div, mul, scale, sqrt, sub } from "../autograd/ops/elementwise.ts";
import { matmul } from "../autograd/ops/matmul.ts";
import { sumAll } from "../autograd/ops/reduce.ts";
import { softmax } from "../autograd/ops/softmax.ts";
import { fmtShape, ShapeError, Tensor } from "../autograd/tensor.ts";
import { linearRows, type RowMatrix } from "../models/chunked.ts";
import type { TargetNoise } from "./dp.ts";
import { noGrad } from "../autograd/grad_mode.ts";

/** The output layer whose gradient is matched. */
export interface OutputLayer {
  /** [V, d], one tensor or row chunks (a matrix larger than one storage binding). */
  weight: RowMatrix;
  /** [V], or null when the model has no output bias (GPT-2, Llama): then only the weight is matched. */
  bias: Tensor | null;
}

/** Matching loss kinds: `cos` = 1 − mean cosine (official default), `l2` = Σ squared distance ("dlg"). */
export type MatchingKind = "cos" | "l2";

/**
 * The target gradient of one class in factored form: T_W = R*ᵀ H* / N (+ noise), T_b = R*ᵀ 1 / N (+ noise).
 */
export interface TargetGradient {
  /** Residuals p − y of the real examples, [N, V] (already scaled by DP clipping factors). */
  residuals: Tensor;
  /** Last hidden states of the real examples, [N, d]. */
  hidden: Tensor;
  /** Dense DP noise, or null for the exact target. */
  noise: TargetNoise | null;
  /** ‖T_W‖² and ‖T_b‖² as one-element tensors (precomputed; bias null without an output bias). */
  normW2: Tensor;
  /** ‖T_b‖² as a one-element tensor; null without an output bias. */
  normB2: Tensor | null;
}

/** Residuals R = softmax(H Wᵀ + b) − Y for hidden states H [B, d] and one-hot labels Y [B, V]. */
export function outputResiduals(h: Tensor, head: OutputLayer, onehot: Tensor): Tensor {
  // Chunked weights: one product per chunk; autograd sums the chunks' parts of dL/dH = R·W.
  const logits = linearRows(h, head.weight, head.bias);
  return sub(softmax(logits), onehot);
}

/** Builds the factored target (and its norms) from real residuals and hidden states. */
export function makeTarget(
  residuals: Tensor,
  hidden: Tensor,
  withBias: boolean,
  noise: TargetNoise | null,
): TargetGradient {
  if (residuals.shape[0] !== hidden.shape[0]) {
    throw new ShapeError(
      `target: residuals ${fmtShape(residuals.shape)} and hidden states ${
        fmtShape(hidden.shape)
      } differ in rows`,
    );
  }
  const n = residuals.shape[0];
  return noGrad(residuals.ctx, () => {
    const rr = matmul(residuals, residuals, { transB: true }); // [N, N]
    const hh = matmul(hidden, hidden, { transB: true });
    let normW2 = scale(sumAll(mul(rr, hh)), 1 / (n * n));
    let normB2: Tensor | null = withBias ? scale(sumAll(rr), 1 / (n * n)) : null;
    if (noise) {
      // ‖L + Z‖² = ‖L‖² + 2⟨L, Z⟩ + ‖Z‖², with ⟨L, Z⟩ = Σ R* ⊙ (H* Zᵀ) / N.
      const hz = matmul(hidden, noise.weight, { transB: true }); // [N, V]
      const cross = scale(sumAll(mul(residuals, hz)), 2 / n);
      normW2 = add(add(normW2, cross), sumAll(mul(noise.weight, noise.weight)));
      if (normB2 && noise.bias) {
        // ⟨Σ_i r*_i / N, z_b⟩, with the bias noise broadcast over the rows.
        const crossB = scale(sumAll(mul(residuals, noise.bias)), 2 / n);
        normB2 = add(add(normB2, crossB), sumAll(mul(noise.bias, noise.bias)));
      }
    }
    return { residuals, hidden, noise, normW2: normW2.keep(), normB2: normB2?.keep() ?? null };
  });
}

/**
 * ⟨T, G⟩ and ‖G‖² for the weight (and bias) given the synthetic residuals R [B, V] and hidden
 * states H [B, d]. Differentiable with respect to R and H.
 */
function gradientProducts(target: TargetGradient, r: Tensor, h: Tensor) {
  const n = target.residuals.shape[0];
  const b = r.shape[0];
  const rsr = matmul(target.residuals, r, { transB: true }); // [N, B]
  const hsh = matmul(target.hidden, h, { transB: true }); // [N, B]
  const rr = matmul(r, r, { transB: true }); // [B, B]
  const hh = matmul(h, h, { transB: true }); // [B, B]
  let dotW = scale(sumAll(mul(rsr, hsh)), 1 / (n * b));
  const normW2 = scale(sumAll(mul(rr, hh)), 1 / (b * b));
  let dotB: Tensor | null = null;
  let normB2: Tensor | null = null;
  if (target.normB2) {
    dotB = scale(sumAll(rsr), 1 / (n * b));
    normB2 = scale(sumAll(rr), 1 / (b * b));
  }
  if (target.noise) {
    // ⟨Z, G_W⟩ = Σ_i r_iᵀ Z h_i / B = Σ R ⊙ (H Zᵀ) / B.
    const hz = matmul(h, target.noise.weight, { transB: true }); // [B, V]
    dotW = add(dotW, scale(sumAll(mul(r, hz)), 1 / b));
    if (dotB && target.noise.bias) {
      dotB = add(dotB, scale(sumAll(mul(r, target.noise.bias)), 1 / b));
    }
  }
  return { dotW, normW2, dotB, normB2 };
}

/**
 * The matching loss between the target and the gradient of the synthetic batch whose last
 * hidden states are `h` [B, d] (labels given as one-hot rows [B, V]). Returns a one-element
 * tensor; call `backward` on it to get dL/dh (and through the model, dL/dx).
 *
 * - `cos`: 1 − mean over matched tensors of cos(T, G)  (weight; and bias where the model has one)
 * - `l2`:  Σ over matched tensors of ‖T − G‖²
 */
export function matchingLoss(
  target: TargetGradient,
  h: Tensor,
  head: OutputLayer,
  onehot: Tensor,
  kind: MatchingKind = "cos",
): Tensor {
  if (h.rank !== 2 || h.shape[1] !== target.hidden.shape[1]) {
    throw new ShapeError(
      `matchingLoss: synthetic hidden states ${fmtShape(h.shape)} do not match the target's ${
        fmtShape(target.hidden.shape)
      }`,
    );
  }
  if (onehot.shape[0] !== h.shape[0] || onehot.shape[1] !== target.residuals.shape[1]) {
    throw new ShapeError(
      `matchingLoss: labels ${fmtShape(onehot.shape)} do not fit hidden states ${fmtShape(h.shape)} and ` +
        `vocabulary ${target.residuals.shape[1]}`,
    );
  }
  const r = outputResiduals(h, head, onehot);
  const { dotW, normW2, dotB, normB2 } = gradientProducts(target, r, h);
  if (kind === "l2") {
    let loss = add(sub(target.normW2, scale(dotW, 2)), normW2);
    if (dotB && normB2 && target.normB2) loss = add(loss, add(sub(target.normB2, scale(dotB, 2)), normB2));
    return loss;
  }
  const cosW = div(dotW, sqrt(mul(normW2, target.normW2)));
  if (!dotB || !normB2 || !target.normB2) return addScalar(scale(cosW, -1), 1);
  const cosB = div(dotB, sqrt(mul(normB2, target.normB2)));
  return addScalar(scale(add(cosW, cosB), -0.5), 1);
}

/** One-hot rows [B, V] for class label token ids. */
export function oneHot(ctx: Tensor["ctx"], labels: number[], vocab: number): Tensor {
  const data = new Float32Array(labels.length * vocab);
  labels.forEach((id, i) => {
    if (!(id >= 0 && id < vocab)) {
      throw new RangeError(`label token ${id} is outside the vocabulary of ${vocab}`);
    }
    data[i * vocab + id] = 1;
  });
  return Tensor.from(ctx, data, [labels.length, vocab]);
}
