/**
 * `filter`: the official post-filtering of synthetic texts (gradmm-spec.md §7): label
 * consistency under a few-shot classifier, per-text gradient-alignment scores against the real
 * class targets, per-label dedupe + top-n by score + α·nll, and optional class balancing.
 */
import { stratifiedSample } from "../admm/data.ts";
import { selectReal, sequenceNll } from "../admm/synth.ts";
import { computeTarget, disposeTarget } from "../admm/target.ts";
import { classOf, getTask } from "../admm/tasks.ts";
import { createContext } from "../kernels/device.ts";
import { scoreExamples, tokenizeExamples } from "../train/finetune.ts";
import {
  alignmentLosses,
  balanceByAverage,
  type Candidate,
  cleanText,
  metricOf,
  type Removed,
  selectTop,
} from "../train/filter.ts";
import { type Command, numberFlag, parseFlags, UsageError } from "./args.ts";
import { readText, writeFileAtomic } from "./io.ts";
import { readLabelled } from "./finetune.ts";
import { openModel } from "./model.ts";

const HELP = `Usage: cli.ts filter --model M --task T --in synthetic.jsonl --real F.jsonl --out filtered.jsonl [flags]

Filters synthetic texts as the official GRADMM notebook does:
  (a) clean each text and drop it when the model, classifying it few-shot (--shots demonstrations
      from --real, the task's evaluation template), predicts another label;
  (b) score each survivor by 1 − cos between its own output-layer gradient ("text + suffix" → label
      word) and its class's target built from the first --real-n examples of the stratified real pool;
  (c) per label: drop duplicates, rank by score + α·nll, keep the best --top-n;
  (d) with --balance: the class with the worse mean metric drops its worst texts until its mean is
      no worse than the other class's.
Writes the kept records (best first per label, with align_loss and filter_metric added) and a
summary <out>.filter.json; prints what each stage removed.

  --model DIR|ORG/NAME[@REV]  model (the one that generated the texts)
  --task NAME             sst2 | rotten_tomatoes | imdb | emotion (default sst2)
  --in F.jsonl            synthetic texts ({text, label, nll?}; synth output)
  --real F.jsonl          real labelled examples (targets and demonstrations)
  --out F.jsonl           filtered output
  --top-n N               texts kept per label (default 50)
  --alpha X               weight of the text's mean NLL in the ranking metric (default 0)
  --real-n N              real examples building the targets (default 20, the notebook's)
  --real-pool N           stratified pool they are the first of (default 100)
  --seed N                seed of the pool and the demonstrations (default 42, as synth)
  --shots K               demonstrations for the consistency check (default 4)
  --no-consistency        skip stage (a)
  --balance               stage (d)
  --batch N               texts per forward (default 16)
  --text-field NAME, --label-field NAME   fields of --real`;

/** What each stage did, per label (written to the summary and printed). */
export interface FilterSummary {
  input: number;
  perLabel: Record<string, {
    input: number;
    empty: number;
    inconsistent: number;
    duplicates: number;
    beyondTopN: number;
    balanced: number;
    kept: number;
    meanAlignLoss: number;
  }>;
  kept: number;
  settings: Record<string, unknown>;
}

export const filterCommand: Command = {
  name: "filter",
  summary: "filter synthetic texts (label consistency, gradient alignment, top-n, balancing)",
  help: HELP,
  async run(args) {
    const { values: v } = parseFlags("filter", args, {
      model: { type: "string" },
      task: { type: "string" },
      in: { type: "string" },
      real: { type: "string" },
      out: { type: "string" },
      "top-n": { type: "string" },
      alpha: { type: "string" },
      "real-n": { type: "string" },
      "real-pool": { type: "string" },
      seed: { type: "string" },
      shots: { type: "string" },
      "no-consistency": { type: "boolean" },
      balance: { type: "boolean" },
      batch: { type: "string" },
      "text-field": { type: "string" },
      "label-field": { type: "string" },
    });
    if (v.help) {
      console.log(HELP);
      return 0;
    }
    const num = (name: string, fallback: number, opts?: Parameters<typeof numberFlag>[4]) =>
      numberFlag("filter", name, (v as Record<string, unknown>)[name], fallback, opts);
    for (const f of ["model", "in", "real", "out"] as const) {
      if (!v[f]) throw new UsageError(`filter: --${f} is required`);
    }
    const task = getTask(v.task ?? "sst2");
    const topN = num("top-n", 50, { min: 1, integer: true });
    const alpha = num("alpha", 0, { min: 0 });
    const realN = num("real-n", 20, { min: 1, integer: true });
    const realPool = num("real-pool", 100, { min: 1, integer: true });
    const seed = num("seed", 42, { min: 0, integer: true });
    const shots = num("shots", 4, { min: 0, max: 64, integer: true });
    const batch = num("batch", 16, { min: 1, max: 1024, integer: true });
    const consistency = !v["no-consistency"];

    // ---- inputs (raw records are kept so every field of the input survives)
    const inPath = v.in!;
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
    const real = await readLabelled(v.real!, task, "real data file", { textField: v["text-field"], labelField: v["label-field"] });
    const { byClass } = selectReal(task, real.examples, { realPool, real: Math.min(realN, realPool), seed });
    const demos = shots > 0 ? stratifiedSample(real.examples, shots, seed) : [];

    const labels = task.labelWords.map((_, c) => c);
    const stats = labels.map(() => ({ input: 0, empty: 0, inconsistent: 0, duplicates: 0, beyondTopN: 0, balanced: 0, kept: 0, meanAlignLoss: NaN }));
    let cands: Candidate[] = [];
    raw.forEach((rec, index) => {
      const c = classOf(task, rec.label as number);
      if (c === null) return;
      stats[c].input++;
      const text = cleanText(rec.text as string);
      if (!text) {
        stats[c].empty++;
        return;
      }
      cands.push({ index, text, label: c, score: NaN, nll: typeof rec.nll === "number" ? rec.nll : NaN });
    });
    const skipped = raw.length - stats.reduce((a, s) => a + s.input, 0);
    if (skipped) console.error(`filter: ${skipped} record(s) with labels outside task ${task.name} skipped`);

    const ctx = await createContext();
    const { model, tokenizer } = await openModel(ctx, v.model!);

    // ---- (a) label consistency
    if (consistency && cands.length > 0) {
      const scored = tokenizeExamples(tokenizer, task, cands, demos);
      const scores = await scoreExamples(model, scored, tokenizer.padId, { batchSize: batch });
      cands = cands.filter((c, i) => {
        const s = scores[i];
        const pred = s.indexOf(Math.max(...s));
        // Ties (equal scores) are "undefined" in the notebook and dropped.
        const ok = pred === c.label && s.filter((x) => x === s[pred]).length === 1;
        if (!ok) stats[c.label].inconsistent++;
        return ok;
      });
    }

    // ---- (b) alignment with the class targets
    const labelIds = task.labelWords.map((w) => tokenizer.encode(w)[0]);
    for (const c of labels) {
      const mine = cands.filter((x) => x.label === c);
      if (mine.length === 0) continue;
      const rows = byClass[c].map((t) => tokenizer.encode(t + task.suffix));
      const { target } = await computeTarget(model, rows, labelIds[c], tokenizer.padId);
      try {
        const losses = await alignmentLosses(
          model,
          target,
          mine.map((x) => tokenizer.encode(x.text + task.suffix)),
          labelIds[c],
          tokenizer.padId,
          batch,
        );
        mine.forEach((x, i) => (x.score = losses[i]));
      } finally {
        disposeTarget(target);
      }
    }
    if (alpha > 0) {
      const missing = cands.filter((x) => !Number.isFinite(x.nll));
      for (let s = 0; s < missing.length; s += batch) {
        const part = missing.slice(s, s + batch);
        const nll = await sequenceNll(model, part.map((x) => tokenizer.encode(x.text)), tokenizer.padId);
        part.forEach((x, i) => (x.nll = nll[i]));
      }
    }

    // ---- (c) dedupe + top-n, (d) balance
    const top = selectTop(cands, topN, alpha);
    let groups = top.byLabel;
    let balanced: Removed = {};
    if (v.balance) ({ byLabel: groups, removed: balanced } = balanceByAverage(groups, alpha));
    const out: Record<string, unknown>[] = [];
    for (const c of labels) {
      const kept = groups.get(c) ?? [];
      const s = stats[c];
      s.duplicates = top.duplicates[c] ?? 0;
      s.beyondTopN = top.beyondTop[c] ?? 0;
      s.balanced = balanced[c] ?? 0;
      s.kept = kept.length;
      s.meanAlignLoss = kept.length ? kept.reduce((a, x) => a + x.score, 0) / kept.length : NaN;
      for (const x of kept) {
        out.push({ ...raw[x.index], text: x.text, align_loss: x.score, filter_metric: metricOf(x, alpha) });
      }
    }
    model.dispose();

    const outPath = v.out!;
    await writeFileAtomic(outPath, out.map((r) => JSON.stringify(r)).join("\n") + (out.length ? "\n" : ""));
    const summary: FilterSummary = {
      input: raw.length,
      perLabel: Object.fromEntries(labels.map((c) => [task.labelWords[c], stats[c]])),
      kept: out.length,
      settings: { model: v.model, task: task.name, in: inPath, real: v.real, topN, alpha, realN, realPool, seed, shots, consistency, balance: !!v.balance },
    };
    await writeFileAtomic(outPath.replace(/\.jsonl$/, "") + ".filter.json", JSON.stringify(summary, null, 2) + "\n");

    console.error("filter stages (removed per label):");
    console.error("  label      input  empty  inconsistent  duplicates  beyond-top-n  balance  kept  mean 1-cos");
    for (const c of labels) {
      const s = stats[c];
      console.error(
        `  ${task.labelWords[c].padEnd(9)} ${String(s.input).padStart(6)} ${String(s.empty).padStart(6)} ` +
          `${String(consistency ? s.inconsistent : "-").padStart(13)} ${String(s.duplicates).padStart(11)} ` +
          `${String(s.beyondTopN).padStart(13)} ${String(v.balance ? s.balanced : "-").padStart(8)} ${String(s.kept).padStart(5)}  ` +
          `${Number.isNaN(s.meanAlignLoss) ? "-" : s.meanAlignLoss.toFixed(4)}`,
      );
    }
    console.log(`kept: ${out.length} of ${raw.length} texts -> ${outPath}`);
    return 0;
  },
};
