/**
 * End-to-end tests of `finetune` on tiny-gpt2: a short run with validation writes a checkpoint
 * that our loader and the `eval` command read back; bad input fails with a one-line error.
 */
import { join } from "node:path";
import { main } from "../../cli.ts";
import { loadModel } from "../../host/files.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { fixtureModel, fixtureSst2 } from "../fixtures.ts";

function sample(path: string, n: number): string {
  return Deno.readTextFileSync(path).split("\n").filter((l) => l.trim()).slice(0, n).join("\n") + "\n";
}

Deno.test({
  name: "finetune on tiny-gpt2: checkpoint + finetune.json written, reloadable, evaluable",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const model = fixtureModel("tiny-gpt2");
    const train = join(dir, "train.jsonl"), valid = join(dir, "valid.jsonl"), out = join(dir, "ft");
    Deno.writeTextFileSync(train, sample(fixtureSst2("train"), 12));
    Deno.writeTextFileSync(valid, sample(fixtureSst2("validation"), 8));
    const args = [
      "finetune",
      "--model",
      model,
      "--data",
      train,
      "--valid-data",
      valid,
      "--task",
      "sst2",
      "--steps",
      "4",
      "--batch",
      "4",
      "--lr",
      "0.01",
      "--eval-every",
      "2",
      "--out-dir",
      out,
    ];
    if (await main(args) !== 0) throw new Error("finetune failed");
    for (
      const f of [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "finetune.json",
      ]
    ) {
      Deno.statSync(join(out, f));
    }
    const rec = JSON.parse(Deno.readTextFileSync(join(out, "finetune.json")));
    if (rec.history.length !== 4 || rec.evals.map((e: { step: number }) => e.step).join() !== "2,4") {
      throw new Error(`finetune.json: history ${rec.history.length}, evals ${JSON.stringify(rec.evals)}`);
    }
    if (rec.savedValidAccuracy !== rec.bestValidAccuracy) {
      throw new Error(`saved checkpoint scores ${rec.savedValidAccuracy}, best was ${rec.bestValidAccuracy}`);
    }
    const m = await loadModel(await ctx(), out);
    if (m.config.hiddenSize !== 2) throw new Error("reloaded config differs");
    m.dispose();
    if (await main(["eval", "--model", out, "--task", "sst2", "--data", valid]) !== 0) {
      throw new Error("eval of the checkpoint failed");
    }

    // A second run into the same folder needs --overwrite.
    if (await main(args) !== 2) throw new Error("an existing checkpoint was overwritten without --overwrite");
    if (await main([...args, "--steps", "1", "--overwrite"]) !== 0) throw new Error("--overwrite failed");
    if (JSON.parse(Deno.readTextFileSync(join(out, "finetune.json"))).history.length !== 1) {
      throw new Error("not overwritten");
    }
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "finetune: bad input fails with a usage error before any GPU work",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const bad = join(dir, "bad.jsonl");
    Deno.writeTextFileSync(bad, '{"text": "ok", "label": 1}\n{"text": 3}\n');
    const other = join(dir, "other.jsonl");
    Deno.writeTextFileSync(other, '{"text": "angry", "label": 3}\n');
    const base = ["finetune", "--model", "/nonexistent", "--out-dir", join(dir, "o")];
    const cases: string[][] = [
      [...base],
      [...base, "--data", join(dir, "missing.jsonl")],
      [...base, "--data", bad],
      [...base, "--data", other, "--task", "emotion"],
      [...base, "--data", other, "--steps", "0"],
      [...base, "--data", other, "--lr", "abc"],
    ];
    for (const args of cases) {
      const code = await main(args);
      if (code !== 2) throw new Error(`expected exit 2 for ${args.slice(4).join(" ")}, got ${code}`);
    }
    await Deno.remove(dir, { recursive: true });
  },
});
