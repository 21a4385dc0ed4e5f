/**
 * Optimisers on the GPU: {@link Adam} and {@link AdamW} with PyTorch's semantics, global
 * gradient-norm clipping ({@link clipGradNorm}) and the linear warmup/decay learning-rate
 * schedule. Each comes with its float64 CPU reference, used by the tests.
 *
 * A step encodes one fused kernel per parameter into the context's open batch and never reads
 * back, so `backward`, clipping and `step` of one training step share a single submit.
 */
import {
  adamStepKernel,
  clipScaleKernel,
  partialsFor,
  scaleByKernel,
  sumSquaresKernel,
} from "../kernels/optim.ts";
import { fmtShape, ShapeError, Tensor } from "./tensor.ts";
import { GraphCaptureError } from "../kernels/device.ts";

/** Hyperparameters of {@link Adam} and {@link AdamW} (PyTorch's names and defaults). */
export interface AdamOptions {
  /** Learning rate (default 1e-3). Can be changed between steps through `optimizer.lr`. */
  lr?: number;
  /** Decay rates of the first and second moment estimates (default [0.9, 0.999]). */
  betas?: [number, number];
  /** Added to the bias-corrected `sqrt(v)` in the denominator (default 1e-8). */
  eps?: number;
  /**
   * Weight decay. Adam adds `weightDecay · p` to the gradient (L2 regularisation, default 0);
   * AdamW multiplies the parameter by `1 - lr · weightDecay` before the update (default 0.01).
   */
  weightDecay?: number;
}

/** Per-parameter optimiser state: the moment estimates and the number of steps taken. */
export interface AdamState {
  /** First moment (running mean of gradients). */
  m: Tensor;
  /** Second moment (running mean of squared gradients). */
  v: Tensor;
  /** Steps this parameter has been updated (parameters without a gradient are skipped). */
  step: number;
}

/** Raised for invalid optimiser settings or parameters; the message names the culprit. */
export class OptimizerError extends Error {
  /** Error name, for messages. */
  override name = "OptimizerError";
}

function checkHyper(name: string, value: number, lo: number, hi: number, hiOpen = false): number {
  if (!Number.isFinite(value) || value < lo || (hiOpen ? value >= hi : value > hi)) {
    throw new OptimizerError(`${name} must be in [${lo}, ${hi}${hiOpen ? ")" : "]"}, got ${value}`);
  }
  return value;
}

/**
 * Adam (Kingma & Ba) with bias correction, exactly as `torch.optim.Adam` computes it:
 * `g ← g + wd·p; m ← β1 m + (1-β1) g; v ← β2 v + (1-β2) g²;
 *  p ← p - lr/(1-β1ᵗ) · m / (sqrt(v)/sqrt(1-β2ᵗ) + eps)`.
 *
 * The moments live on the GPU; they are created the first time a parameter has a gradient and
 * freed by {@link Adam.dispose}.
 *
 * @example
 * ```ts
 * const opt = new Adam([w, b], { lr: 1e-2 });
 * for (let step = 0; step < 100; step++) {
 *   scope(ctx, () => {
 *     opt.zeroGrad();
 *     backward(loss(w, b));
 *     opt.step();
 *   });
 * }
 * opt.dispose();
 * ```
 */
export class Adam {
  /** The parameters, in the order given. */
  readonly params: readonly Tensor[];
  /** Learning rate used by the next {@link Adam.step} (set it between steps for a schedule). */
  lr: number;
  /** Decay rates (β1, β2) of the first and second moment estimates (default 0.9, 0.999). */
  readonly betas: readonly [number, number];
  /** Added to √v̂ in the denominator, for stability (default 1e-8). */
  readonly eps: number;
  /** Weight decay factor (Adam: L2 added to the gradient; AdamW: decoupled). */
  readonly weightDecay: number;
  /** True for AdamW's decoupled weight decay. */
  readonly decoupled: boolean;
  private states = new Map<Tensor, AdamState>();

  /** An optimiser over `params` (leaves with `requiresGrad`); moments are allocated lazily at the first step. */
  constructor(params: Iterable<Tensor>, options: AdamOptions = {}) {
    this.params = [...params];
    // Decided by the class so that subclasses of AdamW stay decoupled.
    const decoupled = this instanceof AdamW;
    this.decoupled = decoupled;
    this.lr = checkHyper("lr", options.lr ?? 1e-3, 0, Infinity);
    const [b1, b2] = options.betas ?? [0.9, 0.999];
    this.betas = [checkHyper("betas[0]", b1, 0, 1, true), checkHyper("betas[1]", b2, 0, 1, true)];
    this.eps = checkHyper("eps", options.eps ?? 1e-8, 0, Infinity);
    this.weightDecay = checkHyper("weightDecay", options.weightDecay ?? (decoupled ? 0.01 : 0), 0, Infinity);
    const seen = new Set<Tensor>();
    for (const p of this.params) {
      if (seen.has(p)) throw new OptimizerError(`parameter ${p.label} appears twice in the optimiser's list`);
      seen.add(p);
      if (p.node) {
        throw new OptimizerError(
          `parameter ${p.label} is the output of '${p.node.op}', not a leaf; optimise the tensor it was computed from`,
        );
      }
      if (p.ctx !== this.params[0].ctx) {
        throw new OptimizerError(`parameter ${p.label} lives on a different GPU context than the others`);
      }
    }
  }

  /**
   * Updates every parameter that has a `.grad` (one fused kernel each, no readback). The update
   * is encoded into the open batch; it runs at the next flush or read.
   */
  step(): void {
    if (!Number.isFinite(this.lr) || this.lr < 0) throw new OptimizerError(`lr must be ≥ 0, got ${this.lr}`);
    const [beta1, beta2] = this.betas;
    for (const p of this.params) {
      const g = p.grad;
      if (!g) continue;
      if (g.size !== p.size) {
        throw new ShapeError(
          `gradient of ${p.label} has shape ${fmtShape(g.shape)}, expected ${fmtShape(p.shape)}`,
        );
      }
      let st = this.states.get(p);
      if (!st) {
        if (p.ctx.recorder) {
          // A replay would zero the moments again at every step.
          throw new GraphCaptureError(
            `Adam: the first step of ${p.label} creates its moments; capture a later step`,
          );
        }
        // keep(): the moments outlive any scope the first step happens to run in.
        const name = p.name ?? `#${p.id}`;
        st = {
          m: Tensor.zeros(p.ctx, p.shape, { name: `${name}.m` }).keep(),
          v: Tensor.zeros(p.ctx, p.shape, { name: `${name}.v` }).keep(),
          step: 0,
        };
        this.states.set(p, st);
      }
      // Live: a captured step graph re-runs this at each replay, so the step count, bias
      // corrections and learning rate advance; the buffers are taken now, not at replay time.
      const state = st;
      const [w, grad, m, v, n] = [p.buffer, g.buffer, st.m.buffer, st.v.buffer, p.size];
      p.ctx.live(() => {
        state.step++;
        // Bias corrections in float64 on the CPU; the kernel only sees the folded scalars.
        adamStepKernel(p.ctx, w, grad, m, v, n, {
          beta1,
          beta2,
          eps: this.eps,
          stepSize: this.lr / (1 - beta1 ** state.step),
          sqrtBc2: Math.sqrt(1 - beta2 ** state.step),
          l2: this.decoupled ? 0 : this.weightDecay,
          decay: this.decoupled ? 1 - this.lr * this.weightDecay : 1,
        });
      });
    }
  }

  /** Frees every parameter's gradient (the next backward starts from zero). */
  zeroGrad(): void {
    for (const p of this.params) p.zeroGrad();
  }

  /** The moments and step count of a parameter, or undefined before its first update. */
  stateOf(p: Tensor): Readonly<AdamState> | undefined {
    return this.states.get(p);
  }

  /** Frees the moment buffers. The optimiser starts afresh (step 0) if used again. */
  dispose(): void {
    for (const st of this.states.values()) {
      st.m.dispose();
      st.v.dispose();
    }
    this.states.clear();
  }

  /** Frees the moment tensors at the end of a `using` block. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, as `torch.optim.AdamW`
 * computes it: `p ← p · (1 - lr·wd)`, then the Adam update of the undecayed gradient.
 * `weightDecay` defaults to 0.01.
 */
export class AdamW extends Adam {
  /** AdamW over `params`; `options.weightDecay` defaults to 0.01. */
  constructor(params: Iterable<Tensor>, options: AdamOptions = {}) {
    super(params, options);
  }
}

/**
 * Scales the gradients of `params` so that their global L2 norm is at most `maxNorm`
 * (`torch.nn.utils.clip_grad_norm_`): every gradient is multiplied by
 * `min(1, maxNorm / (norm + 1e-6))`. Parameters without a gradient are ignored.
 *
 * Everything happens on the GPU: one partial-sum kernel per gradient, one final reduction that
 * also computes the scale, one scale kernel per gradient. Nothing is read back; the returned
 * one-element tensor holds the norm before clipping, for the caller to read (or dispose) when it
 * wants to. Pass `maxNorm = Infinity` to only measure the norm.
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number): Tensor {
  const list = [...params];
  if (list.length === 0) throw new OptimizerError("clipGradNorm: the parameter list is empty");
  if (!(maxNorm > 0)) throw new OptimizerError(`clipGradNorm: maxNorm must be > 0, got ${maxNorm}`);
  const ctx = list[0].ctx;
  const grads = list.map((p) => p.grad).filter((g): g is Tensor => g !== null);
  const norm = Tensor.empty(ctx, [1], { name: "grad norm" });
  const counts = grads.map((g) => partialsFor(g.size));
  const total = counts.reduce((a, b) => a + b, 0);
  // With no gradient at all there is nothing to sum: a single zero partial gives norm 0.
  const partials = total > 0 ? Tensor.empty(ctx, [total]) : Tensor.zeros(ctx, [1]);
  const scale = Tensor.empty(ctx, [1]);
  let offset = 0;
  grads.forEach((g, k) => {
    sumSquaresKernel(ctx, g.buffer, g.size, partials.buffer, offset);
    offset += counts[k];
  });
  clipScaleKernel(ctx, partials.buffer, Math.max(total, 1), norm.buffer, scale.buffer, maxNorm);
  if (Number.isFinite(maxNorm)) {
    for (const g of grads) scaleByKernel(ctx, g.buffer, g.size, scale.buffer, 0);
  }
  // Disposal is deferred by the context until the batch that still reads them is submitted.
  partials.dispose();
  scale.dispose();
  return norm;
}

/**
 * The learning rate of transformers' `get_linear_schedule_with_warmup` at 0-based step `step`:
 * a linear rise from 0 over `warmupSteps` steps to `peakLr`, then a linear fall to 0 at
 * `totalSteps`. Set `optimizer.lr = linearWarmupDecay(step, ...)` before each `step()`.
 */
export function linearWarmupDecay(
  step: number,
  peakLr: number,
  warmupSteps: number,
  totalSteps: number,
): number {
  if (step < warmupSteps) return (peakLr * step) / Math.max(1, warmupSteps);
  return peakLr * Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
}

// ---------------------------------------------------------------------------------------------
// Float64 CPU references (for the tests).

/** State of {@link adamStepRef} for one parameter. */
export interface AdamRefState {
  m: Float64Array;
  v: Float64Array;
  step: number;
}

/** A fresh reference state for a parameter of `n` elements. */
export function adamRefState(n: number): AdamRefState {
  return { m: new Float64Array(n), v: new Float64Array(n), step: 0 };
}

/**
 * Float64 reference of one Adam (`decoupled = false`) or AdamW (`decoupled = true`) step, in
 * place on `p` and `state`, written as PyTorch's `_single_tensor_adam(w)` does it.
 */
export function adamStepRef(
  p: Float64Array,
  g: ArrayLike<number>,
  state: AdamRefState,
  o: { lr: number; betas: [number, number]; eps: number; weightDecay: number; decoupled: boolean },
): void {
  const [b1, b2] = o.betas;
  state.step++;
  const bc1 = 1 - b1 ** state.step;
  const bc2 = 1 - b2 ** state.step;
  for (let i = 0; i < p.length; i++) {
    let gi = g[i];
    if (o.decoupled) p[i] *= 1 - o.lr * o.weightDecay;
    else gi += o.weightDecay * p[i];
    state.m[i] = b1 * state.m[i] + (1 - b1) * gi;
    state.v[i] = b2 * state.v[i] + (1 - b2) * gi * gi;
    p[i] -= (o.lr / bc1) * state.m[i] / (Math.sqrt(state.v[i]) / Math.sqrt(bc2) + o.eps);
  }
}

/** Float64 reference of {@link clipGradNorm}: scales `grads` in place and returns the norm. */
export function clipGradNormRef(grads: Float64Array[], maxNorm: number): number {
  let sq = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
  const norm = Math.sqrt(sq);
  const s = Math.min(1, maxNorm / (norm + 1e-6));
  for (const g of grads) for (let i = 0; i < g.length; i++) g[i] *= s;
  return norm;
}
