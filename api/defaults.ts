/**
 * The defaults of the one-call API (`synth`, `generate`, `evaluate`, `finetune`), defined once:
 * the command line reads its defaults from here too, so a library call and the same command
 * without flags run the same settings.
 *
 * @module
 */
import { PAPER_SETTINGS } from "../admm/problem.ts";
import { REFINE_DEFAULTS } from "../admm/refine.ts";
import type { DpCalibration } from "../admm/dp.ts";
import type { MatchingKind } from "../admm/matching.ts";
import type { NllTarget } from "../admm/refine_lm.ts";

export { FINETUNE_DEFAULTS } from "../train/finetune.ts";

/** How a synth round picks the texts it keeps (admm/refine.ts, docs/gradmm-decisions.md). */
export type SynthMethod = "official" | "discrete" | "refine" | "refine-lm" | "lm-guided";

/** Every {@link SynthMethod}, in the order help texts list them. */
export const SYNTH_METHODS: readonly SynthMethod[] = [
  "lm-guided",
  "official",
  "discrete",
  "refine",
  "refine-lm",
];

/** Whether a method ends with refine-lm's LM-aware token swaps (so its λ and NLL target apply). */
export function usesLmRefine(method: SynthMethod): boolean {
  return method === "refine-lm" || method === "lm-guided";
}

/**
 * The "lm-guided" method (the default; docs/gradmm-decisions.md): the match-aware decode in the
 * z-step, then refine-lm's swaps aimed at the real examples' own NLL, with the model's top tokens
 * among the candidates.
 */
export const LM_GUIDED_DEFAULTS = {
  /**
   * β of the blend decode (admm/blend_decode.ts). 35: with most of the budget in swaps (CPU: 1
   * outer step + 35 iterations) the swaps bring the NLL down from there, and a lower β costs
   * matching loss and diversity (docs/gradmm-decisions.md has the tables).
   */
  decodeBeta: 35,
  /** NLL target of the refinement: the class's real examples' mean NLL + 0.1 (without DP). */
  nllTarget: "real+0.1" as NllTarget,
  /** λ of the NLL in refine-lm's objective: small, the target does the steering. */
  lambda: 0.03,
  /** The model's most likely tokens added to each position's swap candidates. */
  lmTop: 8,
} as const;

/** The synth settings a caller may leave out, with the paper's values (docs/algorithm.md#settings). */
export const SYNTH_DEFAULTS = {
  /** Task preset. */
  task: "sst2",
  /** Size of the stratified real pool. */
  realPool: 100,
  /** How many of the pool build the targets. */
  real: 50,
  /** Synthetic texts per class. */
  perClass: 100,
  /** Texts optimised jointly per round (at most `perClass`). */
  batch: 10,
  /** ADMM penalty ρ; a list runs a sweep. */
  rho: [PAPER_SETTINGS.rho],
  /** Candidate-set size of the z-step. */
  topk: 200,
  /** Tokens per sequence including the suffix; 0 = ⌊mean real length⌋ per class. */
  length: 0,
  /** Seed of the real pool, the initialisation and the DP noise. */
  seed: 42,
  /** ADMM iterations per round. */
  outerSteps: PAPER_SETTINGS.outerSteps,
  /** Adam steps per x-update. */
  innerSteps: PAPER_SETTINGS.innerSteps,
  /** Adam learning rate for x. */
  lr: PAPER_SETTINGS.lr,
  /** Random initial batches to choose from. */
  initCandidates: PAPER_SETTINGS.initCandidates,
  /** Matching loss. */
  loss: PAPER_SETTINGS.matching as MatchingKind,
  /** LM-guided decode and refinement; "official" is the paper's code path. */
  method: "lm-guided" as SynthMethod,
  /**
   * lm-guided on the paper's settings: two outer steps fewer, and the refinement iterations they
   * buy (official: 500 + 30·102 + 2 = 3,562 passes per round; lm-guided: 500 + 28·102 + 2 + 3 +
   * 67·3 = 3,561). Not measured at this size yet (no GPU run): the CPU split (one outer step, the
   * rest in swaps) won there, but swaps per pass at 50 inner steps are untested, so the paper's
   * ADMM is kept nearly whole.
   */
  lmGuided: { outerSteps: 28, refineIterations: 67 },
  /** Refinement iterations (method "refine"). */
  refineIterations: REFINE_DEFAULTS.iterations,
  /** Nats/token a text's NLL may rise during refinement (method "refine"). */
  refineNllSlack: REFINE_DEFAULTS.nllSlack,
} as const;

/**
 * The settings that replace {@link SYNTH_DEFAULTS} on a CPU adapter (unless the caller asks for
 * the paper's): a run of minutes on a software adapter instead of hours.
 */
export const CPU_SYNTH_DEFAULTS = {
  perClass: 10,
  outerSteps: 6,
  innerSteps: 10,
  initCandidates: 16,
  /**
   * lm-guided: one outer step, and as many refinement iterations as official's other five buy
   * (official: 16 + 6·22 + 2 = 150 passes per round; lm-guided: 16 + 22 + 2 + 3 + 35·3 = 148), so
   * that its run costs what official's does. Swaps lower the loss more per pass than outer steps
   * do once the first decode exists (docs/gradmm-decisions.md).
   */
  lmGuided: { outerSteps: 1, refineIterations: 35 },
} as const;

/** Differential-privacy settings left out when `epsilon` is given. */
export const DP_DEFAULTS = {
  /** δ of the (ε, δ) guarantee. */
  delta: 1e-4,
  /** Per-example clipping norm. */
  clip: 1.0,
  /** σ from (ε, δ) by the analytic Gaussian mechanism (least noise for the guarantee). */
  calibration: "analytic" as DpCalibration,
} as const;

/** Defaults of the one-call `generate`. Without `temperature` decoding is greedy. */
export const GENERATE_DEFAULTS = {
  /** New tokens per prompt at most. */
  maxNewTokens: 50,
  /** Sampling temperature (used only when sampling). */
  temperature: 1,
  /** Sample among the K most likely tokens; 0 = all. */
  topK: 0,
  /** Sample from the smallest set of tokens with probability ≥ P. */
  topP: 1,
  /** Seed of the sampling. */
  seed: 0,
} as const;

/** Defaults of the one-call `evaluate`. */
export const EVALUATE_DEFAULTS = {
  /** Task preset. */
  task: "sst2",
  /** In-context demonstrations before each example. */
  shots: 0,
  /** Seed of the choice of demonstrations. */
  seed: 0,
  /** Sequences per forward pass. */
  batch: 16,
} as const;
