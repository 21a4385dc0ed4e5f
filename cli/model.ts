/**
 * Opening a model for a command: resolve `--model` (directory or hub id, downloading with
 * progress on stderr), then load the tokenizer and the weights.
 */
import type { GpuContext } from "../kernels/device.ts";
import { loadModel, loadTokenizer } from "../host/files.ts";
import { resolveModel } from "../host/hub.ts";
import type { CausalLM } from "../models/model.ts";
import type { Tokenizer } from "../models/tokenizer.ts";
import { UsageError } from "./args.ts";

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

/** Resolves, downloads if needed, and loads `spec` (with f16 matrices when `options.weights` is "f16"). */
export async function openModel(
  ctx: GpuContext,
  spec: string,
  options: { weights?: WeightFormat } = {},
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
