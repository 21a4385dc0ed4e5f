/**
 * What one GRADMM round works on and with: its settings (the official values in
 * {@link PAPER_SETTINGS}), the problem of one class (model, target, projector, label rows,
 * sequence shape), and the matching loss of a batch, shared by the x-step, the z-step, the round
 * and the refinement.
 *
 * @module
 */
import type { BlendDecode } from "./blend_decode.ts";
import { reshape, slice } from "../autograd/ops/shape.ts";
import { Tensor } from "../autograd/tensor.ts";
import { noGrad } from "../autograd/grad_mode.ts";
import type { CausalLM } from "../models/model.ts";
import { type MatchingKind, matchingLoss, type OutputLayer, type TargetGradient } from "./matching.ts";
import type { Projector } from "./zstep.ts";

/** Settings of one round (CLI flags in parentheses; defaults are the official values). */
export interface AdmmSettings {
  /** ADMM penalty ρ (--rho, 0.7). */
  rho: number;
  /** Outer ADMM iterations (--outer-steps, 30). */
  outerSteps: number;
  /** Adam steps per x-update (--inner-steps, 50). */
  innerSteps: number;
  /** Adam learning rate for x (--lr, 0.008). */
  lr: number;
  /** Global-norm clip of ∇x (1.0). */
  gradClip: number;
  /** Random initial batches to choose from (--init-candidates, 500). */
  initCandidates: number;
  /** Per-token norm after initialisation (1.4). */
  initNorm: number;
  /** Matching loss (--loss, cos). */
  matching: MatchingKind;
  /** Zero ∇x at the suffix positions (official: only rotten_tomatoes/imdb). */
  freezeSuffixGradient: boolean;
  /**
   * Which iterate is decoded at the end: "total" = the official rule (lowest continuous total loss,
   * then decode x), "discrete" = the projected z with the lowest matching loss over the outer
   * steps (docs/quality/: a lower final matching loss).
   */
  select: "total" | "discrete";
  /**
   * The z-step's match-aware decode (admm/blend_decode.ts, --decode-beta). Absent: the official
   * decode; left out of settings records then, so that older manifests still resume.
   */
  blend?: BlendDecode;
}

/** The official settings (docs/algorithm.md#settings). */
export const PAPER_SETTINGS: AdmmSettings = {
  rho: 0.7,
  outerSteps: 30,
  innerSteps: 50,
  lr: 0.008,
  gradClip: 1.0,
  initCandidates: 500,
  initNorm: 1.4,
  matching: "cos",
  freezeSuffixGradient: false,
  select: "total",
};

/** What a round works on. */
export interface RoundProblem {
  /** The language model. */
  model: CausalLM;
  /** The z-step's candidate search over the allowed vocabulary. */
  projector: Projector;
  /** The class's target gradient. */
  target: TargetGradient;
  /** The model's output layer. */
  head: OutputLayer;
  /** One-hot label rows [B, V] for this class. */
  onehot: Tensor;
  /** Sequence length T (free tokens + suffix). */
  length: number;
  /** Suffix token ids (the last positions of every sequence). */
  suffixIds: number[];
  /** Decoder prefix token ids. */
  prefixIds: number[];
  /** Batch size B. */
  batch: number;
  /** Seed of this round's random initialisation. */
  seed: number;
}

/** The last hidden state of every row, [B, d], for input embeddings x [B, T, d]. */
export function lastHidden(model: CausalLM, x: Tensor): Tensor {
  const [b, t, d] = x.shape;
  const { lastHidden } = model.forward({ embeds: x, logits: "none" });
  return reshape(slice(lastHidden, 1, t - 1, t), [b, d]);
}

/** Matching loss of a batch of token ids (forward only). */
export function discreteMatchingLoss(problem: RoundProblem, ids: number[][], kind: MatchingKind): Tensor {
  const { model } = problem;
  return noGrad(model.ctx, () => {
    const flat = Float32Array.from(ids.flat());
    const idT = Tensor.from(model.ctx, flat, [ids.length, ids[0].length]);
    const x = model.embed(idT);
    return matchingLoss(problem.target, lastHidden(model, x), problem.head, problem.onehot, kind);
  });
}
