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
import { type Command, JSON_HELP, numberFlag, parseFlags, resultPrinter, UsageError } from "./args.ts";
import { readText } from "./io.ts";
import { openModel, WEIGHTS_HELP, weightsFlag } from "./model.ts";

const HELP = `Usage: cli.ts eval --model M --task T --data F.jsonl [flags]

Accuracy by label-word likelihood: for each example, the mean log-probability of each
option's tokens after "<text><template>" (sst2/rotten_tomatoes/imdb: "<text> It was" followed by
" bad" / " great"); the prediction is the most likely option. Prints the accuracy with a 95%
(Wilson) confidence interval and, as the last line, 'accuracy: X'.

  --model DIR|ORG/NAME[@REV]  model (directory or Hugging Face id)
  --task NAME             sst2 | rotten_tomatoes | imdb | emotion
  --data F.jsonl          labelled examples ({text, label}; see --text-field/--label-field)
  --shots K               in-context demonstrations before each example (default 0)
  --shots-data F.jsonl    where demonstrations come from (default: --data; those rows are then not scored)
  --limit N               score only the first N examples
  --seed N                seed for choosing demonstrations (default 0)
  --batch N               sequences per forward pass (default 16)
  --text-field NAME       text field (default text)
  --label-field NAME      integer label field (default label)
${JSON_HELP}
${WEIGHTS_HELP}

Examples
  deno run -A cli.ts eval --model assets/gpt2-d128 --data assets/sst2-validation.jsonl
  deno run -A cli.ts eval --model ft-synth --task sst2 --data test.jsonl --shots 4 --shots-data train.jsonl
  deno run -A cli.ts eval --model assets/gpt2-d128 --data assets/sst2-validation.jsonl --limit 200 --json

Old flag names still accepted: --file (now --data), --shots-from (now --shots-data).`;

export const evalCommand: Command = {
  name: "eval",
  summary: "accuracy of a model on a labelled file (label-word likelihood, zero- or K-shot)",
  help: HELP,
  async run(args) {
    const { values: v } = parseFlags("eval", args, {
      model: { type: "string" },
      task: { type: "string" },
      data: { type: "string" },
      shots: { type: "string" },
      "shots-data": { type: "string" },
      limit: { type: "string" },
      seed: { type: "string" },
      batch: { type: "string" },
      "text-field": { type: "string" },
      "label-field": { type: "string" },
      json: { type: "boolean" },
      weights: { type: "string" },
    }, { aliases: { file: "data", "shots-from": "shots-data" } });
    if (v.help) {
      console.log(HELP);
      return 0;
    }
    if (!v.model) throw new UsageError("eval: --model is required");
    if (!v.data) throw new UsageError("eval: --data is required");
    const dataPath = v.data;
    const demoPath = v["shots-data"];
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
    const all = parseJsonl(await readText(dataPath, "eval file"), { ...fields, source: dataPath })
      .flatMap((e) => {
        const c = classOf(task, e.label);
        return c === null ? [] : [{ text: e.text, label: c }];
      });
    let demos: Demonstration[] = [];
    let scored = all;
    if (shots > 0) {
      const source = demoPath
        ? parseJsonl(await readText(demoPath, "demonstration file"), {
          ...fields,
          source: demoPath,
        })
          .flatMap((e) => {
            const c = classOf(task, e.label);
            return c === null ? [] : [{ text: e.text, label: c }];
          })
        : all;
      demos = stratifiedSample(source, shots, seed);
      if (!demoPath) scored = all.filter((e) => !demos.includes(e));
    }
    scored = scored.slice(0, Math.min(scored.length, limit));
    if (scored.length === 0) {
      throw new UsageError(`eval: no examples of task ${task.name}'s labels in ${dataPath}`);
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
    const printer = resultPrinter(v.json);
    printer.text(`task ${task.name}, ${scored.length} examples, ${shots}-shot, ${seconds.toFixed(1)} s`);
    for (const p of perClass) {
      printer.text(`  ${p.label}: ${(p.accuracy * 100).toFixed(1)}% of ${p.examples}`);
    }
    printer.text(
      `accuracy ${(accuracy * 100).toFixed(2)}% (95% CI ${(low * 100).toFixed(1)}–${
        (high * 100).toFixed(1)
      }%)`,
    );
    printer.text(`accuracy: ${accuracy.toFixed(4)}`);
    printer.json({
      task: task.name,
      model: v.model,
      shots,
      examples: scored.length,
      correct,
      accuracy,
      ci95: [low, high],
      perClass,
      seconds,
    });
    return 0;
  },
};
