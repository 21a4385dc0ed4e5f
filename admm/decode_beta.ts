/**
 * The final decode's β, chosen per batch (issue 14; not in the paper). The blend decode
 * (admm/blend_decode.ts) scores each candidate by log p + β·cos: a small β reads well and
 * drifts from the matched embeddings, a large one stays close and reads badly, and where the
 * balance lies differs between models and even between batches (on gpt2-d256 SST-2 the decoded
 * NLL went from 2.9 to 5.2 to 8.7 nats/token for β = 20, 40, 80). So the round's last iterate is
 * decoded at each β of a short ladder, each batch is scored by the objective the swaps that
 * follow optimise (refine-lm's J: matching loss + λ·NLL + the hinge above the NLL target), and
 * the lowest J starts the swaps. The ADMM steps before keep their one β.
 *
 * Cost per β: one decode, one matching-loss forward and one NLL forward (3 passes), where a
 * single decode costs 2 (no NLL needed).
 *
 * @module
 */
import { scope } from "../autograd/tensor.ts";
import type { MatchingKind } from "./matching.ts";
import { discreteMatchingLoss, type RoundProblem } from "./problem.ts";
import { freeTokenNll } from "./refine.ts";
import { batchRepeatedBigrams, lmObjective, type LmRefineSettings } from "./refine_lm.ts";

/** Passes one β of the ladder costs (decode, matching loss, NLL). */
export const PASSES_PER_DECODE_BETA = 3;

/** The batch a ladder chose, and why. */
export interface DecodeBetaChoice {
  /** [B][T] token ids, suffix included, decoded at `beta`. */
  ids: number[][];
  /** The chosen β. */
  beta: number;
  /** Matching loss of `ids`. */
  matchLoss: number;
  /** Batch mean NLL (nats/token) of the free tokens of `ids`. */
  nll: number;
  /** Per β of the ladder, in its order: the batch's J, matching loss and NLL. */
  tried: { beta: number; objective: number; matchLoss: number; nll: number }[];
}

/**
 * Decodes with `decodeAt(β)` for every β of `betas` and keeps the batch with the lowest J of
 * `refine` (its nllTarget, if any, already a number). Ties keep the earlier β.
 */
export async function chooseDecodeBeta(
  problem: RoundProblem,
  decodeAt: (beta: number) => Promise<number[][]>,
  betas: readonly number[],
  kind: MatchingKind,
  refine: LmRefineSettings,
): Promise<DecodeBetaChoice> {
  if (betas.length === 0) throw new RangeError("chooseDecodeBeta: the β ladder is empty");
  const ctx = problem.model.ctx;
  let best: DecodeBetaChoice | null = null;
  let bestObjective = Infinity;
  const tried: DecodeBetaChoice["tried"] = [];
  for (const beta of betas) {
    const ids = await decodeAt(beta);
    const free = ids[0].length - problem.suffixIds.length;
    const matchLoss = await scope(ctx, () => discreteMatchingLoss(problem, ids, kind).item());
    const nllRows = await freeTokenNll(problem.model, ids, free);
    const nll = nllRows.reduce((a, x) => a + x, 0) / nllRows.length;
    const repeats = batchRepeatedBigrams(ids.map((r) => r.slice(0, free)));
    const objective = lmObjective(refine, ids.length, free)(matchLoss, nll, repeats);
    tried.push({ beta, objective, matchLoss, nll });
    if (best === null || objective < bestObjective) {
      best = { ids, beta, matchLoss, nll, tried };
      bestObjective = objective;
    }
  }
  return best!;
}
