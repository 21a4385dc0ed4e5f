/**
 * Classification by label-word likelihood, the rule of the official evaluation harness
 * (docs/algorithm.md#accuracy): for each candidate option, the mean log-probability of its tokens after
 * the prompt; the prediction is the option with the highest score.
 */
import { crossEntropy } from "../autograd/ops/loss.ts";
import { reshape, slice } from "../autograd/ops/shape.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import type { CausalLM } from "../models/model.ts";
import { leftPad } from "../models/padding.ts";
import { noGrad } from "../autograd/grad_mode.ts";

/** The tokenizer operations classification needs. */
export interface Encoder {
  encode(text: string): number[];
  padId: number;
}

/** One scoring request: a prompt and the token ids of each option that may follow it. */
export interface OptionQuery {
  prompt: number[];
  options: number[][];
}

/**
 * Mean log-probability of each option's tokens after its prompt, [query][option], computed the
 * plain way: full logits for every position of left-padded batches of `batchSize`. Simple but
 * memory-hungry ([batch, length, V] logits); `scoreExamples` (train/finetune.ts) projects only the
 * positions that predict option tokens and is what `eval` uses. This one serves as its reference.
 */
export async function optionLogLikelihoods(
  model: CausalLM,
  queries: OptionQuery[],
  padId: number,
  batchSize = 16,
  maxLength = Infinity,
): Promise<number[][]> {
  const ctx = model.ctx;
  const vocab = model.headRows.shape[0];
  const rows: { ids: number[]; optionLength: number; q: number; o: number }[] = [];
  queries.forEach((q, qi) =>
    q.options.forEach((opt, oi) => {
      if (opt.length === 0) throw new RangeError(`option ${oi} of query ${qi} has no tokens`);
      // Keep the end of long prompts: the option must stay inside the context.
      let ids = [...q.prompt, ...opt];
      if (ids.length > maxLength) ids = ids.slice(ids.length - maxLength);
      rows.push({ ids, optionLength: opt.length, q: qi, o: oi });
    })
  );
  const scores = queries.map((q) => new Array(q.options.length).fill(NaN));
  for (let start = 0; start < rows.length; start += batchSize) {
    const part = rows.slice(start, start + batchSize);
    const { ids, mask, positions, length } = leftPad(part.map((r) => r.ids), padId);
    const n = part.length;
    // Targets: only the option tokens count; everything else is ignored (-1).
    const targets = new Float32Array(n * (length - 1)).fill(-1);
    part.forEach((r, i) => {
      for (let j = length - r.optionLength; j < length; j++) {
        targets[i * (length - 1) + j - 1] = ids[i * length + j];
      }
    });
    const nll = await noGrad(ctx, () =>
      scope(ctx, () => {
        const out = model.forward({
          ids: Tensor.from(ctx, ids, [n, length]),
          attentionMask: Tensor.from(ctx, mask, [n, length]),
          positionIds: Tensor.from(ctx, positions, [n, length]),
          logits: "all",
        });
        const logits = reshape(slice(out.logits!, 1, 0, length - 1), [n * (length - 1), vocab]);
        return crossEntropy(logits, Tensor.from(ctx, targets, [n * (length - 1)]), {
          reduction: "none",
          ignoreIndex: -1,
        })
          .read();
      }));
    part.forEach((r, i) => {
      let s = 0;
      for (let j = length - r.optionLength; j < length; j++) s -= nll[i * (length - 1) + j - 1];
      scores[r.q][r.o] = s / r.optionLength;
    });
  }
  return scores;
}

/** Index of the highest score (the first on ties), or -1 when every score is NaN. */
export function argmaxScore(scores: number[]): number {
  let best = -1;
  for (let i = 0; i < scores.length; i++) {
    if (Number.isNaN(scores[i])) continue;
    if (best < 0 || scores[i] > scores[best]) best = i;
  }
  return best;
}

/** Accuracy with a 95% Wilson score interval. */
export function accuracyWithInterval(
  correct: number,
  total: number,
): { accuracy: number; low: number; high: number } {
  if (total === 0) return { accuracy: NaN, low: NaN, high: NaN };
  const p = correct / total;
  const z = 1.959963984540054;
  const denom = 1 + (z * z) / total;
  const centre = (p + (z * z) / (2 * total)) / denom;
  const half = (z * Math.sqrt((p * (1 - p)) / total + (z * z) / (4 * total * total))) / denom;
  return { accuracy: p, low: Math.max(0, centre - half), high: Math.min(1, centre + half) };
}
