/** Experiment bookkeeping: disjoint splits, prefixes per class, distinct-n, lr selection. */
import type { Example } from "../../data/examples.ts";
import {
  distinctN,
  firstPerClass,
  makeSplits,
  type RunResult,
  selectByValidation,
  summariseRuns,
} from "../../train/experiment.ts";

const make = (n: number, prefix: string): Example[] =>
  Array.from({ length: n }, (_, i) => ({ text: `${prefix}${i}`, label: i % 3 === 0 ? 1 : 0 }));

Deno.test("makeSplits: pool removed from the test split, validation removed from the train split, deterministic", () => {
  const train = make(300, "tr"), test = make(120, "te");
  const o = { realPool: 30, real: 20, poolSeed: 42, validSize: 50, testLimit: 60 };
  const s = makeSplits(train, test, o);
  if (s.used.length !== 20 || s.test.length !== 60 || s.valid.length !== 50 || s.trainRest.length !== 250) {
    throw new Error(`sizes ${s.used.length}/${s.test.length}/${s.valid.length}/${s.trainRest.length}`);
  }
  const used = new Set(s.used.map((e) => e.text));
  if (s.test.some((e) => used.has(e.text))) throw new Error("a real example GRADMM used is in the test set");
  const valid = new Set(s.valid.map((e) => e.text));
  if (s.trainRest.some((e) => valid.has(e.text))) {
    throw new Error("validation examples left in the train pool");
  }
  if (s.test.some((e) => !e.text.startsWith("te")) || s.valid.some((e) => !e.text.startsWith("tr"))) {
    throw new Error("splits mixed");
  }
  const validPos = s.valid.filter((e) => e.label === 1).length;
  if (Math.abs(validPos - 50 / 3) > 1) {
    throw new Error(`validation not stratified: ${validPos} positives of 50`);
  }
  if (JSON.stringify(makeSplits(train, test, o)) !== JSON.stringify(s)) throw new Error("not deterministic");
  // Identical texts in the test split stay distinct examples.
  const dup = [...make(40, "d"), ...make(40, "d")];
  const d = makeSplits(train, dup, { ...o, realPool: 10, real: 10, testLimit: 1000 });
  if (d.test.length !== 70) throw new Error(`duplicates mishandled: ${d.test.length} test examples`);
});

Deno.test("firstPerClass: input order per class, total cap trims the fuller class", () => {
  const items = [0, 1, 0, 0, 1, 0, 1, 1].map((label, i) => ({ label, i }));
  const two = firstPerClass(items, 2);
  if (two.map((x) => x.i).join() !== "0,1,2,4") throw new Error(two.map((x) => x.i).join());
  const capped = firstPerClass(items, 3, 5);
  if (
    capped.length !== 5 ||
    capped.filter((x) => x.label === 0).length + capped.filter((x) => x.label === 1).length !== 5
  ) {
    throw new Error(JSON.stringify(capped));
  }
});

Deno.test("distinctN counts distinct n-grams over all n-grams", () => {
  if (distinctN([[1, 2, 1, 2]], 2) !== 2 / 3) throw new Error(String(distinctN([[1, 2, 1, 2]], 2)));
  if (distinctN([[1, 2], [1, 2]], 1) !== 0.5) throw new Error("distinct-1");
  if (!Number.isNaN(distinctN([[1]], 2))) throw new Error("no bigram → NaN");
});

Deno.test("selectByValidation ignores test accuracy; summariseRuns averages over seeds", () => {
  const run = (seed: number, lr: number, valid: number, test: number): RunResult => ({
    condition: "real",
    size: 60,
    seed,
    lr,
    trainTexts: 60,
    validAccuracy: valid,
    bestStep: 50,
    testAccuracy: test,
    finalLoss: 0.5,
    seconds: 1,
  });
  const runs = [
    run(0, 1e-4, 0.6, 0.9),
    run(0, 3e-4, 0.7, 0.5),
    run(1, 1e-4, 0.6, 0.6),
    run(1, 3e-4, 0.6, 0.8),
  ];
  if (selectByValidation(runs.slice(0, 2))!.lr !== 3e-4) {
    throw new Error("must pick the best validation, not test");
  }
  if (selectByValidation(runs.slice(2))!.lr !== 1e-4) throw new Error("ties go to the smaller lr");
  const { curves, selected } = summariseRuns(runs, ["real"], [60], [0, 1]);
  const p = curves[0].points[0];
  if (selected.length !== 2 || Math.abs(p.mean - 0.55) > 1e-12 || p.n !== 2) {
    throw new Error(JSON.stringify(p));
  }
});
