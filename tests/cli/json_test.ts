/**
 * --json on every command that prints results, on tiny-gpt2 with tiny settings: stdout is exactly
 * one JSON object (human text goes to stderr), and its figures agree with the files the command
 * wrote or with its plain-text output. Also: old flag names still run (ppl --file/--field gives
 * the same result as --data/--text-field, with notes).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { gpuTest } from "../helpers.ts";
import { fixtureModel, fixtureSst2 } from "../fixtures.ts";
import { EXPERIMENT_SYNTH, synthFlags, TINY_SYNTH } from "../synth_flags.ts";
import { runCli } from "./capture.ts";

const TMP = await Deno.makeTempDir({ prefix: "gradmm-json-" });
const MODEL = fixtureModel("tiny-gpt2");

function sample(path: string, n: number): string {
  return Deno.readTextFileSync(path).split("\n").filter((l) => l.trim()).slice(0, n).join("\n") + "\n";
}
const TRAIN = join(TMP, "train.jsonl");
const TEST = join(TMP, "test.jsonl");
Deno.writeTextFileSync(TRAIN, sample(fixtureSst2("train"), 40));
Deno.writeTextFileSync(TEST, sample(fixtureSst2("validation"), 30));

const countLines = (path: string) => Deno.readTextFileSync(path).split("\n").filter((l) => l.trim()).length;

/** Runs a command with --json; checks it succeeded and printed one JSON object; returns it. */
async function json(argv: string[]): Promise<{ result: Record<string, unknown>; stderr: string }> {
  const r = await runCli([...argv, "--json"]);
  assert.equal(r.code, 0, `${argv.join(" ")}: ${r.stderr}`);
  assert.equal(r.stdout.split("\n").length, 1, `more than one line on stdout:\n${r.stdout}`);
  const result = JSON.parse(r.stdout);
  assert.ok(result !== null && typeof result === "object" && !Array.isArray(result), r.stdout);
  return { result, stderr: r.stderr };
}

const SYNTH = [
  "synth",
  "--model",
  MODEL,
  "--data",
  TEST,
  ...synthFlags({ ...TINY_SYNTH, perClass: 2, outerSteps: 1, innerSteps: 1, length: 6 }),
];

Deno.test({
  name: "json: synth, merge, filter, finetune, eval and experiment print one object that matches their files",
  ...gpuTest,
  fn: async () => {
    const synthOut = join(TMP, "synthetic.jsonl");
    const s = (await json([...SYNTH, "--out", synthOut])).result;
    assert.equal(s.out, synthOut);
    assert.equal(s.texts, countLines(synthOut));
    assert.equal(s.texts, 4);
    assert.deepEqual([s.rounds, s.roundsTotal, s.complete], [2, 2, true]);

    // Two shards and their merge: the merged file holds every text of the one-process run.
    const sharded = join(TMP, "sharded.jsonl");
    for (const i of ["0/2", "1/2"]) await json([...SYNTH, "--out", sharded, "--shard", i]);
    const m = (await json(["merge", "--out", sharded])).result;
    assert.equal(m.texts, countLines(sharded));
    assert.equal((m.shards as string[]).length, 2);
    assert.equal(Deno.readTextFileSync(sharded), Deno.readTextFileSync(synthOut));

    const filtered = join(TMP, "filtered.jsonl");
    const f = await json([
      "filter",
      "--model",
      MODEL,
      "--data",
      synthOut,
      "--real-data",
      TEST,
      "--out",
      filtered,
      "--per-class",
      "1",
      "--real-n",
      "4",
      "--real-pool",
      "10",
      "--shots",
      "2",
      "--no-consistency",
    ]);
    assert.equal(f.result.kept, countLines(filtered));
    assert.equal(f.result.input, 4);
    assert.match(f.stderr, /^kept: \d+ of 4 texts -> /m, "the human line goes to stderr");

    const ftDir = join(TMP, "ft");
    const ft = (await json([
      "finetune",
      "--model",
      MODEL,
      "--data",
      synthOut,
      "--valid-data",
      TEST,
      "--valid-limit",
      "6",
      "--out-dir",
      ftDir,
      "--steps",
      "2",
      "--batch",
      "2",
      "--eval-every",
      "1",
    ])).result;
    const record = JSON.parse(Deno.readTextFileSync(join(ftDir, "finetune.json")));
    assert.equal(ft.outDir, ftDir);
    assert.equal(ft.bestStep, record.bestStep);
    assert.equal(ft.validAccuracy, record.savedValidAccuracy);
    assert.equal(ft.finalLoss, record.history.at(-1).loss);

    const e = await json(["eval", "--model", ftDir, "--data", TEST, "--limit", "6"]);
    assert.equal(e.result.examples, 6);
    assert.equal(e.result.correct, Math.round((e.result.accuracy as number) * 6));
    assert.match(e.stderr, /^accuracy: \d\.\d{4}$/m);

    const expDir = join(TMP, "exp");
    const x = (await json([
      "experiment",
      "--model",
      MODEL,
      "--train-data",
      TRAIN,
      "--test-data",
      TEST,
      "--out-dir",
      expDir,
      "--conditions",
      "real,gradmm",
      "--sizes",
      "4",
      "--seeds",
      "1",
      "--real-n",
      "8",
      "--real-pool",
      "10",
      "--valid-size",
      "6",
      "--test-limit",
      "8",
      "--steps",
      "1",
      "--batch",
      "4",
      "--filter-real-n",
      "4",
      ...synthFlags(EXPERIMENT_SYNTH, "synth-"),
    ])).result;
    const report = JSON.parse(Deno.readTextFileSync(join(expDir, "report.json")));
    assert.equal(x.complete, true);
    assert.deepEqual(x.summary, report.summary);
    assert.deepEqual(x.zeroShot, report.zeroShot);
    assert.equal((x.summary as unknown[]).length, 2);
  },
});

Deno.test({
  name: "json: ppl matches its text output; generate, info and tune print one object",
  ...gpuTest,
  fn: async () => {
    const text = await runCli(["ppl", "--model", MODEL, "--data", TEST]);
    assert.equal(text.code, 0, text.stderr);
    const p = (await json(["ppl", "--model", MODEL, "--data", TEST])).result;
    assert.equal(p.lines, countLines(TEST));
    assert.match(
      text.stdout,
      new RegExp(`^nll_nats_per_token: ${(p.nllNatsPerToken as number).toFixed(6)}$`, "m"),
    );
    assert.match(text.stdout, new RegExp(`^predicted_tokens: ${p.predictedTokens}$`, "m"));

    const g =
      (await json(["generate", "--model", MODEL, "--prompt", "It was", "--max-new-tokens", "3"])).result;
    assert.ok(Array.isArray(g.tokens) && g.tokens.length <= 3 && g.tokens.length > 0);
    assert.equal(typeof g.text, "string");
    assert.equal(g.promptTokens, 2);

    const i = (await json(["info"])).result;
    assert.equal(typeof i.cpuAdapter, "boolean");
    assert.ok(Array.isArray(i.features));

    const cacheDir = join(TMP, "tune-cache");
    const t = (await json([
      "tune",
      "--matrix-sizes",
      "64",
      "--layouts",
      "nn",
      "--budget",
      "0.2",
      "--cache-dir",
      cacheDir,
    ])).result;
    const classes = t.classes as { status: string; shape: { m: number } }[];
    assert.equal(classes.length, 1);
    assert.equal(classes[0].shape.m, 64);
    assert.equal(classes[0].status, "tuned");
    assert.equal(t.saved, true);
    const written = [...Deno.readDirSync(cacheDir)].map((e) => join(cacheDir, e.name));
    assert.deepEqual([t.cache], written);
  },
});

Deno.test({
  name: "json: old flag names still run, with a note each, and give the same result",
  ...gpuTest,
  fn: async () => {
    const data = join(TMP, "stories.jsonl");
    Deno.writeTextFileSync(data, sample(TEST, 6).replaceAll('"text"', '"story"'));
    const now = await runCli(["ppl", "--model", MODEL, "--data", data, "--text-field", "story"]);
    const old = await runCli(["ppl", "--model", MODEL, "--file", data, "--field", "story"]);
    assert.equal(now.code, 0, now.stderr);
    assert.equal(old.code, 0, old.stderr);
    assert.equal(old.stdout, now.stdout);
    assert.match(old.stderr, /^note: --file is now --data$/m);
    assert.match(old.stderr, /^note: --field is now --text-field$/m);
    assert.doesNotMatch(now.stderr, /note: --/);
  },
});
