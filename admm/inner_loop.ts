/**
 * The steps an ADMM round repeats on the same tensors, replayed from step graphs.
 *
 * {@link InnerLoop}: the inner loop of x-steps. The first step runs
 * through the autograd as usual (it creates Adam's moments), the second is captured as a step
 * graph (kernels/graph.ts) and every later step replays it: the same kernels on the same
 * buffers, without re-running the forward/backward bookkeeping, which is most of an x-step's
 * time on a fast GPU.
 *
 * Everything an x-step reads must therefore stay in the same buffers for the life of the loop:
 * x, the shift λ/ρ − z (the caller overwrites it in place between outer steps), the model, the
 * target and the optimiser state.
 */
import { StepGraph } from "../kernels/graph.ts";
import { add, scale } from "../autograd/ops/elementwise.ts";
import type { Adam } from "../autograd/optim.ts";
import { scope, type Tensor } from "../autograd/tensor.ts";
import { type AdmmSettings, type RoundProblem, xStep } from "./admm.ts";
import { encodeConstrainedDecode, readDecodedIds, topkCosine } from "./zstep.ts";
import { noGrad } from "../autograd/grad_mode.ts";

/** Runs x-steps, replaying a captured graph from the third step on (unless `useGraph` is false). */
export class InnerLoop {
  private graph: StepGraph | null = null;
  private last: Tensor | null = null;
  private steps = 0;

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

/**
 * The z-step of every outer step: z = project(x + λ/ρ) (top-k cosine candidates, then the
 * constrained greedy decode). Its ~30 decoding steps are a few thousand small dispatches with
 * nothing read back until the ids, so the first z-step of a round is captured as a step graph and
 * the others replay it; x and λ must keep their buffers for the life of the object.
 */
export class ProjectionStep {
  private graph: StepGraph | null = null;
  private chosen: Tensor | null = null;

  constructor(
    private readonly problem: RoundProblem,
    private readonly x: Tensor,
    private readonly lambda: Tensor,
    private readonly rho: number,
    private readonly useGraph = true,
  ) {}

  /** Encodes the projection of x + λ/ρ; returns the chosen ids [B, T] (suffix positions 0). */
  private encode(): Tensor {
    const { model, projector, prefixIds, suffixIds } = this.problem;
    const ctx = model.ctx;
    return noGrad(ctx, () =>
      scope(ctx, () => {
        const u = add(this.x, scale(this.lambda, 1 / this.rho));
        const candidates = topkCosine(projector, u);
        return encodeConstrainedDecode(model, candidates, prefixIds, suffixIds).keep();
      }));
  }

  /** Runs the z-step and reads the ids back: [B][T] rows ending with the suffix. */
  async project(): Promise<number[][]> {
    const suffix = this.problem.suffixIds;
    if (!this.useGraph) {
      const chosen = this.encode();
      try {
        return await readDecodedIds(chosen, suffix);
      } finally {
        chosen.dispose();
      }
    }
    if (this.graph) {
      this.graph.replay();
    } else {
      const { graph, result } = StepGraph.capture(this.problem.model.ctx, () => this.encode());
      this.graph = graph;
      this.chosen = result;
    }
    return await readDecodedIds(this.chosen!, suffix);
  }

  /** Frees the graph and its ids tensor. */
  dispose(): void {
    this.graph?.dispose();
    this.graph = null;
    this.chosen?.dispose();
    this.chosen = null;
  }
}
