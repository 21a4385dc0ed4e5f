/**
 * GRADMM's z-step (docs/algorithm.md#z-step): project continuous embeddings onto readable token
 * sequences. Each position's candidate set is the top-k vocabulary rows by cosine similarity to
 * its vector (banned ids excluded); a greedy decode of the language model, conditioned on the
 * task's prefix, then picks at each free position the highest-scoring candidate. Everything runs
 * on the GPU; the chosen ids are read back once per decode.
 *
 * An embedding larger than one storage binding is held in row chunks (models/chunked.ts): the
 * scores and top-k then run per chunk and the per-chunk top-k lists are merged.
 */
import { pickCandidateByDotKernel, pickCandidateKernel } from "../kernels/candidates.ts";
import { pickCandidateByDotHalfKernel } from "../kernels/matmul_f16.ts";
import { HalfMatrix } from "../autograd/half.ts";
import { add, div, mul, scale, sqrt } from "../autograd/ops/elementwise.ts";
import { linear } from "../autograd/ops/matmul.ts";
import { sum } from "../autograd/ops/reduce.ts";
import { concat, reshape, slice, transpose } from "../autograd/ops/shape.ts";
import { type TopK, topk } from "../autograd/ops/topk.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import { mergeChunkTopk, rowBlocks, RowChunks } from "../models/chunked.ts";
import type { CausalLM } from "../models/model.ts";
import { noGrad } from "../autograd/grad_mode.ts";
import { StepGraph } from "../kernels/graph.ts";
import { type BlendDecode, blendPicker } from "./blend_decode.ts";

/** One row block of the vocabulary (the whole vocabulary when the embedding is one tensor). */
export interface ProjectorChunk {
  /** First vocabulary id of the block. */
  start: number;
  /**
   * The block's input-embedding rows scaled to unit norm, stored transposed as [d, rows] so that
   * the scores are a plain (non-transposed) matmul, the layout our matmul kernels run fastest.
   * f16 when the model's embedding is f16: an f32 copy would take twice the memory of the
   * embedding it comes from (the scores still accumulate in f32).
   */
  unitEmbeddingsT: Tensor | HalfMatrix;
  /** 0 for allowed ids, a large negative for banned ones, [rows]. */
  banPenalty: Tensor;
}

/** What the z-step needs that does not change during a run. */
export interface Projector {
  /** The model whose input embedding the candidates come from. */
  model: CausalLM;
  /** The vocabulary in row blocks, one per chunk of the input embedding. */
  chunks: ProjectorChunk[];
  /** Candidate-set size (official: 200). */
  topk: number;
  /** The match-aware decode rule (admm/blend_decode.ts); absent: the official decode. */
  blend?: BlendDecode;
}

const BANNED_SCORE = -1e30;

/**
 * Precomputes the unit-norm embedding rows and the ban penalty. `blend` switches the decode to
 * the match-aware rule of admm/blend_decode.ts (absent: the official decode).
 */
export function makeProjector(
  model: CausalLM,
  banned: Uint8Array,
  topkSize: number,
  blend?: BlendDecode,
): Projector {
  const ctx = model.ctx;
  const rows = model.embedRows.shape[0];
  if (banned.length !== rows) {
    throw new RangeError(`ban mask has ${banned.length} entries for ${rows} embedding rows`);
  }
  const allowed = banned.length - banned.reduce((a, b) => a + b, 0);
  if (topkSize > allowed) {
    throw new RangeError(`--top-k ${topkSize} is larger than the ${allowed} tokens the filter allows`);
  }
  // One scope per chunk: its temporaries are freed (and reused by the next chunk) right away.
  const chunks = rowBlocks(model.embedRows).map(({ tensor: block, start }) =>
    noGrad(ctx, () =>
      scope(ctx, (): ProjectorChunk => {
        // An f16 embedding is widened to a temporary f32 copy (exact), normalised in f32 and the
        // unit rows rounded back to f16.
        const e = block instanceof HalfMatrix ? block.toFloat32() : block;
        const norms = sqrt(add(sum(mul(e, e), -1, true), Tensor.full(ctx, [1], 1e-12)));
        const unitF32 = transpose(div(e, norms), 0, 1);
        const unit = block instanceof HalfMatrix
          ? HalfMatrix.fromTensor(unitF32, { name: "unit embeddings" })
          : unitF32.keep();
        const ban = banned.subarray(start, start + e.shape[0]);
        const penalty = Tensor.from(ctx, Float32Array.from(ban, (b) => (b ? BANNED_SCORE : 0)), [ban.length])
          .keep();
        return { start, unitEmbeddingsT: unit, banPenalty: penalty };
      }))
  );
  return blend ? { model, chunks, topk: topkSize, blend } : { model, chunks, topk: topkSize };
}

/** Frees the projector's tensors. */
export function disposeProjector(p: Projector): void {
  for (const c of p.chunks) {
    c.unitEmbeddingsT.dispose();
    c.banPenalty.dispose();
  }
}

/**
 * Top-k candidate ids per position by cosine similarity between `u` [B, T, d] and every allowed
 * embedding row: returns [B, T, k] ids (f32 integers). The query's own norm does not change a
 * row's ranking, so only the embedding rows are normalised.
 */
export function topkCosine(p: Projector, u: Tensor): Tensor {
  const [b, t, d] = u.shape;
  const ctx = p.model.ctx;
  const n = b * t;
  // Query rows per block, so that one block's scores against the widest chunk fit a binding.
  const widest = Math.max(...p.chunks.map((c) => c.banPenalty.size));
  const perBlock = Math.max(1, Math.floor(ctx.limits.maxStorageBufferBindingSize / (widest * 4)));
  return noGrad(ctx, () =>
    scope(ctx, () => {
      const q = reshape(u, [n, d]);
      const blocks: Tensor[] = [];
      for (let r = 0; r < n; r += perBlock) {
        const rows = perBlock >= n ? q : slice(q, 0, r, Math.min(n, r + perBlock));
        const parts: TopK[] = p.chunks.map((c) => {
          // Scores with the ban penalty fused into the product's store (a separate broadcast
          // add over rows × V costs as much again on a CPU adapter).
          const scores = linear(rows, c.unitEmbeddingsT, c.banPenalty);
          return topk(scores, Math.min(p.topk, c.banPenalty.size));
        });
        blocks.push(mergeChunkTopk(parts, p.chunks.map((c) => c.start), p.topk));
      }
      return reshape(blocks.length === 1 ? blocks[0] : concat(blocks, 0), [b, t, p.topk]);
    }));
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
  const chosen = encodeConstrainedDecode(model, candidates, prefixIds, suffixIds);
  try {
    return await readDecodedIds(chosen, suffixIds);
  } finally {
    chosen.dispose();
  }
}

/**
 * The GPU part of {@link constrainedDecode}: encodes the whole decode and returns the chosen ids
 * as a [B, T] tensor (free positions filled, suffix positions 0), without reading anything back,
 * so that a z-step can be captured as a step graph and replayed.
 */
export function encodeConstrainedDecode(
  model: CausalLM,
  candidates: Tensor,
  prefixIds: number[],
  suffixIds: number[],
): Tensor {
  const ctx = model.ctx;
  const [batch, positions, k] = candidates.shape;
  const vocab = model.headRows.shape[0];
  const chunkedHead = model.headRows instanceof RowChunks;
  return encodeDecodeLoop(model, [batch, positions], prefixIds, suffixIds, (hidden, t, chosen, next) => {
    if (chunkedHead) {
      // The dot-product pick reads one [V, d] buffer: with a chunked output layer, pick from
      // the last position's full logits [B, V] instead (same choice up to rounding).
      const logits = model.head(lastStep(hidden));
      pickCandidateKernel(ctx, logits.buffer, candidates.buffer, chosen.buffer, next.buffer, {
        batch,
        vocab,
        k,
        positions,
        t,
      });
    } else if (model.headRows instanceof HalfMatrix) {
      pickCandidateByDotHalfKernel(
        ctx,
        hidden.buffer,
        model.headRows.operand,
        model.headBias?.buffer ?? null,
        candidates.buffer,
        chosen.buffer,
        next.buffer,
        { batch, k, positions, t, steps: hidden.shape[1] },
      );
    } else {
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
    }
  });
}

/** The last step of hidden states [B, S, d] as [B, d]. */
export function lastStep(hidden: Tensor): Tensor {
  const steps = hidden.shape[1];
  return reshape(slice(hidden, 1, steps - 1, steps), [hidden.shape[0], -1]);
}

/**
 * Writes position t's token into `chosen[:, t]` and `next` [B, 1], given the model's hidden states
 * (last step = the state that predicts position t).
 */
export type DecodePick = (hidden: Tensor, t: number, chosen: Tensor, next: Tensor) => void;

/**
 * The greedy decode shared by every rule: runs the prefix through the model with a KV cache, then
 * at each free position lets `pick` choose the token and feeds it back. Returns the [B, T] ids
 * tensor (suffix positions 0) without reading it.
 */
export function encodeDecodeLoop(
  model: CausalLM,
  [batch, positions]: [number, number],
  prefixIds: number[],
  suffixIds: number[],
  pick: DecodePick,
): Tensor {
  const ctx = model.ctx;
  const free = positions - suffixIds.length;
  if (free < 1) {
    throw new RangeError(
      `sequence of ${positions} tokens has no room before a ${suffixIds.length}-token suffix`,
    );
  }
  if (prefixIds.length === 0) throw new RangeError("the decoder needs a non-empty prefix");
  const vocab = model.headRows.shape[0];
  const bad = prefixIds.find((id) => !(Number.isInteger(id) && id >= 0 && id < vocab));
  if (bad !== undefined) {
    throw new RangeError(`decoder prefix id ${bad} is outside the vocabulary [0, ${vocab})`);
  }
  const chosen = Tensor.zeros(ctx, [batch, positions]);
  noGrad(ctx, () =>
    scope(ctx, () => {
      // One scope for the whole decode: the cache may hold tensors made during the steps.
      const cache = model.newCache(batch, prefixIds.length + free);
      const prefix = Tensor.from(
        ctx,
        Float32Array.from({ length: batch * prefixIds.length }, (_, i) => prefixIds[i % prefixIds.length]),
        [batch, prefixIds.length],
      );
      // Only the chosen tokens are needed: the decode runs the model without its vocabulary
      // projection and lets the pick score what it needs from the last hidden state.
      let hidden = model.forward({ ids: prefix, cache, logits: "none" }).lastHidden;
      for (let t = 0; t < free; t++) {
        const next = Tensor.empty(ctx, [batch, 1]);
        pick(hidden, t, chosen, next);
        if (t + 1 < free) hidden = model.forward({ ids: next, cache, logits: "none" }).lastHidden;
      }
      cache.dispose();
    }));
  return chosen;
}

/**
 * The whole z-step's GPU work for continuous vectors `u` [B, T, d]: the top-k cosine candidates,
 * then the projector's decode rule (official, or the blend). Returns the ids tensor unread.
 */
export function encodeProjection(p: Projector, u: Tensor, prefixIds: number[], suffixIds: number[]): Tensor {
  const ctx = p.model.ctx;
  return noGrad(ctx, () =>
    scope(ctx, () => {
      const candidates = topkCosine(p, u);
      const chosen = p.blend
        ? encodeDecodeLoop(
          p.model,
          [u.shape[0], u.shape[1]],
          prefixIds,
          suffixIds,
          blendPicker(p, u, candidates),
        )
        : encodeConstrainedDecode(p.model, candidates, prefixIds, suffixIds);
      return chosen.keep();
    }));
}

/** {@link encodeProjection} and the read-back: [B][T] ids ending with the suffix. */
export async function projectIds(
  p: Projector,
  u: Tensor,
  prefixIds: number[],
  suffixIds: number[],
): Promise<number[][]> {
  const chosen = encodeProjection(p, u, prefixIds, suffixIds);
  try {
    return await readDecodedIds(chosen, suffixIds);
  } finally {
    chosen.dispose();
  }
}

/** Reads the ids chosen by {@link encodeConstrainedDecode} as [B][T] rows ending with the suffix. */
export async function readDecodedIds(chosen: Tensor, suffixIds: number[]): Promise<number[][]> {
  const [batch, positions] = chosen.shape;
  const free = positions - suffixIds.length;
  const flat = await chosen.read();
  const rows: number[][] = [];
  for (let b = 0; b < batch; b++) {
    const row = Array.from(flat.subarray(b * positions, b * positions + free), Math.round);
    rows.push([...row, ...suffixIds]);
  }
  return rows;
}

/** What a projection needs of a round's problem (admm/problem.ts's RoundProblem has it). */
export interface ProjectionProblem {
  model: CausalLM;
  projector: Projector;
  /** Decoder prefix token ids. */
  prefixIds: number[];
  /** Suffix token ids (the last positions of every sequence). */
  suffixIds: number[];
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

  /** A projection of `x + λ/ρ` for one round's problem; nothing runs until it is called. */
  constructor(
    private readonly problem: ProjectionProblem,
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
        return encodeProjection(projector, u, prefixIds, suffixIds).keep();
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
