/**
 * `generate()` in one call: continue text prompts with a model, greedy unless a `temperature` is
 * given (defaults: api/defaults.ts, the CLI's). The token-level form of models/generate.ts keeps
 * working through the same name: `generate(model, promptIds, options)`.
 *
 * @module
 */
import type { CausalLM } from "../models/model.ts";
import {
  generate as generateIds,
  type GenerateOptions,
  type GenerateResult,
  generateText,
  type GenerateTextResult,
} from "../models/generate.ts";
import { GENERATE_DEFAULTS } from "./defaults.ts";
import { type ModelInput, type ModelLoadOptions, useModel } from "./model.ts";

/** A one-call generation: the model and the prompts, and any settings (all optional). */
export interface GenerateRequest extends ModelLoadOptions {
  /** A loaded model + tokenizer (kept), or a `ModelSource` (loaded for the call, then freed). */
  model: ModelInput;
  /** One prompt or several (continued as one batch). */
  prompts: string | readonly string[];
  /** New tokens per prompt at most. */
  maxNewTokens?: number;
  /** Sample with this temperature; absent = greedy. */
  temperature?: number;
  /** Sample among the K most likely tokens (0 = all); needs `temperature`. */
  topK?: number;
  /** Sample from the smallest set of tokens with probability ≥ P; needs `temperature`. */
  topP?: number;
  /** Seed of the sampling. */
  seed?: number;
}

/** Raised for a request that cannot be run as given. */
export class GenerateRequestError extends Error {
  /** The error's name. */
  override name = "GenerateRequestError";
  /** Printed by the CLI without a stack trace. */
  readonly userFacing = true;
}

/** The settings of a generation, defaults filled in (the CLI uses this too). */
export function generateSettings(
  r: Omit<GenerateRequest, "model" | "prompts" | "ctx" | "weights">,
): GenerateOptions {
  const sampled = r.temperature !== undefined;
  if (!sampled && (r.topK !== undefined || r.topP !== undefined)) {
    throw new GenerateRequestError(
      "topK and topP need a temperature (sampling); without it decoding is greedy",
    );
  }
  return {
    maxNewTokens: r.maxNewTokens ?? GENERATE_DEFAULTS.maxNewTokens,
    greedy: !sampled,
    temperature: sampled ? r.temperature : undefined,
    topK: r.topK ?? GENERATE_DEFAULTS.topK,
    topP: r.topP ?? GENERATE_DEFAULTS.topP,
    seed: r.seed ?? GENERATE_DEFAULTS.seed,
  };
}

/**
 * Continues each prompt; returns the continuations (`texts`), their token ids and why each stopped.
 *
 * @example
 * ```ts ignore
 * const { texts } = await generate({ model: { model, tokenizer }, prompts: "This movie is" });
 * ```
 */
export function generate(request: GenerateRequest): Promise<GenerateTextResult>;
/** The token-level form (models/generate.ts): continues token-id prompts with a loaded model. */
export function generate(
  model: CausalLM,
  prompts: readonly (readonly number[])[],
  options?: GenerateOptions,
): Promise<GenerateResult>;
export function generate(
  first: GenerateRequest | CausalLM,
  prompts?: readonly (readonly number[])[],
  options?: GenerateOptions,
): Promise<GenerateResult | GenerateTextResult> {
  if ("forward" in first) return generateIds(first, prompts ?? [], options);
  return generateFromRequest(first);
}

async function generateFromRequest(r: GenerateRequest): Promise<GenerateTextResult> {
  const settings = generateSettings(r);
  const m = await useModel(r.model, r);
  try {
    const prompts = typeof r.prompts === "string" ? [r.prompts] : [...r.prompts];
    return await generateText(m.model, m.tokenizer, prompts, settings);
  } finally {
    m.release();
  }
}
