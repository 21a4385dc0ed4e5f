/**
 * Scoring token sequences: the negative log-likelihood of each token from the second on, given
 * the tokens before it (teacher forcing). Sequences are batched by length with left padding;
 * the vocabulary projection runs in row chunks so that [rows, V] logits stay within the binding
 * limit, and each batch is read back once.
 *
 * @module
 */
import { scope, Tensor } from "../autograd/tensor.ts";
import { crossEntropy } from "../autograd/ops/loss.ts";
import { concat, reshape, slice } from "../autograd/ops/shape.ts";
import type { CausalLM } from "./model.ts";
import { leftPad } from "./padding.ts";
import { noGrad } from "../autograd/grad_mode.ts";

/** NLL of one sequence. */
export interface SequenceNll {
  /** Sum of −log p(token | previous tokens) in nats over the predicted tokens. */
  nll: number;
  /** Number of predicted tokens (length − 1, or 0). */
  tokens: number;
}

/** Options of {@link sequenceNll}. */
export interface SequenceNllOptions {
  /** Sequences per forward pass (default 8). */
  batchSize?: number;
  /** Called after each batch with the number of sequences scored so far. */
  onBatch?: (done: number, total: number) => void;
}

const IGNORE = -100;

/**
 * −log p(target | hidden state) for each row of `hidden` ([N, d], final hidden states before the
 * output layer): the output layer and log-softmax run in row chunks so that [rows, V] logits stay
 * within a storage binding. `targets` holds N token ids, −100 for rows to skip (their entry is 0).
 * Returns a [N] tensor; call it under noGrad.
 */
export function tokenNll(model: CausalLM, hidden: Tensor, targets: number[]): Tensor {
  const n = hidden.shape[0];
  const vocab = model.config.vocabSize;
  const chunkRows = Math.max(
    1,
    Math.min(512, Math.floor(model.ctx.limits.maxStorageBufferBindingSize / (vocab * 4))),
  );
  const parts: Tensor[] = [];
  for (let r = 0; r < n; r += chunkRows) {
    const end = Math.min(n, r + chunkRows);
    const logits = model.head(slice(hidden, 0, r, end));
    parts.push(crossEntropy(logits, targets.slice(r, end), { reduction: "none", ignoreIndex: IGNORE }));
  }
  return parts.length === 1 ? parts[0] : concat(parts, 0);
}

/**
 * Scores each sequence on its own (padding never leaks between rows). Sequences of fewer than
 * two tokens score `{nll: 0, tokens: 0}`.
 */
export async function sequenceNll(
  model: CausalLM,
  sequences: readonly (readonly number[])[],
  opts: SequenceNllOptions = {},
): Promise<SequenceNll[]> {
  const ctx = model.ctx;
  const batchSize = Math.max(1, Math.floor(opts.batchSize ?? 8));
  const out: SequenceNll[] = sequences.map(() => ({ nll: 0, tokens: 0 }));
  const order = sequences.map((_, i) => i).filter((i) => sequences[i].length >= 2);
  order.sort((a, b) => sequences[a].length - sequences[b].length);
  let done = sequences.length - order.length;
  for (let start = 0; start < order.length; start += batchSize) {
    const idx = order.slice(start, start + batchSize);
    const rows = idx.map((i) => sequences[i]);
    const { ids, mask, length: L } = leftPad(rows, 0);
    const B = rows.length;
    // Target of position t is the token at t + 1 when both are real.
    const targets = new Array<number>(B * L).fill(IGNORE);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t + 1 < L; t++) {
        if (mask[b * L + t] > 0.5) targets[b * L + t] = ids[b * L + t + 1];
      }
    }
    const losses = await scope(ctx, async () => {
      const perRow = noGrad(ctx, () => {
        const idsT = Tensor.from(ctx, ids, [B, L]);
        const maskT = Tensor.from(ctx, mask, [B, L]);
        const h = reshape(model.forward({ ids: idsT, attentionMask: maskT, logits: "none" }).lastHidden, [
          B * L,
          -1,
        ]);
        return tokenNll(model, h, targets);
      });
      return await perRow.read();
    });
    idx.forEach((i, b) => {
      let nll = 0;
      for (let t = 0; t < L; t++) if (targets[b * L + t] !== IGNORE) nll += losses[b * L + t];
      out[i] = { nll, tokens: sequences[i].length - 1 };
    });
    done += idx.length;
    opts.onBatch?.(done, sequences.length);
  }
  return out;
}

/**
 * Mean NLL per predicted token of each sequence (nats; NaN for sequences of fewer than two
 * tokens): {@link sequenceNll}'s totals divided by their token counts.
 */
export async function sequenceMeanNll(
  model: CausalLM,
  sequences: readonly (readonly number[])[],
  opts: SequenceNllOptions = {},
): Promise<number[]> {
  const scored = await sequenceNll(model, sequences, opts);
  return scored.map((x) => (x.tokens > 0 ? x.nll / x.tokens : NaN));
}
