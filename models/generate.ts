/**
 * Text generation: batched decoding with a KV cache (or full recomputation, for checking),
 * greedy or sampled (temperature, top-k, top-p, seeded), stopping at EOS or a token limit.
 *
 * The decoding loop stays on the GPU: each step's chosen ids are written by the sampling kernel
 * into a tensor that is the next step's input, and copied into a GPU history. The host reads
 * only the rows' "finished" flags every `checkEvery` steps (to stop early at EOS) and the history
 * once at the end.
 *
 * @module
 */
import { scope, Tensor } from "../autograd/tensor.ts";
import { concat } from "../autograd/ops/shape.ts";
import type { CausalLM } from "./model.ts";
import type { Tokenizer } from "./tokenizer.ts";
import { sampleTokens, type SamplingOptions } from "./sampling.ts";
import { noGrad } from "../autograd/grad_mode.ts";
import { leftPad } from "./padding.ts";

/** Options of {@link generate}. Without `temperature` (or with `greedy`) decoding is greedy. */
export interface GenerateOptions extends SamplingOptions {
  /** New tokens per row at most (default 32). */
  maxNewTokens?: number;
  /** Stop id (default: the model config's EOS); null never stops early. */
  eosId?: number | null;
  /** Id used for left padding and after a row finished (default: EOS, else 0). */
  padId?: number;
  /** Decode with a KV cache (default true); false recomputes the whole sequence each step. */
  useCache?: boolean;
  /** Read the finished flags every this many steps to stop early (default 8). */
  checkEvery?: number;
}

/** What {@link generate} returns per prompt. */
export interface GenerateResult {
  /** New token ids per row, without the EOS token. */
  tokens: number[][];
  /** Why each row stopped. */
  finishReasons: ("eos" | "length")[];
  /** Decoding steps run (forward passes). */
  steps: number;
}

/**
 * Continues each prompt (token ids; rows may differ in length and are left-padded). Returns the
 * new tokens per row.
 */
export async function generate(
  model: CausalLM,
  prompts: readonly (readonly number[])[],
  opts: GenerateOptions = {},
): Promise<GenerateResult> {
  const ctx = model.ctx;
  const cfg = model.config;
  const B = prompts.length;
  if (B === 0) return { tokens: [], finishReasons: [], steps: 0 };
  prompts.forEach((p, b) => {
    if (p.length === 0) {
      throw new RangeError(`generate: prompt ${b} is empty (give at least one token, e.g. BOS)`);
    }
    for (const id of p) {
      if (!Number.isInteger(id) || id < 0 || id >= cfg.vocabSize) {
        throw new RangeError(
          `generate: prompt ${b} has token id ${id}, outside the vocabulary [0, ${cfg.vocabSize})`,
        );
      }
    }
  });
  const eosId = opts.eosId === undefined ? cfg.eosTokenId : opts.eosId;
  const padId = opts.padId ?? eosId ?? 0;
  let maxNew = Math.floor(opts.maxNewTokens ?? 32);
  if (!(maxNew >= 0)) throw new RangeError(`generate: maxNewTokens must be ≥ 0, got ${opts.maxNewTokens}`);
  const { ids, mask, length: L } = leftPad(prompts, padId);
  if (cfg.positionEmbedding === "learned") {
    if (L > cfg.maxPositions) {
      throw new RangeError(
        `generate: the prompt has ${L} tokens, more than the model's ${cfg.maxPositions} positions`,
      );
    }
    maxNew = Math.min(maxNew, cfg.maxPositions - L);
  }
  if (maxNew === 0) {
    return {
      tokens: prompts.map(() => []),
      finishReasons: prompts.map(() => "length"),
      steps: 0,
    };
  }
  const useCache = opts.useCache ?? true;
  const checkEvery = Math.max(1, Math.floor(opts.checkEvery ?? 8));
  const sampling = {
    greedy: opts.greedy,
    temperature: opts.temperature,
    topK: opts.topK,
    topP: opts.topP,
    seed: opts.seed,
    eosId: eosId ?? null,
    padId,
  };

  const cache = useCache ? model.newCache(B, L + maxNew) : null;
  const next = Tensor.zeros(ctx, [B, 1]).keep();
  const finished = Tensor.zeros(ctx, [B]).keep();
  const history = Tensor.empty(ctx, [maxNew, B]).keep();
  // Without a cache the whole sequence is the input of every step.
  let seqIds = Tensor.from(ctx, ids, [B, L]).keep();
  let seqMask = Tensor.from(ctx, mask, [B, L]).keep();
  let steps = 0;
  try {
    for (let s = 0; s < maxNew; s++) {
      scope(ctx, () =>
        noGrad(ctx, () => {
          let logits: Tensor;
          if (cache) {
            const input = s === 0 ? { ids: seqIds, attentionMask: seqMask } : { ids: next };
            logits = model.forward({ ...input, cache, logits: "last" }).logits!;
          } else {
            logits = model.forward({ ids: seqIds, attentionMask: seqMask, logits: "last" }).logits!;
          }
          sampleTokens(logits, next, finished, { ...sampling, step: s });
          ctx.copyBuffer(next.buffer, 0, history.buffer, s * B * 4, B * 4);
          if (!cache && s + 1 < maxNew) {
            const grownIds = concat([seqIds, next], 1).keep();
            const ones = Tensor.full(ctx, [B, 1], 1);
            const grownMask = concat([seqMask, ones], 1).keep();
            seqIds.dispose();
            seqMask.dispose();
            seqIds = grownIds;
            seqMask = grownMask;
          }
        }));
      steps = s + 1;
      if (eosId !== null && eosId !== undefined && (s + 1) % checkEvery === 0 && s + 1 < maxNew) {
        const flags = await finished.read();
        if (flags.every((f) => f > 0.5)) break;
      }
    }
    const hist = await readRows(history, steps * B);
    const tokens: number[][] = [];
    const finishReasons: ("eos" | "length")[] = [];
    for (let b = 0; b < B; b++) {
      const row: number[] = [];
      let reason: "eos" | "length" = "length";
      for (let s = 0; s < steps; s++) {
        const t = hist[s * B + b];
        if (eosId !== null && eosId !== undefined && t === eosId) {
          reason = "eos";
          break;
        }
        row.push(t);
      }
      tokens.push(row);
      finishReasons.push(reason);
    }
    return { tokens, finishReasons, steps };
  } finally {
    cache?.dispose();
    for (const t of [next, finished, history, seqIds, seqMask]) t.dispose();
  }
}

async function readRows(t: Tensor, n: number): Promise<number[]> {
  if (n === 0) return [];
  const buf = await t.ctx.readBuffer(t.buffer, 0, n * 4);
  return Array.from(new Float32Array(buf), (v) => Math.round(v));
}

/** Result of {@link generateText}. */
export interface GenerateTextResult extends GenerateResult {
  /** The continuation of each prompt (prompt excluded, special tokens skipped). */
  texts: string[];
}

/**
 * Tokenizes the prompts (with the tokenizer's own special tokens, e.g. a BOS), generates, and
 * decodes the continuations.
 */
export async function generateText(
  model: CausalLM,
  tokenizer: Tokenizer,
  prompts: readonly string[],
  opts: GenerateOptions = {},
): Promise<GenerateTextResult> {
  const ids = prompts.map((p) => tokenizer.encode(p));
  const eosId = opts.eosId === undefined ? (tokenizer.eosId ?? model.config.eosTokenId) : opts.eosId;
  const padId = opts.padId ?? tokenizer.padId ?? eosId ?? 0;
  const result = await generate(model, ids, { ...opts, eosId, padId });
  // Decoding the new tokens alone would lose a leading space with SentencePiece-style decoders
  // (they strip the first "▁"), so decode prompt + continuation and drop the prompt's text.
  const texts = result.tokens.map((t, b) => {
    const opts = { skipSpecialTokens: true };
    const prefix = tokenizer.decode(ids[b], opts);
    const full = tokenizer.decode([...ids[b], ...t], opts);
    return full.startsWith(prefix) ? full.slice(prefix.length) : tokenizer.decode(t, opts);
  });
  return { ...result, texts };
}
