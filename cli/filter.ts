/**
 * `filter`: the official post-filtering of synthetic texts (docs/algorithm.md#filtering): label
 * consistency under a few-shot classifier, per-text gradient-alignment scores against the real
 * class targets, per-label dedupe + top-n by score + α·nll, and optional class balancing.
 */
import { classOf, getTask } from "../data/tasks.ts";
import { defaultContext } from "../kernels/device.ts";
import {
  FILTER_DEFAULTS,
  FILTER_PRIVACY,
  type FilterInput,
  type FilterOptions,
  filterSynthetic,
  type StageCounts,
} from "../train/filter.ts";
import { type Command, JSON_HELP, numberFlag, parseFlags, resultPrinter, UsageError } from "./args.ts";
import { checkOutput, exists, readText, writeFileAtomic } from "./io.ts";
import { readLabelled } from "./finetune.ts";
import { openModel } from "./model.ts";

const HELP =
  `Usage: cli.ts filter --model M --task T --data synthetic.jsonl --real-data F.jsonl --out filtered.jsonl [flags]

Filters synthetic texts as the official GRADMM notebook does:
  (a) clean each text and drop it when the model, classifying it few-shot (--shots demonstrations
      from --real-data, the task's evaluation template), predicts another label;
  (b) score each survivor by 1 − cos between its own output-layer gradient ("text + suffix" → label
      word) and its class's target built from the first --real-n examples of the stratified real pool;
  (c) per label: drop duplicates, rank by score + α·nll, keep the best --per-class;
  (d) with --balance: the class with the worse mean metric drops its worst texts until its mean is
      no worse than the other class's.
Writes the kept records (best first per label, with align_loss and filter_metric added) and a
summary <out>.filter.json; prints what each stage removed.

  --model DIR|ORG/NAME[@REV]  model (the one that generated the texts)
  --task NAME             sst2 | rotten_tomatoes | imdb | emotion (default sst2)
  --data F.jsonl          synthetic texts ({text, label, nll?}; synth output)
  --real-data F.jsonl     real labelled examples (targets and demonstrations)
  --out F.jsonl           filtered output
  --per-class N           texts kept per label (default 50; the notebook's top-n)
  --alpha X               weight of the text's mean NLL in the ranking metric (default 0)
  --real-n N              real examples building the targets (default 20, the notebook's)
  --real-pool N           stratified pool they are the first of (default 100)
  --seed N                seed of the pool and the demonstrations (default 42, as synth)
  --shots K               demonstrations for the consistency check (default 4)
  --no-consistency        skip stage (a)
  --calibrate             stage (a) with the classifier's prior removed (each option's mean score over
                          all texts subtracted; not in the official code: small models otherwise
                          call every text one label and stage (a) deletes the other class)
  --balance               stage (d)
  --batch N               texts per forward (default 16)
  --overwrite             replace an existing --out that filter did not write (no <out>.filter.json)
  --text-field NAME       text field of --real-data (default text; --data is synth output: text)
  --label-field NAME      integer label field of --real-data (default label)
${JSON_HELP}

Examples
  deno run -A cli.ts filter --model assets/gpt2-d128 --data synthetic.jsonl \\
      --real-data assets/sst2-validation.jsonl --out filtered.jsonl
  deno run -A cli.ts filter --model assets/gpt2-d128 --data synthetic.jsonl \\
      --real-data assets/sst2-validation.jsonl --out filtered.jsonl --per-class 20 --calibrate --balance --json

Old flag names still accepted: --in (now --data), --real (now --real-data), --top-n (now --per-class).`;

/** What each stage did, per label (written to <out>.filter.json). */
export interface FilterSummary {
  input: number;
  skipped: number;
  perLabel: Record<string, StageCounts>;
  kept: number;
  settings: Record<string, unknown>;
  /** Never private (train/filter.ts FILTER_PRIVACY says why). */
  privacy: typeof FILTER_PRIVACY;
}

/** The stage table printed on stderr. */
export function stageTable(
  labelWords: string[],
  stats: StageCounts[],
  o: Pick<FilterOptions, "consistency" | "balance">,
): string {
  const lines = [
    "  label      input  empty  inconsistent  duplicates  beyond-top-n  balance  kept  mean 1-cos",
  ];
  stats.forEach((s, c) => {
    lines.push(
      `  ${labelWords[c].padEnd(9)} ${String(s.input).padStart(6)} ${String(s.empty).padStart(6)} ` +
        `${String(o.consistency ? s.inconsistent : "-").padStart(13)} ${String(s.duplicates).padStart(11)} ` +
        `${String(s.beyondTopN).padStart(13)} ${String(o.balance ? s.balanced : "-").padStart(8)} ${
          String(s.kept).padStart(5)
        }  ` +
        `${Number.isNaN(s.meanAlignLoss) ? "-" : s.meanAlignLoss.toFixed(4)}`,
    );
  });
  return lines.join("\n");
}

export const filterCommand: Command = {
  name: "filter",
  summary: "filter synthetic texts (label consistency, gradient alignment, top-n, balancing)",
  help: HELP,
  async run(args) {
    const { values: v } = parseFlags("filter", args, {
      model: { type: "string" },
      task: { type: "string" },
      data: { type: "string" },
      "real-data": { type: "string" },
      out: { type: "string" },
      "per-class": { type: "string" },
      alpha: { type: "string" },
      "real-n": { type: "string" },
      "real-pool": { type: "string" },
      seed: { type: "string" },
      shots: { type: "string" },
      "no-consistency": { type: "boolean" },
      calibrate: { type: "boolean" },
      balance: { type: "boolean" },
      batch: { type: "string" },
      "text-field": { type: "string" },
      "label-field": { type: "string" },
      overwrite: { type: "boolean" },
      json: { type: "boolean" },
    }, { aliases: { in: "data", real: "real-data", "top-n": "per-class" } });
    if (v.help) {
      console.log(HELP);
      return 0;
    }
    const num = (name: string, fallback: number, opts?: Parameters<typeof numberFlag>[4]) =>
      numberFlag("filter", name, (v as Record<string, unknown>)[name], fallback, opts);
    for (const f of ["model", "data", "real-data", "out"] as const) {
      if (!v[f]) throw new UsageError(`filter: --${f} is required`);
    }
    const task = getTask(v.task ?? "sst2");
    const o: FilterOptions = {
      topN: num("per-class", FILTER_DEFAULTS.topN, { min: 1, integer: true }),
      alpha: num("alpha", FILTER_DEFAULTS.alpha, { min: 0 }),
      realN: num("real-n", FILTER_DEFAULTS.realN, { min: 1, integer: true }),
      realPool: num("real-pool", FILTER_DEFAULTS.realPool, { min: 1, integer: true }),
      seed: num("seed", FILTER_DEFAULTS.seed, { min: 0, integer: true }),
      shots: num("shots", FILTER_DEFAULTS.shots, { min: 0, max: 64, integer: true }),
      consistency: !v["no-consistency"],
      calibrate: !!v.calibrate,
      balance: !!v.balance,
      batch: num("batch", FILTER_DEFAULTS.batch, { min: 1, max: 1024, integer: true }),
    };

    // ---- the output, checked before any compute
    const summaryPath = v.out!.replace(/\.jsonl$/, "") + ".filter.json";
    await checkOutput(v.out!, {
      command: "filter",
      kind: "file",
      inputs: [v.data, v["real-data"], v.model],
      companions: [summaryPath],
      isOurs: () => exists(summaryPath),
      overwrite: !!v.overwrite,
    });

    // ---- inputs (raw records are kept so every field of the input survives)
    const inPath = v.data!;
    const realPath = v["real-data"]!;
    const raw: Record<string, unknown>[] = [];
    const lines = (await readText(inPath, "synthetic file")).split("\n");
    lines.forEach((line, i) => {
      if (!line.trim()) return;
      let obj: unknown;
      try {
        obj = JSON.parse(line);
      } catch (e) {
        throw new UsageError(`filter: ${inPath}:${i + 1}: not valid JSON (${(e as Error).message})`);
      }
      const rec = obj as Record<string, unknown>;
      if (typeof rec?.text !== "string" || !Number.isInteger(rec?.label)) {
        throw new UsageError(`filter: ${inPath}:${i + 1}: expected {"text": string, "label": integer, ...}`);
      }
      raw.push(rec);
    });
    const real = await readLabelled(realPath, task, "real data file", {
      textField: v["text-field"],
      labelField: v["label-field"],
    });
    if (real.examples.length === 0) {
      throw new UsageError(`filter: ${realPath} has no examples with task ${task.name}'s labels`);
    }
    const inputs: FilterInput[] = [];
    const origin: Record<string, unknown>[] = [];
    for (const rec of raw) {
      const c = classOf(task, rec.label as number);
      if (c === null) continue;
      inputs.push({
        text: rec.text as string,
        label: c,
        nll: typeof rec.nll === "number" ? rec.nll : undefined,
      });
      origin.push(rec);
    }
    const skipped = raw.length - inputs.length;
    if (skipped) console.error(`filter: ${skipped} record(s) with labels outside task ${task.name} skipped`);

    const ctx = await defaultContext();
    const { model, tokenizer } = await openModel(ctx, v.model!);
    let result;
    try {
      result = await filterSynthetic(model, tokenizer, task, inputs, real.examples, o);
    } finally {
      model.dispose();
    }
    const out = result.kept.map((k) => ({
      ...origin[k.index],
      text: k.text,
      align_loss: k.alignLoss,
      filter_metric: k.metric,
    }));
    const outPath = v.out!;
    await writeFileAtomic(outPath, out.map((r) => JSON.stringify(r)).join("\n") + (out.length ? "\n" : ""));
    const summary: FilterSummary = {
      input: raw.length,
      skipped,
      perLabel: Object.fromEntries(result.stats.map((s, c) => [task.labelWords[c], s])),
      kept: out.length,
      settings: { model: v.model, task: task.name, in: inPath, real: realPath, ...o },
      privacy: FILTER_PRIVACY,
    };
    await writeFileAtomic(
      summaryPath,
      JSON.stringify(summary, null, 2) + "\n",
    );
    console.error("filter stages (texts removed per label):");
    console.error(stageTable(task.labelWords, result.stats, o));
    const printer = resultPrinter(v.json);
    printer.text(`kept: ${out.length} of ${raw.length} texts -> ${outPath}`);
    printer.json({ out: outPath, summary: summaryPath, ...summary });
    if (await inputWasPrivate(inPath)) {
      console.error(`filter: warning: ${inPath} came from a DP run, but ${FILTER_PRIVACY.reason}`);
    }
    return 0;
  },
};

/** Whether the synth manifest beside `inPath` records a differential-privacy account. */
async function inputWasPrivate(inPath: string): Promise<boolean> {
  try {
    const m = JSON.parse(await Deno.readTextFile(inPath.replace(/\.jsonl$/, "") + ".manifest.json"));
    return m?.privacy !== undefined;
  } catch {
    return false; // no (readable) manifest: nothing to warn about
  }
}
