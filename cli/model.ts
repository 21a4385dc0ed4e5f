/**
 * Opening a model for a command: resolve `--model` (directory or hub id, downloading with
 * progress on stderr), then load the tokenizer and the weights.
 */
import type { GpuContext } from "../kernels/device.ts";
import { loadModel, loadTokenizer } from "../host/files.ts";
import { resolveModel } from "../host/hub.ts";
import type { CausalLM } from "../models/model.ts";
import type { Tokenizer } from "../models/tokenizer.ts";
import {
  CheckpointError,
  ConfigError,
  HubError,
  SafetensorsError,
  TokenizerError,
} from "../models/errors.ts";
import { UsageError } from "./args.ts";
import { RuntimeFailure, UserError } from "./errors.ts";
import { exists } from "./io.ts";

/** How a command stores the model's matrices (`--weights`). */
export type WeightFormat = "f32" | "f16";

/** Help line of `--weights`, shared by the commands that accept it. */
export const WEIGHTS_HELP =
  "  --weights f32|f16       store the model's matrices as f16 (half the memory; f32 arithmetic; needs\n" +
  "                          the adapter's shader-f16; accuracy cost in docs/f16.md). Default f32";

/** Parses `--weights` (default f32). */
export function weightsFlag(command: string, value: string | undefined): WeightFormat {
  if (value === undefined || value === "f32" || value === "f16") return value ?? "f32";
  throw new UsageError(`${command}: --weights must be f32 or f16, got '${value}'`);
}

/** A tokenizer whose pad id is always a number (GPT-2 has none: its EOS is used, as HF generation does). */
export interface CommandTokenizer {
  tokenizer: Tokenizer;
  encode(text: string): number[];
  decode(ids: number[]): string;
  vocabSize: number;
  padId: number;
  eosId: number | null;
}

/** A loaded model with its tokenizer and where it came from. */
export interface OpenedModel {
  model: CausalLM;
  tokenizer: CommandTokenizer;
  dir: string;
  spec: string;
}

let lastProgress = 0;

/**
 * Resolves, downloads if needed, and loads `spec` (with f16 matrices when `options.weights` is
 * "f16"). The one way every command opens `--model`: a missing folder or a model that cannot be
 * read (bad config, tokenizer, weights; hub failure) fails with one line naming it.
 */
export async function openModel(
  ctx: GpuContext,
  spec: string,
  options: { weights?: WeightFormat } = {},
): Promise<OpenedModel> {
  await checkModelPath(spec);
  try {
    return await openModelUnchecked(ctx, spec, options);
  } catch (e) {
    if (e instanceof UserError) throw e;
    const what = `cannot load model '${spec}'`;
    if (e instanceof HubError) {
      const input = e.kind === "auth" || e.kind === "not-found" || e.kind === "spec";
      throw input ? new UserError(`${what}: ${e.message}`) : new RuntimeFailure(`${what}: ${e.message}`);
    }
    const known = [ConfigError, CheckpointError, SafetensorsError, TokenizerError];
    if (known.some((k) => e instanceof k)) throw new UserError(`${what}: ${(e as Error).message}`);
    // A config or tokenizer file that is not JSON at all surfaces as a SyntaxError from its parser.
    if (e instanceof SyntaxError) {
      throw new UserError(`${what}: a JSON file in it is malformed (${e.message}); re-download the model`);
    }
    throw e;
  }
}

/** Fails early (before any other work) when `spec` is a path that does not exist. */
export async function checkModelPath(spec: string): Promise<void> {
  const looksLikePath = /^(\.|\/|~)/.test(spec) || spec.split("/").length > 2 || spec.includes("\\");
  if (looksLikePath && !(await exists(spec))) {
    throw new UserError(`model folder '${spec}' does not exist`);
  }
}

async function openModelUnchecked(
  ctx: GpuContext,
  spec: string,
  options: { weights?: WeightFormat },
): Promise<OpenedModel> {
  const resolved = await resolveModel(spec, {
    onProgress: (p) => {
      const now = Date.now();
      if (now - lastProgress < 500 && p.total !== null && p.loaded < p.total) return;
      lastProgress = now;
      const total = p.total !== null ? ` / ${(p.total / 1e6).toFixed(1)} MB` : "";
      console.error(`download ${p.file}: ${(p.loaded / 1e6).toFixed(1)} MB${total}`);
    },
  });
  const tok = await loadTokenizer(resolved.dir);
  const model = await loadModel(ctx, resolved.dir, { weights: options.weights });
  const padId = tok.padId ?? tok.eosId ?? 0;
  return {
    model,
    dir: resolved.dir,
    spec,
    tokenizer: {
      tokenizer: tok,
      encode: (t) => tok.encode(t),
      decode: (ids) => tok.decode(ids),
      vocabSize: tok.vocabSize,
      padId,
      eosId: tok.eosId,
    },
  };
}
