/**
 * The GRADMM round (docs/algorithm.md#admm-round): optimise a batch of B continuous embedding sequences x so
 * that their output-layer gradient matches the class target, while ADMM pulls x towards readable
 * token sequences z.
 *
 *   init x (best of K random batches, rescaled to norm 1.4 per token), λ = 0, Adam(x)
 *   repeat outer steps:
 *     pin suffix → z = project(x + λ/ρ) → inner Adam steps on match(x) + ρ/2‖x − z + λ/ρ‖²
 *     → λ += ρ(x − z) → pin suffix → track the best iterate
 *   decode the best iterate
 *
 * The x-step is one ordinary forward + backward: the matching loss is an explicit function of the
 * last hidden states (admm/matching.ts). Nothing is read back inside the inner loop; one scalar
 * per outer step (the loss used for best-iterate tracking) and the decoded ids are.
 *
 * @module
 */
import { gaussianKernel } from "../kernels/random.ts";
import { add, addScalar, div, scale, sqrt, square, sub } from "../autograd/ops/elementwise.ts";
import { sum } from "../autograd/ops/reduce.ts";
import { Adam } from "../autograd/optim.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import { noGrad } from "../autograd/grad_mode.ts";
import { matchingLoss } from "./matching.ts";
import { type AdmmSettings, discreteMatchingLoss, lastHidden, type RoundProblem } from "./problem.ts";
import { InnerLoop } from "./xstep.ts";
import { projectIds, ProjectionStep } from "./zstep.ts";

/** Progress of a round, reported once per outer step. */
export interface RoundProgress {
  /** Outer steps done (1-based). */
  outerStep: number;
  /** Outer steps of the round. */
  outerSteps: number;
  /** Continuous total loss of the last inner step (matching + penalty). */
  totalLoss: number;
  /** Matching loss of the projected tokens z of this step. */
  discreteLoss: number;
}

/** What a round produces. */
export interface RoundResult {
  /** [B][T] token ids, suffix included. */
  ids: number[][];
  /** Matching loss of `ids` (discrete tokens). */
  matchLoss: number;
  /** Matching loss of the first projection of the initial batch. */
  matchLossInit: number;
  /** Per outer step: total loss and discrete loss. */
  history: { total: number; discrete: number }[];
  /** Milliseconds spent in each phase. */
  timings: { init: number; zstep: number; xstep: number; final: number };
}

/** Copies the suffix embeddings into the last P positions of every row of x [B, T, d]. */
function pinSuffix(x: Tensor, suffixEmbeds: Tensor): void {
  const [b, t, d] = x.shape;
  const p = suffixEmbeds.shape[0];
  for (let i = 0; i < b; i++) {
    x.ctx.copyBuffer(suffixEmbeds.buffer, 0, x.buffer, ((i * t + t - p) * d) * 4, p * d * 4);
  }
}

/**
 * Draws `candidates` random N(0, 1) batches with the suffix pinned, keeps the one with the lowest
 * matching loss (evaluated at that raw scale, as the official code does), and rescales every
 * position to norm `initNorm`.
 */
async function initialise(problem: RoundProblem, s: AdmmSettings, suffixEmbeds: Tensor): Promise<Tensor> {
  const { model, batch, length } = problem;
  const ctx = model.ctx;
  const d = model.embedRows.shape[1];
  const n = batch * length * d;
  // Each candidate's noise is a slice of one seeded stream, so it can be regenerated for the winner.
  const drawCandidate = (c: number) => {
    const x = Tensor.empty(ctx, [batch, length, d]);
    gaussianKernel(ctx, x.buffer, n, problem.seed, 1, c * n);
    pinSuffix(x, suffixEmbeds);
    return x;
  };
  const losses = await noGrad(ctx, () =>
    scope(ctx, async () => {
      const all: Tensor[] = [];
      for (let c = 0; c < s.initCandidates; c++) {
        all.push(scope(ctx, () =>
          matchingLoss(
            problem.target,
            lastHidden(model, drawCandidate(c)),
            problem.head,
            problem.onehot,
            s.matching,
          )));
      }
      const values: number[] = [];
      for (const l of all) {
        values.push(await l.item());
      }
      return values;
    }));
  let best = 0;
  for (let c = 1; c < losses.length; c++) if (losses[c] < losses[best]) best = c;
  return noGrad(ctx, () =>
    scope(ctx, () => {
      const x = drawCandidate(best);
      const norms = sqrt(sum(square(x), -1, true));
      const scaled = scale(div(x, addScalar(norms, 1e-12)), s.initNorm);
      return scaled.keep();
    }));
}

/** Engine choices of {@link runRound} that do not change its result. */
export interface RoundOptions {
  /**
   * Replay the x-step as a captured step graph after its second step, and the z-step after its
   * first (default true; the result is bit-for-bit the same, kernels/graph.ts says why it is
   * faster).
   */
  stepGraphs?: boolean;
}

/** Runs one round. `onProgress` is called after every outer step. */
export async function runRound(
  problem: RoundProblem,
  s: AdmmSettings,
  onProgress?: (p: RoundProgress) => void,
  options: RoundOptions = {},
): Promise<RoundResult> {
  const { model, batch, length } = problem;
  const ctx = model.ctx;
  const d = model.embedRows.shape[1];
  const timings = { init: 0, zstep: 0, xstep: 0, final: 0 };
  // Scoped so the id tensors are freed (only the kept embeddings outlive it).
  const suffixEmbeds = noGrad(
    ctx,
    () =>
      scope(
        ctx,
        () => model.embed(Tensor.from(ctx, problem.suffixIds, [1, problem.suffixIds.length])).keep(),
      ),
  );
  let t0 = performance.now();
  const init = await initialise(problem, s, suffixEmbeds);
  const x = Tensor.empty(ctx, [batch, length, d], { requiresGrad: true, name: "x" }).keep();
  ctx.copyBuffer(init.buffer, 0, x.buffer, 0, x.bytes);
  init.dispose();
  timings.init = performance.now() - t0;

  const lambda = Tensor.zeros(ctx, [batch, length, d]).keep();
  // λ/ρ − z, overwritten in place every outer step: the captured x-step reads this buffer.
  const shift = Tensor.zeros(ctx, [batch, length, d]).keep();
  const opt = new Adam([x], { lr: s.lr });
  const history: { total: number; discrete: number }[] = [];
  let bestTotal = Infinity;
  let bestX: Tensor | null = null;
  let bestDiscrete = Infinity;
  let bestDiscreteIds: number[][] | null = null;
  let matchLossInit = NaN;
  const freeMask = s.freezeSuffixGradient
    ? suffixMask(ctx, batch, length, d, problem.suffixIds.length)
    : null;
  const inner = new InnerLoop(problem, x, shift, opt, s, freeMask, options.stepGraphs ?? true);
  const projection = new ProjectionStep(problem, x, lambda, s.rho, options.stepGraphs ?? true);

  for (let outer = 0; outer < s.outerSteps; outer++) {
    pinSuffix(x, suffixEmbeds);
    // z-step: project x + λ/ρ onto token sequences.
    t0 = performance.now();
    const ids = await projection.project();
    const z = noGrad(
      ctx,
      () =>
        scope(
          ctx,
          () => model.embed(Tensor.from(ctx, Float32Array.from(ids.flat()), [batch, length])).keep(),
        ),
    );
    const discrete = await scope(ctx, () => discreteMatchingLoss(problem, ids, s.matching).item());
    if (outer === 0) matchLossInit = discrete;
    if (discrete < bestDiscrete) {
      bestDiscrete = discrete;
      bestDiscreteIds = ids;
    }
    timings.zstep += performance.now() - t0;

    // x-step: inner Adam steps on matching loss + ρ/2 ‖x − z + λ/ρ‖².
    t0 = performance.now();
    noGrad(ctx, () =>
      scope(ctx, () => {
        const next = sub(scale(lambda, 1 / s.rho), z);
        ctx.copyBuffer(next.buffer, 0, shift.buffer, 0, shift.bytes);
      }));
    for (let i = 0; i < s.innerSteps; i++) inner.step();
    // Kernels run asynchronously: wait for them so the x-step's time is not billed to the next read.
    await ctx.sync();
    timings.xstep += performance.now() - t0;

    // Dual update λ += ρ (x − z), then pin the suffix again.
    noGrad(ctx, () => {
      scope(ctx, () => {
        const next = add(lambda, scale(sub(x, z), s.rho));
        ctx.copyBuffer(next.buffer, 0, lambda.buffer, 0, lambda.bytes);
      });
    });
    z.dispose();
    pinSuffix(x, suffixEmbeds);
    const totalValue = inner.lastTotal ? await inner.lastTotal.item() : Infinity;
    history.push({ total: totalValue, discrete });
    if (s.select === "total" && totalValue <= bestTotal) {
      bestTotal = totalValue;
      bestX?.dispose();
      bestX = x.detach().keep();
    }
    onProgress?.({
      outerStep: outer + 1,
      outerSteps: s.outerSteps,
      totalLoss: totalValue,
      discreteLoss: discrete,
    });
  }

  t0 = performance.now();
  let finalIds: number[][];
  if (s.select === "discrete" && bestDiscreteIds) {
    finalIds = bestDiscreteIds;
  } else {
    const source = bestX ?? x;
    finalIds = await projectIds(problem.projector, source, problem.prefixIds, problem.suffixIds);
  }
  const matchLoss = s.select === "discrete" && bestDiscreteIds
    ? bestDiscrete
    : await scope(ctx, () => discreteMatchingLoss(problem, finalIds, s.matching).item());
  timings.final = performance.now() - t0;

  inner.dispose();
  projection.dispose();
  bestX?.dispose();
  x.dispose();
  shift.dispose();
  lambda.dispose();
  opt.dispose();
  suffixEmbeds.dispose();
  freeMask?.dispose();
  return { ids: finalIds, matchLoss, matchLossInit, history, timings };
}

/** 1 at free positions, 0 at the last `p` (suffix) positions, [B, T, d]. */
function suffixMask(ctx: Tensor["ctx"], b: number, t: number, d: number, p: number): Tensor {
  const data = new Float32Array(b * t * d);
  for (let i = 0; i < b; i++) data.fill(1, i * t * d, (i * t + t - p) * d);
  return Tensor.from(ctx, data, [b, t, d]).keep();
}
