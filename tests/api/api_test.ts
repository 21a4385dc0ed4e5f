/**
 * The one-call API: defaults resolved once (api/defaults.ts) and the CLI's runs equal to the
 * library's on the same inputs (synth records and settings, generate's text, eval's accuracy),
 * a Tokenizer used as synth's TextCodec, and a tiny finetune.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  CPU_SYNTH_DEFAULTS,
  evaluate,
  finetune,
  generate,
  GENERATE_DEFAULTS,
  LM_GUIDED_DEFAULTS,
  parseJsonl,
  resolveSynthSettings,
  runSynth,
  synth,
  SYNTH_DEFAULTS,
  SynthError,
  type SynthEvent,
  type TextCodec,
} from "../../mod.ts";
import { folderSource, loadModel, loadTokenizer, synth as hostSynth } from "../../host/mod.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { fixture, fixtureModel } from "../fixtures.ts";
import { runCli } from "../cli/capture.ts";
import { synthFlags } from "../synth_flags.ts";
import { iterationsWithin, roundPasses } from "../../admm/passes.ts";
import { LM_REFINE_PASSES_PER_ITERATION } from "../../admm/refine_lm.ts";

Deno.test("resolveSynthSettings: the paper's defaults, CPU-sized ones on a CPU adapter, given values kept", () => {
  const paper = resolveSynthSettings({}, false);
  assert.equal(paper.cpuDefaults, false);
  assert.equal(paper.options.perClass, SYNTH_DEFAULTS.perClass);
  assert.equal(
    resolveSynthSettings({ method: "official" }, false).options.admm.outerSteps,
    SYNTH_DEFAULTS.outerSteps,
  );
  assert.deepEqual(paper.options.rhos, [...SYNTH_DEFAULTS.rho]);
  assert.equal(paper.options.admm.select, "total");
  assert.equal(paper.options.refine, undefined);

  // The default method is lm-guided: the blend decode, and refine-lm aimed at the real NLL.
  assert.equal(paper.options.admm.blend?.beta, LM_GUIDED_DEFAULTS.decodeBeta);
  assert.equal(paper.options.refineLm?.nllTarget, LM_GUIDED_DEFAULTS.nllTarget);
  assert.equal(paper.options.refineLm?.lambda, LM_GUIDED_DEFAULTS.lambda);
  // With DP no target (it would read the real examples); --official: the paper's path, untouched.
  assert.equal(resolveSynthSettings({ dp: { epsilon: 4 } }, false).options.refineLm?.nllTarget, undefined);
  const official = resolveSynthSettings({ method: "official" }, false).options;
  assert.equal(official.admm.blend, undefined);
  assert.equal(official.refineLm, undefined);

  const cpu = resolveSynthSettings({}, true);
  assert.equal(cpu.cpuDefaults, true);
  assert.equal(cpu.options.admm.outerSteps, CPU_SYNTH_DEFAULTS.lmGuided.outerSteps);
  assert.equal(cpu.options.refineLm?.iterations, CPU_SYNTH_DEFAULTS.lmGuided.refineIterations);
  assert.equal(
    resolveSynthSettings({ method: "official" }, true).options.admm.outerSteps,
    CPU_SYNTH_DEFAULTS.outerSteps,
  );
  // lm-guided is sized to cost what official costs, on the CPU and on the paper's settings:
  // within one refinement iteration of its passes, never more.
  for (const cpuAdapter of [true, false]) {
    const guided = resolveSynthSettings({}, cpuAdapter).options;
    const officialPasses = roundPasses(resolveSynthSettings({ method: "official" }, cpuAdapter).options.admm);
    const guidedPasses = roundPasses(guided.admm, guided.refine, guided.refineLm);
    assert.ok(
      guidedPasses <= officialPasses && guidedPasses > officialPasses - LM_REFINE_PASSES_PER_ITERATION,
      `${cpuAdapter ? "CPU" : "paper"}: lm-guided ${guidedPasses} passes vs official ${officialPasses}`,
    );
    assert.equal(guided.refineLm?.iterations, iterationsWithin(officialPasses, guided.admm, "refine-lm"));
  }
  assert.equal(paper.options.admm.outerSteps, SYNTH_DEFAULTS.lmGuided.outerSteps);
  assert.equal(cpu.options.perClass, CPU_SYNTH_DEFAULTS.perClass);
  assert.equal(cpu.options.admm.innerSteps, CPU_SYNTH_DEFAULTS.innerSteps);
  assert.equal(cpu.options.admm.initCandidates, CPU_SYNTH_DEFAULTS.initCandidates);
  assert.equal(cpu.options.batch, Math.min(SYNTH_DEFAULTS.batch, CPU_SYNTH_DEFAULTS.perClass));
  assert.equal(resolveSynthSettings({ paper: true }, true).options.perClass, SYNTH_DEFAULTS.perClass);

  const given = resolveSynthSettings({ perClass: 4, rho: 0.3, method: "refine", refineIterations: 3 }, true);
  assert.equal(given.options.perClass, 4);
  assert.equal(given.options.batch, 4);
  assert.deepEqual(given.options.rhos, [0.3]);
  assert.equal(given.options.admm.select, "discrete");
  assert.equal(given.options.refine?.iterations, 3);
  assert.throws(() => resolveSynthSettings({ method: "official", refineIterations: 3 }, false), SynthError);
  assert.throws(() => resolveSynthSettings({ task: "nope" }, false), /unknown task 'nope'/);
});

/** Small synth settings, as flags and as options (--topk, --seed, --lr, --real-pool left to the defaults). */
const SMALL = { perClass: 4, batch: 2, outerSteps: 2, innerSteps: 2, refineIterations: 2 };
const FLAGS = synthFlags(SMALL);
const MORE = { initCandidates: 2, real: 8, length: 8 };
const MORE_FLAGS = synthFlags(MORE);

Deno.test({
  name: "synth(): records and settings equal the CLI's for the same inputs; defaults are the CLI's",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const modelDir = fixtureModel("tiny-gpt2");
    const dataFile = fixture("data", "sst2", "train.jsonl");
    const out = join(dir, "cli.jsonl");
    const cli = await runCli([
      "synth",
      ...FLAGS,
      ...MORE_FLAGS,
      "--model",
      modelDir,
      "--data",
      dataFile,
      "--out",
      out,
    ]);
    assert.equal(cli.code, 0, cli.stderr);
    const manifest = JSON.parse(await Deno.readTextFile(join(dir, "cli.manifest.json")));

    const events: SynthEvent["kind"][] = [];
    const refineDone: string[] = [];
    const data = parseJsonl(await Deno.readTextFile(dataFile));
    const result = await synth({
      model: folderSource(modelDir),
      data,
      ...SMALL,
      ...MORE,
      onEvent: (e) => {
        events.push(e.kind);
        if (e.kind === "refine") refineDone.push(`${e.progress.iteration}/${e.progress.iterations}`);
      },
    });
    assert.equal(result.records.length, 2 * SMALL.perClass);
    for (const r of result.records) {
      assert.ok(Number.isFinite(r.match_loss) && Number.isFinite(r.nll), JSON.stringify(r));
    }
    const cliLines = (await Deno.readTextFile(out)).trim().split("\n");
    assert.deepEqual(result.records.map((r) => JSON.stringify(r)), cliLines);
    assert.deepEqual(result.manifest.settings, manifest.settings);
    assert.equal(manifest.settings.topk, SYNTH_DEFAULTS.topk);
    assert.equal(manifest.settings.realPool, SYNTH_DEFAULTS.realPool);
    assert.equal(manifest.settings.admm.lr, SYNTH_DEFAULTS.lr);
    assert.deepEqual(result.manifest.completed, manifest.completed);
    assert.equal(events[0], "plan");
    assert.equal(events.filter((k) => k === "round").length, 2 * SMALL.perClass / SMALL.batch);
    // The default method's swaps report their progress: from 0 of the iterations, once per round
    // at each start, to all of them at each end (a refinement with nothing left to try stops early).
    const it = SMALL.refineIterations, rounds = 2 * SMALL.perClass / SMALL.batch;
    assert.equal(refineDone.filter((x) => x === `0/${it}`).length, rounds, refineDone.join(" "));
    assert.equal(refineDone.filter((x) => x === `${it}/${it}`).length, rounds, refineDone.join(" "));
    // The CLI's manifest records its invocation.
    const [inv] = manifest.invocations;
    assert.deepEqual(inv.command.slice(0, 3), ["synth", ...FLAGS.slice(0, 2)]);
    assert.match(inv.runtime, /^Deno \d/);
    assert.ok(Date.parse(inv.endedAt) >= Date.parse(inv.startedAt));
    assert.equal(inv.cpuDefaults, (await ctx()).isCpuAdapter);

    // The host form takes a folder path and a JSONL path, and gives the same records.
    const host = await hostSynth({ model: modelDir, data: dataFile, ...SMALL, ...MORE });
    assert.deepEqual(host.records, result.records);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "a Tokenizer is a TextCodec: runSynth takes one as it is",
  ...gpuTest,
  fn: async () => {
    const modelDir = fixtureModel("tiny-gpt2");
    const tokenizer = await loadTokenizer(modelDir);
    const codec: TextCodec = tokenizer; // type-checks: no adapter needed
    const model = await loadModel(await ctx(), modelDir);
    try {
      const data = parseJsonl(await Deno.readTextFile(fixture("data", "sst2", "train.jsonl")));
      const { options } = resolveSynthSettings({ ...SMALL, ...MORE, perClass: 2, outerSteps: 1 }, true);
      let records = 0;
      await runSynth(model, codec, data, options, () => false, (e) => {
        if (e.kind === "round") records += e.records.length;
      });
      assert.equal(records, 2 * 2);
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name: "generate() and evaluate() match the CLI's generate and eval with the shared defaults",
  ...gpuTest,
  fn: async () => {
    const modelDir = fixtureModel("tiny-gpt2");
    const dataFile = fixture("data", "sst2", "train.jsonl");
    const model = { model: await loadModel(await ctx(), modelDir), tokenizer: await loadTokenizer(modelDir) };
    try {
      const g = await generate({ model, prompts: "The movie was" });
      assert.ok(g.tokens[0].length <= GENERATE_DEFAULTS.maxNewTokens);
      const cliGen = await runCli(["generate", "--model", modelDir, "--prompt", "The movie was"]);
      assert.equal(cliGen.code, 0, cliGen.stderr);
      assert.equal(cliGen.stdout, g.texts[0]);

      const data = parseJsonl(await Deno.readTextFile(dataFile)).slice(0, 24);
      const e = await evaluate({ model, data });
      assert.equal(e.total, data.length);
      const small = await Deno.makeTempFile({ suffix: ".jsonl" });
      await Deno.writeTextFile(small, data.map((x) => JSON.stringify(x)).join("\n") + "\n");
      const cliEval = await runCli(["eval", "--model", modelDir, "--file", small, "--json"]);
      assert.equal(cliEval.code, 0, cliEval.stderr);
      assert.equal(JSON.parse(cliEval.stdout).accuracy, e.accuracy);
      await Deno.remove(small);
    } finally {
      model.model.dispose();
    }
  },
});

Deno.test({
  name: "finetune(): a few steps from a model source; finite losses, the trained model returned",
  ...gpuTest,
  fn: async () => {
    const modelDir = fixtureModel("tiny-gpt2");
    const data = parseJsonl(await Deno.readTextFile(fixture("data", "sst2", "train.jsonl")));
    const run = await finetune({
      model: folderSource(modelDir),
      train: data.slice(0, 16),
      valid: data.slice(16, 24),
      steps: 2,
      batchSize: 4,
      evalEvery: 0,
    });
    try {
      assert.equal(run.history.length, 2);
      assert.ok(run.history.every((h) => Number.isFinite(h.loss)), JSON.stringify(run.history));
      assert.equal(run.evals.length, 1);
      assert.ok(run.model.parameters().size > 0);
    } finally {
      run.model.dispose();
    }
  },
});
