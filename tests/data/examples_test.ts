import { DataError, parseJsonl, stratifiedSample } from "../../data/examples.ts";
import { classOf, customTask, getTask, stripSuffix, TaskError } from "../../data/tasks.ts";

Deno.test("parseJsonl: fields, blank lines, and line-numbered errors", () => {
  const ok = parseJsonl(
    '{"text": "a", "label": 1}\n\n{"sentence": "b", "y": "0", "text": "c", "label": 0}\n',
  );
  if (ok.length !== 2 || ok[1].text !== "c" || ok[1].label !== 0) throw new Error(JSON.stringify(ok));
  const bad: [string, RegExp][] = [
    ['{"text": "a", "label": 1}\n{"text": "b", "label": 1', /input:2: not valid JSON/],
    ["[1, 2]", /input:1: expected a JSON object/],
    ['{"txt": "a", "label": 1}', /field 'text' is missing/],
    ['{"text": "a", "label": 1.5}', /integer label/],
  ];
  for (const [src, re] of bad) {
    try {
      parseJsonl(src);
      throw new Error(`accepted ${src}`);
    } catch (e) {
      if (!(e instanceof DataError) || !re.test(e.message)) throw e;
    }
  }
});

Deno.test("stratifiedSample keeps class shares, is seeded and has no duplicates", () => {
  const items = Array.from({ length: 872 }, (_, i) => ({ id: i, label: i < 428 ? 0 : 1 }));
  const a = stratifiedSample(items, 100, 42);
  const b = stratifiedSample(items, 100, 42);
  const c = stratifiedSample(items, 100, 43);
  if (a.length !== 100 || new Set(a.map((x) => x.id)).size !== 100) {
    throw new Error("wrong size or duplicates");
  }
  const ones = a.filter((x) => x.label === 1).length;
  if (ones !== 51) throw new Error(`expected 51 positives (444/872 of 100), got ${ones}`);
  if (a.map((x) => x.id).join() !== b.map((x) => x.id).join()) throw new Error("same seed, different sample");
  if (a.map((x) => x.id).join() === c.map((x) => x.id).join()) {
    throw new Error("different seeds, same sample");
  }
});

Deno.test("tasks: presets, custom tasks, label mapping and suffix stripping", () => {
  const sst2 = getTask("sst2");
  if (
    sst2.suffix !== " It was " || sst2.labelWords.join() !== "bad,great" || sst2.decodePrefix(1) !== "The"
  ) {
    throw new Error("sst2 preset differs from the official one");
  }
  const emo = getTask("emotion");
  if (classOf(emo, 3) !== null || classOf(emo, 1) !== 1) {
    throw new Error("emotion must keep labels 0 and 1 only");
  }
  if (!getTask("rotten_tomatoes").decodePrefix(1).includes("great")) {
    throw new Error("prefix lacks the label word");
  }
  const t = customTask({ template: "{text} Topic:", labelWords: ["sports", "business", "science"] });
  if (t.suffix !== " Topic:" || t.labelWords.length !== 3) throw new Error("custom task");
  if (stripSuffix(sst2, "the film was  fun . It was ") !== "the film was fun .") {
    throw new Error("stripSuffix");
  }
  for (
    const f of [
      () => getTask("nope"),
      () => customTask({ template: "x {text}", labelWords: ["a", "b"] }),
      () => customTask({ template: "{text}", labelWords: ["a"] }),
    ]
  ) {
    try {
      f();
      throw new Error("accepted a bad task");
    } catch (e) {
      if (!(e instanceof TaskError)) throw e;
    }
  }
});
