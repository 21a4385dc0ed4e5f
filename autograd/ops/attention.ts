/**
 * Causal self-attention with grouped-query heads, an optional key padding mask and a query
 * offset for KV caches: `softmax(scale · q kᵀ + causal/padding mask) v`, forward and backward as
 * dedicated row kernels (kernels/attention.ts), plus the float64 reference.
 */
import {
  attentionBackwardKeyKernel,
  attentionBackwardQueryKernel,
  type AttentionDims,
  attentionForwardKernel,
  MAX_HEAD_DIM,
} from "../../kernels/attention.ts";
import type { HostTensor } from "../reference.ts";
import { record } from "../tape.ts";
import { fmtShape, ShapeError, Tensor } from "../tensor.ts";

/** Options for {@link causalAttention}. */
export interface AttentionOptions {
  /** [B, Tk]: 1 for a real key, 0 for a padded one (left padding). */
  keyMask?: Tensor;
  /** Score scale; default `1 / sqrt(Dh)`. */
  scale?: number;
  /**
   * Key position of query 0: query i sees keys `≤ queryOffset + i`. Default `Tk − Tq` (the
   * queries are the last Tq positions, as with a KV cache).
   */
  queryOffset?: number;
}

function attentionDims(
  q: readonly number[],
  k: readonly number[],
  v: readonly number[],
  mask: readonly number[] | undefined,
  options: { scale?: number; queryOffset?: number },
): AttentionDims {
  if (q.length !== 4 || k.length !== 4) {
    throw new ShapeError(
      `causalAttention: q ${fmtShape(q)} and k ${fmtShape(k)} must both be [batch, heads, seq, headDim]`,
    );
  }
  const [batch, heads, queries, headDim] = q;
  const [kb, kvHeads, keys, kd] = k;
  if (kb !== batch || kd !== headDim || kvHeads === 0 || heads % kvHeads !== 0) {
    throw new ShapeError(
      `causalAttention: q ${fmtShape(q)} and k ${fmtShape(k)} disagree (same batch and head size, ` +
        `query heads a multiple of key/value heads)`,
    );
  }
  if (v.length !== 4 || v.some((d, i) => d !== k[i])) {
    throw new ShapeError(`causalAttention: v ${fmtShape(v)} must have k's shape ${fmtShape(k)}`);
  }
  if (mask && (mask.length !== 2 || mask[0] !== batch || mask[1] !== keys)) {
    throw new ShapeError(
      `causalAttention: keyMask ${fmtShape(mask)} must be [batch, keys] = [${batch}, ${keys}] for k ${
        fmtShape(k)
      }`,
    );
  }
  if (headDim > MAX_HEAD_DIM) {
    throw new RangeError(`causalAttention: head size ${headDim} is more than the supported ${MAX_HEAD_DIM}`);
  }
  const queryOffset = options.queryOffset ?? keys - queries;
  if (!Number.isInteger(queryOffset)) {
    throw new RangeError(`causalAttention: queryOffset ${queryOffset} must be an integer`);
  }
  return {
    batch,
    heads,
    kvHeads,
    queries,
    keys,
    headDim,
    queryOffset,
    scale: options.scale ?? 1 / Math.sqrt(headDim),
    hasMask: mask !== undefined,
  };
}

/**
 * Causal attention: q [B, H, Tq, Dh], k and v [B, Hkv, Tk, Dh] (H a multiple of Hkv; query head h
 * uses kv head ⌊h / (H/Hkv)⌋) → [B, H, Tq, Dh]. Query i sees keys `j ≤ queryOffset + i` whose
 * `keyMask` is 1. A query that sees no key (a left-padding position) outputs zeros and gets zero
 * gradient. Differentiable in q, k and v (the backward reads q, k, v, the mask and the output:
 * keep them alive until it has run).
 */
export function causalAttention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  const mask = options.keyMask;
  const dims = attentionDims(q.shape, k.shape, v.shape, mask?.shape, options);
  for (const t of [k, v, mask]) {
    if (t && t.ctx !== q.ctx) throw new Error(`causalAttention: ${t.label} lives on another GPU context`);
  }
  const ctx = q.ctx;
  // Without a mask any bound buffer will do: the kernels never read it.
  const maskBuf = mask ? mask.buffer : k.buffer;
  const out = Tensor.empty(ctx, q.shape);
  attentionForwardKernel(ctx, dims, q.buffer, k.buffer, v.buffer, maskBuf, out.buffer);
  return record(out, "causalAttention", [q, k, v], (g) => {
    const gq = Tensor.empty(ctx, q.shape);
    const gk = Tensor.empty(ctx, k.shape);
    const gv = Tensor.empty(ctx, v.shape);
    const lseAndDelta = Tensor.empty(ctx, [dims.batch * dims.heads * dims.queries, 2]);
    attentionBackwardQueryKernel(
      ctx,
      dims,
      q.buffer,
      k.buffer,
      v.buffer,
      maskBuf,
      out.buffer,
      g.buffer,
      gq.buffer,
      lseAndDelta.buffer,
    );
    attentionBackwardKeyKernel(
      ctx,
      dims,
      q.buffer,
      k.buffer,
      v.buffer,
      maskBuf,
      g.buffer,
      lseAndDelta.buffer,
      gk.buffer,
      gv.buffer,
    );
    return [gq, gk, gv];
  });
}

/** Float64 reference of {@link causalAttention}. */
export function causalAttentionRef(
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  options: { keyMask?: HostTensor; scale?: number; queryOffset?: number } = {},
): HostTensor {
  const mask = options.keyMask;
  const d = attentionDims(q.shape, k.shape, v.shape, mask?.shape, options);
  const { batch: B, heads: H, kvHeads: G, queries: Tq, keys: Tk, headDim: Dh } = d;
  const out = new Float64Array(B * H * Tq * Dh);
  const s = new Float64Array(Tk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / G));
      const kv = (b * G + g) * Tk * Dh;
      for (let i = 0; i < Tq; i++) {
        const qr = ((b * H + h) * Tq + i) * Dh;
        let m = -Infinity;
        const visible: number[] = [];
        for (let j = 0; j < Tk && j <= d.queryOffset + i; j++) {
          if (mask && !(mask.data[b * Tk + j] > 0.5)) continue;
          let dot = 0;
          for (let c = 0; c < Dh; c++) dot += q.data[qr + c] * k.data[kv + j * Dh + c];
          s[j] = dot * d.scale;
          m = Math.max(m, s[j]);
          visible.push(j);
        }
        let l = 0;
        for (const j of visible) l += Math.exp(s[j] - m);
        for (const j of visible) {
          const pj = Math.exp(s[j] - m) / l;
          for (let c = 0; c < Dh; c++) out[qr + c] += pj * v.data[kv + j * Dh + c];
        }
      }
    }
  }
  return { data: out, shape: [...q.shape] };
}
