/**
 * End-to-end test of `experiment` on tiny-gpt2 with tiny settings: the three report files, every
 * run present, nothing selected on the test set, and a rerun served from the cache.
 */
import { join } from "node:path";
import { main } from "../../cli.ts";
import { gpuTest } from "../helpers.ts";
import { fixtureModel, fixtureSst2 } from "../fixtures.ts";

function sample(path: string, n: number): string {
  return Deno.readTextFileSync(path).split("\n").filter((l) => l.trim()).slice(0, n).join("\n") + "\n";
}

Deno.test({
  name: "experiment on tiny-gpt2: report.md/svg/json, all runs, cached rerun",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const train = join(dir, "train.jsonl"), test = join(dir, "test.jsonl"), out = join(dir, "exp");
    Deno.writeTextFileSync(train, sample(fixtureSst2("train"), 40));
    Deno.writeTextFileSync(test, sample(fixtureSst2("validation"), 30));
    const args = [
      "experiment",
      "--task",
      "sst2",
      "--model",
      fixtureModel("tiny-gpt2"),
      "--train-data",
      train,
      "--test-data",
      test,
      "--out-dir",
      out,
      "--sizes",
      "4,8",
      "--seeds",
      "2",
      "--real-n",
      "8",
      "--real-pool",
      "10",
      "--valid-size",
      "6",
      "--test-limit",
      "12",
      "--steps",
      "2",
      "--batch",
      "4",
      "--eval-every",
      "1",
      "--lr",
      "0.01",
      "--synth-batch",
      "2",
      "--synth-outer-steps",
      "1",
      "--synth-inner-steps",
      "1",
      "--synth-init-candidates",
      "2",
      "--synth-top-k",
      "20",
      "--synth-length",
      "6",
      "--filter-real-n",
      "4",
      "--filter-shots",
      "2",
      "--filter-calibrate",
    ];
    const t0 = performance.now();
    if (await main(args) !== 0) throw new Error("experiment failed");
    const first = performance.now() - t0;
    const report = JSON.parse(Deno.readTextFileSync(join(out, "report.json")));
    if (!report.complete) throw new Error("report not marked complete");
    if (report.runs.length !== 3 * 2 * 2) throw new Error(`expected 12 runs, got ${report.runs.length}`);
    if (report.selected.length !== 12 || report.summary.length !== 6) {
      throw new Error("selection/summary incomplete");
    }
    if (report.splits.test !== 12 || report.splits.used !== 8 || report.splits.valid !== 6) {
      throw new Error(`splits ${JSON.stringify(report.splits)}`);
    }
    if (!(report.zeroShot.accuracy >= 0 && report.zeroShot.accuracy <= 1)) {
      throw new Error("zero-shot missing");
    }
    for (const r of report.runs) {
      if (r.condition !== "gradmm-filtered" && r.trainTexts !== r.size) {
        throw new Error(`run trained on ${r.trainTexts} texts, size ${r.size}`);
      }
      if (r.trainTexts > 0 && !(r.testAccuracy >= 0 && r.testAccuracy <= 1)) {
        throw new Error(`bad test accuracy ${JSON.stringify(r)}`);
      }
    }
    const conds = new Set(report.readability.map((x: { condition: string }) => x.condition));
    for (const c of ["real pool", "real", "gradmm", "gradmm-filtered"]) {
      if (!conds.has(c)) throw new Error(`no readability for ${c}`);
    }
    const md = Deno.readTextFileSync(join(out, "report.md"));
    for (
      const s of [
        "| training data |",
        "N = 4",
        "zero-shot",
        "Model selection",
        "deno run -A cli.ts experiment",
        "distinct-2",
      ]
    ) {
      if (!md.includes(s)) throw new Error(`report.md lacks '${s}'`);
    }
    const svg = Deno.readTextFileSync(join(out, "report.svg"));
    if (!svg.startsWith("<svg") || !svg.includes("<polyline") || !svg.trim().endsWith("</svg>")) {
      throw new Error("report.svg malformed");
    }

    // The rerun finds every piece in the cache and writes the same results.
    const t1 = performance.now();
    if (await main(args) !== 0) throw new Error("rerun failed");
    const second = performance.now() - t1;
    const again = JSON.parse(Deno.readTextFileSync(join(out, "report.json")));
    if (JSON.stringify(again.runs) !== JSON.stringify(report.runs)) {
      throw new Error("cached rerun changed the runs");
    }
    if (!(second < first / 2)) {
      throw new Error(`rerun took ${second} ms, first run ${first} ms: cache not used?`);
    }

    // A damaged synth output inside the folder: one line whose advice fits experiment's flags
    // (it has no --overwrite or --out).
    const synthDir = join(out, "synth");
    const name = [...Deno.readDirSync(synthDir)].map((e) => e.name).find((n) => n.endsWith(".jsonl"))!;
    const damaged = join(synthDir, name);
    Deno.writeTextFileSync(damaged, Deno.readTextFileSync(damaged).trimEnd().slice(0, -5) + "\n");
    const printed: string[] = [];
    const consoleError = console.error;
    console.error = (...parts: unknown[]) => void printed.push(parts.join(" "));
    let rc: number;
    try {
      rc = await main(args);
    } finally {
      console.error = consoleError;
    }
    const message = printed.find((l) => l.startsWith("error:")) ?? "";
    if (rc !== 2 || !message.includes(`${name}:`) || !message.includes("not a complete JSON line")) {
      throw new Error(`damaged synth output: exit ${rc}, printed ${JSON.stringify(printed.slice(-3))}`);
    }
    if (!message.includes("--out-dir") || message.includes("--overwrite")) {
      throw new Error(`the advice names flags experiment lacks: ${message}`);
    }
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "experiment: bad settings fail with a usage error",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const f = join(dir, "d.jsonl");
    Deno.writeTextFileSync(f, sample(fixtureSst2("validation"), 20));
    const base = ["experiment", "--train-data", f, "--test-data", f, "--out-dir", join(dir, "o")];
    const cases = [
      ["experiment", "--train-data", f, "--out-dir", join(dir, "o")],
      [...base, "--sizes", "10,x"],
      [...base, "--conditions", "real,gradmm-dp"],
      [...base, "--conditions", "nonsense"],
      [...base, "--real-pool", "50"],
      [...base, "--synth-rho", "0.5,0.7"],
    ];
    for (const args of cases) {
      const code = await main(args);
      if (code !== 2) throw new Error(`expected exit 2 for ${args.slice(1).join(" ")}, got ${code}`);
    }
    await Deno.remove(dir, { recursive: true });
  },
});
