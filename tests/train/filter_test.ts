/**
 * Filtering stages: cleaning, dedupe + top-n, class balancing on synthetic numbers, and the
 * per-text alignment score against the closed-form matching loss with a batch of one.
 */
import { loadModel, loadTokenizer } from "../../host/files.ts";
import { getTask } from "../../data/tasks.ts";
import { matchingLoss, oneHot } from "../../admm/matching.ts";
import { computeTarget, disposeTarget, lastLayerFactors } from "../../admm/target.ts";
import { scope } from "../../autograd/tensor.ts";
import {
  alignmentLosses,
  balanceByAverage,
  type Candidate,
  cleanText,
  metricOf,
  selectTop,
} from "../../train/filter.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { fixtureModel } from "../fixtures.ts";
import { noGrad } from "../../autograd/grad_mode.ts";

function cand(index: number, label: number, score: number, text = `t${index}`, nll = 0): Candidate {
  return { index, text, label, score, nll };
}

Deno.test("cleanText removes the notebook's artefacts but keeps digits", () => {
  const cases: [string, string][] = [
    ['a "great" film<|endoftext|>\n### yes...', "a great film yes"],
    ["top 3 films of 2023", "top 3 films of 2023"],
    ["nice movie. You should watch it", "nice movie."],
    ["  \n  ", ""],
  ];
  for (const [input, want] of cases) {
    const got = cleanText(input);
    if (got !== want) {
      throw new Error(
        `cleanText(${JSON.stringify(input)}) = ${JSON.stringify(got)}, want ${JSON.stringify(want)}`,
      );
    }
  }
});

Deno.test("selectTop: per label, duplicates dropped, ascending metric, top-n kept, ties by input order", () => {
  const cs = [
    cand(0, 0, 0.5, "a"),
    cand(1, 0, 0.1, "b"),
    cand(2, 0, 0.1, "a"), // duplicate of 0 (same text, same label): dropped although better
    cand(3, 0, 0.3, "c"),
    cand(4, 1, 0.2, "a"), // same text, other label: kept
    cand(5, 0, 0.1, "d"),
    cand(6, 1, NaN, "e"), // NaN metric sorts last
    cand(7, 1, 0.9, "f"),
  ];
  const { byLabel, duplicates, beyondTop } = selectTop(cs, 2, 0);
  const ids = (l: number) => byLabel.get(l)!.map((c) => c.index).join();
  if (ids(0) !== "1,5") throw new Error(`label 0 kept ${ids(0)}`);
  if (ids(1) !== "4,7") throw new Error(`label 1 kept ${ids(1)}`);
  if (duplicates[0] !== 1 || duplicates[1] !== 0) throw new Error(`duplicates ${JSON.stringify(duplicates)}`);
  if (beyondTop[0] !== 2 || beyondTop[1] !== 1) throw new Error(`beyond top-n ${JSON.stringify(beyondTop)}`);
  // α·nll changes the order.
  const withNll = [cand(0, 0, 0.1, "x", 10), cand(1, 0, 0.2, "y", 1)];
  if (selectTop(withNll, 1, 0.05).byLabel.get(0)![0].index !== 1) {
    throw new Error("α·nll should prefer the fluent text");
  }
  if (metricOf(withNll[0], 0.05) !== 0.1 + 0.5) throw new Error("metric = score + α·nll");
  if (!Number.isFinite(metricOf(cand(0, 0, 0.3, "z", NaN), 0))) {
    throw new Error("α = 0 must ignore a missing nll");
  }
});

Deno.test("balanceByAverage: the worse class drops its worst texts until its mean is no worse", () => {
  const groups = new Map<number, Candidate[]>([
    [0, [cand(0, 0, 0.1), cand(1, 0, 0.2), cand(2, 0, 0.3)]], // mean 0.2
    [1, [cand(3, 1, 0.1), cand(4, 1, 0.2), cand(5, 1, 0.5), cand(6, 1, 0.8)]], // mean 0.4
  ]);
  const { byLabel, removed } = balanceByAverage(groups, 0);
  // Label 1: drop 0.8 → mean 0.267 > 0.2; drop 0.5 → mean 0.15 ≤ 0.2 (the crossing text is dropped too).
  if (byLabel.get(1)!.map((c) => c.index).join() !== "3,4") {
    throw new Error(`label 1 kept ${byLabel.get(1)!.map((c) => c.index)}`);
  }
  if (byLabel.get(0)!.length !== 3 || removed[0] !== 0 || removed[1] !== 2) {
    throw new Error(`removed ${JSON.stringify(removed)}`);
  }
  // A class that cannot get below the other's mean keeps one text instead of vanishing.
  const hopeless = new Map<number, Candidate[]>([[0, [cand(0, 0, 0.1)]], [1, [
    cand(1, 1, 0.5),
    cand(2, 1, 0.6),
  ]]]);
  const r = balanceByAverage(hopeless, 0);
  if (r.byLabel.get(1)!.length !== 1 || r.byLabel.get(1)![0].index !== 1) {
    throw new Error("the last text of a class must stay");
  }
  // Equal means: nothing to do.
  const even = new Map<number, Candidate[]>([[0, [cand(0, 0, 0.2)]], [1, [
    cand(1, 1, 0.1),
    cand(2, 1, 0.3),
  ]]]);
  if (balanceByAverage(even, 0).removed[1] !== 0) throw new Error("equal means should drop nothing");
});

Deno.test({
  name: "alignmentLosses equal matchingLoss with a batch of one (tiny-gpt2)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const dir = fixtureModel("tiny-gpt2");
    const model = await loadModel(c, dir);
    const tok = await loadTokenizer(dir);
    const pad = tok.padId ?? 0;
    const task = getTask("sst2");
    const enc = (t: string) => tok.encode(t + task.suffix);
    const labelId = tok.encode(task.labelWords[1])[0];
    const real = ["a fine film", "warm and funny", "one of the best"].map(enc);
    const synth = ["great great movie", "the the the", "loved every minute of it", "bad"].map(enc);
    const { target } = await computeTarget(model, real, labelId, pad);
    const mine = await alignmentLosses(model, target, synth, labelId, pad, 3);
    const vocab = model.headWeight.shape[0];
    for (let i = 0; i < synth.length; i++) {
      const { residuals, hidden } = await lastLayerFactors(model, [synth[i]], [labelId], pad);
      const ref = await noGrad(c, () =>
        scope(
          c,
          () =>
            matchingLoss(
              target,
              hidden,
              { weight: model.headWeight, bias: model.headBias },
              oneHot(c, [labelId], vocab),
            ).item(),
        ));
      residuals.dispose();
      hidden.dispose();
      if (Math.abs(mine[i] - ref) > 1e-4) throw new Error(`text ${i}: ${mine[i]} vs matchingLoss ${ref}`);
    }
    disposeTarget(target);
    model.dispose();
  },
});
