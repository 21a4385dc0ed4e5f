/**
 * Post-filtering of synthetic texts as the official notebook runs it (docs/algorithm.md#filtering):
 *
 *   (a) clean each text and keep it only if the model, classifying it few-shot, predicts its label;
 *   (b) score each survivor by 1 − cos between its own output-layer gradient ("text + suffix" →
 *       label word, a batch of one) and its class's target from the first `realN` real examples;
 *   (c) per label: drop duplicates, rank by score + α·nll, keep the best `topN`;
 *   (d) optionally balance the classes by average metric: the class with the worse mean drops its
 *       worst texts until its mean is no worse than the other's.
 *
 * Stages (c) and (d) are pure functions of numbers ({@link selectTop}, {@link balanceByAverage});
 * (a) and (b) run the model. Differences from the official code: the few-shot classifier is the
 * task's own evaluation template and label words with demonstrations from the real data (the
 * notebook uses phi-1.5 with "Input: …\nLabel: positive"), the cleaning leaves digits alone (the
 * notebook's regexes delete every "2" and "3" and the character after it), and nll is the text's
 * own mean NLL (the notebook uses the generation batch's perplexity).
 */
import { mul } from "../autograd/ops/elementwise.ts";
import { matmul } from "../autograd/ops/matmul.ts";
import { sum } from "../autograd/ops/reduce.ts";
import { scope } from "../autograd/tensor.ts";
import type { CausalLM } from "../models/model.ts";
import type { TargetGradient } from "../admm/matching.ts";
import { computeTarget, disposeTarget, lastLayerFactors } from "../admm/target.ts";
import { type Example, stratifiedSample } from "../data/examples.ts";
import { selectReal } from "../data/examples.ts";
import { sequenceMeanNll } from "../models/perplexity.ts";
import type { TaskSpec } from "../data/tasks.ts";
import { scoreExamples, tokenizeExamples } from "./finetune.ts";
import { noGrad } from "../autograd/grad_mode.ts";

/**
 * The filter's privacy status: stages (a) and (b) read raw real examples (few-shot demonstrations
 * and a clean target), so its output has no differential-privacy guarantee even when its input
 * came from a DP synth run.
 */
export const FILTER_PRIVACY = {
  private: false,
  reason: "the filter reads raw real examples (classifier demonstrations and an un-noised target), " +
    "so its output carries no differential-privacy guarantee, whatever its input's",
} as const;

/**
 * The notebook's `clean_text` without its digit-eating bug: removes newlines, `<|endoftext|>`,
 * double quotes, "###" and "...", cuts at the first "You" or "Exercise" (phi-1.5's habits), and
 * tidies spaces.
 */
export function cleanText(text: string): string {
  let t = text.replaceAll("<|endoftext|>", " ").replace(/[\r\n]+/g, " ").replaceAll('"', "").replaceAll(
    "###",
    "",
  )
    .replaceAll("...", "");
  for (const stop of ["You", "Exercise"]) {
    const i = t.indexOf(stop);
    if (i >= 0) t = t.slice(0, i);
  }
  return t.replace(/\s+/g, " ").trim();
}

/** One candidate text in the ranking stages. */
export interface Candidate {
  /** Position in the input (to recover the record). */
  index: number;
  text: string;
  label: number;
  /** 1 − cos to the class target (stage b). */
  score: number;
  /** Mean NLL of the text (nats/token), used with weight α. */
  nll: number;
}

/** Per-label counts of what a stage removed. */
export type Removed = Record<number, number>;

/** The ranking metric of stage (c): score + α·nll (α = 0 ignores nll, even when it is NaN). */
export function metricOf(c: Candidate, alpha: number): number {
  return alpha === 0 ? c.score : c.score + alpha * c.nll;
}

/**
 * Stage (c): per label, drop texts identical to an earlier one, sort by metric (ascending; input
 * order breaks ties) and keep the best `topN`. Returns the kept candidates grouped by label (best
 * first) and what was removed.
 */
export function selectTop(
  candidates: readonly Candidate[],
  topN: number,
  alpha: number,
): { byLabel: Map<number, Candidate[]>; duplicates: Removed; beyondTop: Removed } {
  const byLabel = new Map<number, Candidate[]>();
  const duplicates: Removed = {};
  const beyondTop: Removed = {};
  const labels = [...new Set(candidates.map((c) => c.label))].sort((a, b) => a - b);
  for (const label of labels) {
    const seen = new Set<string>();
    const unique: Candidate[] = [];
    duplicates[label] = 0;
    for (const c of candidates) {
      if (c.label !== label) continue;
      if (seen.has(c.text)) {
        duplicates[label]++;
        continue;
      }
      seen.add(c.text);
      unique.push(c);
    }
    const ranked = unique
      .map((c) => ({ c, m: metricOf(c, alpha) }))
      .sort((a, b) => cmpMetric(a.m, b.m) || a.c.index - b.c.index)
      .map((x) => x.c);
    beyondTop[label] = Math.max(0, ranked.length - topN);
    byLabel.set(label, ranked.slice(0, topN));
  }
  return { byLabel, duplicates, beyondTop };
}

/** Ascending order with NaN last. */
function cmpMetric(a: number, b: number): number {
  if (Number.isNaN(a)) return Number.isNaN(b) ? 0 : 1;
  if (Number.isNaN(b)) return -1;
  return a - b;
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/**
 * Stage (d), `balance_classes_by_average_score`: while a class's mean metric is above the lowest
 * class mean, it drops its worst text (the one that brings it across the threshold included).
 * Every class keeps at least one text: when one text is left and still worse, it stays (the
 * official loop would empty the class). Groups must be sorted best first (as {@link selectTop}
 * returns them); returns new arrays and what was removed.
 */
export function balanceByAverage(
  byLabel: ReadonlyMap<number, readonly Candidate[]>,
  alpha: number,
): { byLabel: Map<number, Candidate[]>; removed: Removed } {
  const out = new Map<number, Candidate[]>();
  const removed: Removed = {};
  const nonEmpty = [...byLabel.values()].filter((g) => g.length > 0);
  const threshold = nonEmpty.length
    ? Math.min(...nonEmpty.map((g) => mean(g.map((c) => metricOf(c, alpha)))))
    : 0;
  for (const [label, group] of byLabel) {
    const kept = [...group];
    removed[label] = 0;
    while (kept.length > 1 && mean(kept.map((c) => metricOf(c, alpha))) > threshold) {
      kept.pop();
      removed[label]++;
    }
    out.set(label, kept);
  }
  return { byLabel: out, removed };
}

/**
 * Stage (b): 1 − cos between each text's own output-layer gradient (a batch of one: r hᵀ for the
 * weight, r for the bias) and `target`, for tokenised texts `rows` (text + suffix) with label
 * token `labelId`. Equal to `matchingLoss` with a batch of one, computed for `chunk` texts per
 * forward from Gram products (no V×d matrix).
 */
export async function alignmentLosses(
  model: CausalLM,
  target: TargetGradient,
  rows: number[][],
  labelId: number,
  padId: number,
  chunk = 16,
): Promise<number[]> {
  if (target.noise) throw new RangeError("alignmentLosses: a noised (DP) target is not supported");
  const ctx = model.ctx;
  const n = target.residuals.shape[0];
  const normW2T = (await target.normW2.read())[0];
  const normB2T = target.normB2 ? (await target.normB2.read())[0] : null;
  const out: number[] = [];
  for (let start = 0; start < rows.length; start += chunk) {
    const part = rows.slice(start, start + chunk);
    const { residuals, hidden } = await lastLayerFactors(model, part, part.map(() => labelId), padId, chunk);
    const [dotW, dotB, rn, hn] = await scope(ctx, async () => {
      const products = noGrad(ctx, () => {
        const rsr = matmul(target.residuals, residuals, { transB: true }); // [N, B]
        const hsh = matmul(target.hidden, hidden, { transB: true });
        return [
          sum(mul(rsr, hsh), 0),
          sum(rsr, 0),
          sum(mul(residuals, residuals), 1),
          sum(mul(hidden, hidden), 1),
        ];
      });
      const values: Float32Array[] = [];
      for (const t of products) values.push(await t.read());
      return values;
    });
    residuals.dispose();
    hidden.dispose();
    for (let i = 0; i < part.length; i++) {
      const cosW = dotW[i] / n / Math.sqrt(rn[i] * hn[i] * normW2T);
      if (normB2T === null) {
        out.push(1 - cosW);
      } else {
        const cosB = dotB[i] / n / Math.sqrt(rn[i] * normB2T);
        out.push(1 - 0.5 * (cosW + cosB));
      }
    }
  }
  return out;
}

/** Settings of {@link filterSynthetic} (the filter command's flags). */
export interface FilterOptions {
  /** Texts kept per label (--per-class, 50; the notebook's top-n). */
  topN: number;
  /** Weight of the mean NLL in the ranking metric (--alpha, 0). */
  alpha: number;
  /** Real examples building each class target: the first `realN` of the stratified pool (--real-n, 20). */
  realN: number;
  /** Size of that pool (--real-pool, 100). */
  realPool: number;
  /** Seed of the pool and the demonstrations (--seed, 42). */
  seed: number;
  /** Demonstrations of the few-shot consistency check (--shots, 4). */
  shots: number;
  /** Run stage (a). */
  consistency: boolean;
  /**
   * Stage (a) with the classifier's prior removed: each option's mean score over all texts is
   * subtracted before the argmax. Not in the official code; small models tend to predict one
   * label for everything, and the uncalibrated check then deletes the other class entirely.
   */
  calibrate: boolean;
  /** Run stage (d). */
  balance: boolean;
  /** Texts per forward. */
  batch: number;
}

/** The official notebook's settings (docs/algorithm.md#filtering). */
export const FILTER_DEFAULTS: FilterOptions = {
  topN: 50,
  alpha: 0,
  realN: 20,
  realPool: 100,
  seed: 42,
  shots: 4,
  consistency: true,
  calibrate: false,
  balance: false,
  batch: 16,
};

/** A synthetic text to filter; `label` is a class index. */
export interface FilterInput {
  text: string;
  label: number;
  /** Its mean NLL if known (synth records carry it); computed when α > 0 and missing. */
  nll?: number;
}

/** Per-class counts of each stage. */
export interface StageCounts {
  input: number;
  empty: number;
  inconsistent: number;
  duplicates: number;
  beyondTopN: number;
  balanced: number;
  kept: number;
  /** Mean 1 − cos of the kept texts. */
  meanAlignLoss: number;
}

/** A kept text: its input position, cleaned text, class, score and metric. */
export interface KeptText {
  index: number;
  text: string;
  label: number;
  alignLoss: number;
  metric: number;
}

/** The tokenizer operations filtering needs. */
export interface FilterCodec {
  encode(text: string): number[];
  padId: number;
}

/**
 * Runs stages (a)–(d) on `inputs` with `real` (class-indexed real examples) for the targets and
 * demonstrations. Returns the kept texts grouped by class, best first, and per-class counts.
 */
export async function filterSynthetic(
  model: CausalLM,
  codec: FilterCodec,
  task: TaskSpec,
  inputs: readonly FilterInput[],
  real: readonly Example[],
  o: FilterOptions,
): Promise<{ kept: KeptText[]; stats: StageCounts[] }> {
  const classes = task.labelWords.length;
  const stats: StageCounts[] = Array.from({ length: classes }, () => ({
    input: 0,
    empty: 0,
    inconsistent: 0,
    duplicates: 0,
    beyondTopN: 0,
    balanced: 0,
    kept: 0,
    meanAlignLoss: NaN,
  }));
  let cands: Candidate[] = [];
  inputs.forEach((x, index) => {
    if (!(Number.isInteger(x.label) && x.label >= 0 && x.label < classes)) {
      throw new RangeError(
        `filterSynthetic: input ${index} has label ${x.label}, not a class of task ${task.name}`,
      );
    }
    stats[x.label].input++;
    const text = cleanText(x.text);
    if (!text) stats[x.label].empty++;
    else {cands.push({
        index,
        text,
        label: x.label,
        score: NaN,
        nll: typeof x.nll === "number" ? x.nll : NaN,
      });}
  });
  const { byClass } = selectReal(task, [...real], {
    realPool: o.realPool,
    real: Math.min(o.realN, o.realPool),
    seed: o.seed,
  });

  // (a) label consistency under the few-shot classifier.
  if (o.consistency && cands.length > 0) {
    const demos = o.shots > 0 ? stratifiedSample([...real], o.shots, o.seed) : [];
    const scores = await scoreExamples(model, tokenizeExamples(codec, task, cands, demos), codec.padId, {
      batchSize: o.batch,
    });
    const prior = task.labelWords.map((
      _,
      k,
    ) => (o.calibrate ? scores.reduce((a, s) => a + s[k], 0) / scores.length : 0));
    cands = cands.filter((c, i) => {
      const s = scores[i].map((x, k) => x - prior[k]);
      const best = Math.max(...s);
      // Ties are "undefined" in the notebook, hence inconsistent.
      const ok = s[c.label] === best && s.filter((x) => x === best).length === 1;
      if (!ok) stats[c.label].inconsistent++;
      return ok;
    });
  }

  // (b) alignment of each text's gradient with its class target.
  for (let c = 0; c < classes; c++) {
    const mine = cands.filter((x) => x.label === c);
    if (mine.length === 0) continue;
    const labelId = codec.encode(task.labelWords[c])[0];
    const rows = byClass[c].map((t) => codec.encode(t + task.suffix));
    const { target } = await computeTarget(model, rows, labelId, codec.padId);
    try {
      const losses = await alignmentLosses(
        model,
        target,
        mine.map((x) => codec.encode(x.text + task.suffix)),
        labelId,
        codec.padId,
        o.batch,
      );
      mine.forEach((x, i) => (x.score = losses[i]));
    } finally {
      disposeTarget(target);
    }
  }
  if (o.alpha > 0) {
    const missing = cands.filter((x) => !Number.isFinite(x.nll));
    for (let s = 0; s < missing.length; s += o.batch) {
      const part = missing.slice(s, s + o.batch);
      const nll = await sequenceMeanNll(model, part.map((x) => codec.encode(x.text)));
      part.forEach((x, i) => (x.nll = nll[i]));
    }
  }

  // (c) dedupe + top-n, (d) balance.
  const top = selectTop(cands, o.topN, o.alpha);
  let groups = top.byLabel;
  let balanced: Removed = {};
  if (o.balance) ({ byLabel: groups, removed: balanced } = balanceByAverage(groups, o.alpha));
  const kept: KeptText[] = [];
  for (let c = 0; c < classes; c++) {
    const g = groups.get(c) ?? [];
    const s = stats[c];
    s.duplicates = top.duplicates[c] ?? 0;
    s.beyondTopN = top.beyondTop[c] ?? 0;
    s.balanced = balanced[c] ?? 0;
    s.kept = g.length;
    s.meanAlignLoss = g.length ? g.reduce((a, x) => a + x.score, 0) / g.length : NaN;
    for (const x of g) {
      kept.push({ index: x.index, text: x.text, label: c, alignLoss: x.score, metric: metricOf(x, o.alpha) });
    }
  }
  return { kept, stats };
}
