/**
 * Causal self-attention with grouped-query heads, an optional key padding mask and a query
 * offset for KV caches: `softmax(scale · q kᵀ + causal/padding mask) v`, forward and backward as
 * dedicated kernels, plus the float64 reference. On GPUs the tiled flash kernels
 * (kernels/attention_flash.ts) run when `useFlashAttention` says so, else the row kernels
 * (kernels/attention.ts), which CPU adapters always use.
 *
 * Two entry points: {@link causalAttention} on q, k, v of shape [B, heads, T, Dh] (output in the
 * same layout, or with heads merged [B, T, H·Dh] for the output projection), and
 * {@link causalAttentionQkv}, which reads q, k and v straight from a fused projection
 * [B, T, 3·H·Dh] (GPT-2's `c_attn`) and writes [B, T, H·Dh]: the kernels address every operand
 * through strides, so neither needs the slices and transposes (and their backward copies, zero
 * fills and gradient sums) that splitting and merging heads would cost.
 */
import {
  attentionBackwardKeyKernel,
  attentionBackwardQueryKernel,
  type AttentionDims,
  attentionForwardKernel,
  type HeadLayout,
  headsLayout,
  MAX_HEAD_DIM,
  tokensLayout,
} from "../../kernels/attention.ts";
import {
  flashAttentionBackwardKeyKernel,
  flashAttentionBackwardQueryKernel,
  flashAttentionForwardKernel,
  useFlashAttention,
} from "../../kernels/attention_flash.ts";
export {
  type FlashAttentionOptions,
  flashAttentionOptions,
  setFlashAttentionOptions,
} from "../../kernels/attention_flash.ts";
import type { HostTensor } from "../reference.ts";
import { needsGrad, record } from "../tape.ts";
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
  /** Return [B, Tq, H·Dh] (heads merged, ready for the output projection) instead of [B, H, Tq, Dh]. */
  mergeHeads?: boolean;
  /**
   * Attend to the first `keyLength` rows of k and v only (the filled part of a KV cache read in
   * place); default all of them. The mask is then [B, keyLength], and rows past it get zero gradient.
   */
  keyLength?: number;
}

function attentionDims(
  q: readonly number[],
  k: readonly number[],
  v: readonly number[],
  mask: readonly number[] | undefined,
  options: { scale?: number; queryOffset?: number; mergeHeads?: boolean; keyLength?: number },
): AttentionDims {
  if (q.length !== 4 || k.length !== 4) {
    throw new ShapeError(
      `causalAttention: q ${fmtShape(q)} and k ${fmtShape(k)} must both be [batch, heads, seq, headDim]`,
    );
  }
  const [batch, heads, queries, headDim] = q;
  const [kb, kvHeads, kRows, kd] = k;
  const keys = options.keyLength ?? kRows;
  if (!Number.isInteger(keys) || keys < 0 || keys > kRows) {
    throw new RangeError(
      `causalAttention: keyLength ${keys} must be an integer in [0, ${kRows}] for k ${fmtShape(k)}`,
    );
  }
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
    layout: {
      q: headsLayout(heads, queries, headDim),
      k: headsLayout(kvHeads, kRows, headDim),
      v: headsLayout(kvHeads, kRows, headDim),
      out: options.mergeHeads ? tokensLayout(heads, queries, headDim) : headsLayout(heads, queries, headDim),
    },
  };
}

/**
 * The op shared by both entry points: runs the forward kernel on q, k, v (which may be one
 * tensor, read through `dims.layout`) and records the backward. With one fused input the three
 * gradients are parts of one tensor, each element written by exactly one kernel, so nothing is
 * zero-filled or summed; a gradient is zero-filled only where its input holds more than the
 * operand (q inside a fused projection whose k and v come from a cache, a cache's empty rows).
 */
function attentionOp(
  op: string,
  inputs: { q: Tensor; k: Tensor; v: Tensor },
  dims: AttentionDims,
  mask: Tensor | undefined,
  outShape: number[],
): Tensor {
  const { q, k, v } = inputs;
  for (const t of [k, v, mask]) {
    if (t && t.ctx !== q.ctx) throw new Error(`${op}: ${t.label} lives on another GPU context`);
  }
  const ctx = q.ctx;
  // Without a mask any bound buffer will do: the kernels never read it.
  const maskBuf = mask ? mask.buffer : k.buffer;
  const out = Tensor.empty(ctx, outShape);
  const fused = q === k && k === v;
  const graphInputs = fused ? [q] : [q, k, v];
  const { batch, heads, kvHeads, queries, keys, headDim } = dims;
  // The flash forward saves each row's log-sum-exp for the backward (column 0 of a [rows, 2]
  // tensor whose column 1 the query side fills with dO·O). It is an intermediate of the graph,
  // like `out`: it lives as long as the scope the forward ran in.
  const flash = useFlashAttention(ctx, dims);
  const saved = flash && needsGrad(...graphInputs) ? Tensor.empty(ctx, [batch * heads * queries, 2]) : null;
  if (flash) {
    flashAttentionForwardKernel(
      ctx,
      dims,
      q.buffer,
      k.buffer,
      v.buffer,
      maskBuf,
      out.buffer,
      saved?.buffer ?? null,
    );
  } else {
    attentionForwardKernel(ctx, dims, q.buffer, k.buffer, v.buffer, maskBuf, out.buffer);
  }
  return record(out, op, graphInputs, (g) => {
    const gradOf = (t: Tensor, rows: number) =>
      fused || t.size === batch * rows * headDim ? Tensor.empty(ctx, t.shape) : Tensor.zeros(ctx, t.shape);
    const gq = gradOf(q, heads * queries);
    const needKv = fused || k.requiresGrad || v.requiresGrad;
    const gk = fused ? gq : needKv ? gradOf(k, kvHeads * keys) : null;
    const gv = fused ? gq : needKv ? gradOf(v, kvHeads * keys) : null;
    const lseAndDelta = saved ?? Tensor.empty(ctx, [batch * heads * queries, 2]);
    const queryKernel = saved ? flashAttentionBackwardQueryKernel : attentionBackwardQueryKernel;
    queryKernel(
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
    if (gk && gv) {
      const keyKernel = flash ? flashAttentionBackwardKeyKernel : attentionBackwardKeyKernel;
      keyKernel(
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
    }
    return fused ? [gq] : [gq, gk, gv];
  });
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
  const { batch: B, heads: H, queries: Tq, headDim: Dh } = dims;
  const outShape = options.mergeHeads ? [B, Tq, H * Dh] : [...q.shape];
  return attentionOp("causalAttention", { q, k, v }, dims, mask, outShape);
}

/** Options for {@link causalAttentionQkv}. */
export interface QkvAttentionOptions {
  /** [B, keys]: 1 for a real key, 0 for a padded one (left padding). */
  keyMask?: Tensor;
  /** Score scale; default `1 / sqrt(Dh)`. */
  scale?: number;
  /**
   * Read keys and values from a KV cache in place instead of from `qkv`: `keys` and `values` are
   * [B, H, capacity, Dh] with the first `length` rows filled (the new tokens' rows included, see
   * `KVCache.appendFused`); the T queries are the last T of those positions. No gradient flows
   * into the cache.
   */
  cache?: { keys: Tensor; values: Tensor; length: number };
}

/**
 * Causal self-attention on a fused projection `qkv` [B, T, 3·H·Dh] whose last axis holds q, k
 * and v one after the other, each as H heads of Dh (GPT-2's `c_attn` output): returns
 * [B, T, H·Dh] with heads merged. Equal to splitting, `causalAttention` with `mergeHeads`, and
 * no copies; differentiable in `qkv`.
 */
export function causalAttentionQkv(qkv: Tensor, heads: number, options: QkvAttentionOptions = {}): Tensor {
  if (qkv.rank !== 3 || !Number.isInteger(heads) || heads < 1 || qkv.shape[2] % (3 * heads) !== 0) {
    throw new ShapeError(
      `causalAttentionQkv: qkv ${
        fmtShape(qkv.shape)
      } must be [batch, seq, 3·heads·headDim] with heads = ${heads}`,
    );
  }
  const [B, T, width] = qkv.shape;
  const Dh = width / (3 * heads);
  const headShape = [B, heads, T, Dh];
  const mask = options.keyMask;
  const part = (i: number): HeadLayout => tokensLayout(heads, T, Dh, width, i * heads * Dh);
  const cache = options.cache;
  if (cache) {
    const { keys, values, length } = cache;
    const dims = attentionDims(headShape, keys.shape, values.shape, mask?.shape, {
      scale: options.scale,
      queryOffset: length - T,
      keyLength: length,
      mergeHeads: true,
    });
    dims.layout.q = part(0);
    return attentionOp("causalAttentionQkv", { q: qkv, k: keys, v: values }, dims, mask, [B, T, heads * Dh]);
  }
  const dims = attentionDims(headShape, headShape, headShape, mask?.shape, {
    scale: options.scale,
    queryOffset: 0,
  });
  dims.layout = { q: part(0), k: part(1), v: part(2), out: tokensLayout(heads, T, Dh) };
  return attentionOp("causalAttentionQkv", { q: qkv, k: qkv, v: qkv }, dims, mask, [B, T, heads * Dh]);
}

/** Float64 reference of {@link causalAttention}. */
export function causalAttentionRef(
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  options: {
    keyMask?: HostTensor;
    scale?: number;
    queryOffset?: number;
    mergeHeads?: boolean;
    keyLength?: number;
  } = {},
): HostTensor {
  const mask = options.keyMask;
  const d = attentionDims(q.shape, k.shape, v.shape, mask?.shape, options);
  const { batch: B, heads: H, kvHeads: G, queries: Tq, keys: Tk, headDim: Dh } = d;
  const rows = k.shape[2]; // ≥ Tk with keyLength: only the first Tk rows are read
  const out = new Float64Array(B * H * Tq * Dh);
  const s = new Float64Array(Tk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / G));
      const kv = (b * G + g) * rows * Dh;
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
  if (!options.mergeHeads) return { data: out, shape: [...q.shape] };
  const merged = new Float64Array(out.length);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < Tq; i++) {
        for (let c = 0; c < Dh; c++) {
          merged[((b * Tq + i) * H + h) * Dh + c] = out[((b * H + h) * Tq + i) * Dh + c];
        }
      }
    }
  }
  return { data: merged, shape: [B, Tq, H * Dh] };
}

/** Float64 reference of {@link causalAttentionQkv}. */
export function causalAttentionQkvRef(
  qkv: HostTensor,
  heads: number,
  options: { keyMask?: HostTensor; scale?: number } = {},
): HostTensor {
  const [B, T, width] = qkv.shape;
  const Dh = width / (3 * heads);
  const part = (which: number): HostTensor => {
    const data = new Float64Array(B * heads * T * Dh);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        for (let h = 0; h < heads; h++) {
          for (let c = 0; c < Dh; c++) {
            data[((b * heads + h) * T + t) * Dh + c] =
              qkv.data[(b * T + t) * width + (which * heads + h) * Dh + c];
          }
        }
      }
    }
    return { data, shape: [B, heads, T, Dh] };
  };
  return causalAttentionRef(part(0), part(1), part(2), { ...options, queryOffset: 0, mergeHeads: true });
}
