/**
 * End-to-end tests of `ppl`: TinyStories' NLL on the sentence its README measured (3.40
 * nats/token with an independent NumPy implementation), the output format, --field and
 * --max-length, and errors that name the line.
 */
import assert from "node:assert";
import { join } from "node:path";
import { gpuTest } from "../helpers.ts";
import { fixtureModel } from "../fixtures.ts";
import { runCli } from "./capture.ts";

const LILY =
  "Once upon a time, there was a little girl named Lily. She loved to play outside with her dog. One day, she saw a big red ball in the park.";

function lastValues(stdout: string): { nll: number; ppl: number } {
  const lines = stdout.trim().split("\n");
  const [a, b] = lines.slice(-2);
  const nll = /^nll_nats_per_token: (\S+)$/.exec(a);
  const ppl = /^perplexity: (\S+)$/.exec(b);
  assert.ok(nll && ppl, `last two lines: ${a} / ${b}`);
  return { nll: Number(nll[1]), ppl: Number(ppl[1]) };
}

Deno.test({
  name: "cli ppl: TinyStories scores the README sentence at 3.40 nats/token; format, --field, --max-length",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const model = fixtureModel("tinystories-656k");
      const file = join(dir, "lily.jsonl");
      await Deno.writeTextFile(file, JSON.stringify({ text: LILY, label: 1 }) + "\n");
      const r = await runCli(["ppl", "--model", model, "--data", file]);
      assert.strictEqual(r.code, 0, r.stderr);
      const { nll, ppl } = lastValues(r.stdout);
      console.log(`tinystories README sentence: nll ${nll}, perplexity ${ppl}`);
      assert.ok(Math.abs(nll - 3.40) < 0.01, `nll ${nll}`);
      assert.ok(Math.abs(ppl - Math.exp(nll)) < 1e-3 * ppl);

      // Several lines, another field: the file's mean is the token-weighted mean of its lines.
      const texts = [LILY, "Tom had a red car.", "The sun was hot and the birds sang."];
      const multi = join(dir, "multi.jsonl");
      await Deno.writeTextFile(multi, texts.map((t) => JSON.stringify({ story: t })).join("\n") + "\n\n");
      const m = await runCli([
        "ppl",
        "--model",
        model,
        "--data",
        multi,
        "--text-field",
        "story",
        "--batch",
        "2",
      ]);
      assert.strictEqual(m.code, 0, m.stderr);
      let total = 0, count = 0;
      for (const t of texts) {
        const one = join(dir, "one.jsonl");
        await Deno.writeTextFile(one, JSON.stringify({ story: t }));
        const o = await runCli(["ppl", "--model", model, "--data", one, "--text-field", "story"]);
        const n = Number(/predicted_tokens: (\d+)/.exec(o.stdout)![1]);
        total += lastValues(o.stdout).nll * n;
        count += n;
      }
      assert.ok(Math.abs(lastValues(m.stdout).nll - total / count) < 1e-4, `${m.stdout} vs ${total / count}`);

      const short = await runCli(["ppl", "--model", model, "--data", file, "--max-length", "5"]);
      assert.match(short.stdout, /predicted_tokens: 4\n/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "cli ppl: errors name the line (bad JSON, missing field), the missing file and model",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const model = fixtureModel("tiny-gpt2");
      const bad = join(dir, "bad.jsonl");
      await Deno.writeTextFile(bad, '{"text": "fine"}\n{"text": oops}\n');
      const noField = join(dir, "nofield.jsonl");
      await Deno.writeTextFile(noField, '{"text": "fine"}\n\n{"sentence": "x"}\n');
      const cases: [string[], RegExp][] = [
        [["ppl", "--model", model, "--data", bad], /bad\.jsonl:2: not valid JSON/],
        [["ppl", "--model", model, "--data", noField], /nofield\.jsonl:3: no "text" field/],
        [["ppl", "--model", model, "--data", join(dir, "none.jsonl")], /does not exist/],
        [["ppl", "--model", join(dir, "no-model"), "--data", bad], /does not exist/],
        [["ppl", "--data", bad], /--model is required/],
      ];
      for (const [args, re] of cases) {
        const r = await runCli(args);
        assert.strictEqual(r.code, 2, `${args.join(" ")}: exit ${r.code}, stderr ${r.stderr}`);
        assert.match(r.stderr, re);
      }
      // tiny-gpt2 runs end to end (random weights: only the format is checked).
      const ok = join(dir, "ok.jsonl");
      await Deno.writeTextFile(ok, '{"text": "Hello world, this is a test."}\n');
      const r = await runCli(["ppl", "--model", model, "--data", ok]);
      assert.strictEqual(r.code, 0, r.stderr);
      const { nll } = lastValues(r.stdout);
      assert.ok(nll > 0 && Number.isFinite(nll));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
