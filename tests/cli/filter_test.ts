/**
 * End-to-end tests of `filter` on tiny-gpt2: the stages' counts add up, top-n and balancing hold,
 * records keep their fields, and bad input fails with a one-line error.
 */
import { join } from "node:path";
import { main } from "../../cli.ts";
import { gpuTest } from "../helpers.ts";
import { fixtureModel, fixtureSst2 } from "../fixtures.ts";

const SYNTH = [
  { text: "a great and moving film", label: 1, round: 0, nll: 5 },
  { text: "a great and moving film", label: 1, round: 0, nll: 5 }, // duplicate
  { text: "warm , funny and wise", label: 1, round: 0, nll: 6 },
  { text: "the best movie of the year", label: 1, round: 1, nll: 4 },
  { text: "### <|endoftext|>", label: 1, round: 1, nll: 9 }, // empty after cleaning
  { text: "a dull , lifeless mess", label: 0, round: 0, nll: 6 },
  { text: "boring and far too long", label: 0, round: 0, nll: 5 },
  { text: "the worst script in years", label: 0, round: 1, nll: 7 },
];

function lines(path: string): Record<string, unknown>[] {
  return Deno.readTextFileSync(path).split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
}

Deno.test({
  name: "filter on tiny-gpt2: stage counts add up, top-n per label, balance, fields kept",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const model = fixtureModel("tiny-gpt2");
    const input = join(dir, "synthetic.jsonl"), real = join(dir, "real.jsonl");
    Deno.writeTextFileSync(input, SYNTH.map((r) => JSON.stringify(r)).join("\n") + "\n");
    const realLines = Deno.readTextFileSync(fixtureSst2("validation")).split("\n").slice(
      0,
      30,
    );
    Deno.writeTextFileSync(real, realLines.join("\n") + "\n");
    const base = [
      "filter",
      "--model",
      model,
      "--task",
      "sst2",
      "--data",
      input,
      "--real-data",
      real,
      "--real-n",
      "6",
      "--real-pool",
      "12",
      "--shots",
      "2",
    ];

    // Without the consistency check: only empty texts, duplicates and top-n remove texts.
    const out1 = join(dir, "f1.jsonl");
    if (await main([...base, "--no-consistency", "--per-class", "2", "--out", out1]) !== 0) {
      throw new Error("filter failed");
    }
    const kept1 = lines(out1);
    const sum1 = JSON.parse(Deno.readTextFileSync(join(dir, "f1.filter.json")));
    const great = sum1.perLabel.great, bad = sum1.perLabel.bad;
    if (
      great.input !== 5 || great.empty !== 1 || great.duplicates !== 1 || great.beyondTopN !== 1 ||
      great.kept !== 2
    ) {
      throw new Error(`great counts ${JSON.stringify(great)}`);
    }
    if (bad.input !== 3 || bad.beyondTopN !== 1 || bad.kept !== 2 || kept1.length !== 4) {
      throw new Error(`bad counts ${JSON.stringify(bad)}`);
    }
    for (const label of [0, 1]) {
      const m = kept1.filter((r) => r.label === label).map((r) => r.filter_metric as number);
      if (m.some((x, i) => i > 0 && x < m[i - 1])) {
        throw new Error(`label ${label} not sorted best first: ${m}`);
      }
    }
    for (const r of kept1) {
      // 1 − cos lies in [0, 2]; computed in f32 it can round to a few 1e-6 below 0 (a text whose
      // gradient is nearly parallel to the target's).
      const bad = typeof r.align_loss !== "number" || !(r.align_loss >= -1e-5 && r.align_loss <= 2 + 1e-5);
      if (!("round" in r) || bad) {
        throw new Error(`record lost fields or has a bad score: ${JSON.stringify(r)}`);
      }
    }

    // All stages, with α and balancing: counts still add up per label.
    const out2 = join(dir, "f2.jsonl");
    if (await main([...base, "--per-class", "3", "--alpha", "0.05", "--balance", "--out", out2]) !== 0) {
      throw new Error("filter failed");
    }
    const sum2 = JSON.parse(Deno.readTextFileSync(join(dir, "f2.filter.json")));
    for (const [label, s] of Object.entries(sum2.perLabel) as [string, Record<string, number>][]) {
      const removed = s.empty + s.inconsistent + s.duplicates + s.beyondTopN + s.balanced;
      if (s.input - removed !== s.kept) {
        throw new Error(`${label}: ${s.input} in, ${removed} removed, ${s.kept} kept`);
      }
    }
    if (lines(out2).length !== sum2.kept) throw new Error("summary and output disagree");
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "filter: bad input fails with a usage error",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const bad = join(dir, "bad.jsonl");
    Deno.writeTextFileSync(bad, '{"text": "x", "label": "pos"}\n');
    const ok = join(dir, "ok.jsonl");
    Deno.writeTextFileSync(ok, '{"text": "x", "label": 1}\n');
    const cases = [
      ["filter", "--data", ok, "--real-data", ok, "--out", join(dir, "o.jsonl")],
      ["filter", "--model", "m", "--data", bad, "--real-data", ok, "--out", join(dir, "o.jsonl")],
      [
        "filter",
        "--model",
        "m",
        "--data",
        ok,
        "--real-data",
        ok,
        "--out",
        join(dir, "o.jsonl"),
        "--per-class",
        "0",
      ],
      [
        "filter",
        "--model",
        "m",
        "--data",
        ok,
        "--real-data",
        join(dir, "none.jsonl"),
        "--out",
        join(dir, "o.jsonl"),
      ],
    ];
    for (const args of cases) {
      const code = await main(args);
      if (code !== 2) throw new Error(`expected exit 2 for ${args.join(" ")}, got ${code}`);
    }
    await Deno.remove(dir, { recursive: true });
  },
});
