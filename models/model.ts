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
import { type LoadOptions, loadTransformer } from "./transformer.ts";
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
  readonly config: ModelConfig;
  readonly ctx: GpuContext;
  /** Input embedding matrix E [V, d]. */
  readonly inputEmbedding: Tensor;
  /** Output layer weight [V, d] (GPT-2 and tied models: the same tensor as E). */
  readonly headWeight: Tensor;
  /** Output layer bias [V] (Phi), else null. */
  readonly headBias: Tensor | null;
  /** `E[ids]`: [B, T] ids → [B, T, d]. */
  embed(ids: Tensor): Tensor;
  forward(inp: ForwardInput): ForwardOutput;
  /** A KV cache for `batch` sequences of up to `maxLength` tokens (prompt included). */
  newCache(batch: number, maxLength: number): KVCache;
  /** Parameters by Hugging Face name (a tied output layer appears once, as the embedding). */
  parameters(): Map<string, Tensor>;
  /** Writes model.safetensors (F32) and config.json into `dir` (created if needed). */
  save(dir: string): Promise<void>;
  dispose(): void;
}

/**
 * Loads a model folder (config.json, model.safetensors or a sharded index) onto the GPU.
 * F16/BF16 weights are widened to f32. Throws ConfigError / CheckpointError / SafetensorsError
 * with the file and tensor named, and GpuLimitError for a tensor larger than the binding limit.
 */
export function loadModel(ctx: GpuContext, dir: string, opts: LoadOptions = {}): Promise<CausalLM> {
  return loadTransformer(ctx, dir, opts, { gpt2: Gpt2Block, llama: LlamaBlock, phi: PhiBlock });
}
