/**
 * `experiment`: the comparison the project exists for, in one command. Zero-shot accuracy;
 * fine-tuning on N random real texts; fine-tuning on N GRADMM texts made from a few dozen real
 * examples (running synth itself, with and without filtering, optionally with DP); several seeds
 * per point; readability of the texts; a learning curve over sizes. Writes report.md, report.svg
 * and report.json into --out, and caches every finished piece there (synth resumes by round,
 * filtered sets, fine-tuning runs, readability), so an interrupted experiment continues where it
 * stopped when rerun with the same flags.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import type { Example } from "../data/examples.ts";
import { stratifiedSample } from "../data/examples.ts";
import { deriveSeed } from "../data/seed.ts";
import { getTask, type TaskSpec } from "../data/tasks.ts";
import type { Tensor } from "../autograd/tensor.ts";
import { defaultContext } from "../kernels/device.ts";
import {
  type Condition,
  conditionName,
  CONDITIONS,
  firstPerClass,
  isFiltered,
  makeSplits,
  perClassFor,
  type Readability,
  readability,
  type RunResult,
  sizesOf,
  type SplitOptions,
  summariseRuns,
  type SynthVariant,
  synthVariant,
} from "../train/experiment.ts";
import {
  evaluateAccuracy,
  finetune,
  FINETUNE_DEFAULTS,
  type FinetuneOptions,
  tokenizeExamples,
} from "../train/finetune.ts";
import { FILTER_DEFAULTS, type FilterOptions, filterSynthetic, type StageCounts } from "../train/filter.ts";
import { formatPercent, markdownTable, meanStd, renderChart } from "../train/report.ts";
import { type Command, JSON_HELP, numberFlag, parseFlags, resultPrinter, UsageError } from "./args.ts";
import {
  announceFetch,
  checkOutput,
  exists,
  formatDuration,
  readText,
  sha256File,
  writeFileAtomic,
} from "./io.ts";
import { bundledModel } from "../host/assets.ts";
import { parseNllTarget } from "../admm/refine_lm.ts";
import { readLabelled } from "./finetune.ts";
import { openModel } from "./model.ts";
import { openSynthModel, parseRecords, synthProgressPrinter, tuneForSynth } from "./synth.ts";
import { MeasuredPhase, phasedEta, Progress, withParent } from "./progress.ts";
import { runSynthJob } from "../host/synth_job.ts";
import { resolveSynthSettings, type SynthSettings } from "../api/synth_settings.ts";
import { synthSettingsRecord } from "../api/synth_manifest.ts";
import { SynthError } from "../admm/synth.ts";
import { SYNTH_DEFAULTS } from "../api/defaults.ts";

const HELP =
  `Usage: cli.ts experiment --task T --train-data TRAIN.jsonl --test-data TEST.jsonl --out-dir DIR [flags]

Runs the comparison and writes DIR/report.md, DIR/report.svg and DIR/report.json (progress with
an overall ETA on stderr):
  zero-shot accuracy of the model;
  fine-tuning on N random real texts from the train split;
  fine-tuning on the --real-n real examples GRADMM itself sees, alone (a set of --real-n texts
  whatever N: one run per seed, a single point of the curve);
  fine-tuning on N GRADMM texts made from those --real-n examples (synth runs inside), with
  --synth-method, unfiltered and filtered (official filter), with the official method for
  comparison, and with DP when --dp-epsilon is given;
each for every size in --sizes and every seed, reported as mean ± std over seeds, plus
readability (mean NLL under the model, distinct-1/2) of every kind of text.

Splits: the test split loses a stratified pool of --real-pool examples (the first --real-n are the
only real data GRADMM sees) and the rest (at most --test-limit) is the reported test set. The
checkpoint (every --eval-every steps) and the learning rate (--lr list) are chosen on a
validation holdout of --valid-size examples from the train split, never on the test set.
Everything finished is cached in DIR: rerun the same command to continue an interrupted run.

Data and model
  --task NAME             sst2 | rotten_tomatoes | imdb | emotion (default sst2)
  --model DIR|ORG/NAME    model (default: the bundled gpt2-d128)
  --train-data F.jsonl    train split (real texts, validation holdout)
  --test-data F.jsonl     test split (GRADMM's real pool, reported accuracy), e.g. SST-2 validation
  --out-dir DIR           output folder (created)
  --text-field NAME       text field of both splits (default text)
  --label-field NAME      integer label field (default label)
${JSON_HELP}

Design
  --sizes N,N,...         training-set sizes (default 60,200,1000)
  --seeds K               seeds 0..K-1 per point (default 3)
  --conditions LIST       among ${CONDITIONS.join(", ")}
                          (default: all but gradmm-official; the -dp ones need --dp-epsilon)
                          real: N random real texts; real-used: the --real-n examples GRADMM
                          used (N = --real-n always); gradmm: texts of --synth-method;
                          gradmm-official: texts of the official method (the paper's code path,
                          no --synth-select/refine/decode flags), to compare with a non-official
                          --synth-method in one report
  --real-n N              real examples GRADMM uses (default 50)
  --real-pool N           stratified pool removed from the test split (default 100)
  --pool-seed N           seed of the pool and of the validation holdout (default 42)
  --valid-size N          validation holdout from the train split (default 200)
  --test-limit N          at most N test examples (default 1000, the harness's num_eval)

Fine-tuning (the official harness's loss; see 'finetune --help')
  --steps N               steps per run (default 200)
  --batch N               batch size (default 16)
  --lr X[,X...]           learning rates; the best on validation is reported (default 3e-4,
                          suited to small models; the paper swept 7e-6,1e-5,1.5e-5 for phi-1.5)
  --eval-every N          validation every N steps (default 50)
  --eval-batch N          examples per forward in evaluation (default 32)
  --max-grad-norm X       gradient clipping (default 1.0; 0 = off)

Synthesis (passed to synth; unset flags take synth's defaults, CPU-sized on a CPU adapter)
  --synth-batch N  --synth-outer-steps N  --synth-inner-steps N  --synth-init-candidates N
  --synth-rho R  --synth-top-k K  --synth-select total|discrete  --synth-lr X  --synth-length N
  --synth-method lm-guided|official|discrete|refine|refine-lm  --synth-refine-iterations N
  --synth-refine-nll-slack X  --synth-refine-lambda X  --synth-refine-nll-target T (refine-lm)
  --synth-decode-beta B
  --synth-paper           the paper's generation settings even on a CPU adapter
  --dp-epsilon E  [--dp-delta D] [--dp-clip C]   adds the DP conditions

Filtering (train/filter.ts; official defaults)
  --filter-oversample K   generate K× the texts a size needs, keep the best (default 2: 100 → 50 per class)
  --filter-alpha X        weight of NLL in the ranking (default 0)
  --filter-balance        balance the classes by average score
  --filter-real-n N       real examples of the filter's targets (default 20, from the --real-n ones)
  --filter-shots K        demonstrations of the consistency check (default 4)
  --filter-no-consistency skip the label-consistency stage
  --filter-calibrate      remove the classifier's prior in that stage (see 'filter --help')

Examples
  deno run -A cli.ts experiment --train-data train.jsonl --test-data assets/sst2-validation.jsonl \\
      --out-dir out/exp --sizes 60 --seeds 2 --conditions real,gradmm --steps 100
  deno run -A cli.ts experiment --task sst2 --train-data train.jsonl --test-data test.jsonl \\
      --out-dir out/exp-dp --dp-epsilon 4 --synth-outer-steps 4 --filter-calibrate --json
  deno run -A cli.ts experiment --train-data train.jsonl --test-data test.jsonl --out-dir out/curves \\
      --sizes 200,1000 --conditions real,real-used,gradmm,gradmm-official --synth-method refine-lm

Old flag names still accepted: --train (now --train-data), --test (now --test-data), --out (now
--out-dir), --real (now --real-n), --synth-topk (now --synth-top-k).`;

/** What to do about a damaged synth output inside the experiment folder (it has no --overwrite). */
function restartHintOf(path: string): string {
  return `delete ${path} and its .manifest.json to recompute it, or choose another --out-dir`;
}

/** Synth flags the experiment passes through (experiment flag → synth flag). */
const SYNTH_PASSTHROUGH: Record<string, string> = {
  "synth-outer-steps": "outer-steps",
  "synth-inner-steps": "inner-steps",
  "synth-init-candidates": "init-candidates",
  "synth-rho": "rho",
  "synth-top-k": "top-k",
  "synth-select": "select",
  "synth-method": "method",
  "synth-refine-iterations": "refine-iterations",
  "synth-refine-nll-slack": "refine-nll-slack",
  "synth-refine-lambda": "refine-lambda",
  "synth-refine-nll-target": "refine-nll-target",
  "synth-decode-beta": "decode-beta",
  "synth-lr": "lr",
  "synth-length": "length",
  "dp-delta": "dp-delta",
  "dp-clip": "dp-clip",
};

/** The numeric synth flags the experiment passes through: synth flag → setting and its range. */
const SYNTH_NUMBERS: Record<string, [keyof SynthSettings, Parameters<typeof numberFlag>[4]]> = {
  batch: ["batch", { min: 1, max: 256, integer: true }],
  "outer-steps": ["outerSteps", { min: 1, integer: true }],
  "inner-steps": ["innerSteps", { min: 0, integer: true }],
  "init-candidates": ["initCandidates", { min: 1, integer: true }],
  rho: ["rho", { min: 1e-300 }],
  "top-k": ["topk", { min: 1, integer: true }],
  "refine-iterations": ["refineIterations", { min: 0, integer: true }],
  "refine-nll-slack": ["refineNllSlack", { min: 0 }],
  "refine-lambda": ["refineLambda", { min: 0 }],
  "decode-beta": ["decodeBeta", { min: 0 }],
  lr: ["lr", { min: 0 }],
  length: ["length", { min: 0, max: 1024, integer: true }],
};

/**
 * The typed synth settings of the passed-through synth flags (`synthArgs`: synth flag → value),
 * DP ones included when given; errors name the experiment's flags.
 */
function synthSettingsOf(synthArgs: Record<string, string>): SynthSettings {
  const flagOf = (k: string) => (k.startsWith("dp-") ? k : `synth-${k}`);
  const settings: Record<string, unknown> = {};
  for (const [k, value] of Object.entries(synthArgs)) {
    const numeric = SYNTH_NUMBERS[k];
    if (numeric) settings[numeric[0]] = numberFlag("experiment", flagOf(k), value, 0, numeric[1]);
  }
  const s = settings as SynthSettings;
  if (synthArgs.select !== undefined) s.select = synthArgs.select as SynthSettings["select"];
  if (synthArgs.method !== undefined) s.method = synthArgs.method as SynthSettings["method"];
  const target = synthArgs["refine-nll-target"];
  if (target !== undefined) {
    try {
      s.refineNllTarget = parseNllTarget(target);
    } catch {
      throw new UsageError(
        `experiment: --synth-refine-nll-target must be nats/token, 'real' or 'real+X', got '${target}'`,
      );
    }
  }
  if (synthArgs["dp-epsilon"] !== undefined) {
    const dpNumber = (k: string, opts: Parameters<typeof numberFlag>[4]) =>
      synthArgs[k] === undefined ? undefined : numberFlag("experiment", k, synthArgs[k], 0, opts);
    s.dp = {
      epsilon: dpNumber("dp-epsilon", { min: 1e-9 })!,
      delta: dpNumber("dp-delta", { min: 1e-300, max: 0.999999 }),
      clip: dpNumber("dp-clip", { min: 1e-12 }),
    };
  }
  return s;
}

/** Synth flags that choose the method: the gradmm-official runs leave them out. */
const METHOD_ARGS = [
  "method",
  "select",
  "refine-iterations",
  "refine-nll-slack",
  "refine-lambda",
  "refine-nll-target",
  "decode-beta",
];

/**
 * The synth flags (synth flag → value) of one variant's runs: the DP ones only in gradmm-dp's,
 * the method's only in those that follow --synth-method (gradmm-official runs the official one).
 */
export function variantArgs(
  variant: SynthVariant,
  synthArgs: Record<string, string>,
): Record<string, string> {
  const official = variant === "gradmm-official";
  const kept = Object.entries(synthArgs).filter(([k]) =>
    (variant === "gradmm-dp" || !k.startsWith("dp-")) && !(official && METHOD_ARGS.includes(k))
  );
  return { ...Object.fromEntries(kept), ...(official ? { method: "official" } : {}) };
}

/** Setting names that resolveSynthSettings's messages use → the experiment's flags. */
const SETTING_FLAGS: Record<string, string> = {
  method: "--synth-method",
  select: "--synth-select",
  refineIterations: "--synth-refine-iterations",
  refineNllSlack: "--synth-refine-nll-slack",
  refineLambda: "--synth-refine-lambda",
  refineNllTarget: "--synth-refine-nll-target",
  decodeBeta: "--synth-decode-beta",
};

/**
 * Checks the synth settings as synth itself does (api/synth_settings.ts), before any work; its
 * message is reworded with the experiment's flag names ("refineLambda needs method 'refine-lm'"
 * → "--synth-refine-lambda needs --synth-method 'refine-lm'").
 */
export function checkSynthSettings(settings: SynthSettings): void {
  try {
    resolveSynthSettings(settings, false);
  } catch (e) {
    if (!(e instanceof SynthError)) throw e;
    const names = new RegExp(`\\b(${Object.keys(SETTING_FLAGS).join("|")})\\b`, "g");
    throw new UsageError(`experiment: ${e.message.replace(names, (name) => SETTING_FLAGS[name])}`);
  }
}

function sha(value: unknown): string {
  return createHash("sha256").update(JSON.stringify(value)).digest("hex");
}

function parseNumberList(s: string, what: string, integer: boolean): number[] {
  const out = s.split(",").map((x) => Number(x.trim()));
  if (
    out.length === 0 || out.some((x) => !Number.isFinite(x) || x <= 0 || (integer && !Number.isInteger(x)))
  ) {
    throw new UsageError(
      `experiment: --${what} must be a comma-separated list of positive ${
        integer ? "integers" : "numbers"
      }, got '${s}'`,
    );
  }
  return out;
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function jsonl(items: readonly object[]): string {
  return items.map((x) => JSON.stringify(x)).join("\n") + (items.length ? "\n" : "");
}

async function readJsonIf<T>(path: string): Promise<T | null> {
  if (!(await exists(path))) return null;
  try {
    return JSON.parse(await readText(path)) as T;
  } catch {
    return null; // a damaged cache entry is recomputed
  }
}

/** A cached piece of work: recomputed unless `path` holds a result with the same key. */
async function cached<T>(
  path: string,
  key: string,
  compute: () => Promise<T>,
): Promise<{ value: T; fresh: boolean }> {
  const old = await readJsonIf<{ key: string; value: T }>(path);
  if (old && old.key === key) return { value: old.value, fresh: false };
  const value = await compute();
  await writeFileAtomic(path, JSON.stringify({ key, value }, null, 2) + "\n");
  return { value, fresh: true };
}

interface Report {
  tool: string;
  command: string;
  adapter: string;
  task: string;
  model: string;
  data: { train: string; test: string; trainSha256: string; testSha256: string };
  splits: { used: number; test: number; valid: number; trainRest: number } & SplitOptions;
  sizes: number[];
  seeds: number[];
  conditions: Condition[];
  finetune: Omit<FinetuneOptions, "lr" | "seed"> & { lrs: number[] };
  synth: { args: Record<string, string>; commands: string[] };
  filter: (Omit<FilterOptions, "topN" | "realPool"> & { oversample: number }) | null;
  zeroShot: { accuracy: number; ci95: [number, number]; examples: number } | null;
  runs: RunResult[];
  selected: RunResult[];
  summary: { condition: Condition; size: number; mean: number; std: number; n: number }[];
  readability: { condition: Condition | "real pool"; seed: number; size: number; value: Readability }[];
  filterStats: { condition: Condition; size: number; seed: number; kept: number; stats: StageCounts[] }[];
  seconds: number;
  complete: boolean;
}

/** The markdown report. */
function renderMarkdown(r: Report, task: TaskSpec): string {
  const realN = r.splits.used;
  const nameOf = (c: Condition) => conditionName(c, { method: r.synth.args.method, realN });
  // The curve's sizes, and real-used's own one: its cell stands in that column alone.
  const sizes = [...new Set([...r.sizes, ...r.summary.map((s) => s.size)])].sort((a, b) => a - b);
  const summaryOf = (c: Condition, n: number) => r.summary.find((s) => s.condition === c && s.size === n);
  const acc = markdownTable(
    ["training data", ...sizes.map((n) => `N = ${n}`)],
    [
      [
        "none (zero-shot)",
        ...sizes.map(() => r.zeroShot ? formatPercent({ mean: r.zeroShot.accuracy, std: 0, n: 1 }) : "—"),
      ],
      ...r.conditions.map((
        c,
      ) => [
        nameOf(c),
        ...sizes.map((n) => formatPercent(summaryOf(c, n) ?? { mean: NaN, std: NaN, n: 0 })),
      ]),
    ],
  );
  const readRows = (["real pool", ...r.conditions] as const).flatMap((c) => {
    const items = r.readability.filter((x) => x.condition === c);
    if (!items.length) return [];
    const m = (f: (v: Readability) => number) => meanStd(items.map((x) => f(x.value)));
    const fmt = (
      s: { mean: number; std: number },
      d = 2,
    ) => (Number.isFinite(s.mean) ? s.mean.toFixed(d) : "—");
    return [[
      c === "real pool"
        ? `real examples GRADMM used (${items[0].value.texts}${
          r.conditions.includes("real-used") ? ", real-used's training set" : ""
        })`
        : `${conditionName(c as Condition, { method: r.synth.args.method })} (N = ${items[0].size})`,
      String(items.length),
      fmt(m((v) => v.meanNll)),
      fmt(m((v) => v.perplexity), 1),
      fmt(m((v) => v.distinct1), 3),
      fmt(m((v) => v.distinct2), 3),
      fmt(m((v) => v.meanTokens), 1),
    ]];
  });
  const filterRows = r.filterStats.map((f) => [
    nameOf(f.condition),
    String(f.size),
    String(f.seed),
    String(f.stats.reduce((a, s) => a + s.input, 0)),
    String(f.stats.reduce((a, s) => a + s.inconsistent, 0)),
    String(f.stats.reduce((a, s) => a + s.duplicates, 0)),
    String(f.stats.reduce((a, s) => a + s.beyondTopN, 0)),
    String(f.stats.reduce((a, s) => a + s.balanced, 0)),
    f.stats.map((s) => s.kept).join(" / "),
  ]);
  const emptied = r.filterStats.filter((f) => f.stats.some((s) => s.kept === 0)).length;
  const runRows = [...r.runs].sort((a, b) =>
    CONDITIONS.indexOf(a.condition) - CONDITIONS.indexOf(b.condition) || a.size - b.size || a.seed - b.seed ||
    a.lr - b.lr
  ).map((x) => [
    x.condition,
    String(x.size),
    String(x.seed),
    String(x.lr),
    String(x.trainTexts),
    x.validAccuracy === null ? "—" : (x.validAccuracy * 100).toFixed(1),
    String(x.bestStep),
    Number.isFinite(x.testAccuracy) ? (x.testAccuracy * 100).toFixed(1) : "—",
    r.selected.includes(x) ? "✓" : "",
  ]);
  const chance = (100 / task.labelWords.length).toFixed(0);
  return `# GRADMM experiment: ${r.task} on ${r.model}

${
    r.complete
      ? ""
      : "**Partial report: the experiment has not finished; rerun the command to continue.**\n\n"
  }Accuracy (%) on the test set (${r.splits.test} examples of ${r.data.test} not in the real pool), mean ± std over
${r.seeds.length} seed(s) (${r.seeds.join(", ")}); chance is ${chance}%.

${acc}
${
    r.conditions.includes("real-used")
      ? `
The row *${nameOf("real-used")}* is one fixed set: the ${realN} real examples synth read to make
the GRADMM texts, fine-tuned on alone (once per seed, the same texts each time). It is N = ${realN}
whatever --sizes says, so it has a value only in the N = ${realN} column and is a single point in
the plot.
`
      : ""
  }
![learning curves](report.svg)

**Model selection.** Each run keeps the checkpoint with the best accuracy on a validation holdout of
${r.splits.valid} examples drawn from the train split (${r.data.train}), evaluated every ${r.finetune.evalEvery} steps and at the end;
the learning rate (${
    r.finetune.lrs.join(", ")
  }) is chosen per (condition, size, seed) on the same holdout. The test set
was never used to choose anything. (The official harness picks both on the evaluation set itself.)

## Readability (under the pre-trained model; means over seeds)

${
    readRows.length
      ? markdownTable([
        "texts",
        "seeds",
        "mean NLL (nats/token)",
        "perplexity",
        "distinct-1",
        "distinct-2",
        "tokens/text",
      ], readRows)
      : "—"
  }

Low NLL alone rewards repetitive text: read it together with distinct-n (1.0 = no repeated n-gram).

${
    filterRows.length
      ? `## Filtering\n\n${
        markdownTable([
          "condition",
          "N",
          "seed",
          "input",
          "inconsistent",
          "duplicates",
          "beyond top-n",
          "balance",
          `kept (${task.labelWords.join(" / ")})`,
        ], filterRows)
      }\n${
        emptied
          ? `\n**Warning:** filtering left some class without any text in ${emptied} of ${r.filterStats.length} set(s): the label-consistency check of a weak model tends to call every text one label. Try --filter-calibrate or --filter-no-consistency.\n`
          : ""
      }`
      : ""
  }
## Settings

- Task ${r.task} (template "<text>${task.evalSuffix}" + ${
    task.evalOptions.map((o) => `"${o}"`).join(" / ")
  }; GRADMM suffix "${task.suffix}" → ${task.labelWords.join(" / ")}), model ${r.model}, adapter ${r.adapter}.
- Real pool: ${r.splits.realPool} stratified examples of the test split (seed ${r.splits.poolSeed}); GRADMM used the first ${r.splits.used}.
- Fine-tuning: ${r.finetune.steps} steps, batch ${r.finetune.batchSize}, AdamW (wd ${r.finetune.weightDecay}, betas 0.9/0.999, eps 1e-8), linear decay without warmup, gradient clipping ${
    r.finetune.maxGradNorm || "off"
  }, loss = cross-entropy over the options' mean log-likelihoods.
- Real texts: a stratified random draw of N from the train split minus the validation holdout, per seed.${
    r.conditions.includes("real-used")
      ? `\n- Real examples GRADMM used (condition real-used): data/real-used.jsonl, the same ${realN} texts for every seed (only the fine-tuning seed differs).`
      : ""
  }
- GRADMM texts: the first N/${task.labelWords.length} texts per class of one synth run per seed (method ${
    r.synth.args.method ?? SYNTH_DEFAULTS.method
  })${
    r.filter
      ? `; filtered: the first ${r.filter.oversample}× that many per class, filtered to N/${task.labelWords.length} per class (label consistency ${
        r.filter.consistency
          ? `with ${r.filter.shots} demonstrations${r.filter.calibrate ? ", calibrated" : ""}`
          : "off"
      }, alignment to targets of ${r.filter.realN} of the real examples, α = ${r.filter.alpha}${
        r.filter.balance ? ", class balancing" : ""
      })`
      : ""
  }.
${
    r.conditions.includes("gradmm-official")
      ? `- ${
        nameOf("gradmm-official")
      }: the same, from synth runs with the official method (the paper's code path; --synth-method, --synth-select, the refine flags and --synth-decode-beta left out).\n`
      : ""
  }${
    r.conditions.includes("gradmm-dp-filtered")
      ? "- Note: the filter reads the real examples without noise (few-shot demonstrations and alignment targets), so the *filtered* DP texts are not differentially private; only the unfiltered DP condition is.\n"
      : ""
  }- Synth settings: ${
    Object.keys(r.synth.args).length
      ? Object.entries(r.synth.args).map(([k, v]) => `--${k} ${v}`).join(" ")
      : "synth's defaults"
  }.
- Wall time so far: ${formatDuration(r.seconds)}.

Command:

\`\`\`
${r.command}
\`\`\`

${
    r.synth.commands.length
      ? `Equivalent synth commands:\n\n\`\`\`\n${r.synth.commands.join("\n")}\n\`\`\`\n`
      : ""
  }
## Every run

${
    runRows.length
      ? markdownTable(
        ["condition", "N", "seed", "lr", "texts", "valid %", "best step", "test %", "selected"],
        runRows,
      )
      : "—"
  }
`;
}

export const experimentCommand: Command = {
  name: "experiment",
  summary: "zero-shot vs real vs GRADMM fine-tuning over sizes and seeds, with a report",
  help: HELP,
  async run(args) {
    const { values: v } = parseFlags("experiment", args, {
      task: { type: "string" },
      model: { type: "string" },
      "train-data": { type: "string" },
      "test-data": { type: "string" },
      "out-dir": { type: "string" },
      "text-field": { type: "string" },
      "label-field": { type: "string" },
      sizes: { type: "string" },
      seeds: { type: "string" },
      conditions: { type: "string" },
      "real-n": { type: "string" },
      "real-pool": { type: "string" },
      "pool-seed": { type: "string" },
      "valid-size": { type: "string" },
      "test-limit": { type: "string" },
      steps: { type: "string" },
      batch: { type: "string" },
      lr: { type: "string" },
      "eval-every": { type: "string" },
      "eval-batch": { type: "string" },
      "max-grad-norm": { type: "string" },
      "synth-batch": { type: "string" },
      "synth-outer-steps": { type: "string" },
      "synth-inner-steps": { type: "string" },
      "synth-init-candidates": { type: "string" },
      "synth-rho": { type: "string" },
      "synth-top-k": { type: "string" },
      "synth-select": { type: "string" },
      "synth-method": { type: "string" },
      "synth-refine-iterations": { type: "string" },
      "synth-refine-nll-slack": { type: "string" },
      "synth-refine-lambda": { type: "string" },
      "synth-refine-nll-target": { type: "string" },
      "synth-decode-beta": { type: "string" },
      "synth-lr": { type: "string" },
      "synth-length": { type: "string" },
      "synth-paper": { type: "boolean" },
      "dp-epsilon": { type: "string" },
      "dp-delta": { type: "string" },
      "dp-clip": { type: "string" },
      "filter-oversample": { type: "string" },
      "filter-alpha": { type: "string" },
      "filter-balance": { type: "boolean" },
      "filter-real-n": { type: "string" },
      "filter-shots": { type: "string" },
      "filter-no-consistency": { type: "boolean" },
      "filter-calibrate": { type: "boolean" },
      json: { type: "boolean" },
    }, {
      aliases: {
        train: "train-data",
        test: "test-data",
        out: "out-dir",
        real: "real-n",
        "synth-topk": "synth-top-k",
      },
    });
    if (v.help) {
      console.log(HELP);
      return 0;
    }
    const started = performance.now();
    const vv = v as Record<string, unknown>;
    const num = (name: string, fallback: number, opts?: Parameters<typeof numberFlag>[4]) =>
      numberFlag("experiment", name, vv[name], fallback, opts);

    // ---- settings
    for (const f of ["train-data", "test-data", "out-dir"] as const) {
      if (!v[f]) throw new UsageError(`experiment: --${f} is required`);
    }
    const task = getTask(v.task ?? "sst2");
    const classes = task.labelWords.length;
    const modelSpec = v.model ?? await bundledModel({ onFetch: announceFetch });
    const sizes = [...new Set(parseNumberList(v.sizes ?? "60,200,1000", "sizes", true))].sort((a, b) =>
      a - b
    );
    const seedCount = num("seeds", 3, { min: 1, max: 100, integer: true });
    const seeds = Array.from({ length: seedCount }, (_, i) => i);
    const lrs = [...new Set(parseNumberList(v.lr ?? "3e-4", "lr", false))].sort((a, b) => a - b);
    const dp = v["dp-epsilon"] !== undefined;
    if (!dp && (v["dp-delta"] !== undefined || v["dp-clip"] !== undefined)) {
      throw new UsageError("experiment: --dp-delta and --dp-clip need --dp-epsilon");
    }
    // gradmm-official is for comparing with a non-official --synth-method: not a default.
    const isDefault = (c: Condition) => c !== "gradmm-official" && (dp || synthVariant(c) !== "gradmm-dp");
    let conditions: Condition[];
    if (v.conditions) {
      conditions = v.conditions.split(",").map((c) => c.trim()) as Condition[];
      for (const c of conditions) {
        if (!CONDITIONS.includes(c)) {
          throw new UsageError(`experiment: unknown condition '${c}'; choose among ${CONDITIONS.join(", ")}`);
        }
        if (synthVariant(c) === "gradmm-dp" && !dp) {
          throw new UsageError(`experiment: condition '${c}' needs --dp-epsilon`);
        }
      }
      conditions = CONDITIONS.filter((c) => conditions.includes(c));
    } else {
      conditions = CONDITIONS.filter(isDefault);
    }
    const splitOptions: SplitOptions = {
      realPool: num("real-pool", 100, { min: 2, integer: true }),
      real: num("real-n", 50, { min: 2, integer: true }),
      poolSeed: num("pool-seed", 42, { min: 0, integer: true }),
      validSize: num("valid-size", 200, { min: 1, integer: true }),
      testLimit: num("test-limit", 1000, { min: 1, integer: true }),
    };
    const ft: Omit<FinetuneOptions, "lr" | "seed"> = {
      steps: num("steps", FINETUNE_DEFAULTS.steps, { min: 1, integer: true }),
      batchSize: num("batch", FINETUNE_DEFAULTS.batchSize, { min: 1, max: 4096, integer: true }),
      maxGradNorm: num("max-grad-norm", FINETUNE_DEFAULTS.maxGradNorm, { min: 0 }),
      weightDecay: 0,
      evalEvery: num("eval-every", FINETUNE_DEFAULTS.evalEvery, { min: 0, integer: true }),
      evalBatch: num("eval-batch", FINETUNE_DEFAULTS.evalBatch, { min: 1, max: 4096, integer: true }),
    };
    const synthBatch = num("synth-batch", SYNTH_DEFAULTS.batch, { min: 1, max: 256, integer: true });
    const synthArgs: Record<string, string> = { batch: String(synthBatch) };
    for (const [flag, target] of Object.entries(SYNTH_PASSTHROUGH)) {
      if (vv[flag] !== undefined) synthArgs[target] = String(vv[flag]);
    }
    if (v["synth-rho"] !== undefined && String(v["synth-rho"]).includes(",")) {
      throw new UsageError("experiment: --synth-rho takes one value (a sweep would mix texts of several ρ)");
    }
    if (dp) synthArgs["dp-epsilon"] = String(v["dp-epsilon"]);
    // Typed once per synth variant and checked now (a bad --synth-select fails before any work,
    // not hours later).
    const variants = [...new Set(conditions.map(synthVariant).filter((x) => x !== null))];
    const variantSettings = new Map(variants.map((x) => [x, synthSettingsOf(variantArgs(x, synthArgs))]));
    checkSynthSettings({ ...synthSettingsOf(synthArgs), task });
    if (variantSettings.has("gradmm") && variantSettings.has("gradmm-official")) {
      const options = (x: SynthVariant) =>
        JSON.stringify(resolveSynthSettings({ ...variantSettings.get(x), task }, false).options);
      if (options("gradmm") === options("gradmm-official")) {
        throw new UsageError(
          "experiment: condition gradmm-official would repeat gradmm: its synth settings are the official " +
            "ones; give --synth-method lm-guided, discrete, refine or refine-lm (or --synth-decode-beta), or drop gradmm-official",
        );
      }
    }
    const filterOn = conditions.some(isFiltered);
    const oversample = num("filter-oversample", 2, { min: 1, max: 100 });
    const filterBase = {
      alpha: num("filter-alpha", FILTER_DEFAULTS.alpha, { min: 0 }),
      realN: num("filter-real-n", FILTER_DEFAULTS.realN, { min: 1, integer: true }),
      seed: splitOptions.poolSeed,
      shots: num("filter-shots", FILTER_DEFAULTS.shots, { min: 0, max: 64, integer: true }),
      consistency: !v["filter-no-consistency"],
      calibrate: !!v["filter-calibrate"],
      balance: !!v["filter-balance"],
      batch: FILTER_DEFAULTS.batch,
    };
    if (filterOn && filterBase.realN > splitOptions.real) {
      throw new UsageError(
        `experiment: --filter-real-n (${filterBase.realN}) cannot exceed --real-n (${splitOptions.real})`,
      );
    }
    const fields = { textField: v["text-field"], labelField: v["label-field"] };
    const command = `deno run -A cli.ts experiment ${args.map(shellQuote).join(" ")}`;

    // ---- data
    const out = v["out-dir"]!;
    const trainPath = v["train-data"]!;
    const testPath = v["test-data"]!;
    await checkOutput(out, {
      command: "experiment",
      flag: "--out-dir",
      kind: "dir",
      inputs: [trainPath, testPath, modelSpec],
      // A folder this command started holds its data splits.
      isOurs: () => exists(join(out, "data", "real-used.jsonl")),
      overwrite: undefined,
    });
    const train = await readLabelled(trainPath, task, "train file", fields);
    const test = await readLabelled(testPath, task, "test file", fields);
    const splits = makeSplits(train.examples, test.examples, splitOptions);
    for (const n of sizes) {
      if (conditions.includes("real") && n > splits.trainRest.length) {
        throw new UsageError(
          `experiment: size ${n} exceeds the ${splits.trainRest.length} train examples left after the validation holdout`,
        );
      }
    }
    for (const d of ["data", "synth", "runs"]) await Deno.mkdir(join(out, d), { recursive: true });
    const usedPath = join(out, "data", "real-used.jsonl");
    await writeFileAtomic(usedPath, jsonl(splits.used));
    await writeFileAtomic(join(out, "data", "test.jsonl"), jsonl(splits.test));
    await writeFileAtomic(join(out, "data", "valid.jsonl"), jsonl(splits.valid));
    const dataHashes = { trainSha256: await sha256File(trainPath), testSha256: await sha256File(testPath) };
    const base = { task: task.name, model: modelSpec, fields, splitOptions, ...dataHashes };

    // ---- plan
    const maxSize = sizes[sizes.length - 1];
    const realN = splits.used.length;
    // The sizes trained at, and which conditions train at each: real-used only at its own size.
    const trainSizes = [...new Set([...sizes, ...(conditions.includes("real-used") ? [realN] : [])])]
      .sort((a, b) => a - b);
    const trainsAt = (c: Condition, n: number) => sizesOf(c, sizes, realN).includes(n);
    const setsPerSeed = trainSizes.reduce((a, n) => a + conditions.filter((c) => trainsAt(c, n)).length, 0);
    const genPerClass = (variant: string) => {
      const need = conditions.some((c) => synthVariant(c) === variant && isFiltered(c)) ? oversample : 1;
      return Math.ceil((need * perClassFor(maxSize, classes)) / synthBatch) * synthBatch;
    };
    const runsTotal = setsPerSeed * seeds.length * lrs.length;
    console.error(
      `experiment: ${task.name} on ${modelSpec}; sizes ${sizes.join("/")}, seeds ${seeds.join(",")}, lr ${
        lrs.join(",")
      }; ` +
        `conditions ${conditions.join(", ")}; ${runsTotal} fine-tuning runs, ` +
        (variants.length
          ? `${variants.length * seeds.length} synth run(s) of ${
            variants.map((x) => `${genPerClass(x)}`).join("/")
          } texts per class; `
          : "no synth runs; ") +
        `test ${splits.test.length}, validation ${splits.valid.length}, real used ${splits.used.length}`,
    );
    // Overall progress counts synth rounds and fine-tuning runs ("tasks"); the ETA adds each
    // kind's remaining work at its own measured rate (rounds, steps). Filtering and evaluation
    // outside the runs are not in it.
    const roundsOf = (variant: string) => classes * (genPerClass(variant) / synthBatch);
    const synthPhase = new MeasuredPhase(
      seeds.length * variants.reduce((a, x) => a + roundsOf(x), 0),
    );
    const ftPhase = new MeasuredPhase(runsTotal * ft.steps);
    const overall = new Progress({ label: "experiment", total: synthPhase.total + runsTotal, unit: "tasks" });
    overall.log(
      `experiment: ${synthPhase.total} synth rounds + ${runsTotal} fine-tuning runs = ${overall.total} tasks`,
    );
    const showProgress = (detail: string) =>
      overall.update(
        synthPhase.done + ftPhase.done / ft.steps,
        detail,
        phasedEta([synthPhase, ftPhase]),
      );

    const ctx = await defaultContext();
    const synthCommands: string[] = [];
    const report: Report = {
      tool: "gradmm-ts experiment",
      command,
      adapter: ctx.adapterName,
      task: task.name,
      model: modelSpec,
      data: { train: trainPath, test: testPath, ...dataHashes },
      splits: {
        used: splits.used.length,
        test: splits.test.length,
        valid: splits.valid.length,
        trainRest: splits.trainRest.length,
        ...splitOptions,
      },
      sizes,
      seeds,
      conditions,
      finetune: { ...ft, lrs },
      synth: { args: synthArgs, commands: synthCommands },
      filter: filterOn ? { ...filterBase, oversample } : null,
      zeroShot: null,
      runs: [],
      selected: [],
      summary: [],
      readability: [],
      filterStats: [],
      seconds: 0,
      complete: false,
    };
    const writeReport = async () => {
      const { selected, curves } = summariseRuns(report.runs, conditions, sizes, seeds, realN);
      report.selected = selected;
      report.summary = curves.flatMap((c) =>
        c.points.map((p) => ({ condition: c.condition, size: p.x, mean: p.mean, std: p.std, n: p.n }))
      );
      report.seconds = (performance.now() - started) / 1000;
      const pct = (x: number) => x * 100;
      const svg = renderChart({
        title: `${task.name}: accuracy after fine-tuning (${modelSpec.split("/").pop()})`,
        xLabel: "training texts N",
        yLabel: "test accuracy (%)",
        curves: curves.map((c) => ({
          name: conditionName(c.condition, { method: synthArgs.method, realN }),
          points: c.points.map((p) => ({ ...p, mean: pct(p.mean), std: pct(p.std) })),
        })),
        lines: [
          ...(report.zeroShot
            ? [{
              y: pct(report.zeroShot.accuracy),
              label: `zero-shot ${pct(report.zeroShot.accuracy).toFixed(1)}%`,
            }]
            : []),
          { y: 100 / classes, label: "chance" },
        ],
      });
      await writeFileAtomic(join(out, "report.json"), JSON.stringify(report, null, 2) + "\n");
      await writeFileAtomic(join(out, "report.svg"), svg);
      await writeFileAtomic(join(out, "report.md"), renderMarkdown(report, task));
    };

    // ---- synthetic texts: one synth run per (variant, seed), resumable by round
    const synthTexts = new Map<string, { text: string; label: number; nll?: number }[]>();
    for (const variant of variants) {
      for (const seed of seeds) {
        const perClass = genPerClass(variant);
        const path = join(out, "synth", `${variant}-seed${seed}-pc${perClass}.jsonl`);
        const sArgs = [
          "--data",
          usedPath,
          "--task",
          task.name,
          "--model",
          modelSpec,
          "--out",
          path,
          "--real-pool",
          String(splits.used.length),
          "--real-n",
          String(splits.used.length),
          "--per-class",
          String(perClass),
          "--seed",
          String(seed),
          ...Object.entries(variantArgs(variant, synthArgs)).flatMap(([k, x]) => [`--${k}`, x]),
          ...(v["synth-paper"] ? ["--paper"] : []),
        ];
        // For the report only: the command line that runs the same synth job.
        synthCommands.push(`deno run -A cli.ts synth ${sArgs.map(shellQuote).join(" ")}`);
        const job = {
          ...variantSettings.get(variant),
          task,
          realPool: splits.used.length,
          real: splits.used.length,
          perClass,
          seed,
          paper: !!v["synth-paper"],
        };
        const manifest = await readJsonIf<{ completed: unknown[]; settings: unknown }>(
          path.replace(/\.jsonl$/, ".manifest.json"),
        );
        // A finished run of other settings (say, another --synth-method) is not reused: the job
        // then stops with its "other settings" error and the restart hint.
        const settings = synthSettingsRecord(resolveSynthSettings(job, ctx.isCpuAdapter).options);
        const rounds = roundsOf(variant);
        if (
          !Array.isArray(manifest?.completed) || manifest.completed.length < rounds ||
          !(await exists(path)) ||
          JSON.stringify(manifest.settings) !== JSON.stringify(settings)
        ) {
          overall.log(`experiment: synth ${variant} seed ${seed} (${perClass} texts per class)`);
          synthPhase.begin((await exists(path)) ? manifest?.completed?.length ?? 0 : 0);
          // synth's own progress reports here: one line with the experiment's overall ETA.
          const printer = synthProgressPrinter(undefined);
          await withParent({
            progress: overall,
            onChild: (roundsDone, _total, detail) => {
              synthPhase.advance(roundsDone);
              showProgress(`synth ${variant} seed ${seed}: ${detail ?? ""}`);
            },
          }, () =>
            runSynthJob({
              ...job,
              out: path,
              model: modelSpec,
              data: usedPath,
              ctx,
              openModel: openSynthModel,
              prepare: tuneForSynth,
              onEvent: printer.onEvent,
              restartHint: restartHintOf(path),
            }).finally(() => printer.finish()));
          synthPhase.end(rounds);
        } else {
          synthPhase.skip(rounds);
        }
        const recs = parseRecords(await readText(path, "synth output"), path, restartHintOf(path));
        synthTexts.set(`${variant}/${seed}`, recs);
      }
    }

    // ---- the model, with its pre-trained weights kept on the GPU for every run to start from
    const { model, tokenizer } = await openModel(ctx, modelSpec);
    const params = [...model.parameters().values()];
    const initial: Tensor[] = params.map((p) => p.detach().keep());
    const restore = async () => {
      params.forEach((p, i) => ctx.copyBuffer(initial[i].buffer, 0, p.buffer, 0, p.bytes));
      await ctx.sync();
    };
    const testSet = tokenizeExamples(tokenizer, task, splits.test);
    const validSet = tokenizeExamples(tokenizer, task, splits.valid);

    try {
      // ---- zero-shot
      const zs = await cached(
        join(out, "runs", "zero-shot.json"),
        sha({ ...base, kind: "zero-shot", evalBatch: ft.evalBatch }),
        async () => {
          overall.log(`experiment: zero-shot on ${testSet.length} test examples`);
          const e = await evaluateAccuracy(model, testSet, tokenizer.padId, { batchSize: ft.evalBatch });
          return { accuracy: e.accuracy, ci95: e.ci95, examples: e.total };
        },
      );
      report.zeroShot = zs.value;
      overall.log(`zero-shot accuracy ${(zs.value.accuracy * 100).toFixed(2)}%`);
      await writeReport();

      // ---- training sets (filtered ones cached as files)
      const trainSets = new Map<string, Example[]>();
      const setKey = (c: Condition, n: number, seed: number) => `${c}/${n}/${seed}`;
      const filterKeyBase = { ...base, synthArgs, paper: !!v["synth-paper"], filter: filterBase, oversample };
      for (const seed of seeds) {
        for (const n of trainSizes) {
          const perClass = perClassFor(n, classes);
          for (const c of conditions) {
            if (!trainsAt(c, n)) continue;
            const variant = synthVariant(c);
            if (variant === null) {
              trainSets.set(
                setKey(c, n, seed),
                c === "real-used"
                  ? splits.used
                  : stratifiedSample(splits.trainRest, n, deriveSeed(seed, "real", n)),
              );
              continue;
            }
            const recs = synthTexts.get(`${variant}/${seed}`)!;
            if (!isFiltered(c)) {
              trainSets.set(
                setKey(c, n, seed),
                firstPerClass(recs, perClass, n).map((r) => ({ text: r.text, label: r.label })),
              );
              continue;
            }
            const inputs = firstPerClass(recs, Math.ceil(oversample * perClass));
            const fo: FilterOptions = {
              ...filterBase,
              topN: perClass,
              realPool: Math.min(filterBase.realN, splits.used.length),
            };
            await Deno.mkdir(join(out, "filtered"), { recursive: true });
            const file = join(out, "filtered", `${c}-n${n}-seed${seed}.json`);
            const res = await cached(
              file,
              sha({ ...filterKeyBase, c, n, seed, perClass: genPerClass(variant) }),
              async () => {
                overall.log(
                  `experiment: filter ${c} N=${n} seed ${seed}: ${inputs.length} texts → at most ${perClass} per class`,
                );
                await restore();
                const r = await filterSynthetic(model, tokenizer, task, inputs, splits.used, fo);
                return {
                  texts: r.kept.map((k) => ({ text: k.text, label: k.label, align_loss: k.alignLoss })),
                  stats: r.stats,
                };
              },
            );
            const kept = res.value.texts;
            await writeFileAtomic(file.replace(/\.json$/, ".jsonl"), jsonl(kept));
            report.filterStats.push({
              condition: c,
              size: n,
              seed,
              kept: kept.length,
              stats: res.value.stats,
            });
            trainSets.set(setKey(c, n, seed), kept.map((k) => ({ text: k.text, label: k.label })));
          }
        }
      }

      // ---- readability of the largest set of each kind, and of the real examples GRADMM used
      const readKey = (what: string, seed: number) =>
        sha({ ...filterKeyBase, kind: "readability", what, seed, maxSize });
      const rd = await cached(
        join(out, "runs", "readability-real-pool.json"),
        readKey("real pool", 0),
        async () => {
          await restore();
          return await readability(model, tokenizer, splits.used.map((e) => e.text));
        },
      );
      report.readability.push({ condition: "real pool", seed: 0, size: splits.used.length, value: rd.value });
      // real-used trains on exactly the real pool's texts: the row above.
      for (const c of conditions.filter((c) => c !== "real-used")) {
        for (const seed of seeds) {
          const texts = trainSets.get(setKey(c, maxSize, seed))!.map((e) => e.text);
          const r = await cached(
            join(out, "runs", `readability-${c}-seed${seed}.json`),
            readKey(c, seed),
            async () => {
              await restore();
              return await readability(model, tokenizer, texts);
            },
          );
          report.readability.push({ condition: c, seed, size: maxSize, value: r.value });
        }
      }
      await writeReport();

      // ---- fine-tuning runs
      let done = 0;
      for (const seed of seeds) {
        for (const n of trainSizes) {
          for (const c of conditions) {
            if (!trainsAt(c, n)) continue;
            const examples = trainSets.get(setKey(c, n, seed))!;
            for (const lr of lrs) {
              done++;
              const name = `${c}-n${n}-seed${seed}-lr${lr}`;
              const key = sha({
                ...(synthVariant(c) === null ? base : filterKeyBase),
                c,
                n,
                seed,
                lr,
                ft,
                texts: sha(examples),
              });
              const t0 = performance.now();
              const stepsBefore = ftPhase.done;
              const { value: run, fresh } = await cached(
                join(out, "runs", `${name}.json`),
                key,
                async (): Promise<RunResult> => {
                  if (examples.length === 0) {
                    return {
                      condition: c,
                      size: n,
                      seed,
                      lr,
                      trainTexts: 0,
                      validAccuracy: null,
                      bestStep: 0,
                      testAccuracy: NaN,
                      finalLoss: NaN,
                      seconds: 0,
                    };
                  }
                  await restore();
                  ftPhase.begin();
                  const res = await finetune(
                    model,
                    tokenizeExamples(tokenizer, task, examples),
                    validSet,
                    tokenizer.padId,
                    { ...ft, lr, seed: deriveSeed(seed, "finetune", n) },
                    (e) => {
                      if (e.kind === "step") {
                        ftPhase.advance(e.step);
                        showProgress(
                          `fine-tune ${name} step ${e.step}/${ft.steps}: loss ${e.loss.toFixed(4)}`,
                        );
                      } else {
                        overall.log(
                          `  ${name} step ${e.step}/${ft.steps}: validation ${
                            (e.accuracy * 100).toFixed(1)
                          }%${e.best ? " (best)" : ""} (${formatDuration(e.seconds)})`,
                        );
                      }
                    },
                  );
                  const te = await evaluateAccuracy(model, testSet, tokenizer.padId, {
                    batchSize: ft.evalBatch,
                  });
                  ftPhase.end(ft.steps);
                  return {
                    condition: c,
                    size: n,
                    seed,
                    lr,
                    trainTexts: examples.length,
                    validAccuracy: res.bestAccuracy,
                    bestStep: res.bestStep,
                    testAccuracy: te.accuracy,
                    finalLoss: res.history.at(-1)!.loss,
                    seconds: (performance.now() - t0) / 1000,
                  };
                },
              );
              if (ftPhase.done === stepsBefore) ftPhase.skip(ft.steps); // cached, or nothing to train on
              report.runs.push(run);
              overall.log(
                `[${done}/${runsTotal}] ${name}: ${run.trainTexts} texts, validation ` +
                  `${
                    run.validAccuracy === null ? "—" : (run.validAccuracy * 100).toFixed(1) + "%"
                  } (step ${run.bestStep}), test ` +
                  `${Number.isFinite(run.testAccuracy) ? (run.testAccuracy * 100).toFixed(1) + "%" : "—"}` +
                  (fresh ? ` (${formatDuration(run.seconds)})` : " (cached)"),
              );
              if (fresh) await writeReport();
            }
          }
        }
      }
      report.complete = true;
      await writeReport();
    } finally {
      overall.clear();
      for (const t of initial) t.dispose();
      model.dispose();
    }
    console.error(`experiment finished in ${formatDuration((performance.now() - started) / 1000)}`);
    const printer = resultPrinter(v.json);
    printer.text(`report: ${join(out, "report.md")}`);
    printer.json({
      outDir: out,
      report: join(out, "report.md"),
      reportJson: join(out, "report.json"),
      complete: report.complete,
      zeroShot: report.zeroShot,
      summary: report.summary,
      seconds: report.seconds,
    });
    return 0;
  },
};
