/**
 * Checks of the real gpt2-d256 checkpoint (F16, two shards, 39 MB), which only the team's shared
 * folder has: run with `deno task test:shared`. The everyday suite covers the same code paths on
 * an F16 two-shard copy of an in-repository model (tests/sharded_fixture.ts); these tests keep
 * one real sharded checkpoint, with values computed independently with numpy. Without the shared
 * folder (../shared or GRADMM_SHARED) they are skipped, and say so.
 */
import nodeAssert from "node:assert";
import { loadModel, loadModelConfig, loadTokenizer, openCheckpoint } from "../../host/files.ts";
import { checkWeights, expectedWeights } from "../../models/weight_names.ts";
import { generateText } from "../../models/generate.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { haveShared, SHARED, sharedFixture } from "../fixtures.ts";

const assert: (condition: unknown, message?: string) => asserts condition = nodeAssert.ok;
const assertEquals: <T>(actual: unknown, expected: T, message?: string) => asserts actual is T =
  nodeAssert.deepStrictEqual;

const ignore = !haveShared();
if (ignore) {
  console.warn(
    `tests/shared: skipped, the team's shared folder is not at ${SHARED} ` +
      "(put it beside the repository as ../shared, or set GRADMM_SHARED to its path)",
  );
}

Deno.test({
  name: "gpt2-d256 (real, F16, two shards): values match numpy, tensors come from the indexed shard",
  ignore,
  fn: async () => {
    const sum = (a: Float32Array) => {
      let total = 0;
      for (let i = 0; i < a.length; i++) total += a[i];
      return total;
    };
    const close = (a: number, b: number, what: string) =>
      assert(Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)) + 1e-6, `${what}: ${a} vs ${b}`);

    using d256 = await openCheckpoint(sharedFixture("models", "gpt2-d256"));
    assertEquals(d256.tensors.size, 76);
    assertEquals(d256.info("transformer.wte.weight").dtype, "F16");
    const wte256 = await d256.read("transformer.wte.weight");
    assertEquals([...wte256.subarray(0, 4)], [
      0.07452392578125,
      0.0220947265625,
      -0.004459381103515625,
      -0.0212554931640625,
    ]);
    close(sum(wte256), 36574.79520237446, "gpt2-d256 wte sum");
    const attn = await d256.read("transformer.h.5.attn.c_attn.weight");
    close(sum(attn), -1.3613619804382324, "gpt2-d256 h.5 c_attn sum");
    assertEquals(
      d256.info("transformer.h.5.attn.c_attn.weight").file.endsWith("model-00002-of-00002.safetensors"),
      true,
    );
  },
});

Deno.test({
  name: "gpt2-d256: the checkpoint matches its config's weight table",
  ignore,
  fn: async () => {
    const dir = sharedFixture("models", "gpt2-d256");
    const config = await loadModelConfig(dir);
    assertEquals([config.family, config.hiddenSize, config.numLayers], ["gpt2", 256, 6]);
    using checkpoint = await openCheckpoint(dir);
    const names = checkWeights(config, checkpoint, dir);
    const required = expectedWeights(config).filter((s) => !s.optional);
    assert(required.every((s) => names.has(s.name)));
    for (const [canonical, stored] of names) {
      assertEquals(
        checkpoint.info(stored).shape,
        expectedWeights(config).find((s) => s.name === canonical)!.shape,
        canonical,
      );
    }
  },
});

Deno.test({
  name: "gpt2-d256: loads and generates; sampling is seeded",
  ignore,
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const dir = sharedFixture("models", "gpt2-d256");
    const model = await loadModel(c, dir);
    const tok = await loadTokenizer(dir);
    try {
      const greedy = await generateText(model, tok, ["This movie is"], { maxNewTokens: 12 });
      console.log(`gpt2-d256 greedy: ${JSON.stringify(greedy.texts[0])}`);
      assert(greedy.tokens[0].length > 0);
      const opts = { maxNewTokens: 10, temperature: 0.9, topK: 40, topP: 0.95, seed: 7 };
      const a = await generateText(model, tok, ["This movie is", "I think"], opts);
      const b = await generateText(model, tok, ["This movie is", "I think"], opts);
      console.log(`gpt2-d256 sampled: ${JSON.stringify(a.texts)}`);
      assertEquals(a.tokens, b.tokens);
    } finally {
      model.dispose();
    }
  },
});
