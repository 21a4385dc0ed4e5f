/**
 * A batched key/value cache for incremental decoding, and position ids from an attention mask.
 *
 * Each layer's keys and values live in one buffer of shape [B, Hkv, capacity, Dh]; a forward
 * step appends its T new rows at the current length (one copy each, straight from a fused q/k/v
 * projection with {@link KVCache.appendFused}) and the attention kernels read the first
 * `length + T` rows in place ({@link KVCache.update} still returns contiguous copies). The cache also keeps the key mask [B, capacity]
 * (1 = real token, 0 = padding) and, per row, the position the next real token gets, so left
 * padded prompts keep counting positions from their first real token. Everything stays on the
 * GPU: nothing is read back.
 *
 * The cache holds detached values: no gradient flows into earlier steps through it.
 */
import type { GpuContext } from "../kernels/device.ts";
import { launchLinear, LINEAR_MAIN, packParams } from "../kernels/launch.ts";
import { copyRowsKernel } from "../kernels/shape.ts";
import { copyHeadsKernel, type HeadLayout, headsLayout, tokensLayout } from "../kernels/attention.ts";
import { fmtShape, ShapeError, Tensor } from "../autograd/tensor.ts";

/** Raised when a cache would grow past its capacity. */
export class CacheFullError extends Error {
  override name = "CacheFullError";
}

const POSITIONS_WGSL = /* wgsl */ `
struct P { B: u32, T: u32, hasOffset: u32 }
@group(0) @binding(0) var<storage, read> mask: array<f32>;
@group(0) @binding(1) var<storage, read_write> offset: array<f32>;
@group(0) @binding(2) var<storage, read_write> pos: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${LINEAR_MAIN(64)}
  if (gid >= p.B) { return; }
  var count = 0.0;
  if (p.hasOffset == 1u) { count = offset[gid]; }
  for (var t = 0u; t < p.T; t++) {
    count += select(0.0, 1.0, mask[gid * p.T + t] > 0.5);
    pos[gid * p.T + t] = max(count - 1.0, 0.0);
  }
  if (p.hasOffset == 1u) { offset[gid] = count; }
}`;

/**
 * Writes position ids [B, T] for `mask` [B, T]: `max(offset[b] + cumsum(mask[b]) - 1, 0)`. With
 * an `offset` tensor [B] (real tokens seen so far per row), it also advances the offset.
 */
function positionsKernel(ctx: GpuContext, mask: Tensor, offset: Tensor | null, out: Tensor): void {
  const [B, T] = mask.shape;
  // A binding may not alias another, so without an offset a scratch buffer stands in.
  const scratch = offset ?? Tensor.empty(ctx, [1]);
  launchLinear(
    ctx,
    POSITIONS_WGSL,
    [mask.buffer, scratch.buffer, out.buffer],
    packParams([B, T, offset ? 1 : 0]),
    B,
    64,
  );
  if (!offset) scratch.dispose();
}

/**
 * Position ids for left padding: `max(cumsum(mask) - 1, 0)` per row, i.e. positions count from
 * each row's first real token. `mask` is [B, T] of 1/0; the result is [B, T] (no gradient).
 */
export function positionIdsFromMask(mask: Tensor): Tensor {
  if (mask.rank !== 2) {
    throw new ShapeError(`positionIdsFromMask: mask must be [B, T], got ${fmtShape(mask.shape)}`);
  }
  const out = Tensor.empty(mask.ctx, mask.shape);
  positionsKernel(mask.ctx, mask, null, out);
  return out;
}

/** What one cached forward step needs: its positions and the key mask over cache + new tokens. */
export interface CacheStep {
  /** Position ids [B, T] of the new tokens. */
  positions: Tensor;
  /** Key mask [B, length + T] (1 real, 0 padding). */
  keyMask: Tensor;
  /** Number of tokens cached before this step (the new queries' offset). */
  pastLength: number;
}

/** One layer's cache read in place: [B, Hkv, capacity, Dh] each, the first `length` rows filled. */
export interface CachedKeysValues {
  /** Keys [B, Hkv, capacity, Dh]. */
  keys: Tensor;
  /** Values [B, Hkv, capacity, Dh]. */
  values: Tensor;
  /** Rows filled (the keys to attend to). */
  length: number;
}

/** Keys and values of every layer for a batch of sequences, up to `capacity` tokens each. */
export class KVCache {
  /** The device holding the cache. */
  readonly ctx: GpuContext;
  /** Sequences cached (B). */
  readonly batch: number;
  /** Most tokens per sequence, prompt included. */
  readonly capacity: number;
  /** Transformer layers (one key and one value tensor each). */
  readonly numLayers: number;
  /** Key/value heads (Hkv; fewer than the query heads with grouped-query attention). */
  readonly kvHeads: number;
  /** Size of one head (Dh). */
  readonly headDim: number;
  /** Tokens cached so far (the same for every row; padding counts). */
  length = 0;
  private keys: Tensor[];
  private values: Tensor[];
  private mask: Tensor;
  private nextPosition: Tensor;
  private pending: number | null = null;
  private disposed = false;

  /** An empty cache; models make one with `newCache(batch, maxLength)`. */
  constructor(
    ctx: GpuContext,
    o: { batch: number; capacity: number; numLayers: number; kvHeads: number; headDim: number },
  ) {
    this.ctx = ctx;
    this.batch = o.batch;
    this.capacity = o.capacity;
    this.numLayers = o.numLayers;
    this.kvHeads = o.kvHeads;
    this.headDim = o.headDim;
    const shape = [o.batch, o.kvHeads, o.capacity, o.headDim];
    this.keys = [];
    this.values = [];
    for (let l = 0; l < o.numLayers; l++) {
      this.keys.push(Tensor.empty(ctx, shape, { name: `kv cache keys (layer ${l})` }).keep());
      this.values.push(Tensor.empty(ctx, shape, { name: `kv cache values (layer ${l})` }).keep());
    }
    this.mask = Tensor.empty(ctx, [o.batch, o.capacity]).keep();
    this.nextPosition = Tensor.zeros(ctx, [o.batch]).keep();
  }

  /** GPU bytes held by the cache. */
  get bytes(): number {
    return this.keys.reduce((s, k) => s + 2 * k.bytes, 0) + this.mask.bytes;
  }

  /**
   * Starts a forward step of `T` new tokens with key mask `mask` [B, T] (null = all real).
   * Position ids are computed on the GPU unless given. Call {@link commit} after all layers.
   */
  begin(T: number, mask: Tensor | null, positions: Tensor | null): CacheStep {
    if (this.disposed) throw new Error("KV cache used after dispose()");
    if (this.length + T > this.capacity) {
      throw new CacheFullError(
        `KV cache holds ${this.capacity} tokens: cannot add ${T} to the ${this.length} cached; ` +
          `create the cache with a larger maxLength`,
      );
    }
    if (mask && (mask.rank !== 2 || mask.shape[0] !== this.batch || mask.shape[1] !== T)) {
      throw new ShapeError(
        `KV cache step: attention mask must be [${this.batch}, ${T}], got ${fmtShape(mask.shape)}`,
      );
    }
    const m = mask ?? Tensor.full(this.ctx, [this.batch, T], 1);
    copyRowsKernel(
      this.ctx,
      m.buffer,
      { offset: 0, stride: T },
      this.mask.buffer,
      { offset: this.length, stride: this.capacity },
      this.batch,
      T,
    );
    let pos = positions;
    // Advance the per-row position counter even when positions are given, so later default
    // positions stay consistent.
    const computed = Tensor.empty(this.ctx, [this.batch, T]);
    positionsKernel(this.ctx, m, this.nextPosition, computed);
    if (pos) computed.dispose();
    else pos = computed;
    if (!mask) m.dispose();
    const L = this.length + T;
    const keyMask = Tensor.empty(this.ctx, [this.batch, L]);
    copyRowsKernel(
      this.ctx,
      this.mask.buffer,
      { offset: 0, stride: this.capacity },
      keyMask.buffer,
      {
        offset: 0,
        stride: L,
      },
      this.batch,
      L,
    );
    this.pending = T;
    return { positions: pos, keyMask, pastLength: this.length };
  }

  /**
   * Appends layer `layer`'s new keys and values [B, Hkv, T, Dh] and returns contiguous copies of
   * all cached keys and values [B, Hkv, length + T, Dh] for attention.
   */
  update(layer: number, k: Tensor, v: Tensor): { keys: Tensor; values: Tensor } {
    const T = this.pending;
    if (T === null) throw new Error("KVCache.update() outside a step: call begin() first");
    const want = [this.batch, this.kvHeads, T, this.headDim];
    for (const x of [k, v]) {
      if (x.rank !== 4 || x.shape.some((d, i) => d !== want[i])) {
        throw new ShapeError(`KV cache layer ${layer}: expected ${fmtShape(want)}, got ${fmtShape(x.shape)}`);
      }
    }
    const rows = this.batch * this.kvHeads;
    const Dh = this.headDim;
    const L = this.length + T;
    const out: Tensor[] = [];
    for (const [src, cache] of [[k, this.keys[layer]], [v, this.values[layer]]] as const) {
      copyRowsKernel(
        this.ctx,
        src.buffer,
        { offset: 0, stride: T * Dh },
        cache.buffer,
        {
          offset: this.length * Dh,
          stride: this.capacity * Dh,
        },
        rows,
        T * Dh,
      );
      const full = Tensor.empty(this.ctx, [this.batch, this.kvHeads, L, Dh]);
      copyRowsKernel(
        this.ctx,
        cache.buffer,
        { offset: 0, stride: this.capacity * Dh },
        full.buffer,
        {
          offset: 0,
          stride: L * Dh,
        },
        rows,
        L * Dh,
      );
      out.push(full);
    }
    return { keys: out[0], values: out[1] };
  }

  /**
   * Appends layer `layer`'s new keys and values [B, Hkv, T, Dh] and returns the layer's cache to
   * be read in place (attention with `keyLength`), without the copies {@link update} makes.
   */
  append(layer: number, k: Tensor, v: Tensor): CachedKeysValues {
    const T = this.stepTokens(layer);
    const want = [this.batch, this.kvHeads, T, this.headDim];
    for (const x of [k, v]) {
      if (x.rank !== 4 || x.shape.some((d, i) => d !== want[i])) {
        throw new ShapeError(`KV cache layer ${layer}: expected ${fmtShape(want)}, got ${fmtShape(x.shape)}`);
      }
    }
    const src = headsLayout(this.kvHeads, T, this.headDim);
    this.copyIn(layer, k.buffer, src, v.buffer, src, T);
    return { keys: this.keys[layer], values: this.values[layer], length: this.length + T };
  }

  /**
   * Appends layer `layer`'s new keys and values straight from a fused projection qkv
   * [B, T, 3·Hkv·Dh] (q, k, v one after the other, GPT-2's `c_attn`) and returns the layer's
   * cache to be read in place.
   */
  appendFused(layer: number, qkv: Tensor): CachedKeysValues {
    const T = this.stepTokens(layer);
    const width = 3 * this.kvHeads * this.headDim;
    if (qkv.rank !== 3 || qkv.shape[0] !== this.batch || qkv.shape[1] !== T || qkv.shape[2] !== width) {
      throw new ShapeError(
        `KV cache layer ${layer}: expected a fused projection [${this.batch}, ${T}, ${width}], got ${
          fmtShape(qkv.shape)
        }`,
      );
    }
    const part = (i: number) =>
      tokensLayout(this.kvHeads, T, this.headDim, width, i * this.kvHeads * this.headDim);
    this.copyIn(layer, qkv.buffer, part(1), qkv.buffer, part(2), T);
    return { keys: this.keys[layer], values: this.values[layer], length: this.length + T };
  }

  /** Tokens of the step in progress (throws outside a step). */
  private stepTokens(layer: number): number {
    if (this.pending === null) {
      throw new Error(`KVCache layer ${layer}: append outside a step: call begin() first`);
    }
    return this.pending;
  }

  /** Copies the step's T new key and value rows (given in any layout) to rows length.. of the cache. */
  private copyIn(
    layer: number,
    k: GPUBuffer,
    kLayout: HeadLayout,
    v: GPUBuffer,
    vLayout: HeadLayout,
    T: number,
  ) {
    const dst = {
      ...headsLayout(this.kvHeads, this.capacity, this.headDim),
      offset: this.length * this.headDim,
    };
    const dims = { batch: this.batch, heads: this.kvHeads, tokens: T, headDim: this.headDim };
    copyHeadsKernel(this.ctx, k, kLayout, this.keys[layer].buffer, dst, dims);
    copyHeadsKernel(this.ctx, v, vLayout, this.values[layer].buffer, dst, dims);
  }

  /** Ends the step started by {@link begin}: the new tokens become part of the cache. */
  commit(): void {
    if (this.pending === null) throw new Error("KVCache.commit() without begin()");
    this.length += this.pending;
    this.pending = null;
  }

  /** Forgets everything (the buffers are reused). */
  reset(): void {
    this.length = 0;
    this.pending = null;
    this.nextPosition.dispose();
    this.nextPosition = Tensor.zeros(this.ctx, [this.batch]).keep();
  }

  /** Frees the GPU buffers. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const t of [...this.keys, ...this.values, this.mask, this.nextPosition]) t.dispose();
  }

  /** Frees the cache at the end of a `using` block. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
