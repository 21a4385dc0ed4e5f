/**
 * Post-decode refinement by token swaps (not in the paper; GCG-style, Zou et al. 2023): after the
 * ADMM round has picked discrete tokens, repeatedly
 *
 *   1. take the gradient of the matching loss with respect to the input embeddings of the current
 *      tokens (one ordinary forward + backward, the same pass as an x-step),
 *   2. propose, per position, the tokens whose unit embedding points most along the negative
 *      gradient (the z-step's top-k cosine search, bans included),
 *   3. draw a few single-token swaps, score every one EXACTLY from one batched forward of the
 *      current and the swapped rows: the batch's matching loss with that row replaced (Gram
 *      products of the last hidden states) and the swapped row's NLL under the model,
 *   4. accept per row the best swap that lowers the exact loss, keeps the row's NLL within
 *      `nllSlack` nats/token of where the row started and adds no repeated token bigram; apply the
 *      accepted swaps of all rows together if that joint batch is still better, else only the best.
 *
 * Only the noisy target is read (a DP run stays post-processing). Costs are counted in passes:
 * a batched forward is 1, a backward 1 more.
 */
import { mul } from "../autograd/ops/elementwise.ts";
import { matmul } from "../autograd/ops/matmul.ts";
import { sum } from "../autograd/ops/reduce.ts";
import { concat, reshape, slice } from "../autograd/ops/shape.ts";
import { backward } from "../autograd/tape.ts";
import { noGrad } from "../autograd/grad_mode.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import { sequenceNll, tokenNll } from "../models/perplexity.ts";
import type { CausalLM } from "../models/model.ts";
import { discreteMatchingLoss, lastHidden, type RoundProblem } from "./problem.ts";
import { type MatchingKind, matchingLoss, oneHot, outputResiduals } from "./matching.ts";
import { topkCosine } from "./zstep.ts";

/** Settings of the refinement (SynthOptions.refine). */
export interface RefineSettings {
  /** Refinement iterations (each: 1 forward + backward, 1 forward scoring the swaps). */
  iterations: number;
  /** Swaps scored exactly per iteration. */
  proposals: number;
  /** Candidate tokens per position from the gradient (top-k). */
  topk: number;
  /** A row's NLL may rise at most this much (nats/token) above its value before refinement. */
  nllSlack: number;
}

/** Defaults chosen on the CPU measurements (docs/quality/). */
export const REFINE_DEFAULTS: RefineSettings = { iterations: 40, proposals: 32, topk: 16, nllSlack: 0.3 };

/**
 * Passes one refinement iteration costs: the gradient 2 (forward + backward), the swaps' exact
 * scores 1 (one forward gives their losses, any joint batch's loss and their NLL).
 */
export const REFINE_PASSES_PER_ITERATION = 3;

/** Progress of a refinement (the swaps after a round's ADMM steps). */
export interface RefineProgress {
  /** Iterations done. */
  iteration: number;
  /** Iterations of the refinement. */
  iterations: number;
  /** Swaps applied so far. */
  swaps: number;
}

/** What a refinement did. */
export interface RefineResult {
  /** The refined token ids, one row per synthetic text. */
  ids: number[][];
  /** Exact matching loss of `ids`. */
  matchLoss: number;
  /** Exact matching loss before refinement. */
  matchLossBefore: number;
  /** Swaps applied. */
  swaps: number;
  /** Forward/backward passes spent. */
  passes: number;
}

/** Token bigrams of a row that repeat an earlier bigram of the same row. */
export function repeatedBigrams(ids: readonly number[]): number {
  const seen = new Set<string>();
  let repeats = 0;
  for (let i = 0; i + 1 < ids.length; i++) {
    const key = `${ids[i]},${ids[i + 1]}`;
    if (seen.has(key)) repeats++;
    else seen.add(key);
  }
  return repeats;
}

/** A tiny seeded generator (mulberry32) for drawing proposals. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** ∇ of the batch's matching loss w.r.t. the input embeddings of `ids`, then top-k swap candidates [B][T][k]. */
async function proposeCandidates(
  problem: RoundProblem,
  ids: number[][],
  kind: MatchingKind,
  k: number,
): Promise<Int32Array> {
  const { model } = problem;
  const ctx = model.ctx;
  const [b, t] = [ids.length, ids[0].length];
  const d = model.embedRows.shape[1];
  const projector = { ...problem.projector, topk: k };
  return await scope(ctx, async () => {
    const embedded = noGrad(ctx, () => model.embed(Tensor.from(ctx, Float32Array.from(ids.flat()), [b, t])));
    const x = Tensor.empty(ctx, [b, t, d], { requiresGrad: true, name: "refine-x" });
    ctx.copyBuffer(embedded.buffer, 0, x.buffer, 0, x.bytes);
    const loss = matchingLoss(problem.target, lastHidden(model, x), problem.head, problem.onehot, kind);
    backward(loss);
    const grad = x.grad!;
    try {
      // Cosine ranking against −∇: the first-order loss change of moving towards a token's direction.
      const cands = noGrad(ctx, () => topkCosine(projector, mul(grad, Tensor.full(ctx, [1], -1))));
      return Int32Array.from(await cands.read(), Math.round);
    } finally {
      grad.dispose();
      x.grad = null;
    }
  });
}

/**
 * The exact matching loss of any batch made of rows of H = [`base`; `cand`] (hidden states
 * [B, d] and [M, d]): the loss is a function of Gram products of residuals and hidden states
 * (admm/matching.ts), so one set of small products over H gives the loss of every such batch,
 * computed here in float64. The returned function takes the B member rows (indices into H).
 */
async function gramLoss(
  problem: RoundProblem,
  base: Tensor,
  cand: Tensor,
  labelId: number,
  kind: MatchingKind,
): Promise<(members: number[]) => number> {
  const ctx = base.ctx;
  const { target, head } = problem;
  const [b] = base.shape;
  const m = cand.shape[0];
  const n = target.residuals.shape[0];
  const vocab = target.residuals.shape[1];
  const read = await noGrad(ctx, () =>
    scope(ctx, async () => {
      const h = concat([base, cand], 0); // [B+M, d]
      const r = outputResiduals(h, head, oneHot(ctx, new Array(b + m).fill(labelId), vocab));
      const parts = [
        matmul(target.residuals, r, { transB: true }), // [N, B+M]
        matmul(target.hidden, h, { transB: true }),
        matmul(r, r, { transB: true }), // [B+M, B+M]
        matmul(h, h, { transB: true }),
        target.noise ? sum(mul(r, matmul(h, target.noise.weight, { transB: true })), 1) : null, // [B+M]
        target.noise?.bias ? sum(mul(r, target.noise.bias), 1) : null,
        target.normW2,
        target.normB2,
      ];
      const out: (Float32Array | null)[] = [];
      for (const p of parts) out.push(p ? await p.read() : null);
      return out;
    }));
  const [rs, hs, rr, hh, zw, zb, tw, tb] = read;
  const w = b + m;
  const withBias = tb !== null;
  return (members: number[]): number => {
    let dotW = 0, dotB = 0, normW = 0, normB = 0;
    for (const i of members) {
      for (let k = 0; k < n; k++) {
        dotW += rs![k * w + i] * hs![k * w + i];
        dotB += rs![k * w + i];
      }
      if (zw) dotW += zw[i] * n; // scaled back below: ⟨Z, G⟩ = Σ r·Z h / B
      if (zb) dotB += zb[i] * n;
      for (const j of members) {
        normW += rr![i * w + j] * hh![i * w + j];
        normB += rr![i * w + j];
      }
    }
    dotW /= n * b;
    dotB /= n * b;
    normW /= b * b;
    normB /= b * b;
    if (kind === "l2") {
      let loss = tw![0] - 2 * dotW + normW;
      if (withBias) loss += tb![0] - 2 * dotB + normB;
      return loss;
    }
    const cosW = dotW / Math.sqrt(normW * tw![0]);
    if (!withBias) return 1 - cosW;
    return 1 - (cosW + dotB / Math.sqrt(normB * tb![0])) / 2;
  };
}

/**
 * Exact matching losses of the batch `base` (hidden states H [B, d]) with row `rows[m]` replaced
 * by candidate hidden state H'[m], for every m, plus the loss of `base` itself (last entry), from
 * one set of Gram products ({@link gramLoss}).
 */
export async function rowSwapLosses(
  problem: RoundProblem,
  base: Tensor,
  cand: Tensor,
  rows: number[],
  labelId: number,
  kind: MatchingKind,
): Promise<number[]> {
  const lossOf = await gramLoss(problem, base, cand, labelId, kind);
  const b = base.shape[0];
  const baseRows = Array.from({ length: b }, (_, i) => i);
  const losses = rows.map((row, j) => lossOf(baseRows.map((i) => (i === row ? b + j : i))));
  losses.push(lossOf(baseRows));
  return losses;
}

/** Mean NLL per token of each row's first `free` tokens (0 for a row of fewer than two). */
export async function freeTokenNll(model: CausalLM, rows: number[][], free: number): Promise<number[]> {
  const scored = await sequenceNll(model, rows.map((r) => r.slice(0, free)), {
    batchSize: Math.max(8, rows.length),
  });
  return scored.map((x) => (x.tokens > 0 ? x.nll / x.tokens : 0));
}

/** One token swap: `id` at position `pos` of row `row`. */
export interface TokenSwap {
  /** The text (row of the batch). */
  row: number;
  /** The position in it (a free position, before the suffix). */
  pos: number;
  /** The token id put there. */
  id: number;
}

/** Exact scores of single-token swaps (from {@link scoreSwaps}). */
export interface SwapScores {
  /** Each swap applied to a copy of its row. */
  candRows: number[][];
  /** Matching loss of the batch with swap j alone applied, for every j; last: the unswapped batch. */
  losses: number[];
  /** Free-token mean NLL of each swapped row. */
  nll: number[];
  /**
   * Matching loss of the batch with several swaps applied together (indices into the swaps, at
   * most one per row): exact, from the same forward, since a row's hidden states depend on its
   * own tokens only.
   */
  jointLoss(chosen: number[]): number;
}

/**
 * Applies each swap to a copy of its row and scores it exactly in one batched forward (1 pass)
 * of the current rows and the swapped ones: the last hidden states give every batch's matching
 * loss through Gram products, the same forward's hidden states before the suffix give the
 * swapped rows' free-token NLL (causal attention: a prefix's states are the prefix's own).
 */
export async function scoreSwaps(
  problem: RoundProblem,
  current: number[][],
  swaps: TokenSwap[],
  labelId: number,
  kind: MatchingKind,
  free: number,
): Promise<SwapScores> {
  const { model } = problem;
  const ctx = model.ctx;
  const b = current.length;
  const candRows = swaps.map(({ row, pos, id }) => current[row].map((v, i) => (i === pos ? id : v)));
  const rows = [...current, ...candRows];
  const [n, t] = [rows.length, rows[0].length];
  return await scope(ctx, async () => {
    const hidden = noGrad(
      ctx,
      () =>
        model.forward({ ids: Tensor.from(ctx, Float32Array.from(rows.flat()), [n, t]), logits: "none" })
          .lastHidden,
    );
    const d = hidden.shape[2];
    const last = noGrad(ctx, () => reshape(slice(hidden, 1, t - 1, t), [n, d]));
    const lossOf = await gramLoss(
      problem,
      noGrad(ctx, () => slice(last, 0, 0, b)),
      noGrad(ctx, () => slice(last, 0, b, n)),
      labelId,
      kind,
    );
    const baseRows = Array.from({ length: b }, (_, i) => i);
    const jointLoss = (chosen: number[]) => {
      const members = [...baseRows];
      for (const j of chosen) members[swaps[j].row] = b + j;
      return lossOf(members);
    };
    const losses = swaps.map((_, j) => jointLoss([j]));
    losses.push(lossOf(baseRows));
    // NLL of tokens 1 … free−1 of each swapped row, from the states at positions 0 … free−2.
    const m = candRows.length;
    const nll = new Array<number>(m).fill(0);
    if (free >= 2 && m > 0) {
      const prefix = noGrad(
        ctx,
        () => reshape(slice(slice(hidden, 0, b, n), 1, 0, free - 1), [m * (free - 1), d]),
      );
      const targets = candRows.flatMap((r) => r.slice(1, free));
      const perToken = await noGrad(ctx, () => tokenNll(model, prefix, targets)).read();
      for (let j = 0; j < m; j++) {
        let sumJ = 0;
        for (let p = 0; p < free - 1; p++) sumJ += perToken[j * (free - 1) + p];
        nll[j] = sumJ / (free - 1);
      }
    }
    return { candRows, losses, nll, jointLoss };
  });
}

/**
 * Refines a round's decoded `ids` ([B][T], suffix included; only the free positions before the
 * suffix change). `labelId` is the class's label token; `seed` draws the proposals.
 */
export async function refineTokens(
  problem: RoundProblem,
  ids: number[][],
  labelId: number,
  kind: MatchingKind,
  s: RefineSettings,
  seed: number,
  onIteration?: (p: RefineProgress) => void,
): Promise<RefineResult> {
  const { model } = problem;
  const ctx = model.ctx;
  const b = ids.length;
  const free = ids[0].length - problem.suffixIds.length;
  const rand = random(seed);
  let current = ids.map((r) => [...r]);
  const rowNll = (rows: number[][]) => freeTokenNll(model, rows, free);
  const nllCap = (await rowNll(current)).map((x) => x + s.nllSlack);
  let passes = 1;
  const before = await scope(ctx, () => discreteMatchingLoss(problem, current, kind).item());
  passes++;
  let loss = before;
  let swaps = 0;
  for (let it = 0; it < s.iterations; it++) {
    onIteration?.({ iteration: it, iterations: s.iterations, swaps });
    const cands = await proposeCandidates(problem, current, kind, s.topk);
    const t = current[0].length;
    const proposals: TokenSwap[] = [];
    for (let p = 0; p < s.proposals; p++) {
      const row = Math.floor(rand() * b);
      const pos = Math.floor(rand() * free);
      const id = cands[(row * t + pos) * s.topk + Math.floor(rand() * s.topk)];
      if (id !== current[row][pos]) proposals.push({ row, pos, id });
    }
    passes += 2;
    if (proposals.length === 0) continue;
    const { candRows, losses, nll, jointLoss: lossWith } = await scoreSwaps(
      problem,
      current,
      proposals,
      labelId,
      kind,
      free,
    );
    passes++;
    const baseLoss = losses[losses.length - 1];
    // Best acceptable swap per row.
    const bestPerRow = new Map<number, number>();
    proposals.forEach((p, j) => {
      if (!(losses[j] < baseLoss) || nll[j] > nllCap[p.row]) return;
      if (repeatedBigrams(candRows[j].slice(0, free)) > repeatedBigrams(current[p.row].slice(0, free))) {
        return;
      }
      const prev = bestPerRow.get(p.row);
      if (prev === undefined || losses[j] < losses[prev]) bestPerRow.set(p.row, j);
    });
    if (bestPerRow.size === 0) continue;
    const chosen = [...bestPerRow.values()];
    const joint = current.map((r, i) => (bestPerRow.has(i) ? candRows[bestPerRow.get(i)!] : r));
    const jointLoss = lossWith(chosen);
    if (jointLoss < loss) {
      current = joint;
      loss = jointLoss;
      swaps += chosen.length;
    } else {
      const best = chosen.reduce((a, j) => (losses[j] < losses[a] ? j : a));
      current = current.map((r, i) => (i === proposals[best].row ? candRows[best] : r));
      loss = losses[best];
      swaps++;
    }
  }
  onIteration?.({ iteration: s.iterations, iterations: s.iterations, swaps });
  // The running loss comes from Gram products; report the direct one.
  const matchLoss = await scope(ctx, () => discreteMatchingLoss(problem, current, kind).item());
  passes++;
  return { ids: current, matchLoss, matchLossBefore: before, swaps, passes };
}
