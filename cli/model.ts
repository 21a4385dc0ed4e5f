/**
 * Opening a model for a command: resolve `--model` (directory or hub id, downloading with
 * progress on stderr), then load the tokenizer and the weights.
 */
import type { GpuContext } from "../kernels/device.ts";
import { loadTokenizer } from "../models/files.ts";
import { resolveModel } from "../models/hub.ts";
import { type CausalLM, loadModel } from "../models/model.ts";
import type { Tokenizer } from "../models/tokenizer.ts";

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

/** Resolves, downloads if needed, and loads `spec`. */
export async function openModel(ctx: GpuContext, spec: string): Promise<OpenedModel> {
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
  const model = await loadModel(ctx, resolved.dir);
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
