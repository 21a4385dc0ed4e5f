/**
 * The causal language model interface every family implements (GPT-2, Llama, Phi), and
 * {@link loadModel}, which reads a Hugging Face model folder (config.json + safetensors) onto the
 * GPU and picks the family.
 *
 * Memory: `forward` creates its intermediates in the caller's {@link scope}; run it inside one
 * (and run `backward` inside the same scope) so they are freed. Parameters are kept until
 * `dispose()`.
 *
 * @module
 */
import type { GpuContext } from "../kernels/device.ts";
import type { Tensor } from "../autograd/tensor.ts";
import type { ModelConfig } from "./config.ts";
import type { KVCache } from "./kvcache.ts";
import type { ModelSink, ModelSource } from "./source.ts";
import { buildTransformer, type LoadOptions, loadTransformer } from "./transformer.ts";
import type { RowChunks, RowMatrix } from "./chunked.ts";
import type { HalfMatrix } from "../autograd/half.ts";
import { Gpt2Block } from "./gpt2.ts";
import { LlamaBlock } from "./llama.ts";
import { PhiBlock } from "./phi.ts";

export { positionIdsFromMask } from "./kvcache.ts";
export type { KVCache } from "./kvcache.ts";
export type { LoadOptions } from "./transformer.ts";

/** Which positions get vocabulary logits: every one, only the last, or none. */
export type LogitsMode = "all" | "last" | "none";

/** Inputs of {@link CausalLM.forward}. Give exactly one of `ids` and `embeds`. */
export interface ForwardInput {
  /** Token ids [B, T] (f32 integers). */
  ids?: Tensor;
  /** Input embeddings [B, T, d] (e.g. `E[ids]` from {@link CausalLM.embed}, or free vectors). */
  embeds?: Tensor;
  /**
   * [B, T] 1 for real tokens, 0 for (left) padding: padded keys are masked. With a cache it covers
   * only the new tokens.
   */
  attentionMask?: Tensor;
  /**
   * [B, T] position ids. Default: `max(cumsum(mask) − 1, 0)` (positions count from each row's
   * first real token), continuing from the cached tokens with a cache.
   */
  positionIds?: Tensor;
  /** Default "all". "last" projects only the last position onto the vocabulary. */
  logits?: LogitsMode;
  /** Append the new keys/values to this cache and attend to everything cached (no gradient through it). */
  cache?: KVCache;
}

/** Outputs of {@link CausalLM.forward}. */
export interface ForwardOutput {
  /** [B, T, d] hidden states after the final norm (the output layer's input). */
  lastHidden: Tensor;
  /** [B, T, V] ("all"), [B, V] ("last") or null ("none"). */
  logits: Tensor | null;
}

/** A decoder-only transformer language model on the GPU. */
export interface CausalLM {
  /** The parsed config (family, sizes, norms, activation). */
  readonly config: ModelConfig;
  /** The device holding the weights. */
  readonly ctx: GpuContext;
  /**
   * Input embedding matrix E [V, d]: one tensor, or row chunks when it is larger than one
   * storage binding, or a frozen f16 {@link HalfMatrix} when loaded with `weights: "f16"` (use
   * the helpers of models/chunked.ts, which handle all three).
   */
  readonly embedRows: RowMatrix;
  /** Output layer weight [V, d], whole or in row chunks (GPT-2 and tied models: the same as E). */
  readonly headRows: RowMatrix;
  /** E as one tensor; throws GpuLimitError when it is held in row chunks, HalfPrecisionError when f16 (see `embedRows`). */
  readonly inputEmbedding: Tensor;
  /** The output layer weight as one tensor; throws GpuLimitError when chunked, HalfPrecisionError when f16 (see `headRows`). */
  readonly headWeight: Tensor;
  /** Output layer bias [V] (Phi), else null. */
  readonly headBias: Tensor | null;
  /** `E[ids]`: [B, T] ids → [B, T, d]. */
  embed(ids: Tensor): Tensor;
  /** The output layer `h · Wᵀ (+ b)`: [..., d] → [..., V] (row-chunked weights included). */
  head(h: Tensor): Tensor;
  /** Runs the model on ids or input embeddings; returns the last hidden states and the logits asked for. */
  forward(inp: ForwardInput): ForwardOutput;
  /** A KV cache for `batch` sequences of up to `maxLength` tokens (prompt included). */
  newCache(batch: number, maxLength: number): KVCache;
  /**
   * Parameters by Hugging Face name (a tied output layer appears once, as the embedding); a
   * matrix held in row chunks appears as its chunks, named `name[start:end]` by row range. f16
   * matrices (frozen) are not listed.
   */
  parameters(): Map<string, Tensor>;
  /**
   * Writes model.safetensors (F32), config.json and generation_config.json (when loaded with one)
   * through `sink`, one file each (host/files.ts: `saveModel(model, dir)` writes a folder).
   */
  save(sink: ModelSink): Promise<void>;
  /** Frees the weights. */
  dispose(): void;
}

/**
 * Loads a model folder (config.json, model.safetensors or a sharded index) onto the GPU, read
 * through a {@link ModelSource} (`urlSource`, `bytesSource`; host/files.ts also takes a path).
 * F16/BF16 weights are widened to f32, unless `opts.weights` is "f16": then the matrices are
 * stored as f16 (see LoadOptions; HalfPrecisionError without the adapter's `shader-f16`). The
 * input embedding and output layer are held in row chunks when larger than one storage binding
 * (or `opts.maxChunkBytes`), in f32 only. Throws ConfigError /
 * CheckpointError / SafetensorsError with the file and tensor named, and GpuLimitError for any
 * other tensor larger than the binding limit.
 */
export function loadModel(ctx: GpuContext, source: ModelSource, opts: LoadOptions = {}): Promise<CausalLM> {
  return loadTransformer(ctx, source, opts, { gpt2: Gpt2Block, llama: LlamaBlock, phi: PhiBlock });
}

/**
 * A model from tensors already on the GPU: `rawConfig` is a config.json object and `weights`
 * holds every parameter by canonical Hugging Face name (the embedding and output layer may be
 * {@link RowChunks}, and any matrix a {@link HalfMatrix}). Used for random-weight benchmarks without writing a checkpoint; the model
 * owns the tensors. Throws ConfigError / CheckpointError for an unsupported config or missing
 * or wrong-shaped weights.
 */
export function createModel(
  ctx: GpuContext,
  rawConfig: Record<string, unknown>,
  weights: Map<string, Tensor | RowChunks | HalfMatrix>,
): CausalLM {
  return buildTransformer(ctx, rawConfig, weights, { gpt2: Gpt2Block, llama: LlamaBlock, phi: PhiBlock });
}
