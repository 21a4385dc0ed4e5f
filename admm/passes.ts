/**
 * The compute budget of one GRADMM round, counted in passes: batched forward passes plus backward
 * passes over the batch (a constrained decode counts as one forward). Methods are compared at an
 * equal count (bench/quality.ts), and the CPU defaults of `lm-guided` are sized to cost what
 * `official` costs.
 *
 * @module
 */
import type { AdmmSettings } from "./problem.ts";
import { REFINE_PASSES_PER_ITERATION, type RefineSettings } from "./refine.ts";
import { LM_REFINE_PASSES_PER_ITERATION, type LmRefineSettings } from "./refine_lm.ts";

/**
 * Passes of the ADMM part of a round: K init forwards, then per outer step one decode, one loss and
 * I forward + backward x-steps; the total-loss selection adds the final decode and its loss.
 */
export function admmPasses(
  s: Pick<AdmmSettings, "initCandidates" | "outerSteps" | "innerSteps" | "select">,
): number {
  return s.initCandidates + s.outerSteps * (2 + 2 * s.innerSteps) + (s.select === "total" ? 2 : 0);
}

/** What a refinement costs in passes: once to set up, then per iteration. */
const REFINEMENT_COST = {
  refine: { setup: 3, perIteration: REFINE_PASSES_PER_ITERATION },
  "refine-lm": { setup: 3, perIteration: LM_REFINE_PASSES_PER_ITERATION },
} as const;

/** Passes of a refinement of `iterations` iterations, set-up included. */
function refinementPasses(kind: keyof typeof REFINEMENT_COST, iterations: number): number {
  const cost = REFINEMENT_COST[kind];
  return cost.setup + iterations * cost.perIteration;
}

/** Passes of a whole round: the ADMM part plus the refinement after it, if any. */
export function roundPasses(
  admm: Pick<AdmmSettings, "initCandidates" | "outerSteps" | "innerSteps" | "select">,
  refine?: Pick<RefineSettings, "iterations">,
  refineLm?: Pick<LmRefineSettings, "iterations">,
): number {
  return admmPasses(admm) +
    (refine ? refinementPasses("refine", refine.iterations) : 0) +
    (refineLm ? refinementPasses("refine-lm", refineLm.iterations) : 0);
}

/**
 * The most refinement iterations that keep a round within `budget` passes after its ADMM part
 * (`kind` "refine" or "refine-lm", which differ in their set-up cost); 0 when nothing is left.
 */
export function iterationsWithin(
  budget: number,
  admm: Pick<AdmmSettings, "initCandidates" | "outerSteps" | "innerSteps" | "select">,
  kind: keyof typeof REFINEMENT_COST,
): number {
  const { setup, perIteration } = REFINEMENT_COST[kind];
  return Math.max(0, Math.floor((budget - admmPasses(admm) - setup) / perIteration));
}
