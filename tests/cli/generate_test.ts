/**
 * End-to-end tests of `generate` on the tiny models: the TinyStories greedy continuation, the
 * cache-free path giving the same text, seeded sampling, and one-line errors for bad flags and a
 * missing model folder.
 */
import assert from "node:assert";
import { gpuTest } from "../helpers.ts";
import { fixture, fixtureModel } from "../fixtures.ts";
import { runCli } from "./capture.ts";

Deno.test({
  name: "cli generate: TinyStories greedy continuation (prompt excluded); --no-cache prints the same",
  ...gpuTest,
  fn: async () => {
    const model = fixtureModel("tinystories-656k");
    const args = ["generate", "--model", model, "--prompt", "Once upon a time", "--max-new-tokens", "20"];
    const a = await runCli(args);
    assert.strictEqual(a.code, 0, a.stderr);
    assert.ok(a.stdout.startsWith(", a little girl named Lily lived in a small house"), a.stdout);
    const b = await runCli([...args, "--no-cache", "--greedy"]);
    assert.strictEqual(b.code, 0, b.stderr);
    assert.strictEqual(b.stdout, a.stdout);
  },
});

Deno.test({
  name: "cli generate: seeded top-k/top-p sampling on gpt2-d128 is reproducible",
  ...gpuTest,
  fn: async () => {
    const model = fixtureModel("gpt2-d128");
    const args = [
      "generate",
      "--model",
      model,
      "--prompt",
      "The film",
      "--max-new-tokens",
      "12",
      "--temperature",
      "0.8",
      "--top-k",
      "50",
      "--top-p",
      "0.9",
      "--seed",
      "42",
    ];
    const a = await runCli(args);
    const b = await runCli(args);
    assert.strictEqual(a.code, 0, a.stderr);
    assert.ok(a.stdout.length > 0);
    assert.strictEqual(a.stdout, b.stdout);
  },
});

Deno.test({
  name: "cli generate: clear errors for missing flags, conflicting flags and a missing model folder",
  ...gpuTest,
  fn: async () => {
    const model = fixtureModel("tinystories-656k");
    const cases: [string[], RegExp][] = [
      [["generate"], /--prompt is required/],
      [["generate", "--model", model], /--prompt is required/],
      [
        ["generate", "--model", model, "--prompt", "x", "--greedy", "--temperature", "1"],
        /--greedy cannot be combined/,
      ],
      [["generate", "--model", model, "--prompt", "x", "--top-k", "5"], /need --temperature/],
      [["generate", "--model", model, "--prompt", "x", "--temperature", "0"], /--temperature must be/],
      [
        ["generate", "--model", "/nonexistent/model-dir", "--prompt", "x"],
        /model folder '\/nonexistent\/model-dir' does not exist/,
      ],
      [["generate", "--model", fixture("golden"), "--prompt", "x"], /cannot load model/],
    ];
    for (const [args, re] of cases) {
      const r = await runCli(args);
      assert.strictEqual(r.code, 2, `${args.join(" ")}: exit ${r.code}, stderr ${r.stderr}`);
      assert.match(r.stderr, re);
    }
    // Without --model, the bundled gpt2-d128 continues the prompt.
    const bundled = await runCli(["generate", "--prompt", "This movie is", "--max-new-tokens", "2"]);
    assert.strictEqual(bundled.code, 0, bundled.stderr);
    assert.ok(bundled.stdout.trim().length > 0);
  },
});
