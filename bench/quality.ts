/**
 * Synthetic-text quality at an equal compute budget: runs `synth` with each method on each model ×
 * task and reports, per method, the mean discrete matching loss (1 − cos to the class target),
 * NLL under the model, distinct-1/2, in-text trigram repetition, TF-IDF similarity to the nearest
 * real example of the class, and the longest word run copied from any real example. Held-out real
 * sentences of the same classes (pool entries not used for the target) are the reference row.
 *
 * Budget: passes = batched forward passes + backward passes (a constrained decode counts as one
 * forward). Official: K init forwards + O·(1 decode + 1 loss + 2·I) + 2 for the final decode and
 * loss. The refine methods run half the outer steps (lm-guided: one, as synth does on a CPU
 * adapter, or 28 with --paper, as synth does on a GPU; --refine-outer sets it for all of them)
 * and spend the rest on refinement iterations
 * (refine: from the best projection; refine-lm: from the official decode, for loss + λ·NLL).
 * "blend" is the official method with the match-aware decode (admm/blend_decode.ts, weight
 * --beta, --no-repeat skips tokens that repeat a bigram; a decode still counts as one forward);
 * "blend-lm" is refine-lm on top of it. "refine-target" / "blend-target" add refine-lm's NLL
 * target (--nll-target, default "real": the class's real examples' own NLL; --target-weight μ)
 * and the model's top --lm-top tokens as swap candidates. "lm-guided" is synth's default method
 * with the settings synth resolves for it (blend-target with api/defaults.ts's LM_GUIDED_DEFAULTS).
 * The JSON also keeps every text of every row (`texts_all`), for reading them.
 *
 *   deno task quality [--models d128,d256] [--tasks sst2,rotten_tomatoes]
 *                     [--methods official,discrete,refine,refine-fluent,refine-lm,blend,blend-lm,
 *                                refine-target,blend-target,lm-guided]
 *                     [--beta 2] [--no-repeat] [--lambda 0.15] [--nll-target real] [--target-weight 0.2]
 *                     [--lm-top 8] [--proposals 32]
 *                     [--lm-slack 0] [--outer 10] [--inner 20] [--init 50] [--rounds 1] [--seed 3]
 *                     [--paper]   (outer/inner/init 30/50/500 unless given; lm-guided: synth's
 *                                  paper-size split, 28 outer steps, instead of the CPU one)
 *                     [--refine-outer N]   (outer steps of the refine methods; default ⌈outer/2⌉)
 *                     [--out docs/quality/NAME]
 *   deno task quality --merge a.json,b.json --out docs/quality/NAME   (report only: rows of earlier runs)
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { type AdmmSettings, PAPER_SETTINGS } from "../admm/problem.ts";
import { parseJsonl } from "../data/examples.ts";
import { matchingLoss, oneHot } from "../admm/matching.ts";
import { REFINE_DEFAULTS, type RefineSettings } from "../admm/refine.ts";
import {
  LM_REFINE_DEFAULTS,
  type LmRefineSettings,
  NLL_TARGET_WEIGHT,
  parseNllTarget,
} from "../admm/refine_lm.ts";
import { admmPasses, iterationsWithin, roundPasses } from "../admm/passes.ts";
import { runSynth, type SynthOptions, type SynthRecord } from "../admm/synth.ts";
import { resolveSynthSettings } from "../api/synth_settings.ts";
import { CPU_SYNTH_DEFAULTS, SYNTH_DEFAULTS } from "../api/defaults.ts";
import { selectReal } from "../data/examples.ts";
import { BLEND_LM_TOP, type BlendDecode } from "../admm/blend_decode.ts";
import { sequenceMeanNll } from "../models/perplexity.ts";
import { computeTarget, disposeTarget, lastLayerFactors } from "../admm/target.ts";
import { classOf, getTask } from "../data/tasks.ts";
import { slice } from "../autograd/ops/shape.ts";
import { scope } from "../autograd/tensor.ts";
import { noGrad } from "../autograd/grad_mode.ts";
import { defaultContext } from "../kernels/device.ts";
import { openModel } from "../cli/model.ts";
import { writeFileAtomic } from "../cli/io.ts";
import {
  distinctN,
  longestCopiedRuns,
  mean,
  nearestReferenceSimilarity,
  repetitionRate,
} from "../train/quality.ts";

/** A word run this long shared with a real example counts as a copy. */
const COPY_WORDS = 8;

interface Row {
  model: string;
  task: string;
  method: string;
  passes: number;
  texts: number;
  matchLoss: number;
  nll: number;
  distinct1: number;
  distinct2: number;
  repetition: number;
  nearestReal: number;
  longestCopy: number;
  copies: number;
  seconds: number;
  example: string;
  /** Every text the method produced (JSON only), for reading them. */
  texts_all: string[];
  /** When the invocation that measured this row started (rows of several runs can be merged). */
  run?: string;
  /**
   * The real row only: mean NLL of every text of the validation split outside the examples the
   * targets read (~1,000 texts), the goal's reference; 40 held-out texts alone swing ±0.3 nats.
   */
  nllSplit?: number;
}

/**
 * A row's method name with the settings that tell its runs apart: the blend decode's β, for the
 * methods that decode with it (blend, blend-*, lm-guided), and the NLL target of the refinement.
 */
function methodLabel(
  method: string,
  blend: BlendDecode | undefined,
  refineLm: LmRefineSettings | undefined,
): string {
  const beta = blend ? ` β=${blend.beta}${blend.noRepeat ? " no-repeat" : ""}` : "";
  const target = refineLm?.nllTarget !== undefined
    ? ` (NLL target ${refineLm.nllTarget}, μ ${
      refineLm.targetWeight ?? NLL_TARGET_WEIGHT
    }, LM top ${refineLm.lmTop})`
    : "";
  return method + beta + target;
}

const args = parseArgs({
  args: Deno.args,
  options: {
    models: { type: "string", default: "d128,d256" },
    tasks: { type: "string", default: "sst2,rotten_tomatoes" },
    methods: { type: "string", default: "official,discrete,refine,refine-lm,lm-guided" },
    outer: { type: "string" },
    inner: { type: "string" },
    init: { type: "string" },
    paper: { type: "boolean", default: false },
    rounds: { type: "string", default: "1" },
    batch: { type: "string", default: "10" },
    seed: { type: "string", default: "3" },
    lambda: { type: "string", default: String(LM_REFINE_DEFAULTS.lambda) },
    beta: { type: "string", default: "2" },
    "no-repeat": { type: "boolean", default: false },
    "lm-slack": { type: "string", default: String(LM_REFINE_DEFAULTS.nllSlack) },
    "nll-target": { type: "string", default: "real" },
    "lm-top": { type: "string", default: "8" },
    "target-weight": { type: "string", default: String(NLL_TARGET_WEIGHT) },
    proposals: { type: "string", default: String(LM_REFINE_DEFAULTS.proposals) },
    "refine-outer": { type: "string" },
    "shared": { type: "string", default: "../shared" },
    out: { type: "string", default: "docs/quality/cpu" },
    merge: { type: "string" },
  },
});
const v = args.values;
// --paper: the paper's outer/inner/init (30/50/500) where not given, and synth's paper-size split
// for lm-guided (a GPU visit); otherwise 10/20/50 unless given.
const outer = Number(v.outer ?? (v.paper ? PAPER_SETTINGS.outerSteps : 10));
const inner = Number(v.inner ?? (v.paper ? PAPER_SETTINGS.innerSteps : 20));
const init = Number(v.init ?? (v.paper ? PAPER_SETTINGS.initCandidates : 50));
// The refine methods' own outer steps (the rest of the budget goes to swap iterations): half the
// official run's unless --refine-outer moves the split.
const refineOuter = v["refine-outer"] === undefined ? Math.ceil(outer / 2) : Number(v["refine-outer"]);
if (!Number.isInteger(refineOuter) || refineOuter < 1 || refineOuter > outer) {
  throw new Error(
    `--refine-outer must be an integer from 1 to --outer (${outer}), got '${v["refine-outer"]}'`,
  );
}
const batch = Number(v.batch), rounds = Number(v.rounds), seed = Number(v.seed);
const refineLmBase: LmRefineSettings = {
  ...LM_REFINE_DEFAULTS,
  lambda: Number(v.lambda),
  nllSlack: Number(v["lm-slack"]),
  proposals: Number(v.proposals),
};
const blend = { beta: Number(v.beta), lmTop: BLEND_LM_TOP, noRepeat: v["no-repeat"]! };
const startedAt = new Date().toISOString();
const rows: Row[] = [];
// --merge a.json,b.json: no measuring, only the report of those files' rows (a later file's row
// replaces an earlier one of the same model, task and method).
const merged = v.merge ? await mergeReports(v.merge.split(",")) : null;
const gpu = merged ? null : await defaultContext();

for (const modelName of merged ? [] : v.models!.split(",")) {
  const ctx = gpu!;
  const { model, tokenizer: codec } = await openModel(ctx, join(v.shared!, "models", `gpt2-${modelName}`));
  for (const taskName of v.tasks!.split(",")) {
    const task = getTask(taskName);
    const dataPath = join(v.shared!, "data", taskName, "validation.jsonl");
    const data = parseJsonl(await Deno.readTextFile(dataPath), { source: dataPath });
    const base = {
      task,
      realPool: 100,
      real: 50,
      perClass: batch * rounds,
      batch,
      rhos: [0.7],
      topk: 200,
      length: 0,
      seed,
    };
    const { pool, byClass, used } = selectReal(task, data, base);
    const allReal = data.map((e) => e.text);
    const labelIds = task.labelWords.map((w) => codec.encode(w)[0]);

    const measure = (
      method: string,
      passes: number,
      texts: string[],
      labels: number[],
      losses: number[],
      nll: number[],
      seconds: number,
    ) => {
      const nearest = texts.map((t, i) => nearestReferenceSimilarity([t], byClass[labels[i]])[0]);
      // A held-out real sentence is in the data itself: compare it with every other example.
      const copied = texts.map((t) => longestCopiedRuns([t], allReal.filter((r) => r !== t))[0]);
      const row: Row = {
        model: `gpt2-${modelName}`,
        task: taskName,
        method,
        passes,
        texts: texts.length,
        matchLoss: mean(losses),
        nll: mean(nll),
        distinct1: distinctN(texts, 1),
        distinct2: distinctN(texts, 2),
        repetition: repetitionRate(texts),
        nearestReal: mean(nearest),
        longestCopy: Math.max(...copied),
        copies: copied.filter((c) => c >= COPY_WORDS).length,
        seconds,
        example: texts[0],
        texts_all: texts,
        run: startedAt,
      };
      rows.push(row);
      console.error(JSON.stringify({ ...row, texts_all: undefined }));
    };

    // ---- reference: held-out real sentences of the same classes, in batches of `batch`
    {
      const heldOut = pool.slice(base.real);
      const texts: string[] = [], labels: number[] = [], losses: number[] = [];
      for (let c = 0; c < task.labelWords.length; c++) {
        const mine = heldOut.filter((e) => e.label === c).map((e) => e.text);
        const usable = mine.slice(0, Math.floor(mine.length / batch) * batch);
        if (usable.length === 0) continue;
        const rowsC = byClass[c].map((t) => codec.encode(t + task.suffix));
        const { target } = await computeTarget(model, rowsC, labelIds[c], codec.padId);
        try {
          const encoded = usable.map((t) => codec.encode(t + task.suffix));
          const { residuals, hidden } = await lastLayerFactors(
            model,
            encoded,
            encoded.map(() => labelIds[c]),
            codec.padId,
          );
          residuals.dispose();
          for (let s = 0; s < usable.length; s += batch) {
            const loss = await noGrad(ctx, () =>
              scope(ctx, () =>
                matchingLoss(
                  target,
                  slice(hidden, 0, s, s + batch),
                  { weight: model.headRows, bias: model.headBias },
                  oneHot(ctx, new Array(batch).fill(labelIds[c]), model.headRows.shape[0]),
                ).item()));
            for (let i = 0; i < batch; i++) losses.push(Math.max(0, loss));
          }
          hidden.dispose();
        } finally {
          disposeTarget(target);
        }
        texts.push(...usable);
        labels.push(...usable.map(() => c));
      }
      const nll = await sequenceMeanNll(model, texts.map((t) => codec.encode(t)));
      measure("real (held-out)", 0, texts, labels, losses, nll, 0);
      // The NLL reference: the whole split outside the examples the targets read, same classes.
      const usedTexts = new Set(used.map((e) => e.text));
      const rest = data.filter((e) => classOf(task, e.label) !== null && !usedTexts.has(e.text));
      const restNll = await sequenceMeanNll(model, rest.map((e) => codec.encode(e.text)), { batchSize: 32 });
      rows[rows.length - 1].nllSplit = mean(restNll.filter(Number.isFinite));
      console.error(JSON.stringify({ nllSplit: rows[rows.length - 1].nllSplit, texts: rest.length }));
    }

    // ---- methods
    const admmOf = (outerSteps: number, select: "total" | "discrete"): Omit<AdmmSettings, "rho"> => ({
      ...PAPER_SETTINGS,
      outerSteps,
      innerSteps: inner,
      initCandidates: init,
      select,
      freezeSuffixGradient: task.freezeSuffixGradient,
    });
    const official = admmPasses(admmOf(outer, "total"));
    // --methods "": the reference row alone.
    for (const method of v.methods!.split(",").filter((m) => m !== "")) {
      let admm: Omit<AdmmSettings, "rho">;
      let refine: RefineSettings | undefined;
      let refineLm: LmRefineSettings | undefined;
      if (method === "official") admm = admmOf(outer, "total");
      else if (method === "blend") admm = { ...admmOf(outer, "total"), blend };
      else if (method === "discrete") admm = admmOf(outer, "discrete");
      else if (method === "refine" || method === "refine-fluent") {
        // Half the outer steps, the rest of the budget refines. "refine" starts from the best
        // discrete projection; "refine-fluent" from the official decode and lets no row's NLL rise.
        const fluent = method === "refine-fluent";
        admm = admmOf(refineOuter, fluent ? "total" : "discrete");
        refine = {
          ...REFINE_DEFAULTS,
          nllSlack: fluent ? 0 : REFINE_DEFAULTS.nllSlack,
          iterations: iterationsWithin(official, admm, "refine"),
        };
      } else if (["refine-lm", "blend-lm", "refine-target", "blend-target"].includes(method)) {
        // The official (or blend) decode at half the outer steps, then LM-aware swaps for
        // loss + λ·NLL.
        admm = admmOf(refineOuter, "total");
        if (method.startsWith("blend")) admm.blend = blend;
        refineLm = {
          ...refineLmBase,
          iterations: iterationsWithin(official, admm, "refine-lm"),
        };
        // "-target": aim the NLL at the real examples' own, with the LM's top tokens as candidates.
        if (method.endsWith("-target")) {
          refineLm = {
            ...refineLm,
            nllTarget: parseNllTarget(v["nll-target"]!),
            lmTop: Number(v["lm-top"]),
            targetWeight: Number(v["target-weight"]),
          };
        }
      } else if (method === "lm-guided") {
        // synth's default, with the settings synth itself resolves: its CPU split (one outer step)
        // unless --refine-outer gives another, the rest of the budget in swap iterations.
        const outerSteps = v["refine-outer"] !== undefined
          ? refineOuter
          : Math.min(outer, (v.paper ? SYNTH_DEFAULTS : CPU_SYNTH_DEFAULTS).lmGuided.outerSteps);
        const { options } = resolveSynthSettings({
          method: "lm-guided",
          outerSteps,
          innerSteps: inner,
          initCandidates: init,
          refineIterations: iterationsWithin(official, admmOf(outerSteps, "total"), "refine-lm"),
          task,
        }, false);
        admm = options.admm;
        refineLm = options.refineLm;
      } else throw new Error(`unknown method '${method}'`);
      const options: SynthOptions = { ...base, admm, refine, refineLm };
      const records: SynthRecord[] = [];
      const t0 = performance.now();
      await runSynth(model, codec, data, options, () => false, (e) => {
        if (e.kind === "round") records.push(...e.records);
      });
      const passes = roundPasses(admm, refine, refineLm);
      measure(
        methodLabel(method, admm.blend, refineLm) +
          ((v["refine-outer"] !== undefined || method === "lm-guided") && (refine || refineLm)
            ? ` [${admm.outerSteps} outer + ${(refine ?? refineLm)!.iterations} swap it.]`
            : ""),
        passes * rounds * task.labelWords.length,
        records.map((r) => r.text),
        records.map((r) => r.label),
        records.map((r) => r.match_loss),
        records.map((r) => r.nll),
        (performance.now() - t0) / 1000,
      );
    }
  }
  model.dispose();
}

// ---- report
/** Rows of earlier reports, keyed by model, task and method; later files win, in the first order. */
async function mergeReports(files: string[]) {
  const byKey = new Map<string, Row>();
  let last: { adapter: string; settings: unknown } | null = null;
  for (const file of files) {
    const report = JSON.parse(await Deno.readTextFile(file));
    const fallbackRun = (await Deno.stat(file)).mtime?.toISOString() ?? "unknown";
    for (const row of report.rows as Row[]) {
      byKey.set(`${row.model}|${row.task}|${row.method}`, { ...row, run: row.run ?? fallbackRun });
    }
    last = report;
  }
  return { ...last!, rows: [...byKey.values()] }; // a replaced row keeps its place
}

/** The issue's goal for a method row against the real and official rows of its model and task. */
function goal(r: Row, all: Row[]): string {
  const same = (m: string) => all.find((o) => o.model === r.model && o.task === r.task && o.method === m);
  const real = same("real (held-out)"), official = same("official");
  if (!real || !official || r === real || r === official) return "";
  const misses = [
    r.matchLoss <= 0.5 * official.matchLoss ? "" : "loss",
    r.nll <= (real.nllSplit ?? real.nll) + 0.3 ? "" : "NLL",
    r.distinct2 >= 0.9 * real.distinct2 ? "" : "distinct-2",
    r.copies === 0 ? "" : "copies",
  ].filter((x) => x);
  return misses.length === 0 ? "met" : `missed: ${misses.join(", ")}`;
}

if (merged) rows.push(...merged.rows);
const adapter = merged ? merged.adapter : gpu!.adapterName;
const f = (x: number, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : "–");
const settings = merged ? merged.settings : {
  outer,
  inner,
  init,
  rounds,
  batch,
  seed,
  refine: REFINE_DEFAULTS,
  refineLm: refineLmBase,
  blend,
  copyWords: COPY_WORDS,
};
const runs = [...new Set(rows.map((r) => r.run ?? startedAt))];
const lines = [
  `# Synthetic-text quality at equal passes (${adapter})`,
  "",
  `Settings${merged ? " (of the last run merged)" : ""}: ${
    JSON.stringify(settings)
  }; a method's own settings (β, λ, NLL target; lm-guided's and any --refine-outer split of outer steps and swaps) are in its label. Generated by \`deno task quality\` (bench/quality.ts)${
    merged ? `, rows merged from ${runs.length} run(s) (column "run": when each was measured)` : ""
  }. Goal (issue 14): match loss ≤ 0.5× official, NLL ≤ real + 0.3, distinct-2 ≥ 0.9× real, no copies; the NLL reference is the real row's "split NLL" (the whole validation split outside the examples the targets read) where measured, else its NLL.`,
  "",
  "| model | task | method | passes | texts | match loss | NLL | split NLL | distinct-1 | distinct-2 | repetition | nearest real | longest copy | copies | goal | s | run | example |",
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ...rows.map((r) =>
    `| ${r.model} | ${r.task} | ${r.method} | ${r.passes} | ${r.texts} | ${f(r.matchLoss, 4)} | ${
      f(r.nll, 3)
    } | ${r.nllSplit === undefined ? "" : f(r.nllSplit, 3)} | ${f(r.distinct1, 2)} | ${f(r.distinct2, 4)} | ${
      f(r.repetition, 2)
    } | ${f(r.nearestReal, 2)} | ${r.longestCopy} | ${r.copies} | ${goal(r, rows)} | ${f(r.seconds, 0)} | ${
      (r.run ?? startedAt).slice(0, 16)
    } | ${r.example.slice(0, 80).replaceAll("|", "/")} |`
  ),
  "",
];
await Deno.mkdir(join(v.out!, ".."), { recursive: true });
await writeFileAtomic(`${v.out}.md`, lines.join("\n"));
await writeFileAtomic(`${v.out}.json`, JSON.stringify({ adapter, settings, rows }, null, 2) + "\n");
console.log(lines.join("\n"));
