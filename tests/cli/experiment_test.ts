/**
 * End-to-end tests of `experiment` on tiny-gpt2 with tiny settings: the three report files, every
 * run present, nothing selected on the test set, a rerun served from the cache; the real-used
 * condition, the official-method condition and the refine-lm flags passed to synth.
 */
import { join } from "node:path";
import { main } from "../../cli.ts";
import { gpuTest } from "../helpers.ts";
import { fixtureModel, fixtureSst2 } from "../fixtures.ts";
import { EXPERIMENT_SYNTH, synthFlags } from "../synth_flags.ts";

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
      ...synthFlags(EXPERIMENT_SYNTH, "synth-"),
      // The default method's swap iterations (13 on a CPU adapter) would dominate the test's time.
      "--synth-refine-iterations",
      "2",
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
    // real, gradmm, gradmm-filtered at 2 sizes × 2 seeds, and real-used (N = --real-n) once per seed.
    if (report.runs.length !== 3 * 2 * 2 + 2) throw new Error(`expected 14 runs, got ${report.runs.length}`);
    if (report.selected.length !== 14 || report.summary.length !== 3 * 2 + 1) {
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
        "per seed (method lm-guided)", // synth's default method when --synth-method is not given
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
      [...base, "--synth-method", "nonsense"],
      [...base, "--synth-method", "official", "--synth-refine-lambda", "0.2"],
      [...base, "--synth-method", "refine", "--synth-refine-lambda", "0.2"],
      [...base, "--synth-method", "refine-lm", "--synth-decode-beta=-1"],
      [...base, "--synth-method", "official", "--conditions", "gradmm,gradmm-official"],
    ];
    for (const args of cases) {
      const code = await main(args);
      if (code !== 2) throw new Error(`expected exit 2 for ${args.slice(1).join(" ")}, got ${code}`);
    }
    await Deno.remove(dir, { recursive: true });
  },
});

/** The tiny experiment's data and flags, into a fresh folder. */
async function tinySetup(): Promise<{ dir: string; out: string; common: string[] }> {
  const dir = await Deno.makeTempDir();
  const train = join(dir, "train.jsonl"), test = join(dir, "test.jsonl"), out = join(dir, "exp");
  Deno.writeTextFileSync(train, sample(fixtureSst2("train"), 40));
  Deno.writeTextFileSync(test, sample(fixtureSst2("validation"), 30));
  const common = [
    "experiment",
    "--model",
    fixtureModel("tiny-gpt2"),
    "--train-data",
    train,
    "--test-data",
    test,
    "--out-dir",
    out,
    "--sizes",
    "8",
    "--seeds",
    "2",
    "--real-n",
    "6",
    "--real-pool",
    "10",
    "--valid-size",
    "6",
    "--test-limit",
    "12",
    "--steps",
    "4",
    "--batch",
    "4",
    "--eval-every",
    "2",
    "--lr",
    "0.01",
    ...synthFlags(EXPERIMENT_SYNTH, "synth-"),
  ];
  return { dir, out, common };
}

/** main() with stderr captured: its exit code and the lines it printed. */
async function quietMain(args: string[]): Promise<{ rc: number; printed: string[] }> {
  const printed: string[] = [];
  const consoleError = console.error;
  console.error = (...parts: unknown[]) => void printed.push(parts.join(" "));
  try {
    return { rc: await main(args), printed };
  } finally {
    console.error = consoleError;
  }
}

interface Run {
  condition: string;
  size: number;
  seed: number;
  trainTexts: number;
  testAccuracy: number;
}

Deno.test({
  name: "experiment: real-used once per seed at N = real-n; gradmm with refine-lm flags vs gradmm-official",
  ...gpuTest,
  fn: async () => {
    const { dir, out, common } = await tinySetup();
    const refineLm = [
      "--synth-method",
      "refine-lm",
      "--synth-refine-iterations",
      "1",
      "--synth-refine-lambda",
      "0.2",
      "--synth-refine-nll-slack",
      "0.1",
      "--synth-decode-beta",
      "1",
    ];
    const args = [...common, "--conditions", "real-used,gradmm,gradmm-official", ...refineLm];
    if (await main(args) !== 0) throw new Error("experiment failed");
    const report = JSON.parse(Deno.readTextFileSync(join(out, "report.json")));
    if (!report.complete) throw new Error("report not marked complete");
    const runs: Run[] = report.runs;
    const used = runs.filter((r) => r.condition === "real-used");
    // real-used: one run per seed, on the 6 real examples GRADMM used, whatever --sizes says.
    if (used.length !== 2 || used.some((r) => r.size !== 6 || r.trainTexts !== 6)) {
      throw new Error(`real-used runs ${JSON.stringify(used)}`);
    }
    for (const c of ["gradmm", "gradmm-official"]) {
      const rs = runs.filter((r) => r.condition === c);
      if (rs.length !== 2 || rs.some((r) => r.size !== 8 || r.trainTexts !== 8)) {
        throw new Error(`${c} runs ${JSON.stringify(rs)}`);
      }
    }
    const sizesOf = (c: string) =>
      report.summary.filter((s: { condition: string }) => s.condition === c).map((s: { size: number }) =>
        s.size
      );
    if (sizesOf("real-used").join() !== "6" || sizesOf("gradmm").join() !== "8") {
      throw new Error(`summary ${JSON.stringify(report.summary)}`);
    }

    // Each synth run got its method's settings: gradmm the refine-lm flags, gradmm-official none.
    const manifestOf = (variant: string) =>
      JSON.parse(Deno.readTextFileSync(join(out, "synth", `${variant}-seed0-pc4.manifest.json`))).settings;
    const lm = manifestOf("gradmm");
    if (
      lm.refineLm?.lambda !== 0.2 || lm.refineLm?.nllSlack !== 0.1 || lm.refineLm?.iterations !== 1 ||
      lm.admm?.blend?.beta !== 1
    ) {
      throw new Error(`gradmm synth settings ${JSON.stringify(lm)}`);
    }
    const official = manifestOf("gradmm-official");
    if (
      official.refineLm !== undefined || official.admm?.blend !== undefined ||
      official.admm?.select !== "total"
    ) {
      throw new Error(`gradmm-official synth settings ${JSON.stringify(official)}`);
    }
    const commands: string[] = report.synth.commands;
    if (
      !commands.some((c) => c.includes("--method refine-lm") && c.includes("--refine-lambda 0.2")) ||
      !commands.some((c) => c.includes("--method official") && !c.includes("--refine-lambda"))
    ) {
      throw new Error(`synth commands ${commands.join("\n")}`);
    }

    // The report: real-used has its own N = 6 column, said to be a fixed set; a point in the plot.
    const md = Deno.readTextFileSync(join(out, "report.md"));
    const row = md.split("\n").find((l) => l.startsWith("| the real examples GRADMM used (N = 6)"));
    if (!md.includes("| training data | N = 6 | N = 8 |") || !row) throw new Error(`report.md table:\n${md}`);
    const cells = row.split("|").map((x) => x.trim()).filter(Boolean);
    if (cells[1] === "—" || cells[2] !== "—") throw new Error(`real-used row ${row}`);
    if (!md.includes("is one fixed set") || !md.includes("GRADMM texts (refine-lm)")) {
      throw new Error("report.md does not explain real-used or name the method");
    }
    const svg = Deno.readTextFileSync(join(out, "report.svg"));
    if (!svg.includes("the real examples GRADMM used (N = 6)") || !svg.includes("GRADMM texts (official)")) {
      throw new Error("report.svg legend incomplete");
    }

    // real-used depends on neither the sizes nor the synth settings: served from the cache.
    const alone = [...common, "--sizes", "4", "--conditions", "real-used", "--synth-method", "discrete"];
    if (await main(alone) !== 0) throw new Error("real-used alone failed");
    const again = JSON.parse(Deno.readTextFileSync(join(out, "report.json")));
    if (JSON.stringify(again.runs) !== JSON.stringify(used)) {
      throw new Error(`real-used runs not reused: ${JSON.stringify(again.runs)}`);
    }

    // A finished synth run of other settings is not silently reused.
    const changed = args.map((a) => (a === "0.2" ? "0.3" : a));
    const { rc, printed } = await quietMain(changed);
    const message = printed.find((l) => l.startsWith("error:")) ?? "";
    if (rc !== 2 || !message.includes("other settings") || !message.includes("--out-dir")) {
      throw new Error(
        `changed --synth-refine-lambda: exit ${rc}, printed ${JSON.stringify(printed.slice(-3))}`,
      );
    }
    await Deno.remove(dir, { recursive: true });
  },
});
