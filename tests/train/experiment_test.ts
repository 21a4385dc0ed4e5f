/**
 * Experiment bookkeeping: disjoint splits, prefixes per class, distinct-n, lr selection, the
 * conditions' sizes, synth runs and names.
 */
import type { Example } from "../../data/examples.ts";
import {
  CONDITION_NAMES,
  conditionName,
  CONDITIONS,
  distinctN,
  firstPerClass,
  makeSplits,
  type RunResult,
  selectByValidation,
  sizesOf,
  summariseRuns,
  synthVariant,
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

Deno.test("real-used: one fixed size, no synth run, one point of the summary", () => {
  if (sizesOf("real-used", [200, 1000], 50).join() !== "50") throw new Error("real-used is N = real-n");
  if (sizesOf("gradmm", [200, 1000], 50).join() !== "200,1000") throw new Error("others follow --sizes");
  let refused = false;
  try {
    sizesOf("real-used", [200], NaN);
  } catch {
    refused = true;
  }
  if (!refused) throw new Error("real-used without real-n must be refused");
  if (synthVariant("real-used") !== null || synthVariant("real") !== null) throw new Error("real texts");
  if (synthVariant("gradmm-official") !== "gradmm-official" || synthVariant("gradmm-filtered") !== "gradmm") {
    throw new Error("synth variants");
  }
  const run = (condition: RunResult["condition"], size: number, seed: number, test: number): RunResult => ({
    condition,
    size,
    seed,
    lr: 1e-4,
    trainTexts: size,
    validAccuracy: 0.6,
    bestStep: 4,
    testAccuracy: test,
    finalLoss: 0.5,
    seconds: 1,
  });
  const runs = [run("real-used", 50, 0, 0.6), run("real-used", 50, 1, 0.7), run("gradmm", 200, 0, 0.8)];
  const { curves, selected } = summariseRuns(runs, ["real-used", "gradmm"], [200, 1000], [0, 1], 50);
  const used = curves.find((c) => c.condition === "real-used")!;
  if (used.points.length !== 1 || used.points[0].x !== 50 || used.points[0].n !== 2) {
    throw new Error(JSON.stringify(used.points));
  }
  if (Math.abs(used.points[0].mean - 0.65) > 1e-12) throw new Error(`mean ${used.points[0].mean}`);
  if (curves.find((c) => c.condition === "gradmm")!.points.map((p) => p.x).join() !== "200,1000") {
    throw new Error("gradmm points");
  }
  if (selected.length !== 3) throw new Error(`${selected.length} runs selected`);
});

Deno.test("conditionName: every condition named, the method and real-used's size shown", () => {
  const names = CONDITIONS.map((c) => conditionName(c, { method: "refine-lm", realN: 50 }));
  if (new Set(names).size !== CONDITIONS.length) throw new Error(`names collide: ${names.join(" | ")}`);
  if (!conditionName("real-used", { realN: 50 }).includes("N = 50")) throw new Error("real-used's size");
  if (!conditionName("gradmm-filtered", { method: "refine-lm" }).includes("refine-lm")) {
    throw new Error("the method of the --synth-method conditions");
  }
  if (conditionName("gradmm-official", { method: "refine-lm" }).includes("refine-lm")) {
    throw new Error("gradmm-official is the official method whatever --synth-method says");
  }
  if (conditionName("gradmm", { method: "official" }) !== CONDITION_NAMES.gradmm) {
    throw new Error("the official method needs no mention");
  }
});
