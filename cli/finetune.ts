/**
 * `finetune`: full fine-tuning of a causal LM on labelled texts (real or synthetic) with the
 * official harness's classification loss, keeping the checkpoint with the best validation
 * accuracy, saved as a Hugging Face model folder (F32 safetensors + config + tokenizer files).
 */
import { readdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { type Example, parseJsonl } from "../data/examples.ts";
import { classOf, getTask, type TaskSpec } from "../data/tasks.ts";
import { defaultContext } from "../kernels/device.ts";
import {
  evaluateAccuracy,
  finetune,
  FINETUNE_DEFAULTS,
  type FinetuneEvent,
  type FinetuneOptions,
  tokenizeExamples,
} from "../train/finetune.ts";
import { type Command, JSON_HELP, numberFlag, parseFlags, resultPrinter, UsageError } from "./args.ts";
import { checkOutput, CliFileError, exists, formatDuration, readText, writeFileAtomic } from "./io.ts";
import { Progress } from "./progress.ts";
import { openModel } from "./model.ts";
import { saveModel } from "../host/files.ts";

const HELP = `Usage: cli.ts finetune --model M --data F.jsonl --task T --out-dir DIR [flags]

Fine-tunes every parameter of the model as a classifier, as the official harness does: for each
example every option "<text><template><option>" (sst2/rotten_tomatoes/imdb: "<text> It was" +
" bad"/" great") is scored by the mean log-probability of its tokens, and the loss is the
cross-entropy of those scores against the gold option. AdamW (weight decay 0, betas 0.9/0.999,
eps 1e-8), learning rate decayed linearly to 0 without warmup. With --valid, the model is
evaluated every --eval-every steps and at the end, and the checkpoint with the best validation
accuracy is saved (use a validation file that is not the one you report on). Progress (loss, ETA)
goes to stderr; the last line on stdout names the saved folder.

  --model DIR|ORG/NAME[@REV]  model to fine-tune (directory or Hugging Face id)
  --data F.jsonl          training texts ({text, label}; synth output works as is)
  --task NAME             sst2 | rotten_tomatoes | imdb | emotion (default sst2)
  --out-dir DIR           output folder: model.safetensors, config.json, tokenizer files, finetune.json
  --steps N               optimiser steps (default ${FINETUNE_DEFAULTS.steps})
  --batch N               examples per step (default ${FINETUNE_DEFAULTS.batchSize})
  --lr X                  peak learning rate (default ${FINETUNE_DEFAULTS.lr}, the paper's; small models need ~3e-4)
  --seed N                seed of the batch order (default ${FINETUNE_DEFAULTS.seed})
  --valid-data F.jsonl    validation texts for checkpoint selection
  --valid-limit N         use only the first N validation examples
  --eval-every N          evaluate every N steps (default ${FINETUNE_DEFAULTS.evalEvery}; 0 = only at the end)
  --eval-batch N          examples per forward when evaluating (default ${FINETUNE_DEFAULTS.evalBatch})
  --max-grad-norm X       clip the global gradient norm (default 1.0 as transformers' Trainer; 0 = off)
  --weight-decay X        AdamW weight decay (default 0)
  --log-every N           also print a permanent loss line every N steps (default 0: the progress
                          line shows the latest loss; finetune.json keeps every step's)
  --text-field NAME       text field of the data files (default text)
  --label-field NAME      integer label field (default label)
  --overwrite             replace a previous run in --out-dir
${JSON_HELP}

Examples
  deno run -A cli.ts finetune --model assets/gpt2-d128 --data synthetic.jsonl --out-dir ft-synth
  deno run -A cli.ts finetune --model assets/gpt2-d128 --data synthetic.jsonl --valid-data valid.jsonl \\
      --steps 200 --lr 3e-4 --out-dir ft-synth --overwrite
  deno run -A cli.ts finetune --model assets/gpt2-d128 --data train.jsonl --steps 50 --out-dir ft --json

Old flag names still accepted: --train (now --data), --valid (now --valid-data), --out (now --out-dir).`;

/** Files of a model folder that belong to its tokenizer (copied next to a fine-tuned checkpoint). */
const TOKENIZER_FILE =
  /^(tokenizer(_config)?\.json|special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|merges\.txt|.*\.model)$/;

/**
 * Reads a labelled JSONL file and keeps the examples whose label is one of the task's classes
 * (mapped to class indices). `dropped` counts the others (e.g. emotion's four other emotions).
 */
export async function readLabelled(
  path: string,
  task: TaskSpec,
  what: string,
  fields: { textField?: string; labelField?: string } = {},
): Promise<{ examples: Example[]; dropped: number }> {
  const all = parseJsonl(await readText(path, what), {
    textField: fields.textField ?? "text",
    labelField: fields.labelField ?? "label",
    source: path,
  });
  if (all.length === 0) throw new CliFileError(`${what} '${path}' has no examples (it is empty)`);
  const examples = all.flatMap((e) => {
    const c = classOf(task, e.label);
    return c === null ? [] : [{ text: e.text, label: c }];
  });
  return { examples, dropped: all.length - examples.length };
}

/** Copies the tokenizer files of `fromDir` into `toDir` (atomically, one by one). */
export async function copyTokenizerFiles(fromDir: string, toDir: string): Promise<string[]> {
  const copied: string[] = [];
  for (const name of await readdir(fromDir)) {
    if (!TOKENIZER_FILE.test(name)) continue;
    await writeFileAtomic(join(toDir, name), await readFile(join(fromDir, name)));
    copied.push(name);
  }
  return copied;
}

export const finetuneCommand: Command = {
  name: "finetune",
  summary: "fine-tune a model on labelled texts (official classification loss, best checkpoint kept)",
  help: HELP,
  async run(args) {
    const { values: v } = parseFlags("finetune", args, {
      model: { type: "string" },
      data: { type: "string" },
      task: { type: "string" },
      "out-dir": { type: "string" },
      steps: { type: "string" },
      batch: { type: "string" },
      lr: { type: "string" },
      seed: { type: "string" },
      "valid-data": { type: "string" },
      "valid-limit": { type: "string" },
      "eval-every": { type: "string" },
      "eval-batch": { type: "string" },
      "max-grad-norm": { type: "string" },
      "weight-decay": { type: "string" },
      "log-every": { type: "string" },
      "text-field": { type: "string" },
      "label-field": { type: "string" },
      overwrite: { type: "boolean" },
      weights: { type: "string" },
      json: { type: "boolean" },
    }, { aliases: { train: "data", valid: "valid-data", out: "out-dir" } });
    if (v.help) {
      console.log(HELP);
      return 0;
    }
    if (v.weights !== undefined && v.weights !== "f32") {
      throw new UsageError(
        `finetune: --weights ${v.weights} is not supported: fine-tuning trains the weights, which stay f32 ` +
          "(f16 weights are frozen; use them with synth, generate, ppl and eval)",
      );
    }
    const num = (name: string, fallback: number, opts?: Parameters<typeof numberFlag>[4]) =>
      numberFlag("finetune", name, (v as Record<string, unknown>)[name], fallback, opts);
    if (!v.model) throw new UsageError("finetune: --model is required");
    if (!v.data) throw new UsageError("finetune: --data is required");
    if (!v["out-dir"]) {
      throw new UsageError("finetune: --out-dir is required (a folder for the fine-tuned model)");
    }
    const task = getTask(v.task ?? "sst2");
    const options: FinetuneOptions = {
      steps: num("steps", FINETUNE_DEFAULTS.steps, { min: 1, integer: true }),
      batchSize: num("batch", FINETUNE_DEFAULTS.batchSize, { min: 1, max: 4096, integer: true }),
      lr: num("lr", FINETUNE_DEFAULTS.lr, { min: 0, max: 1 }),
      seed: num("seed", FINETUNE_DEFAULTS.seed, { min: 0, integer: true }),
      maxGradNorm: num("max-grad-norm", FINETUNE_DEFAULTS.maxGradNorm, { min: 0 }),
      weightDecay: num("weight-decay", FINETUNE_DEFAULTS.weightDecay, { min: 0 }),
      evalEvery: num("eval-every", FINETUNE_DEFAULTS.evalEvery, { min: 0, integer: true }),
      evalBatch: num("eval-batch", FINETUNE_DEFAULTS.evalBatch, { min: 1, max: 4096, integer: true }),
    };
    const logEvery = num("log-every", 0, { min: 0, integer: true });
    const validLimit = num("valid-limit", Infinity, { min: 1, integer: true });
    const fields = { textField: v["text-field"], labelField: v["label-field"] };

    // ---- inputs, checked before touching the GPU
    const trainPath = v.data;
    const validPath = v["valid-data"];
    const train = await readLabelled(trainPath, task, "training file", fields);
    if (train.examples.length === 0) {
      throw new UsageError(`finetune: ${trainPath} has no examples with task ${task.name}'s labels`);
    }
    const valid = validPath ? await readLabelled(validPath, task, "validation file", fields) : null;
    if (valid && valid.examples.length === 0) {
      throw new UsageError(`finetune: ${validPath} has no examples with task ${task.name}'s labels`);
    }
    const validExamples = valid ? valid.examples.slice(0, validLimit) : null;
    const outDir = v["out-dir"];
    // The model folder is an input too: fine-tuning into it would replace its weights.
    await checkOutput(outDir, {
      command: "finetune",
      flag: "--out-dir",
      kind: "dir",
      inputs: [trainPath, validPath, v.model],
      isOurs: () => exists(join(outDir, "finetune.json")),
      overwrite: !!v.overwrite,
    });
    if (
      !v.overwrite &&
      ((await exists(join(outDir, "finetune.json"))) || (await exists(join(outDir, "model.safetensors"))))
    ) {
      throw new UsageError(
        `finetune: ${outDir} already holds a model; pass --overwrite or choose another --out-dir`,
      );
    }

    const ctx = await defaultContext();
    const { model, tokenizer, dir: modelDir } = await openModel(ctx, v.model);
    if (resolve(modelDir) === resolve(outDir)) {
      throw new UsageError("finetune: --out-dir must not be the model's own folder");
    }
    const trainSet = tokenizeExamples(tokenizer, task, train.examples);
    const validSet = validExamples ? tokenizeExamples(tokenizer, task, validExamples) : null;
    const counts = task.labelWords.map((w, c) =>
      `${w} ${train.examples.filter((e) => e.label === c).length}`
    );
    console.error(
      `finetune: ${train.examples.length} training examples (${counts.join(", ")})` +
        (train.dropped ? `, ${train.dropped} with other labels skipped` : "") +
        (validSet
          ? `; ${validSet.length} validation examples`
          : "; no validation set: the last step is saved") +
        `; ${options.steps} steps × batch ${options.batchSize}, lr ${options.lr}, adapter ${ctx.adapterName}`,
    );

    const progress = new Progress({ label: "finetune", total: options.steps, unit: "steps" });
    const onEvent = (e: FinetuneEvent) => {
      if (e.kind === "step") {
        const figures = `loss ${e.loss.toFixed(4)} lr ${e.lr.toExponential(2)}`;
        progress.update(e.step, figures);
        if (logEvery > 0 && e.step % logEvery === 0) progress.log(`step ${e.step}/${e.steps} ${figures}`);
      } else {
        progress.log(
          `eval at step ${e.step}: validation accuracy ${(e.accuracy * 100).toFixed(2)}%${
            e.best ? " (best so far)" : ""
          }`,
        );
      }
    };
    const result = await finetune(model, trainSet, validSet, tokenizer.padId, options, onEvent);
    progress.clear();

    // ---- save: weights + config, tokenizer files, then the run record (written last)
    await Deno.mkdir(outDir, { recursive: true });
    await saveModel(model, outDir);
    const tokenizerFiles = await copyTokenizerFiles(modelDir, outDir);
    const finalValid = validSet
      ? (await evaluateAccuracy(model, validSet, tokenizer.padId, { batchSize: options.evalBatch })).accuracy
      : null;
    const record = {
      tool: "gradmm-ts finetune",
      model: { spec: v.model, dir: modelDir },
      task: task.name,
      train: { path: trainPath, examples: train.examples.length, skipped: train.dropped },
      valid: validPath ? { path: validPath, examples: validSet!.length } : null,
      settings: options,
      adapter: ctx.adapterName,
      bestStep: result.bestStep,
      bestValidAccuracy: result.bestAccuracy,
      savedValidAccuracy: finalValid,
      evals: result.evals,
      history: result.history,
      tokenizerFiles,
      seconds: result.seconds,
    };
    await writeFileAtomic(join(outDir, "finetune.json"), JSON.stringify(record, null, 2) + "\n");
    model.dispose();
    console.error(
      `saved the step-${result.bestStep} weights to ${outDir} (${formatDuration(result.seconds)})`,
    );
    const finalLoss = result.history.at(-1)!.loss;
    const printer = resultPrinter(v.json);
    printer.text(
      finalValid === null
        ? `saved: ${outDir} (step ${result.bestStep}, final training loss ${finalLoss.toFixed(4)})`
        : `saved: ${outDir} (step ${result.bestStep}, validation accuracy ${finalValid.toFixed(4)})`,
    );
    printer.json({
      outDir,
      task: task.name,
      trainExamples: train.examples.length,
      validExamples: validSet?.length ?? null,
      steps: options.steps,
      bestStep: result.bestStep,
      validAccuracy: finalValid,
      finalLoss,
      seconds: result.seconds,
    });
    return 0;
  },
};
