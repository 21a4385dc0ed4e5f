/**
 * `evaluate()` in one call: a model's accuracy on labelled examples by label-word likelihood,
 * zero-shot or with in-context demonstrations (defaults: api/defaults.ts, the CLI's).
 *
 * @module
 */
import { type Example, stratifiedSample } from "../data/examples.ts";
import { classOf, getTask, type TaskSpec } from "../data/tasks.ts";
import { evaluateAccuracy, type Evaluation, tokenizeExamples } from "../train/finetune.ts";
import { EVALUATE_DEFAULTS } from "./defaults.ts";
import { type ModelInput, type ModelLoadOptions, useModel } from "./model.ts";

/** A one-call evaluation: the model and the examples, and any settings (all optional). */
export interface EvaluateRequest extends ModelLoadOptions {
  /** A loaded model + tokenizer (kept), or a `ModelSource` (loaded for the call, then freed). */
  model: ModelInput;
  /** Labelled examples ({ text, label }); labels outside the task's classes are dropped. */
  data: readonly Example[];
  /** A preset name or a custom task. */
  task?: string | TaskSpec;
  /** In-context demonstrations before each example. */
  shots?: number;
  /** Where demonstrations come from (default: `data`, whose drawn rows are then not scored). */
  demonstrations?: readonly Example[];
  /** Seed of the choice of demonstrations. */
  seed?: number;
  /** Sequences per forward pass. */
  batch?: number;
  /** Score only the first `limit` examples. */
  limit?: number;
}

/** Raised when nothing can be scored. */
export class EvaluateRequestError extends Error {
  /** The error's name. */
  override name = "EvaluateRequestError";
  /** Printed by the CLI without a stack trace. */
  readonly userFacing = true;
}

/** Examples with their labels mapped to the task's class indices (others dropped). */
function ofTask(task: TaskSpec, examples: readonly Example[]): Example[] {
  return examples.flatMap((e) => {
    const c = classOf(task, e.label);
    return c === null ? [] : [{ text: e.text, label: c }];
  });
}

/**
 * Accuracy (with a 95% Wilson interval), per-class accuracy and the predictions.
 *
 * @example
 * ```ts ignore
 * const { accuracy } = await evaluate({ model: { model, tokenizer }, data, shots: 4 });
 * ```
 */
export async function evaluate(r: EvaluateRequest): Promise<Evaluation> {
  const task = typeof r.task === "object" ? r.task : getTask(r.task ?? EVALUATE_DEFAULTS.task);
  const shots = r.shots ?? EVALUATE_DEFAULTS.shots;
  const all = ofTask(task, r.data);
  let scored = all;
  let demos: Example[] = [];
  if (shots > 0) {
    demos = stratifiedSample(
      r.demonstrations ? ofTask(task, r.demonstrations) : all,
      shots,
      r.seed ?? EVALUATE_DEFAULTS.seed,
    );
    if (!r.demonstrations) scored = all.filter((e) => !demos.includes(e));
  }
  scored = scored.slice(0, r.limit ?? scored.length);
  if (scored.length === 0) {
    throw new EvaluateRequestError(`no examples with task ${task.name}'s labels to score`);
  }
  const m = await useModel(r.model, r);
  try {
    const padId = m.tokenizer.padId ?? 0;
    const set = tokenizeExamples({ encode: (t) => m.tokenizer.encode(t), padId }, task, scored, demos);
    return await evaluateAccuracy(m.model, set, padId, { batchSize: r.batch ?? EVALUATE_DEFAULTS.batch });
  } finally {
    m.release();
  }
}
