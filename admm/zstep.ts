/**
 * GRADMM's z-step (gradmm-spec.md §6.4): project continuous embeddings onto readable token
 * sequences. Each position's candidate set is the top-k vocabulary rows by cosine similarity to
 * its vector (banned ids excluded); a greedy decode of the language model, conditioned on the
 * task's prefix, then picks at each free position the highest-scoring candidate. Everything runs
 * on the GPU; the chosen ids are read back once per decode.
 */
import { pickCandidateByDotKernel } from "../kernels/candidates.ts";
import { add, div, mul, sqrt } from "../autograd/ops/elementwise.ts";
import { linear } from "../autograd/ops/matmul.ts";
import { sum } from "../autograd/ops/reduce.ts";
import { reshape, transpose } from "../autograd/ops/shape.ts";
import { topk } from "../autograd/ops/topk.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import type { CausalLM } from "../models/model.ts";

/** What the z-step needs that does not change during a run. */
export interface Projector {
  model: CausalLM;
  /**
   * Input-embedding rows scaled to unit norm, stored transposed as [d, V] so that the scores are a
   * plain (non-transposed) matmul, the layout our matmul kernels run fastest.
   */
  unitEmbeddingsT: Tensor;
  /** 0 for allowed ids, a large negative for banned ones, [V]. */
  banPenalty: Tensor;
  /** Candidate-set size (official: 200). */
  topk: number;
}

const BANNED_SCORE = -1e30;

/** Precomputes the unit-norm embedding rows and the ban penalty. */
export function makeProjector(model: CausalLM, banned: Uint8Array, topkSize: number): Projector {
  const ctx = model.ctx;
  const e = model.inputEmbedding;
  if (banned.length !== e.shape[0]) {
    throw new RangeError(`ban mask has ${banned.length} entries for ${e.shape[0]} embedding rows`);
  }
  const allowed = banned.length - banned.reduce((a, b) => a + b, 0);
  if (topkSize > allowed) {
    throw new RangeError(`--topk ${topkSize} is larger than the ${allowed} tokens the filter allows`);
  }
  return ctx.noGrad(() =>
    scope(ctx, () => {
      const norms = sqrt(add(sum(mul(e, e), -1, true), Tensor.full(ctx, [1], 1e-12)));
      const unit = transpose(div(e, norms), 0, 1).keep();
      const penalty = Tensor.from(ctx, Float32Array.from(banned, (b) => (b ? BANNED_SCORE : 0)), [
        banned.length,
      ])
        .keep();
      return { model, unitEmbeddingsT: unit, banPenalty: penalty, topk: topkSize };
    })
  );
}

/** Frees the projector's tensors. */
export function disposeProjector(p: Projector): void {
  p.unitEmbeddingsT.dispose();
  p.banPenalty.dispose();
}

/**
 * Top-k candidate ids per position by cosine similarity between `u` [B, T, d] and every allowed
 * embedding row: returns [B, T, k] ids (f32 integers). The query's own norm does not change a
 * row's ranking, so only the embedding rows are normalised.
 */
export function topkCosine(p: Projector, u: Tensor): Tensor {
  const [b, t, d] = u.shape;
  return p.model.ctx.noGrad(() =>
    scope(p.model.ctx, () => {
      // [BT, V] scores with the ban penalty fused into the product's store (a separate
      // broadcast add over BT × V costs as much again on a CPU adapter).
      const scores = linear(reshape(u, [b * t, d]), p.unitEmbeddingsT, p.banPenalty);
      const { indices } = topk(scores, p.topk);
      return reshape(indices, [b, t, p.topk]);
    })
  );
}

/**
 * Constrained greedy decoding: every row starts from `prefixIds`; at free position t the
 * language model's highest-scoring token inside `candidates[b, t]` is chosen. The last
 * `suffixIds.length` positions are not decoded: they are set to the suffix. Returns [B][T] ids.
 */
export async function constrainedDecode(
  model: CausalLM,
  candidates: Tensor,
  prefixIds: number[],
  suffixIds: number[],
): Promise<number[][]> {
  const ctx = model.ctx;
  const [batch, positions, k] = candidates.shape;
  const free = positions - suffixIds.length;
  if (free < 1) {
    throw new RangeError(
      `sequence of ${positions} tokens has no room before a ${suffixIds.length}-token suffix`,
    );
  }
  if (prefixIds.length === 0) throw new RangeError("the decoder needs a non-empty prefix");
  const vocab = model.headWeight.shape[0];
  const bad = prefixIds.find((id) => !(Number.isInteger(id) && id >= 0 && id < vocab));
  if (bad !== undefined) {
    throw new RangeError(`decoder prefix id ${bad} is outside the vocabulary [0, ${vocab})`);
  }
  const chosen = Tensor.zeros(ctx, [batch, positions]);
  await ctx.noGrad(() =>
    scope(ctx, () => {
      // One scope for the whole decode: the cache may hold tensors made during the steps.
      const cache = model.newCache(batch, prefixIds.length + free);
      const prefix = Tensor.from(
        ctx,
        Float32Array.from({ length: batch * prefixIds.length }, (_, i) => prefixIds[i % prefixIds.length]),
        [batch, prefixIds.length],
      );
      // Only the k candidates' logits are needed: the decode runs the model without its
      // vocabulary projection and scores the candidates against the last hidden state.
      let hidden = model.forward({ ids: prefix, cache, logits: "none" }).lastHidden;
      for (let t = 0; t < free; t++) {
        const next = Tensor.empty(ctx, [batch, 1]);
        pickCandidateByDotKernel(
          ctx,
          hidden.buffer,
          model.headWeight.buffer,
          model.headBias?.buffer ?? null,
          candidates.buffer,
          chosen.buffer,
          next.buffer,
          { batch, vocab, k, positions, t, dim: hidden.shape[2], steps: hidden.shape[1] },
        );
        if (t + 1 < free) hidden = model.forward({ ids: next, cache, logits: "none" }).lastHidden;
      }
      cache.dispose();
    })
  );
  const flat = await chosen.read();
  chosen.dispose();
  const rows: number[][] = [];
  for (let b = 0; b < batch; b++) {
    const row = Array.from(flat.subarray(b * positions, b * positions + free), Math.round);
    rows.push([...row, ...suffixIds]);
  }
  return rows;
}
