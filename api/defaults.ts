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

export { FINETUNE_DEFAULTS } from "../train/finetune.ts";

/** How a synth round picks the texts it keeps (admm/refine.ts, docs/gradmm-decisions.md). */
export type SynthMethod = "official" | "discrete" | "refine" | "refine-lm";

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
  /** The official code path. */
  method: "official" as SynthMethod,
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
