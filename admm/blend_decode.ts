/**
 * A match-aware decode rule for the z-step (issue 14). The official decode takes, at each
 * position, the language model's most likely token among the top-k cosine candidates of x + λ/ρ:
 * when every candidate is unlikely, it still takes one of them, and the text's NLL suffers. The
 * blend scores each candidate by log p(token | prefix) + β·cos(u_t, e_token) over the union of
 * the top-k cosine candidates and the model's own top-m allowed tokens, so fluency can win where
 * the cosine set has nothing likely, and closeness to the continuous vector where it does.
 *
 * The log-softmax normaliser is the same for every token of a row, so the raw logits rank the
 * same as log-probabilities. Everything stays on the GPU: full-vocabulary logits and cosines per
 * step (two [B, d]·[d, V] products), a top-m, and one pick kernel.
 */
import { add, div, mul, scale, sqrt } from "../autograd/ops/elementwise.ts";
import { linear } from "../autograd/ops/matmul.ts";
import { sum } from "../autograd/ops/reduce.ts";
import { concat, reshape, slice } from "../autograd/ops/shape.ts";
import { topk } from "../autograd/ops/topk.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import { pickUnionKernel } from "../kernels/candidates.ts";
import { type DecodePick, lastStep, type Projector } from "./zstep.ts";

/** The blend rule's settings. */
export interface BlendDecode {
  /** Weight β of the cosine to the continuous vector, in nats per unit of cosine. */
  beta: number;
  /** How many of the model's own most likely allowed tokens join the candidate set (m ≥ 0). */
  lmTop: number;
  /**
   * Skip a token that would repeat a bigram already decoded in its text (unless every candidate
   * would): a strong language-model term otherwise falls into greedy decoding's loops.
   */
  noRepeat: boolean;
}

/** Default size of the model's own top-m set. */
export const BLEND_LM_TOP = 8;

/** Throws a RangeError naming the bad field of a blend rule. */
export function checkBlendDecode(blend: BlendDecode): void {
  if (!(Number.isFinite(blend.beta) && blend.beta >= 0)) {
    throw new RangeError(`blend decode: beta must be a finite number ≥ 0, got ${blend.beta}`);
  }
  if (!(Number.isInteger(blend.lmTop) && blend.lmTop >= 0)) {
    throw new RangeError(`blend decode: lmTop must be an integer ≥ 0, got ${blend.lmTop}`);
  }
}

/**
 * The blend's per-position pick for continuous vectors `u` [B, T, d] and their top-k cosine
 * `candidates` [B, T, k] (from {@link Projector}); `p.blend` must be set. The tensors it makes
 * live in the caller's scope, except each step's temporaries, which it frees.
 */
export function blendPicker(p: Projector, u: Tensor, candidates: Tensor): DecodePick {
  const blend = p.blend!;
  checkBlendDecode(blend);
  const ctx = p.model.ctx;
  const [batch, positions, d] = u.shape;
  const k = candidates.shape[2];
  const vocab = p.model.headRows.shape[0];
  const allowed = p.chunks.reduce((n, c) => n + c.banPenalty.size, 0);
  if (allowed !== vocab) {
    throw new RangeError(`blend decode: the projector covers ${allowed} ids, the output layer ${vocab}`);
  }
  const lmTop = Math.min(blend.lmTop, vocab);
  const ban = p.chunks.length === 1 ? p.chunks[0].banPenalty : concat(p.chunks.map((c) => c.banPenalty), 0);
  const unit = div(u, sqrt(add(sum(mul(u, u), -1, true), Tensor.full(ctx, [1], 1e-12))));
  // With m = 0 the extra list is one out-of-range id, which the pick skips.
  const none = lmTop === 0 ? Tensor.full(ctx, [batch, 1], vocab) : null;
  return (hidden, t, chosen, next) =>
    scope(ctx, () => {
      // Banned ids get a large negative here, so they never make the model's top-m.
      const lm = add(p.model.head(lastStep(hidden)), ban);
      const query = reshape(slice(unit, 1, t, t + 1), [batch, d]);
      const cosParts = p.chunks.map((c) => linear(query, c.unitEmbeddingsT));
      const cos = cosParts.length === 1 ? cosParts[0] : concat(cosParts, 1);
      const score = blend.beta === 0 ? lm : add(lm, scale(cos, blend.beta));
      const extra = none ?? topk(lm, lmTop).indices;
      pickUnionKernel(ctx, score.buffer, candidates.buffer, extra.buffer, chosen.buffer, next.buffer, {
        batch,
        vocab,
        k,
        m: extra.shape[1],
        positions,
        t,
        noRepeat: blend.noRepeat,
      });
    });
}
