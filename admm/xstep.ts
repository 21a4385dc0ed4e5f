/**
 * GRADMM's x-step (docs/algorithm.md#x-step): Adam steps on the continuous embeddings x, minimising the
 * matching loss plus the ADMM penalty ρ/2 ‖x − z + λ/ρ‖². The matching loss is an explicit function
 * of the last hidden states (admm/matching.ts), so a step is one ordinary forward + backward.
 *
 * {@link InnerLoop} runs the inner loop of x-steps: the first step runs through the autograd as
 * usual (it creates Adam's moments), the second is captured as a step graph (kernels/graph.ts)
 * and every later step replays it: the same kernels on the same buffers, without re-running the
 * forward/backward bookkeeping, which is most of an x-step's time on a fast GPU. Everything an
 * x-step reads must therefore stay in the same buffers for the life of the loop: x, the shift
 * λ/ρ − z (the caller overwrites it in place between outer steps), the model, the target and the
 * optimiser state.
 *
 * @module
 */
import { StepGraph } from "../kernels/graph.ts";
import { add, mul, scale, square } from "../autograd/ops/elementwise.ts";
import { sumAll } from "../autograd/ops/reduce.ts";
import { type Adam, clipGradNorm } from "../autograd/optim.ts";
import { backward } from "../autograd/tape.ts";
import { scope, type Tensor } from "../autograd/tensor.ts";
import { noGrad } from "../autograd/grad_mode.ts";
import { matchingLoss } from "./matching.ts";
import { type AdmmSettings, lastHidden, type RoundProblem } from "./problem.ts";

/**
 * One inner x-step: matching loss + ρ/2 ‖x + shift‖² (shift = λ/ρ − z), one backward pass, the
 * suffix gradient masked if asked, global-norm clipping and an Adam step. Nothing is read back;
 * returns the total loss (before the update) as a one-element tensor the caller owns.
 */
export function xStep(
  problem: RoundProblem,
  x: Tensor,
  shift: Tensor,
  opt: Adam,
  s: Pick<AdmmSettings, "rho" | "matching" | "gradClip">,
  freeMask: Tensor | null,
): Tensor {
  const ctx = x.ctx;
  return scope(ctx, () => {
    x.zeroGrad();
    const match = matchingLoss(
      problem.target,
      lastHidden(problem.model, x),
      problem.head,
      problem.onehot,
      s.matching,
    );
    const penalty = sumAll(square(add(x, shift)));
    const loss = add(match, scale(penalty, s.rho / 2));
    backward(loss);
    if (freeMask) {
      const masked = noGrad(ctx, () => mul(x.grad!, freeMask)).keep();
      x.grad!.dispose();
      x.grad = masked;
    }
    clipGradNorm([x], s.gradClip).dispose();
    opt.step();
    return noGrad(ctx, () => loss.detach()).keep();
  });
}

/** Runs x-steps, replaying a captured graph from the third step on (unless `useGraph` is false). */
export class InnerLoop {
  private graph: StepGraph | null = null;
  private last: Tensor | null = null;
  private steps = 0;

  /** The inner loop of one round, optimising `x` in place; nothing runs until it is stepped. */
  constructor(
    private readonly problem: RoundProblem,
    private readonly x: Tensor,
    private readonly shift: Tensor,
    private readonly opt: Adam,
    private readonly settings: Pick<AdmmSettings, "rho" | "matching" | "gradClip">,
    private readonly freeMask: Tensor | null,
    private readonly useGraph = true,
  ) {}

  /** Encodes one x-step (nothing is submitted or read back). */
  step(): void {
    const run = () => xStep(this.problem, this.x, this.shift, this.opt, this.settings, this.freeMask);
    if (this.graph) {
      this.graph.replay();
    } else if (this.useGraph && this.steps >= 1) {
      const { graph, result } = StepGraph.capture(this.x.ctx, run);
      this.graph = graph;
      this.replaceLast(result);
    } else {
      this.replaceLast(run());
    }
    this.steps++;
  }

  /** The total loss of the latest step (before its update), as a one-element tensor the loop owns. */
  get lastTotal(): Tensor | null {
    return this.last;
  }

  /** Kernels per replayed step (null before the capture). */
  get replayDispatches(): number | null {
    return this.graph?.dispatchCount ?? null;
  }

  /** Keeps `t` as the latest loss, releasing the previous one. */
  private replaceLast(t: Tensor): void {
    this.last?.dispose();
    this.last = t;
  }

  /** Frees the graph and the loss tensor. */
  dispose(): void {
    this.graph?.dispose();
    this.graph = null;
    this.last?.dispose();
    this.last = null;
  }
}
