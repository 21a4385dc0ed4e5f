/**
 * Language-model-aware token-swap refinement (not in the paper): like admm/refine.ts, but swaps
 * are chosen for the objective
 *
 *   J = matching loss + λ · (batch mean NLL per token + repeated bigrams / (B·(free−1)))
 *
 * rather than for the matching loss alone, so that a swap that makes a text read better can pay
 * for a little matching loss and vice versa (a bigram repeated in the batch costs what one more
 * nat on one token would: the gradient pulls every text towards the same topic words). Each
 * iteration
 *
 *   1. runs one forward + backward of the current tokens: the gradient w.r.t. the input
 *      embeddings, and from the same forward the language model's log-probabilities at every
 *      position,
 *   2. takes per position the top-k tokens by cosine to the negative gradient and predicts each
 *      swap's ΔJ: the first-order loss change ∇x·(e_new − e_old) plus λ times the change of that
 *      token's own NLL in its left context,
 *   3. scores the `proposals` swaps with the lowest predicted ΔJ exactly, all from one forward of
 *      the current and swapped rows (matching loss from Gram products of the last hidden states,
 *      the row's NLL from the states before the suffix), swaps already rejected for an unchanged
 *      row skipped,
 *   4. accepts per row the best swap that lowers the exact J, keeps the batch mean NLL under a cap
 *      and adds no repeated token bigram; all rows' swaps together when that is still better.
 *
 * The NLL cap is the decode's own mean NLL plus `nllSlack`: no real example is read, so a DP run
 * stays post-processing. With an `nllTarget` (e.g. the real texts' own mean NLL, which synth
 * measures when asked to), the objective gains a hinge μ·max(0, NLL − target) and the cap
 * ratchets down towards the target: above it no swap may raise the NLL, below it the NLL may rise
 * up to it. The decoded text's fluency then ends near the real text's whatever the model, where a
 * fixed λ over- or under-shoots (the d128 and d256 fixtures need very different λ).
 *
 * Candidates per position are the top-k by cosine to the negative gradient plus the language
 * model's own `lmTop` most likely allowed tokens in the left context: the gradient alone rarely
 * proposes the fluent word.
 */
import { add, mul } from "../autograd/ops/elementwise.ts";
import { logSoftmax } from "../autograd/ops/softmax.ts";
import { concat, reshape, slice } from "../autograd/ops/shape.ts";
import { topk } from "../autograd/ops/topk.ts";
import { gatherLast } from "../autograd/ops/gather.ts";
import { backward } from "../autograd/tape.ts";
import { noGrad } from "../autograd/grad_mode.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import { discreteMatchingLoss, type RoundProblem } from "./problem.ts";
import { type MatchingKind, matchingLoss } from "./matching.ts";
import { freeTokenNll, type RefineProgress, type RefineResult, scoreSwaps } from "./refine.ts";
import { topkCosine } from "./zstep.ts";

/** Settings of the LM-aware refinement (SynthOptions.refineLm). */
export interface LmRefineSettings {
  /** Iterations (each: 1 forward + backward, 1 forward scoring the swaps). */
  iterations: number;
  /** Swaps scored exactly per iteration. */
  proposals: number;
  /** Candidate tokens per position from the gradient (top-k by cosine). */
  topk: number;
  /** Weight of the batch mean NLL (nats/token) in the objective. */
  lambda: number;
  /** The batch mean NLL may rise at most this much above the decode's own. */
  nllSlack: number;
  /**
   * Aim the batch mean NLL (nats/token) at this value (see the module comment); "real" or
   * "real+X": the mean NLL of the class's real examples (plus X), which runSynth measures
   * (reading them: not with DP); absent = no target, the cap stays at the decode's own NLL +
   * `nllSlack`.
   */
  nllTarget?: NllTarget;
  /** Weight μ of the hinge above the target (default {@link NLL_TARGET_WEIGHT}). */
  targetWeight?: number;
  /** The language model's most likely allowed tokens added to each position's candidates (≥ 0). */
  lmTop?: number;
}

/** An NLL target: nats/token, or relative to the real examples' own mean NLL ("real", "real+0.2"). */
export type NllTarget = number | "real" | `real+${number}`;

/**
 * The real-relative offset of a target ("real" → 0, "real+0.2" → 0.2), or null for a number.
 * Throws a RangeError for anything else.
 */
export function realTargetOffset(target: NllTarget): number | null {
  if (typeof target === "number") {
    if (!Number.isFinite(target)) throw new RangeError(`NLL target must be finite, got ${target}`);
    return null;
  }
  const m = /^real(?:\+(\d+(?:\.\d*)?|\.\d+))?$/.exec(target);
  if (!m) throw new RangeError(`NLL target must be a number, 'real' or 'real+X' (X ≥ 0), got '${target}'`);
  return m[1] === undefined ? 0 : Number(m[1]);
}

/**
 * Reads an NLL target as a user writes it: "4.8" → 4.8, "real" / "real+0.2" as they are.
 * Throws a RangeError (from {@link realTargetOffset}) for anything else.
 */
export function parseNllTarget(text: string): NllTarget {
  const trimmed = text.trim();
  const target: NllTarget = trimmed.startsWith("real")
    ? trimmed as NllTarget
    : trimmed === ""
    ? Number.NaN
    : Number(trimmed);
  realTargetOffset(target);
  return target;
}

/**
 * Weight μ of the hinge above the NLL target, in matching-loss units per nat/token: large enough
 * that, above the target, reading better wins over small matching gains.
 */
export const NLL_TARGET_WEIGHT = 0.2;

/** Defaults chosen on the CPU measurements (docs/quality/). */
export const LM_REFINE_DEFAULTS: LmRefineSettings = {
  iterations: 40,
  proposals: 32,
  topk: 32,
  lambda: 0.15,
  nllSlack: 0,
  lmTop: 0,
};

/**
 * Passes one iteration costs: the gradient and the LM log-probabilities 2 (one forward +
 * backward), the swaps' exact scores 1 (admm/refine.ts scoreSwaps: losses, joint loss and NLL from
 * one forward).
 */
export const LM_REFINE_PASSES_PER_ITERATION = 3;

/** What an LM-aware refinement did: a refinement's result plus the batch NLL it kept under its cap. */
export interface LmRefineResult extends RefineResult {
  /** Batch mean NLL per token of the free tokens, after refinement. */
  nll: number;
  /** The same before refinement. */
  nllBefore: number;
}

/** A single-token swap with its predicted change of the objective. */
export interface SwapCandidate {
  row: number;
  pos: number;
  id: number;
  predicted: number;
}

/** Per position of the batch: k candidate ids, their first-order Δloss and their Δ log-prob. */
export interface SwapScan {
  k: number;
  ids: Int32Array;
  firstOrder: Float64Array;
  /** log p(candidate | left context) − log p(current | left context); 0 at position 0. */
  logpGain: Float64Array;
}

/**
 * The gradient of the matching loss and the LM log-probabilities of `ids` from one forward +
 * backward, turned into swap candidates per free position with their predicted effects: the
 * top-`k` tokens by cosine to the negative gradient, then (positions ≥ 1) the language model's
 * `lmTop` most likely allowed tokens after the left context. `scan.k` is k + lmTop; a slot that
 * has no candidate holds the current token (a no-op, which pickSwaps skips).
 */
export async function scanSwaps(
  problem: RoundProblem,
  ids: number[][],
  free: number,
  kind: MatchingKind,
  k: number,
  lmTop = 0,
): Promise<SwapScan> {
  const { model } = problem;
  const ctx = model.ctx;
  const [b, t] = [ids.length, ids[0].length];
  const d = model.embedRows.shape[1];
  const projector = { ...problem.projector, topk: k };
  const width = k + lmTop;
  return await scope(ctx, async () => {
    const embedded = noGrad(ctx, () => model.embed(Tensor.from(ctx, Float32Array.from(ids.flat()), [b, t])));
    const x = Tensor.empty(ctx, [b, t, d], { requiresGrad: true, name: "refine-lm-x" });
    ctx.copyBuffer(embedded.buffer, 0, x.buffer, 0, x.bytes);
    const { lastHidden: hidden } = model.forward({ embeds: x, logits: "none" });
    const last = reshape(slice(hidden, 1, t - 1, t), [b, d]);
    backward(matchingLoss(problem.target, last, problem.head, problem.onehot, kind));
    const grad = x.grad!;
    try {
      const candT = noGrad(ctx, () => topkCosine(projector, mul(grad, Tensor.full(ctx, [1], -1))));
      const cosIds = await candT.read();
      const g = await grad.read();
      const cur = await embedded.read();
      const logp = await nextTokenLogProbs(problem, hidden, free, lmTop);
      const cands = new Int32Array(b * t * width);
      for (let row = 0; row < b; row++) {
        for (let pos = 0; pos < t; pos++) {
          const at = row * t + pos;
          for (let j = 0; j < width; j++) {
            const lmRow = pos > 0 && pos < free ? row * (free - 1) + pos - 1 : -1;
            cands[at * width + j] = j < k
              ? Math.round(cosIds[at * k + j])
              : lmRow >= 0
              ? logp.top[lmRow * lmTop + j - k]
              : ids[row][pos];
          }
        }
      }
      // Per prediction: the candidates' log-probabilities, then the current token's.
      const per = width + 1;
      const wanted = new Int32Array(b * (free - 1) * per);
      for (let row = 0; row < b; row++) {
        for (let pos = 1; pos < free; pos++) {
          const r = row * (free - 1) + pos - 1;
          wanted.set(cands.subarray((row * t + pos) * width, (row * t + pos + 1) * width), r * per);
          wanted[r * per + width] = ids[row][pos];
        }
      }
      const lp = await logp.lookup(wanted, per);
      const candE = await noGrad(
        ctx,
        () => model.embed(Tensor.from(ctx, Float32Array.from(cands), [b, t * width])),
      )
        .read();
      const firstOrder = new Float64Array(b * t * width);
      const logpGain = new Float64Array(b * t * width);
      for (let row = 0; row < b; row++) {
        for (let pos = 0; pos < free; pos++) {
          const at = row * t + pos;
          const r = pos > 0 ? row * (free - 1) + pos - 1 : -1;
          for (let j = 0; j < width; j++) {
            const n = at * width + j;
            let dot = 0;
            for (let i = 0; i < d; i++) dot += g[at * d + i] * (candE[n * d + i] - cur[at * d + i]);
            firstOrder[n] = dot;
            if (r >= 0) logpGain[n] = lp[r * per + j] - lp[r * per + width];
          }
        }
      }
      return { k: width, ids: cands, firstOrder, logpGain };
    } finally {
      grad.dispose();
      x.grad = null;
    }
  });
}

/**
 * The model's next-token log-probabilities after positions 0 … free−2 of every row (the
 * predictions for positions 1 … free−1, row r = row·(free−1) + pos−1), left on the GPU in row
 * blocks that fit a storage binding (they live in the caller's scope), and each prediction's
 * `lmTop` most likely allowed ids (`top`, [B·(free−1), lmTop]). `lookup` reads back only the
 * entries asked for: `ids` [B·(free−1), per] → their log-probabilities, same layout. (The full
 * [B·(free−1), V] table would be ~50k floats per position across the bus.)
 */
async function nextTokenLogProbs(
  problem: RoundProblem,
  hidden: Tensor,
  free: number,
  lmTop: number,
): Promise<{ top: Int32Array; lookup: (ids: Int32Array, per: number) => Promise<Float32Array> }> {
  const { model, projector } = problem;
  const ctx = model.ctx;
  const [b, , d] = hidden.shape;
  const vocab = model.headRows.shape[0];
  const n = b * (free - 1);
  const top = new Int32Array(n * lmTop);
  const perBlock = Math.max(1, Math.floor(ctx.limits.maxStorageBufferBindingSize / (vocab * 4)));
  // Banned ids (the projector's filter) get a large negative, so they never make the top.
  const ban = lmTop === 0
    ? null
    : projector.chunks.length === 1
    ? projector.chunks[0].banPenalty
    : noGrad(ctx, () => concat(projector.chunks.map((c) => c.banPenalty), 0));
  const blocks: { start: number; end: number; logp: Tensor }[] = [];
  if (n > 0) {
    const h = noGrad(ctx, () => reshape(slice(hidden, 1, 0, free - 1), [n, d]));
    for (let r = 0; r < n; r += perBlock) {
      const end = Math.min(n, r + perBlock);
      const logp = noGrad(ctx, () => logSoftmax(model.head(slice(h, 0, r, end))));
      blocks.push({ start: r, end, logp });
      if (ban) {
        const best = noGrad(ctx, () => topk(add(logp, ban), lmTop).indices);
        top.set(Int32Array.from(await best.read(), Math.round), r * lmTop);
      }
    }
  }
  const lookup = async (ids: Int32Array, per: number) => {
    const out = new Float32Array(n * per);
    for (const { start, end, logp } of blocks) {
      const index = Tensor.from(ctx, Float32Array.from(ids.subarray(start * per, end * per)), [
        end - start,
        per,
      ]);
      out.set(await noGrad(ctx, () => gatherLast(logp, index)).read(), start * per);
    }
    return out;
  };
  return { top, lookup };
}

/**
 * Token bigrams of a batch that repeat an earlier bigram anywhere in the batch, plus tokens that
 * repeat their left neighbour ("movie movie"): swaps towards likely tokens tend to make texts
 * share phrases, which a per-text check misses. With `swap`, counted as if token `pos` of row
 * `row` were `id` (no copy of the batch).
 */
export function batchRepeatedBigrams(
  rows: readonly (readonly number[])[],
  swap?: { row: number; pos: number; id: number },
): number {
  const mine = new Set<number>();
  let repeats = 0;
  for (let r = 0; r < rows.length; r++) {
    const ids = rows[r];
    const at = (i: number) => (swap && r === swap.row && i === swap.pos ? swap.id : ids[i]);
    for (let i = 0; i + 1 < ids.length; i++) {
      const [a, b] = [at(i), at(i + 1)];
      const key = a * 1048576 + b; // exact for ids below 2^20 (any vocabulary we load)
      if (a === b || mine.has(key)) repeats++;
      mine.add(key);
    }
  }
  return repeats;
}

/**
 * The `m` swaps with the lowest predicted ΔJ = first-order Δloss + λ·(−Δlogp + Δrepeats)/(B·(free−1))
 * (`rows` are the free tokens), skipping tokens the row already has (no-op swaps included), those
 * in `tabu` (keys `row,pos,id`), those that add a repeated bigram and those whose own token's NLL
 * change alone would take the batch mean NLL more than `nllRoom` up; at most ⌈2m/B⌉ per row so
 * that every row gets a chance.
 */
export function pickSwaps(
  scan: SwapScan,
  rows: number[][],
  free: number,
  lambda: number,
  m: number,
  tabu: ReadonlySet<string>,
  nllRoom = Infinity,
): SwapCandidate[] {
  const b = rows.length;
  const t = scan.ids.length / (b * scan.k);
  const perToken = 1 / (b * Math.max(1, free - 1));
  const repeats = batchRepeatedBigrams(rows);
  const all: SwapCandidate[] = [];
  for (let row = 0; row < b; row++) {
    for (let pos = 0; pos < free; pos++) {
      // A token the text already has is not proposed again: the gradient keeps pointing at the
      // same topic word, and "the movie to the movie" reads worse and repeats across texts.
      const seen = new Set<number>(rows[row]);
      for (let j = 0; j < scan.k; j++) {
        const n = (row * t + pos) * scan.k + j;
        const id = scan.ids[n];
        if (seen.has(id) || tabu.has(`${row},${pos},${id}`)) continue;
        seen.add(id);
        const nllRise = -perToken * scan.logpGain[n];
        if (nllRise > nllRoom) continue;
        const moreRepeats = batchRepeatedBigrams(rows, { row, pos, id }) - repeats;
        if (moreRepeats > 0) continue;
        all.push({
          row,
          pos,
          id,
          predicted: scan.firstOrder[n] + lambda * (nllRise + perToken * moreRepeats),
        });
      }
    }
  }
  all.sort((a, c) => a.predicted - c.predicted);
  const perRow = Math.ceil((2 * m) / b);
  const taken = new Array<number>(b).fill(0);
  const out: SwapCandidate[] = [];
  for (const s of all) {
    if (out.length === m) break;
    if (taken[s.row] >= perRow) continue;
    taken[s.row]++;
    out.push(s);
  }
  return out;
}

/**
 * Refines a round's decoded `ids` ([B][T], suffix included; only the free positions before the
 * suffix change) for matching loss + λ·NLL, never letting the batch mean NLL exceed its starting
 * value + `nllSlack`, never raising J and never adding a repeated token bigram to the batch.
 */
export async function refineTokensLm(
  problem: RoundProblem,
  ids: number[][],
  labelId: number,
  kind: MatchingKind,
  s: LmRefineSettings,
  onIteration?: (p: RefineProgress) => void,
): Promise<LmRefineResult> {
  const { model } = problem;
  const ctx = model.ctx;
  const b = ids.length;
  const free = ids[0].length - problem.suffixIds.length;
  let current = ids.map((r) => [...r]);
  const rowNll = (rows: number[][]) => freeTokenNll(model, rows, free);
  const freeOf = (rows: number[][]) => rows.map((r) => r.slice(0, free));
  const meanOf = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
  let nllRows = await rowNll(current);
  const nllBefore = meanOf(nllRows);
  if (typeof s.nllTarget === "string") {
    throw new RangeError(`refineTokensLm: resolve the NLL target '${s.nllTarget}' to a number first`);
  }
  const target = s.nllTarget;
  const mu = s.targetWeight ?? NLL_TARGET_WEIGHT;
  // Without a target the cap is fixed; with one it ratchets down to the target (module comment).
  let nllCap = nllBefore + s.nllSlack;
  const lowerCap = () => {
    if (target !== undefined) nllCap = Math.max(target, Math.min(nllCap, meanOf(nllRows) + s.nllSlack));
  };
  lowerCap();
  const before = await scope(ctx, () => discreteMatchingLoss(problem, current, kind).item());
  let passes = 2;
  // A repeated bigram costs what one more nat on one token would.
  const perToken = 1 / (b * Math.max(1, free - 1));
  const above = (nll: number) => (target === undefined ? 0 : Math.max(0, nll - target));
  const objective = (l: number, nll: number, repeats: number) =>
    l + s.lambda * (nll + perToken * repeats) + mu * above(nll);
  // Swaps rejected since their row last changed: scoring them again would give the same answer.
  const tabu = new Set<string>();
  let swaps = 0;
  for (let it = 0; it < s.iterations; it++) {
    onIteration?.({ iteration: it, iterations: s.iterations, swaps });
    const scan = await scanSwaps(problem, current, free, kind, s.topk, s.lmTop ?? 0);
    passes += 2;
    // Above the target, the hinge adds its weight to λ in the first-order ranking.
    const lambdaNow = s.lambda + (above(meanOf(nllRows)) > 0 ? mu : 0);
    const proposals = pickSwaps(
      scan,
      freeOf(current),
      free,
      lambdaNow,
      s.proposals,
      tabu,
      nllCap - meanOf(nllRows),
    );
    if (proposals.length === 0) break;
    const { candRows, losses, nll, jointLoss } = await scoreSwaps(
      problem,
      current,
      proposals,
      labelId,
      kind,
      free,
    );
    passes++;
    const baseLoss = losses[losses.length - 1];
    const meanNll = meanOf(nllRows);
    const repeats = batchRepeatedBigrams(freeOf(current));
    const jBase = objective(baseLoss, meanNll, repeats);
    const repeatsOf = proposals.map((p) => batchRepeatedBigrams(freeOf(current), p));
    const bestPerRow = new Map<number, number>();
    const jOf = (j: number) =>
      objective(losses[j], meanNll + (nll[j] - nllRows[proposals[j].row]) / b, repeatsOf[j]);
    proposals.forEach((p, j) => {
      const fine = jOf(j) < jBase && meanNll + (nll[j] - nllRows[p.row]) / b <= nllCap &&
        repeatsOf[j] <= repeats;
      if (!fine) {
        tabu.add(`${p.row},${p.pos},${p.id}`);
        return;
      }
      const prev = bestPerRow.get(p.row);
      if (prev === undefined || jOf(j) < jOf(prev)) bestPerRow.set(p.row, j);
    });
    if (bestPerRow.size === 0) continue;
    // Rows' best swaps, best first, as many as fit under the NLL cap together.
    const chosen: number[] = [];
    let nllSum = meanNll * b;
    for (const j of [...bestPerRow.values()].sort((x, y) => jOf(x) - jOf(y))) {
      const next = nllSum + nll[j] - nllRows[proposals[j].row];
      if (next / b > nllCap) continue;
      nllSum = next;
      chosen.push(j);
    }
    const rowsChosen = new Map(chosen.map((j) => [proposals[j].row, j]));
    const jointRows = current.map((r, i) => (rowsChosen.has(i) ? candRows[rowsChosen.get(i)!] : r));
    const jointNll = nllRows.map((x, i) => (rowsChosen.has(i) ? nll[rowsChosen.get(i)!] : x));
    let accepted: number[] = [];
    // Two rows' swaps can create the same new bigram: then only the best single swap is applied.
    const jointRepeats = batchRepeatedBigrams(freeOf(jointRows));
    if (chosen.length > 1 && jointRepeats <= repeats) {
      if (
        objective(jointLoss(chosen), meanOf(jointNll), jointRepeats) < jBase && meanOf(jointNll) <= nllCap
      ) {
        current = jointRows;
        nllRows = jointNll;
        accepted = chosen;
      }
    }
    if (accepted.length === 0) {
      // The joint batch was not better (or only one row had a swap): apply the best single swap,
      // whose loss scoreSwaps computed exactly.
      const best = chosen.reduce((a, j) => (jOf(j) < jOf(a) ? j : a));
      const row = proposals[best].row;
      current = current.map((r, i) => (i === row ? candRows[best] : r));
      nllRows = nllRows.map((x, i) => (i === row ? nll[best] : x));
      accepted = [best];
    }
    swaps += accepted.length;
    lowerCap();
    for (const j of accepted) {
      const row = proposals[j].row;
      for (const key of [...tabu]) if (key.startsWith(`${row},`)) tabu.delete(key);
    }
  }
  onIteration?.({ iteration: s.iterations, iterations: s.iterations, swaps });
  // The running loss comes from Gram products; report the direct one.
  const matchLoss = await scope(ctx, () => discreteMatchingLoss(problem, current, kind).item());
  passes++;
  return { ids: current, matchLoss, matchLossBefore: before, nll: meanOf(nllRows), nllBefore, swaps, passes };
}
