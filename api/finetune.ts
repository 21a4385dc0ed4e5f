/**
 * `finetune()` in one call: full fine-tuning of a model as a classifier on labelled texts, with
 * the official harness's loss and defaults (train/finetune.ts's FINETUNE_DEFAULTS, the CLI's).
 *
 * @module
 */
import type { Example } from "../data/examples.ts";
import { classOf, getTask, type TaskSpec } from "../data/tasks.ts";
import {
  finetune as finetuneModel,
  FINETUNE_DEFAULTS,
  type FinetuneEvent,
  type FinetuneOptions,
  type FinetuneResult,
  tokenizeExamples,
} from "../train/finetune.ts";
import type { GpuContext } from "../kernels/device.ts";
import { type LoadedModel, type ModelInput, useModel } from "./model.ts";

/** A one-call fine-tuning: the model and the training texts, and any settings (all optional). */
export interface FinetuneRequest extends Partial<FinetuneOptions> {
  /**
   * A loaded model + tokenizer (trained in place), or a `ModelSource` (loaded for the call; the
   * trained model is returned and the caller frees it).
   */
  model: ModelInput;
  /** Labelled training texts ({ text, label }; synth records work as they are). */
  train: readonly Example[];
  /** Validation texts: the checkpoint with the best accuracy on them is kept. */
  valid?: readonly Example[];
  /** A preset name or a custom task. */
  task?: string | TaskSpec;
  /** The GPU context for a model loaded from a source (default: the shared one). */
  ctx?: GpuContext;
  /** Progress: every step's loss, every evaluation. */
  onEvent?: (e: FinetuneEvent) => void | Promise<void>;
}

/** What {@link finetune} returns: the run's history, and the trained model. */
export interface FinetuneCallResult extends FinetuneResult, LoadedModel {}

/** Examples with their labels mapped to the task's class indices (others dropped). */
function ofTask(task: TaskSpec, examples: readonly Example[]): Example[] {
  return examples.flatMap((e) => {
    const c = classOf(task, e.label);
    return c === null ? [] : [{ text: e.text, label: c }];
  });
}

/**
 * Fine-tunes every parameter; the model ends with the best validation checkpoint (or the last
 * step's weights without `valid`).
 *
 * @example
 * ```ts ignore
 * const run = await finetune({ model: { model, tokenizer }, train: records, valid, steps: 50 });
 * ```
 */
export async function finetune(r: FinetuneRequest): Promise<FinetuneCallResult> {
  const task = typeof r.task === "object" ? r.task : getTask(r.task ?? "sst2");
  const options: FinetuneOptions = {
    steps: r.steps ?? FINETUNE_DEFAULTS.steps,
    batchSize: r.batchSize ?? FINETUNE_DEFAULTS.batchSize,
    lr: r.lr ?? FINETUNE_DEFAULTS.lr,
    seed: r.seed ?? FINETUNE_DEFAULTS.seed,
    maxGradNorm: r.maxGradNorm ?? FINETUNE_DEFAULTS.maxGradNorm,
    weightDecay: r.weightDecay ?? FINETUNE_DEFAULTS.weightDecay,
    evalEvery: r.evalEvery ?? FINETUNE_DEFAULTS.evalEvery,
    evalBatch: r.evalBatch ?? FINETUNE_DEFAULTS.evalBatch,
    maxLength: r.maxLength,
  };
  const m = await useModel(r.model, { ctx: r.ctx });
  try {
    const padId = m.tokenizer.padId ?? 0;
    const encoder = { encode: (t: string) => m.tokenizer.encode(t), padId };
    const train = tokenizeExamples(encoder, task, ofTask(task, r.train));
    const valid = r.valid ? tokenizeExamples(encoder, task, ofTask(task, r.valid)) : null;
    const result = await finetuneModel(m.model, train, valid, padId, options, r.onEvent);
    return { ...result, model: m.model, tokenizer: m.tokenizer };
  } catch (e) {
    m.release();
    throw e;
  }
}
