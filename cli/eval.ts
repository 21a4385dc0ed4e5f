/**
 * `eval`: accuracy of a causal LM on a labelled file by comparing the label words' mean
 * log-likelihoods after the task template, zero-shot or with K in-context demonstrations.
 */
import { parseJsonl, stratifiedSample } from "../data/examples.ts";
import { classOf, getTask, type TaskSpec } from "../data/tasks.ts";
import { defaultContext } from "../kernels/device.ts";
import { EVALUATE_DEFAULTS } from "../api/defaults.ts";
import { accuracyWithInterval, argmaxScore } from "../train/classify.ts";
import { scoreExamples } from "../train/finetune.ts";
import { buildPrompt, type Demonstration } from "../train/prompts.ts";
import { type Command, numberFlag, parseFlags, UsageError } from "./args.ts";
import { readText } from "./io.ts";
import { openModel, WEIGHTS_HELP, weightsFlag } from "./model.ts";

const HELP = `Usage: cli.ts eval --model M --task T --file F.jsonl [flags]

Accuracy by label-word likelihood: for each example, the mean log-probability of each
option's tokens after "<text><template>" (sst2/rotten_tomatoes/imdb: "<text> It was" followed by
" bad" / " great"); the prediction is the most likely option. Prints the accuracy with a 95%
(Wilson) confidence interval and, as the last line, 'accuracy: X'.

  --model DIR|ORG/NAME[@REV]  model (directory or Hugging Face id)
  --task NAME             sst2 | rotten_tomatoes | imdb | emotion
  --file F.jsonl          labelled examples ({text, label}; see --text-field/--label-field)
  --shots K               in-context demonstrations before each example (default 0)
  --shots-from F.jsonl    where demonstrations come from (default: --file; those rows are then not scored)
  --limit N               score only the first N examples
  --seed N                seed for choosing demonstrations (default 0)
  --batch N               sequences per forward pass (default 16)
  --text-field NAME, --label-field NAME
  --json                  print one JSON object instead of text
${WEIGHTS_HELP}`;

export const evalCommand: Command = {
  name: "eval",
  summary: "accuracy of a model on a labelled file (label-word likelihood, zero- or K-shot)",
  help: HELP,
  async run(args) {
    const { values: v } = parseFlags("eval", args, {
      model: { type: "string" },
      task: { type: "string" },
      file: { type: "string" },
      shots: { type: "string" },
      "shots-from": { type: "string" },
      limit: { type: "string" },
      seed: { type: "string" },
      batch: { type: "string" },
      "text-field": { type: "string" },
      "label-field": { type: "string" },
      json: { type: "boolean" },
      weights: { type: "string" },
    });
    if (v.help) {
      console.log(HELP);
      return 0;
    }
    if (!v.model) throw new UsageError("eval: --model is required");
    if (!v.file) throw new UsageError("eval: --file is required");
    const task: TaskSpec = getTask(v.task ?? EVALUATE_DEFAULTS.task);
    const shots = numberFlag("eval", "shots", v.shots, EVALUATE_DEFAULTS.shots, {
      min: 0,
      max: 64,
      integer: true,
    });
    const limit = numberFlag("eval", "limit", v.limit, Infinity, { min: 1 });
    const seed = numberFlag("eval", "seed", v.seed, EVALUATE_DEFAULTS.seed, { min: 0, integer: true });
    const batch = numberFlag("eval", "batch", v.batch, EVALUATE_DEFAULTS.batch, {
      min: 1,
      max: 1024,
      integer: true,
    });
    const weights = weightsFlag("eval", v.weights);
    const fields = { textField: v["text-field"] ?? "text", labelField: v["label-field"] ?? "label" };
    const all = parseJsonl(await readText(v.file, "eval file"), { ...fields, source: v.file })
      .flatMap((e) => {
        const c = classOf(task, e.label);
        return c === null ? [] : [{ text: e.text, label: c }];
      });
    let demos: Demonstration[] = [];
    let scored = all;
    if (shots > 0) {
      const source = v["shots-from"]
        ? parseJsonl(await readText(v["shots-from"], "demonstration file"), {
          ...fields,
          source: v["shots-from"],
        })
          .flatMap((e) => {
            const c = classOf(task, e.label);
            return c === null ? [] : [{ text: e.text, label: c }];
          })
        : all;
      demos = stratifiedSample(source, shots, seed);
      if (!v["shots-from"]) scored = all.filter((e) => !demos.includes(e));
    }
    scored = scored.slice(0, Math.min(scored.length, limit));
    if (scored.length === 0) {
      throw new UsageError(`eval: no examples of task ${task.name}'s labels in ${v.file}`);
    }

    const ctx = await defaultContext();
    const { model, tokenizer } = await openModel(ctx, v.model, { weights });
    const options = task.evalOptions.map((o) => tokenizer.encode(o));
    const queries = scored.map((e) => ({
      prompt: tokenizer.encode(buildPrompt(task, e.text, demos)),
      options,
      label: e.label,
    }));
    const t0 = performance.now();
    const scores = await scoreExamples(model, queries, tokenizer.padId, { batchSize: batch });
    const predictions = scores.map(argmaxScore);
    const correct = predictions.filter((p, i) => p === scored[i].label).length;
    const { accuracy, low, high } = accuracyWithInterval(correct, scored.length);
    const perClass = task.labelWords.map((w, c) => {
      const idx = scored.map((e, i) => (e.label === c ? i : -1)).filter((i) => i >= 0);
      const ok = idx.filter((i) => predictions[i] === c).length;
      return { label: w, examples: idx.length, accuracy: idx.length ? ok / idx.length : NaN };
    });
    const seconds = (performance.now() - t0) / 1000;
    if (v.json) {
      console.log(
        JSON.stringify({
          task: task.name,
          model: v.model,
          shots,
          examples: scored.length,
          correct,
          accuracy,
          ci95: [low, high],
          perClass,
          seconds,
        }),
      );
    } else {
      console.log(`task ${task.name}, ${scored.length} examples, ${shots}-shot, ${seconds.toFixed(1)} s`);
      for (const p of perClass) {
        console.log(`  ${p.label}: ${(p.accuracy * 100).toFixed(1)}% of ${p.examples}`);
      }
      console.log(
        `accuracy ${(accuracy * 100).toFixed(2)}% (95% CI ${(low * 100).toFixed(1)}–${
          (high * 100).toFixed(1)
        }%)`,
      );
      console.log(`accuracy: ${accuracy.toFixed(4)}`);
    }
    return 0;
  },
};
