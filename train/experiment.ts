/**
 * The comparison experiment's data handling and bookkeeping, platform-neutral: how the splits are
 * drawn (so that nothing reported is ever used for selection), which texts each condition trains
 * on, readability measures, picking the learning rate on the validation split, and the summary
 * the report is drawn from. cli/experiment.ts runs the jobs and writes the files.
 *
 * Splits (docs/algorithm.md#splits, with the model selection moved off the test set):
 *   test split (e.g. SST-2 validation) → stratified pool of `realPool` (seed `poolSeed`); its first
 *     `real` examples are the only real data GRADMM sees; test = the rest (at most `testLimit`)
 *   train split → stratified validation holdout of `validSize` (checkpoint and lr selection);
 *     the remaining train examples are where the "real" condition draws its N texts
 * The "real-used" condition trains on the `real` examples GRADMM used, a set of fixed size: the
 * baseline "those few real examples alone" that the synthetic sets made from them must beat.
 */
import { type Example, stratifiedSample } from "../data/examples.ts";
import { deriveSeed } from "../data/seed.ts";
import { sequenceMeanNll } from "../models/perplexity.ts";
import type { CausalLM } from "../models/model.ts";
import { type Curve, meanStd } from "./report.ts";

/** What a condition trains on. */
export type Condition =
  | "real"
  | "real-used"
  | "gradmm"
  | "gradmm-official"
  | "gradmm-filtered"
  | "gradmm-dp"
  | "gradmm-dp-filtered";

/** Every condition, in report order. */
export const CONDITIONS: readonly Condition[] = [
  "real",
  "real-used",
  "gradmm",
  "gradmm-official",
  "gradmm-filtered",
  "gradmm-dp",
  "gradmm-dp-filtered",
];

/** Human names for the report (see {@link conditionName} for the ones with settings in them). */
export const CONDITION_NAMES: Record<Condition, string> = {
  real: "random real texts",
  "real-used": "the real examples GRADMM used",
  gradmm: "GRADMM texts",
  "gradmm-official": "GRADMM texts (official)",
  "gradmm-filtered": "GRADMM texts, filtered",
  "gradmm-dp": "GRADMM texts (DP)",
  "gradmm-dp-filtered": "GRADMM texts (DP), filtered",
};

/**
 * A condition's name in a report: {@link CONDITION_NAMES}, with the synth method of the GRADMM
 * conditions that follow --synth-method (when it is not the official one) and the fixed size of
 * "real-used" (`realN`), so two GRADMM rows of one report can be told apart.
 */
export function conditionName(c: Condition, o: { method?: string; realN?: number } = {}): string {
  if (c === "real-used") {
    return o.realN === undefined ? CONDITION_NAMES[c] : `${CONDITION_NAMES[c]} (N = ${o.realN})`;
  }
  const name = CONDITION_NAMES[c];
  const method = o.method ?? "official";
  if (synthVariant(c) === null || c === "gradmm-official" || method === "official") return name;
  return name.replace("GRADMM texts", `GRADMM texts (${method})`);
}

/** The synth runs conditions draw from: --synth-method's, the official method's, the DP one. */
export type SynthVariant = "gradmm" | "gradmm-official" | "gradmm-dp";

/** The synth run a GRADMM condition draws from, or null for the real-text conditions. */
export function synthVariant(c: Condition): SynthVariant | null {
  if (c === "real" || c === "real-used") return null;
  if (c === "gradmm-official") return "gradmm-official";
  return c.startsWith("gradmm-dp") ? "gradmm-dp" : "gradmm";
}

/**
 * The training-set sizes a condition runs at: every size of the curve, except "real-used", whose
 * set is always the `realN` real examples GRADMM used (one run per seed, whatever the sizes).
 */
export function sizesOf(c: Condition, sizes: readonly number[], realN: number): number[] {
  if (c !== "real-used") return [...sizes];
  if (!(Number.isInteger(realN) && realN > 0)) {
    throw new Error(`condition 'real-used' needs the number of real examples GRADMM used, got ${realN}`);
  }
  return [realN];
}

/** True for the filtered conditions. */
export function isFiltered(c: Condition): boolean {
  return c.endsWith("-filtered");
}

/** Settings of the splits. */
export interface SplitOptions {
  realPool: number;
  real: number;
  poolSeed: number;
  validSize: number;
  testLimit: number;
}

/** The data of an experiment. */
export interface Splits {
  /** The real examples GRADMM may use (first `real` of the pool). */
  used: Example[];
  /** Test examples: the test split minus the pool (reported, never used for selection). */
  test: Example[];
  /** Validation holdout from the train split (selection only). */
  valid: Example[];
  /** Train split minus the validation holdout (the "real" condition draws from it). */
  trainRest: Example[];
}

/** Raised for settings the data cannot satisfy; printed without a stack trace. */
export class ExperimentError extends Error {
  override name = "ExperimentError";
  readonly userFacing = true;
}

/** Draws the splits (deterministic for the same data and options). */
export function makeSplits(
  train: readonly Example[],
  testSplit: readonly Example[],
  o: SplitOptions,
): Splits {
  if (o.real > o.realPool) {
    throw new ExperimentError(`--real-n (${o.real}) cannot exceed --real-pool (${o.realPool})`);
  }
  if (testSplit.length <= o.realPool) {
    throw new ExperimentError(
      `the test file has ${testSplit.length} usable examples, not more than --real-pool ${o.realPool}`,
    );
  }
  if (train.length <= o.validSize) {
    throw new ExperimentError(
      `the train file has ${train.length} usable examples, not more than --valid-size ${o.validSize}`,
    );
  }
  // Wrap each example so identical texts stay distinct when the pool is removed.
  const tagged = testSplit.map((e, i) => ({ ...e, i }));
  const pool = stratifiedSample(tagged, o.realPool, o.poolSeed);
  const inPool = new Set(pool.map((e) => e.i));
  let rest = tagged.filter((e) => !inPool.has(e.i));
  if (rest.length > o.testLimit) rest = stratifiedSample(rest, o.testLimit, 0).sort((a, b) => a.i - b.i);
  const trainTagged = train.map((e, i) => ({ ...e, i }));
  const valid = stratifiedSample(trainTagged, o.validSize, deriveSeed(o.poolSeed, "valid"));
  const inValid = new Set(valid.map((e) => e.i));
  const strip = (e: Example & { i: number }): Example => ({ text: e.text, label: e.label });
  return {
    used: pool.slice(0, o.real).map(strip),
    test: rest.map(strip),
    valid: valid.map(strip),
    trainRest: trainTagged.filter((e) => !inValid.has(e.i)).map(strip),
  };
}

/** Texts per class for a training-set size (sizes split evenly; the last class may get fewer). */
export function perClassFor(size: number, classes: number): number {
  return Math.ceil(size / classes);
}

/**
 * The first `perClass` items of each class, in input order (synth writes rounds in order, so a
 * prefix of a bigger run is a smaller run of the same seed), at most `total` in all.
 */
export function firstPerClass<T extends { label: number }>(
  items: readonly T[],
  perClass: number,
  total = Infinity,
): T[] {
  const taken = new Map<number, number>();
  const out: T[] = [];
  for (const it of items) {
    const n = taken.get(it.label) ?? 0;
    if (n >= perClass) continue;
    taken.set(it.label, n + 1);
    out.push(it);
  }
  if (out.length <= total) return out;
  // Trim the surplus from the classes with the most texts, keeping input order.
  const counts = new Map<number, number>();
  for (const it of out) counts.set(it.label, (counts.get(it.label) ?? 0) + 1);
  let surplus = out.length - total;
  while (surplus > 0) {
    const [label] = [...counts.entries()].sort((a, b) => b[1] - a[1] || b[0] - a[0])[0];
    counts.set(label, counts.get(label)! - 1);
    surplus--;
  }
  const left = new Map<number, number>();
  return out.filter((it) => {
    const n = left.get(it.label) ?? 0;
    if (n >= counts.get(it.label)!) return false;
    left.set(it.label, n + 1);
    return true;
  });
}

/** Distinct n-grams over all n-grams of a set of token sequences (1 = no repetition at all). */
export function distinctN(sequences: readonly (readonly number[])[], n: number): number {
  const seen = new Set<string>();
  let total = 0;
  for (const s of sequences) {
    for (let i = 0; i + n <= s.length; i++) {
      seen.add(s.slice(i, i + n).join(","));
      total++;
    }
  }
  return total ? seen.size / total : NaN;
}

/** Readability measures of a set of texts under a model. */
export interface Readability {
  texts: number;
  /** Mean over texts of the per-token NLL (nats), the model's own tokens predicted from the ones before. */
  meanNll: number;
  /** exp(meanNll). */
  perplexity: number;
  distinct1: number;
  distinct2: number;
  meanTokens: number;
}

/** Mean NLL (under `model`) and repetition (distinct-1/2) of `texts`. */
export async function readability(
  model: CausalLM,
  codec: { encode(text: string): number[]; padId: number },
  texts: readonly string[],
  batch = 16,
): Promise<Readability> {
  const maxLength = model.config.maxPositions;
  const seqs = texts.map((t) => codec.encode(t).slice(0, maxLength));
  const nll: number[] = [];
  for (let s = 0; s < seqs.length; s += batch) {
    nll.push(...(await sequenceMeanNll(model, seqs.slice(s, s + batch))));
  }
  const finite = nll.filter(Number.isFinite);
  const meanNll = finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : NaN;
  return {
    texts: texts.length,
    meanNll,
    perplexity: Math.exp(meanNll),
    distinct1: distinctN(seqs, 1),
    distinct2: distinctN(seqs, 2),
    meanTokens: seqs.length ? seqs.reduce((a, s) => a + s.length, 0) / seqs.length : NaN,
  };
}

/** One fine-tuning run of the experiment. */
export interface RunResult {
  condition: Condition;
  size: number;
  seed: number;
  lr: number;
  /** Texts actually trained on (filtering can leave fewer than `size`). */
  trainTexts: number;
  /** Best validation accuracy and its step. */
  validAccuracy: number | null;
  bestStep: number;
  /** Test accuracy of the best-validation checkpoint. */
  testAccuracy: number;
  finalLoss: number;
  seconds: number;
}

/**
 * The run whose learning rate is chosen for a (condition, size, seed): the highest validation
 * accuracy (the smallest lr on ties). The test accuracy plays no part.
 */
export function selectByValidation(runs: readonly RunResult[]): RunResult | null {
  let best: RunResult | null = null;
  for (const r of runs) {
    const v = r.validAccuracy ?? -Infinity;
    const b = best ? (best.validAccuracy ?? -Infinity) : -Infinity;
    if (!best || v > b || (v === b && r.lr < best.lr)) best = r;
  }
  return best;
}

/**
 * The selected runs grouped into curves: per condition, per size ({@link sizesOf}: "real-used"
 * is one point at `realN`), mean ± std over seeds.
 */
export function summariseRuns(
  runs: readonly RunResult[],
  conditions: readonly Condition[],
  sizes: readonly number[],
  seeds: readonly number[],
  realN = NaN,
): { selected: RunResult[]; curves: (Curve & { condition: Condition })[] } {
  const selected: RunResult[] = [];
  const curves = conditions.map((condition) => ({
    condition,
    name: CONDITION_NAMES[condition],
    points: sizesOf(condition, sizes, realN).map((size) => {
      const acc: number[] = [];
      for (const seed of seeds) {
        const pick = selectByValidation(
          runs.filter((r) => r.condition === condition && r.size === size && r.seed === seed),
        );
        if (pick) {
          selected.push(pick);
          acc.push(pick.testAccuracy);
        }
      }
      return { x: size, ...meanStd(acc) };
    }),
  }));
  return { selected, curves };
}
