/**
 * Full fine-tuning of a causal LM as a classifier, the way the official harness trains
 * (docs/algorithm.md#fine-tuning): every option sequence "<text><evalSuffix><option>" is scored by the mean
 * log-probability of its option tokens, and the loss is a cross-entropy over those option scores
 * with the gold index. AdamW (weight decay 0, betas 0.9/0.999, eps 1e-8), a linear decay without
 * warmup, optional global gradient clipping, and periodic evaluation on a validation set whose
 * best checkpoint is kept (on the GPU) and restored at the end.
 *
 * Scoring never materialises vocabulary logits for every position: the hidden states that predict
 * option tokens are gathered first and only those rows go through the output layer. With GPT-2's
 * 50,257-token vocabulary, `[batch, length, V]` logits pass the 128 MiB binding limit of CPU
 * adapters already at 16 rows of 40 tokens; the gathered form needs `[option tokens, V]`.
 *
 * Platform-neutral: no file I/O or printing here (cli/finetune.ts does that).
 */
import { crossEntropy } from "../autograd/ops/loss.ts";
import { embedding } from "../autograd/ops/embedding.ts";
import { scale } from "../autograd/ops/elementwise.ts";
import { matmul } from "../autograd/ops/matmul.ts";
import { reshape } from "../autograd/ops/shape.ts";
import { AdamW, clipGradNorm, linearWarmupDecay } from "../autograd/optim.ts";
import { Rng } from "../autograd/random.ts";
import { backward } from "../autograd/tape.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import type { CausalLM } from "../models/model.ts";
import type { Example } from "../data/examples.ts";
import { leftPad } from "../models/padding.ts";
import type { TaskSpec } from "../data/tasks.ts";
import { accuracyWithInterval } from "./classify.ts";
import { buildPrompt, type Demonstration } from "./prompts.ts";
import { noGrad } from "../autograd/grad_mode.ts";

/** The tokenizer operations fine-tuning and evaluation need. */
export interface PromptEncoder {
  encode(text: string): number[];
  padId: number;
}

/** One example tokenised for scoring: its prompt, every option's tokens and the gold index. */
export interface ScoredExample {
  prompt: number[];
  options: number[][];
  /** Gold option index (-1 when unknown: scoring only). */
  label: number;
}

/** Tokenises labelled examples with the task's evaluation template (and optional demonstrations). */
export function tokenizeExamples(
  encoder: PromptEncoder,
  task: TaskSpec,
  examples: readonly Example[],
  demos: readonly Demonstration[] = [],
): ScoredExample[] {
  const options = task.evalOptions.map((o) => {
    const ids = encoder.encode(o);
    if (ids.length === 0) throw new RangeError(`option '${o}' of task ${task.name} encodes to no tokens`);
    return ids;
  });
  return examples.map((e) => ({
    prompt: encoder.encode(buildPrompt(task, e.text, demos)),
    options,
    label: e.label,
  }));
}

/**
 * How one batch is scored: the distinct token sequences to run, which of their positions predict
 * which option token, and how token log-probabilities average into option scores.
 */
export interface ScoringPlan {
  /** Left-padded ids, mask and positions of the distinct sequences, [sequences, length]. */
  ids: Float32Array;
  mask: Float32Array;
  positions: Float32Array;
  sequences: number;
  length: number;
  /** Per option token: the flat row (sequence · length + position) whose hidden state predicts it. */
  gather: number[];
  /** Per option token: the token id. */
  tokens: number[];
  /** [examples · options, option tokens]: 1/len(option) where a token belongs to an option. */
  average: Float32Array;
  examples: number;
  options: number;
  /** Gold index per example. */
  labels: number[];
}

/**
 * Builds the scoring plan of a batch. Option k of an example is predicted from the sequence
 * prompt + option[:-1]; sequences that coincide (every single-token option of one prompt) are run
 * once, which halves the work for two single-token label words. Sequences longer than
 * `maxLength` lose their oldest tokens, as the evaluation does.
 */
export function planScoring(
  batch: readonly ScoredExample[],
  padId: number,
  maxLength = Infinity,
): ScoringPlan {
  if (batch.length === 0) throw new RangeError("planScoring: the batch is empty");
  const nOpt = batch[0].options.length;
  const seqIndex = new Map<string, number>();
  const seqs: number[][] = [];
  const entries: { seq: number; pos: number; token: number; row: number; weight: number }[] = [];
  batch.forEach((ex, e) => {
    if (ex.options.length !== nOpt) {
      throw new RangeError("planScoring: every example needs the same number of options");
    }
    ex.options.forEach((opt, k) => {
      if (opt.length === 0) throw new RangeError(`planScoring: option ${k} has no tokens`);
      let seq = [...ex.prompt, ...opt.slice(0, -1)];
      let first = ex.prompt.length - 1; // position predicting opt[0]
      if (seq.length > maxLength) {
        const cut = seq.length - maxLength;
        seq = seq.slice(cut);
        first -= cut;
      }
      if (first < 0) {
        throw new RangeError(
          `an option of ${opt.length} tokens does not fit the model's ${maxLength} positions after its prompt`,
        );
      }
      const key = seq.join(",");
      let s = seqIndex.get(key);
      if (s === undefined) {
        s = seqs.length;
        seqIndex.set(key, s);
        seqs.push(seq);
      }
      opt.forEach((token, j) =>
        entries.push({ seq: s!, pos: first + j, token, row: e * nOpt + k, weight: 1 / opt.length })
      );
    });
  });
  const { ids, mask, positions, length } = leftPad(seqs, padId);
  const gather = entries.map((t) => t.seq * length + (length - seqs[t.seq].length) + t.pos);
  const rows = batch.length * nOpt;
  const average = new Float32Array(rows * entries.length);
  entries.forEach((t, j) => (average[t.row * entries.length + j] = t.weight));
  return {
    ids,
    mask,
    positions,
    sequences: seqs.length,
    length,
    gather,
    tokens: entries.map((t) => t.token),
    average,
    examples: batch.length,
    options: nOpt,
    labels: batch.map((e) => e.label),
  };
}

/**
 * Option scores [examples, options]: the mean log-probability of each option's tokens. Recorded
 * for autograd when the model's parameters require gradients; call inside a scope.
 */
export function optionScores(model: CausalLM, plan: ScoringPlan): Tensor {
  const ctx = model.ctx;
  const { sequences: n, length } = plan;
  const out = model.forward({
    ids: Tensor.from(ctx, plan.ids, [n, length]),
    attentionMask: Tensor.from(ctx, plan.mask, [n, length]),
    positionIds: Tensor.from(ctx, plan.positions, [n, length]),
    logits: "none",
  });
  const d = out.lastHidden.shape[2];
  const k = plan.tokens.length;
  const flat = reshape(out.lastHidden, [n * length, d]);
  const picked = embedding(flat, Tensor.from(ctx, plan.gather, [k]), { hostIds: plan.gather });
  const logits = model.head(picked);
  const nll = crossEntropy(logits, plan.tokens, { reduction: "none" }); // [k]
  const rows = plan.examples * plan.options;
  const meanNll = matmul(Tensor.from(ctx, plan.average, [rows, k]), reshape(nll, [k, 1])); // [rows, 1]
  return reshape(scale(meanNll, -1), [plan.examples, plan.options]);
}

/** The training loss of a batch: cross-entropy over option scores with the gold index (mean over examples). */
export function classificationLoss(model: CausalLM, plan: ScoringPlan): Tensor {
  if (plan.labels.some((l) => !(l >= 0 && l < plan.options))) {
    throw new RangeError("classificationLoss: every example needs a gold option index");
  }
  return crossEntropy(optionScores(model, plan), plan.labels, { reduction: "mean" });
}

/** Scores [example][option] of many examples, in batches, without recording gradients. */
export async function scoreExamples(
  model: CausalLM,
  examples: readonly ScoredExample[],
  padId: number,
  { batchSize = 32, maxLength = model.config.maxPositions }: { batchSize?: number; maxLength?: number } = {},
): Promise<number[][]> {
  const ctx = model.ctx;
  const out: number[][] = [];
  for (let start = 0; start < examples.length; start += batchSize) {
    const plan = planScoring(examples.slice(start, start + batchSize), padId, maxLength);
    // The forward is synchronous: noGrad covers it; the read happens after the scope closed.
    const scores = noGrad(ctx, () => scope(ctx, () => optionScores(model, plan)));
    const values = await scores.read();
    scores.dispose();
    for (let e = 0; e < plan.examples; e++) {
      out.push(Array.from(values.subarray(e * plan.options, (e + 1) * plan.options)));
    }
  }
  return out;
}

/** Accuracy of a set, with per-class accuracy and the predictions. */
export interface Evaluation {
  /** Fraction of examples whose highest-scoring option is their label (0..1). */
  accuracy: number;
  /** Examples predicted correctly. */
  correct: number;
  /** Examples scored. */
  total: number;
  /** 95% Wilson interval. */
  ci95: [number, number];
  /** Accuracy per class index, with the number of examples of that class. */
  perClass: { label: number; examples: number; accuracy: number }[];
  /** The predicted class index of each example, in input order. */
  predictions: number[];
}

/** Index of the highest score (the first on ties). */
function argmax(row: number[]): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** Accuracy by label-word likelihood (docs/algorithm.md#accuracy) of tokenised, labelled examples. */
export async function evaluateAccuracy(
  model: CausalLM,
  examples: readonly ScoredExample[],
  padId: number,
  opts: { batchSize?: number; maxLength?: number } = {},
): Promise<Evaluation> {
  if (examples.length === 0) throw new RangeError("evaluateAccuracy: no examples");
  const scores = await scoreExamples(model, examples, padId, opts);
  const predictions = scores.map(argmax);
  const correct = predictions.filter((p, i) => p === examples[i].label).length;
  const { accuracy, low, high } = accuracyWithInterval(correct, examples.length);
  const classes = examples[0].options.length;
  const perClass = Array.from({ length: classes }, (_, c) => {
    const idx = examples.map((e, i) => (e.label === c ? i : -1)).filter((i) => i >= 0);
    return {
      label: c,
      examples: idx.length,
      accuracy: idx.length ? idx.filter((i) => predictions[i] === c).length / idx.length : NaN,
    };
  });
  return { accuracy, correct, total: examples.length, ci95: [low, high], perClass, predictions };
}

/** Settings of a fine-tuning run (CLI flags in parentheses). */
export interface FinetuneOptions {
  /** Optimiser steps (--steps, 200). */
  steps: number;
  /** Examples per step (--batch, 16). */
  batchSize: number;
  /** Peak learning rate, decayed linearly to 0 (--lr, 1e-5). */
  lr: number;
  /** Seed of the batch order (--seed). */
  seed: number;
  /** Global gradient-norm clip; 0 = none (--max-grad-norm, 1.0 as transformers' Trainer). */
  maxGradNorm: number;
  /** AdamW weight decay (0, transformers' default). */
  weightDecay: number;
  /** Evaluate on the validation set every this many steps, and at the end (--eval-every, 50). */
  evalEvery: number;
  /** Examples per forward when evaluating. */
  evalBatch: number;
  /** Longest sequence (default: the model's positions). */
  maxLength?: number;
}

/** The defaults of the official harness (docs/algorithm.md#fine-tuning). */
export const FINETUNE_DEFAULTS: FinetuneOptions = {
  steps: 200,
  batchSize: 16,
  lr: 1e-5,
  seed: 0,
  maxGradNorm: 1.0,
  weightDecay: 0,
  evalEvery: 50,
  evalBatch: 32,
};

/** Progress events of {@link finetune}. */
export type FinetuneEvent =
  | { kind: "step"; step: number; steps: number; loss: number; lr: number; seconds: number }
  | { kind: "eval"; step: number; accuracy: number; best: boolean; seconds: number };

/** What a run did. */
export interface FinetuneResult {
  /** Training loss and learning rate of every step (1-based steps). */
  history: { step: number; loss: number; lr: number }[];
  /** Validation accuracy at each evaluation. */
  evals: { step: number; accuracy: number }[];
  /** Step whose weights the model holds at the end (the best validation step, or the last). */
  bestStep: number;
  /** Validation accuracy at `bestStep` (null without validation data). */
  bestAccuracy: number | null;
  /** Wall-clock seconds of the whole run. */
  seconds: number;
}

/** Raised for training data the run cannot use; printed without a stack trace. */
export class FinetuneError extends Error {
  override name = "FinetuneError";
  readonly userFacing = true;
}

/**
 * Yields batches of indices: a fresh seeded permutation per epoch, the last batch of an epoch
 * possibly smaller (transformers' RandomSampler without drop_last).
 */
export function* batchOrder(n: number, batchSize: number, seed: number): Generator<number[]> {
  const rng = new Rng(seed);
  while (true) {
    const perm = rng.shuffle(Array.from({ length: n }, (_, i) => i));
    for (let s = 0; s < n; s += batchSize) yield perm.slice(s, s + batchSize);
  }
}

/**
 * Fine-tunes every parameter of `model` on `train`. The parameters are switched to
 * `requiresGrad`. With `valid`, the model is evaluated every `evalEvery` steps and at the end; the
 * best weights (highest validation accuracy, the earliest on ties, as transformers'
 * `load_best_model_at_end`) are snapshot on the GPU and restored when the run ends. Without
 * `valid` the model keeps its final weights.
 */
export async function finetune(
  model: CausalLM,
  train: readonly ScoredExample[],
  valid: readonly ScoredExample[] | null,
  padId: number,
  o: FinetuneOptions,
  onEvent: (e: FinetuneEvent) => void | Promise<void> = () => {},
): Promise<FinetuneResult> {
  const ctx = model.ctx;
  if (train.length === 0) throw new FinetuneError("the training set is empty");
  if (train.some((e) => !(e.label >= 0 && e.label < e.options.length))) {
    throw new FinetuneError("every training example needs a label that is one of the task's classes");
  }
  if (!(o.steps >= 1) || !(o.batchSize >= 1)) {
    throw new FinetuneError("steps and batch size must be at least 1");
  }
  const maxLength = o.maxLength ?? model.config.maxPositions;
  const params = [...model.parameters().values()];
  for (const p of params) p.requiresGrad = true;
  const opt = new AdamW(params, { lr: o.lr, betas: [0.9, 0.999], eps: 1e-8, weightDecay: o.weightDecay });
  const t0 = performance.now();
  const history: FinetuneResult["history"] = [];
  const evals: FinetuneResult["evals"] = [];
  let best: { step: number; accuracy: number } | null = null;
  let snapshot: Tensor[] | null = null;
  const order = batchOrder(train.length, o.batchSize, o.seed);
  try {
    for (let step = 0; step < o.steps; step++) {
      const batch = (order.next().value as number[]).map((i) => train[i]);
      const plan = planScoring(batch, padId, maxLength);
      const lr = linearWarmupDecay(step, o.lr, 0, o.steps);
      opt.lr = lr;
      const loss = await scope(ctx, async () => {
        opt.zeroGrad();
        const l = classificationLoss(model, plan);
        backward(l);
        if (o.maxGradNorm > 0) clipGradNorm(params, o.maxGradNorm);
        opt.step();
        return await l.item();
      });
      if (!Number.isFinite(loss)) {
        throw new FinetuneError(`the training loss became ${loss} at step ${step + 1}; lower --lr`);
      }
      history.push({ step: step + 1, loss, lr });
      await onEvent({
        kind: "step",
        step: step + 1,
        steps: o.steps,
        loss,
        lr,
        seconds: (performance.now() - t0) / 1000,
      });
      const last = step + 1 === o.steps;
      if (valid && valid.length > 0 && ((o.evalEvery > 0 && (step + 1) % o.evalEvery === 0) || last)) {
        opt.zeroGrad(); // free the gradients before the evaluation's activations
        const { accuracy } = await evaluateAccuracy(model, valid, padId, {
          batchSize: o.evalBatch,
          maxLength,
        });
        const improved = best === null || accuracy > best.accuracy;
        if (improved) {
          best = { step: step + 1, accuracy };
          if (!last) snapshot = copyInto(params, snapshot);
          else if (snapshot) {
            // The last step is the best: the live weights are the ones to keep.
            for (const s of snapshot) s.dispose();
            snapshot = null;
          }
        }
        evals.push({ step: step + 1, accuracy });
        await onEvent({
          kind: "eval",
          step: step + 1,
          accuracy,
          best: improved,
          seconds: (performance.now() - t0) / 1000,
        });
      }
    }
    if (snapshot) {
      // Restore the best weights.
      params.forEach((p, i) => ctx.copyBuffer(snapshot![i].buffer, 0, p.buffer, 0, p.bytes));
      await ctx.sync();
    }
  } finally {
    opt.zeroGrad();
    opt.dispose();
    for (const s of snapshot ?? []) s.dispose();
    for (const p of params) p.requiresGrad = false;
  }
  return {
    history,
    evals,
    bestStep: best?.step ?? o.steps,
    bestAccuracy: best?.accuracy ?? null,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** Copies the parameters' current values into `into` (allocated on first use, kept off any scope). */
function copyInto(params: Tensor[], into: Tensor[] | null): Tensor[] {
  if (!into) return params.map((p) => p.detach().keep());
  params.forEach((p, i) => p.ctx.copyBuffer(p.buffer, 0, into[i].buffer, 0, p.bytes));
  return into;
}
