/**
 * The `model` of a one-call function: a model already loaded with its tokenizer (the caller keeps
 * it), or a {@link ModelSource} to load from (the call loads it and frees it when done). The
 * Deno-only wrappers in host/api.ts add folder paths and hub ids.
 *
 * @module
 */
import { defaultContext, type GpuContext } from "../kernels/device.ts";
import { type CausalLM, loadModel } from "../models/model.ts";
import { loadTokenizer, type ModelSource } from "../models/source.ts";
import type { Tokenizer } from "../models/tokenizer.ts";

/** A model on the GPU and its tokenizer. */
export interface LoadedModel {
  /** The model, on the GPU. */
  model: CausalLM;
  /** Its tokenizer (a `TextCodec` as it is). */
  tokenizer: Tokenizer;
}

/** What a one-call function takes as `model`. */
export type ModelInput = LoadedModel | ModelSource;

/** How a one-call function loads a {@link ModelSource}. */
export interface ModelLoadOptions {
  /** The GPU context (default: the process's shared one). Ignored for a loaded model. */
  ctx?: GpuContext;
  /** "f16" stores the matrices in half precision (needs `shader-f16`); default "f32". */
  weights?: "f32" | "f16";
}

/** A model ready for a call, and how to let it go afterwards. */
export interface UsableModel extends LoadedModel {
  /** Frees the model when the call loaded it; does nothing for a caller's model. */
  release(): void;
}

/** True when `input` is a loaded model (rather than a source to load from). */
export function isLoadedModel(input: ModelInput): input is LoadedModel {
  return "model" in input && "tokenizer" in input;
}

/** The model of a call: the caller's, or loaded from a source (then released by the caller of this). */
export async function useModel(input: ModelInput, options: ModelLoadOptions = {}): Promise<UsableModel> {
  if (isLoadedModel(input)) return { ...input, release: () => {} };
  const ctx = options.ctx ?? (await defaultContext());
  const tokenizer = await loadTokenizer(input);
  const model = await loadModel(ctx, input, { weights: options.weights });
  return { model, tokenizer, release: () => model.dispose() };
}
