/**
 * Evaluation prompts (docs/algorithm.md#eval-prompts): "<text><evalSuffix>" followed by an option word, with
 * optional in-context demonstrations before it. The text is used verbatim, as the official
 * harness does (SST-2 sentences keep their trailing space, so "… . " + " It was").
 */
import type { TaskSpec } from "../data/tasks.ts";

/** A labelled example shown in context. */
export interface Demonstration {
  text: string;
  label: number;
}

/** The prompt whose continuation is scored: demonstrations, a blank line each, then the example. */
export function buildPrompt(task: TaskSpec, text: string, demos: readonly Demonstration[] = []): string {
  const shown = demos.map((d) => `${d.text}${task.evalSuffix}${task.evalOptions[d.label]}\n\n`).join("");
  return `${shown}${text}${task.evalSuffix}`;
}

/** The full training sequence for fine-tuning: prompt + the gold option. */
export function buildExample(
  task: TaskSpec,
  text: string,
  label: number,
): { prompt: string; option: string } {
  return { prompt: buildPrompt(task, text), option: task.evalOptions[label] };
}
