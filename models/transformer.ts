/**
 * What the three families share: loading the weights, the forward skeleton (embeddings →
 * blocks → final norm → output layer), masks and positions, the KV cache, parameters and saving.
 * Each family file (gpt2.ts, llama.ts, phi.ts) supplies only its input positions and its block.
 *
 * @module
 */
import type { GpuContext } from "../kernels/device.ts";
import { GpuLimitError } from "../kernels/device.ts";
import { formatBytes } from "../kernels/pool.ts";
import { fmtShape, ShapeError, Tensor } from "../autograd/tensor.ts";
import { gelu, relu, silu } from "../autograd/ops/elementwise.ts";
import { linear } from "../autograd/ops/matmul.ts";
import { assertHalfSupported, HalfMatrix, HalfPrecisionError } from "../autograd/half.ts";
import { halfStride } from "../kernels/matmul_f16.ts";
import { layerNorm, rmsNorm } from "../autograd/ops/norm.ts";
import { reshape, select, transpose } from "../autograd/ops/shape.ts";
import { causalAttention, causalAttentionQkv } from "../autograd/ops/attention.ts";
import { type ModelConfig, type ModelFamily, parseModelConfig } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { type ModelSink, type ModelSource, openCheckpoint, readSourceJson } from "./source.ts";
import { encodeSafetensorsParts, type TensorToWrite } from "./safetensors.ts";
import { checkWeights } from "./weight_names.ts";
import { KVCache, positionIdsFromMask } from "./kvcache.ts";
import {
  chunkLimit,
  gatherRows,
  linearRows,
  RowChunks,
  type RowMatrix,
  uploadRowMatrix,
  wholeTensor,
} from "./chunked.ts";
import type { CausalLM, ForwardInput, ForwardOutput } from "./model.ts";

/** Options for loading a model. */
export interface LoadOptions {
  /** Mark every parameter `requiresGrad` (for fine-tuning). Default false. */
  requiresGrad?: boolean;
  /**
   * Split the vocabulary matrices (input embedding, output layer) into row chunks of at most
   * this many bytes. Default: the adapter's storage binding limit, the largest a kernel can
   * bind; matrices above it are always split (models/chunked.ts). Lower values are for tests.
   */
  maxChunkBytes?: number;
  /**
   * How the matrices are stored on the GPU: "f32" (default) or "f16": every projection matrix and
   * the vocabulary matrices become frozen {@link HalfMatrix}es (half the memory and bandwidth;
   * the arithmetic stays f32), while norms, biases and GPT-2's position table stay f32. Needs the
   * adapter's `shader-f16` feature; f16 matrices are never trained (no `requiresGrad`) nor split
   * into row chunks. Accuracy cost: docs/f16.md.
   */
  weights?: "f32" | "f16";
}

/** Per-call state a block needs besides its input. */
export interface BlockState {
  /** Position ids [B, T]. */
  positions: Tensor;
  /** Key mask [B, Tk] (1 real, 0 padding) or undefined for none. */
  keyMask: Tensor | undefined;
  /** Cache to append to, if any. */
  cache: KVCache | null;
  /** Tokens already cached (the queries' offset). */
  pastLength: number;
}

/** A family's part of the model. */
export interface FamilyBlock {
  /** Canonical name of the input embedding matrix. */
  readonly embedName: string;
  /** Canonical prefix of the final norm ("transformer.ln_f"). */
  readonly finalNorm: string;
  /** Projection weights are stored [in, out] (GPT-2 Conv1D) or [out, in] (nn.Linear). */
  readonly weightLayout: "in_out" | "out_in";
  /** Embeddings [B, T, d] → the first block's input (GPT-2 adds learned positions). */
  inputHidden(m: TransformerLM, x: Tensor, positions: Tensor): Tensor;
  /** One transformer block. */
  block(m: TransformerLM, layer: number, x: Tensor, s: BlockState): Tensor;
}

/** A decoder-only transformer made of a family's blocks. */
export class TransformerLM implements CausalLM {
  readonly config: ModelConfig;
  readonly ctx: GpuContext;
  readonly embedRows: RowMatrix;
  readonly headRows: RowMatrix;
  readonly headBias: Tensor | null;
  /** config.json as read (written back by `save`). */
  readonly rawConfig: Record<string, unknown>;
  /** generation_config.json as read, if there was one. */
  readonly rawGenerationConfig: Record<string, unknown> | null;
  private readonly weights: Map<string, Tensor | RowChunks | HalfMatrix>;
  private readonly family: FamilyBlock;
  private disposed = false;

  /**
   * A model over parameters already on the GPU, by canonical name; the vocabulary matrices may
   * be {@link RowChunks}, and any matrix a {@link HalfMatrix}. The model owns (and disposes) them.
   */
  constructor(
    ctx: GpuContext,
    config: ModelConfig,
    weights: Map<string, Tensor | RowChunks | HalfMatrix>,
    family: FamilyBlock,
    raw: { config: Record<string, unknown>; generation: Record<string, unknown> | null },
  ) {
    this.ctx = ctx;
    this.config = config;
    this.weights = weights;
    this.family = family;
    this.rawConfig = raw.config;
    this.rawGenerationConfig = raw.generation;
    this.embedRows = this.rows(family.embedName);
    this.headRows = config.tieWordEmbeddings ? this.embedRows : this.rows("lm_head.weight");
    this.headBias = config.lmHeadBias ? this.w("lm_head.bias") : null;
  }

  get inputEmbedding(): Tensor {
    return wholeTensor(this.embedRows, "the input embedding");
  }

  get headWeight(): Tensor {
    return wholeTensor(this.headRows, "the output layer weight");
  }

  /** The parameter `name` (canonical HF name); throws if absent or held in row chunks. */
  w(name: string): Tensor {
    return wholeTensor(this.rows(name), `parameter '${name}'`);
  }

  /** A projection matrix: an f32 tensor, or a {@link HalfMatrix} when loaded with f16 weights. */
  matrix(name: string): Tensor | HalfMatrix {
    const t = this.rows(name);
    return t instanceof HalfMatrix ? t : wholeTensor(t, `parameter '${name}'`);
  }

  /** The parameter `name`, whole or in row chunks (or f16); throws if absent. */
  rows(name: string): RowMatrix {
    const t = this.weights.get(name);
    if (!t) throw new Error(`model has no parameter '${name}'`);
    if (this.disposed) throw new Error("model used after dispose()");
    return t;
  }

  /** Names of the parameters held in row chunks (larger than one storage binding). */
  get chunkedParameters(): Map<string, RowChunks> {
    const out = new Map<string, RowChunks>();
    for (const [name, t] of this.weights) if (t instanceof RowChunks) out.set(name, t);
    return out;
  }

  /** The parameter `name`, or null when the checkpoint has none (optional biases). */
  maybe(name: string): Tensor | null {
    return this.weights.has(name) ? this.w(name) : null;
  }

  /** `x · Wᵀ + b` for the projection `prefix` (its `.weight` and optional `.bias`). */
  proj(prefix: string, x: Tensor): Tensor {
    return linear(x, this.matrix(`${prefix}.weight`), this.maybe(`${prefix}.bias`) ?? undefined, {
      weightLayout: this.family.weightLayout,
    });
  }

  /** The config's norm (LayerNorm or RMSNorm) with parameters `prefix.weight` (+ `.bias`). */
  norm(prefix: string, x: Tensor): Tensor {
    const eps = this.config.normEps;
    if (this.config.normType === "rmsnorm") return rmsNorm(x, this.w(`${prefix}.weight`), eps);
    return layerNorm(x, this.w(`${prefix}.weight`), this.w(`${prefix}.bias`), eps);
  }

  /** The MLP activation. */
  act(x: Tensor): Tensor {
    switch (this.config.activation) {
      case "gelu_new":
        return gelu(x);
      case "silu":
        return silu(x);
      case "relu":
        return relu(x);
      default:
        throw new ConfigError(`activation ${this.config.activation} is not implemented`);
    }
  }

  /** [B, T, heads·Dh] → [B, heads, T, Dh]. */
  splitHeads(x: Tensor, heads: number): Tensor {
    const [B, T] = x.shape;
    return transpose(reshape(x, [B, T, heads, this.config.headDim]), 1, 2);
  }

  /**
   * Attention of layer `layer` for q [B, H, T, Dh] and the new k, v [B, Hkv, T, Dh] (appended to
   * the cache when there is one). Returns [B, T, H·Dh] with heads merged.
   */
  attend(layer: number, q: Tensor, k: Tensor, v: Tensor, s: BlockState): Tensor {
    const options = {
      keyMask: s.keyMask,
      scale: this.config.attentionScale,
      queryOffset: s.pastLength,
      mergeHeads: true,
    };
    if (!s.cache) return causalAttention(q, k, v, options);
    // The cache is read in place: its first `length` rows are the keys.
    const c = s.cache.append(layer, k, v);
    return causalAttention(q, c.keys, c.values, { ...options, keyLength: c.length });
  }

  /**
   * Attention of layer `layer` from a fused projection qkv [B, T, 3·H·Dh] (q, k, v one after the
   * other, as GPT-2's `c_attn` writes them). Returns [B, T, H·Dh]. The kernels read the heads in
   * place (no slices, no transposes); with a cache, k and v are copied into it and read from
   * there.
   */
  attendFused(layer: number, qkv: Tensor, s: BlockState): Tensor {
    const cache = s.cache ? s.cache.appendFused(layer, qkv) : undefined;
    return causalAttentionQkv(qkv, this.config.numHeads, {
      keyMask: s.keyMask,
      scale: this.config.attentionScale,
      cache,
    });
  }

  embed(ids: Tensor): Tensor {
    return gatherRows(this.embedRows, ids);
  }

  forward(inp: ForwardInput): ForwardOutput {
    const c = this.config;
    if ((inp.ids === undefined) === (inp.embeds === undefined)) {
      throw new Error("forward: give exactly one of `ids` and `embeds`");
    }
    let x: Tensor;
    if (inp.embeds) {
      x = inp.embeds;
      if (x.rank !== 3 || x.shape[2] !== c.hiddenSize) {
        throw new ShapeError(
          `forward: embeds must be [batch, seq, ${c.hiddenSize}], got ${fmtShape(x.shape)}`,
        );
      }
    } else {
      const ids = inp.ids!;
      if (ids.rank !== 2) {
        throw new ShapeError(`forward: ids must be [batch, seq], got ${fmtShape(ids.shape)}`);
      }
      x = this.embed(ids);
    }
    const [B, T] = x.shape;
    if (T === 0) throw new ShapeError("forward: the sequence is empty");
    const mask = inp.attentionMask;
    if (mask && (mask.rank !== 2 || mask.shape[0] !== B || mask.shape[1] !== T)) {
      throw new ShapeError(`forward: attentionMask must be [${B}, ${T}], got ${fmtShape(mask.shape)}`);
    }
    if (
      inp.positionIds &&
      (inp.positionIds.rank !== 2 || inp.positionIds.shape[0] !== B || inp.positionIds.shape[1] !== T)
    ) {
      throw new ShapeError(
        `forward: positionIds must be [${B}, ${T}], got ${fmtShape(inp.positionIds.shape)}`,
      );
    }
    const cache = inp.cache ?? null;
    if (cache && cache.batch !== B) {
      throw new ShapeError(`forward: the cache holds ${cache.batch} sequences, the input has ${B}`);
    }
    const past = cache?.length ?? 0;
    if (c.positionEmbedding === "learned" && past + T > c.maxPositions) {
      throw new RangeError(
        `forward: ${past + T} tokens exceed this model's ${c.maxPositions} positions (n_positions)`,
      );
    }

    let state: BlockState;
    if (cache) {
      const step = cache.begin(T, mask ?? null, inp.positionIds ?? null);
      state = { positions: step.positions, keyMask: step.keyMask, cache, pastLength: step.pastLength };
    } else {
      let positions = inp.positionIds;
      if (!positions) {
        const m = mask ?? Tensor.full(this.ctx, [B, T], 1);
        positions = positionIdsFromMask(m);
        if (!mask) m.dispose();
      }
      state = { positions, keyMask: mask, cache: null, pastLength: 0 };
    }

    x = this.family.inputHidden(this, x, state.positions);
    for (let l = 0; l < c.numLayers; l++) x = this.family.block(this, l, x, state);
    const lastHidden = this.norm(this.family.finalNorm, x);
    cache?.commit();

    const mode = inp.logits ?? "all";
    let logits: Tensor | null = null;
    if (mode === "all") logits = this.head(lastHidden);
    else if (mode === "last") logits = this.head(select(lastHidden, 1, T - 1));
    else if (mode !== "none") {
      throw new Error(`forward: logits must be "all", "last" or "none", got "${mode}"`);
    }
    return { lastHidden, logits };
  }

  head(h: Tensor): Tensor {
    return linearRows(h, this.headRows, this.headBias);
  }

  newCache(batch: number, maxLength: number): KVCache {
    const c = this.config;
    if (!Number.isInteger(batch) || batch < 1 || !Number.isInteger(maxLength) || maxLength < 1) {
      throw new RangeError(`newCache: batch ${batch} and maxLength ${maxLength} must be positive integers`);
    }
    return new KVCache(this.ctx, {
      batch,
      capacity: maxLength,
      numLayers: c.numLayers,
      kvHeads: c.numKvHeads,
      headDim: c.headDim,
    });
  }

  parameters(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [name, t] of this.weights) {
      if (t instanceof Tensor) out.set(name, t);
      else if (t instanceof HalfMatrix) continue; // frozen f16 matrices are not trainable parameters
      else t.chunks.forEach((c, i) => out.set(`${name}[${t.starts[i]}:${t.starts[i] + c.shape[0]}]`, c));
    }
    return out;
  }

  async save(sink: ModelSink): Promise<void> {
    const tensors = new Map<string, TensorToWrite>();
    for (const [name, t] of this.weights) tensors.set(name, { data: await t.read(), shape: [...t.shape] });
    await sink("model.safetensors", encodeSafetensorsParts(tensors));
    const config = { ...this.rawConfig, torch_dtype: "float32" };
    if ("dtype" in config) config.dtype = "float32";
    const enc = new TextEncoder();
    await sink("config.json", [enc.encode(JSON.stringify(config, null, 2) + "\n")]);
    if (this.rawGenerationConfig) {
      await sink("generation_config.json", [
        enc.encode(JSON.stringify(this.rawGenerationConfig, null, 2) + "\n"),
      ]);
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const t of this.weights.values()) t.dispose();
  }

  /** Frees the weights at the end of a `using` block. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** A parsed JSON value as an object, or null when it is not one. */
function asObject(json: unknown): Record<string, unknown> | null {
  return typeof json === "object" && json !== null && !Array.isArray(json)
    ? json as Record<string, unknown>
    : null;
}

/** Loads a model folder (from any {@link ModelSource}) with the block of its family (see `loadModel` in model.ts). */
export async function loadTransformer(
  ctx: GpuContext,
  source: ModelSource,
  opts: LoadOptions,
  families: Record<ModelFamily, FamilyBlock>,
): Promise<TransformerLM> {
  // Each file is read once (over HTTP, one request each) and parsed as loadModelConfig does.
  const fail = (m: string) => new ConfigError(m);
  const configJson = await readSourceJson(source, "config.json", false, fail);
  const generationJson = await readSourceJson(source, "generation_config.json", true, fail);
  const config = parseModelConfig(configJson, source.locate("config.json"), generationJson);
  const family = families[config.family];
  if (config.activation === "gelu") {
    throw new ConfigError(
      `${source.locate("config.json")}: activation "gelu" (exact erf form) is not implemented; ` +
        `gelu_new / gelu_pytorch_tanh, silu and relu are`,
    );
  }
  const rawConfig = asObject(configJson)!; // parseModelConfig accepted it: an object
  const rawGeneration = asObject(generationJson);
  using file = await openCheckpoint(source);
  const names = checkWeights(config, file, file.source);
  // Tied output layer: transformers uses the embedding matrix whatever lm_head holds.
  if (config.tieWordEmbeddings) names.delete("lm_head.weight");
  const limit = ctx.limits.maxStorageBufferBindingSize;
  const chunkBytes = chunkLimit(ctx, opts.maxChunkBytes);
  const half = halfWeights(ctx, opts);
  for (const [canonical, stored] of names) {
    const info = file.info(stored);
    if (half && storedHalf(canonical, info.shape)) {
      // f16 matrices are one buffer each: no row chunks.
      const halfBytes = info.shape[0] * halfStride(info.shape[1]) * 2;
      const max = splitsByRows(family, canonical) ? chunkBytes : limit;
      if (halfBytes > max) {
        throw new GpuLimitError(
          `tensor '${canonical}' ${fmtShape(info.shape)} needs ${formatBytes(halfBytes)} as f16, more than ` +
            `${max === limit ? "this adapter's storage binding limit" : "the row-chunk limit"} of ` +
            `${formatBytes(max)}; f16 matrices are not split into row chunks: load the model with f32 ` +
            `weights (split into row chunks) or use an adapter with a larger limit`,
        );
      }
      continue;
    }
    const bytes = info.numel * 4;
    if (bytes > limit && !splitsByRows(family, canonical)) {
      throw new GpuLimitError(
        `tensor '${canonical}' ${fmtShape(info.shape)} needs ${formatBytes(bytes)} as f32, more than this ` +
          `adapter's ${formatBytes(limit)} storage binding limit; only the input embedding and the output ` +
          `layer are split into row chunks (use an adapter with a larger limit)`,
      );
    }
  }
  const weights = new Map<string, Tensor | RowChunks | HalfMatrix>();
  const options = (name: string) => ({ name, requiresGrad: opts.requiresGrad ?? false });
  try {
    for (const [canonical, stored] of names) {
      const info = file.info(stored);
      const data = await file.read(stored);
      if (half && storedHalf(canonical, info.shape)) {
        weights.set(canonical, HalfMatrix.fromFloat32(ctx, data, info.shape, { name: canonical }));
        continue;
      }
      if (splitsByRows(family, canonical)) {
        const shape = info.shape as [number, number];
        weights.set(canonical, uploadRowMatrix(ctx, data, shape, chunkBytes, options(canonical)));
        continue;
      }
      weights.set(canonical, Tensor.from(ctx, data, info.shape, options(canonical)).keep());
    }
  } catch (e) {
    for (const t of weights.values()) t.dispose();
    throw e;
  }
  return new TransformerLM(ctx, config, weights, family, { config: rawConfig, generation: rawGeneration });
}

/** Whether `opts` asks for f16 weights; throws when `ctx` cannot run them or they would be trained. */
function halfWeights(ctx: GpuContext, opts: LoadOptions): boolean {
  const w = opts.weights ?? "f32";
  if (w !== "f32" && w !== "f16") throw new Error(`loadModel: weights must be "f32" or "f16", got '${w}'`);
  if (w === "f32") return false;
  assertHalfSupported(ctx);
  if (opts.requiresGrad) {
    throw new HalfPrecisionError(
      "loadModel: f16 weights are frozen and cannot be trained (requiresGrad); load f32 weights to train",
    );
  }
  return true;
}

/**
 * The tensors stored as f16 with `weights: "f16"`: every matrix, i.e. the projection weights
 * (read by `linear`) and the vocabulary matrices, except GPT-2's learned position table (small,
 * and read by the f32 `embedding` op).
 */
function storedHalf(canonical: string, shape: readonly number[]): boolean {
  return shape.length === 2 && canonical !== "transformer.wpe.weight";
}

/** The vocabulary matrices, which are held in row chunks when they do not fit one binding. */
function splitsByRows(family: FamilyBlock, canonical: string): boolean {
  return canonical === family.embedName || canonical === "lm_head.weight";
}

/**
 * A model from parameters already on the GPU (random weights for a benchmark, weights built in
 * memory): `rawConfig` is a config.json object, `weights` every tensor that
 * `expectedWeights(config)` lists, by canonical name; the vocabulary matrices may be
 * {@link RowChunks}. Shapes are checked. The model owns the tensors (dispose frees them).
 */
export function buildTransformer(
  ctx: GpuContext,
  rawConfig: Record<string, unknown>,
  weights: Map<string, Tensor | RowChunks | HalfMatrix>,
  families: Record<ModelFamily, FamilyBlock>,
): TransformerLM {
  const config = parseModelConfig(rawConfig, "config");
  if (config.activation === "gelu") {
    throw new ConfigError(`config: activation "gelu" (exact erf form) is not implemented`);
  }
  const tensors = new Map([...weights].map(([name, t]) => [name, { shape: t.shape }]));
  const names = checkWeights(config, { tensors }, "weights");
  for (const [name, t] of weights) {
    if (t instanceof RowChunks && !splitsByRows(families[config.family], name)) {
      throw new ConfigError(`weights: only the vocabulary matrices may be row chunks, not '${name}'`);
    }
  }
  if (config.tieWordEmbeddings) names.delete("lm_head.weight");
  return new TransformerLM(ctx, config, weights, families[config.family], {
    config: rawConfig,
    generation: null,
  });
}
