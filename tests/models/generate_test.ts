/**
 * Token choice on the GPU (greedy, temperature, top-k, top-p, EOS bookkeeping) against CPU
 * expectations, and generation with the real fixtures: TinyStories continues "Once upon a time"
 * as its README shows, the trained gpt2-d128 (BF16 single file) and an F16 two-shard copy of it
 * load and generate alike, and greedy decoding with the KV cache equals full recomputation token for token, batched with
 * left padding included.
 */
import assert from "node:assert";
import { Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import { sampleTokens } from "../../models/sampling.ts";
import { generate, generateText } from "../../models/generate.ts";
import { loadModel, loadTokenizer } from "../../host/files.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { fixtureModel } from "../fixtures.ts";
import { writeShardedCopy } from "../sharded_fixture.ts";
import { join } from "node:path";

function softmax(row: ArrayLike<number>, temperature: number): number[] {
  const m = Math.max(...Array.from(row));
  const e = Array.from(row, (x) => Math.exp((x - m) / temperature));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

async function pick(
  logits: Float32Array,
  shape: [number, number],
  opts: Parameters<typeof sampleTokens>[3],
  finishedInit?: number[],
): Promise<{ ids: number[]; finished: number[] }> {
  const c = await ctx();
  const l = Tensor.from(c, logits, shape);
  const ids = Tensor.zeros(c, [shape[0]]);
  const fin = finishedInit ? Tensor.from(c, finishedInit, [shape[0]]) : Tensor.zeros(c, [shape[0]]);
  sampleTokens(l, ids, fin, opts);
  const out = { ids: Array.from(await ids.read()), finished: Array.from(await fin.read()) };
  for (const t of [l, ids, fin]) t.dispose();
  return out;
}

Deno.test({
  name: "sampling: greedy is the argmax (lowest index on ties); top-k 1 and tiny top-p are greedy too",
  ...gpuTest,
  fn: async () => {
    const rng = new Rng(3);
    const B = 4, V = 1037; // not a multiple of the workgroup
    const logits = rng.normals(B * V, 3);
    const want = [0, 1, 2, 3].map((b) => {
      let best = 0;
      for (let i = 1; i < V; i++) if (logits[b * V + i] > logits[b * V + best]) best = i;
      return best;
    });
    const base = { step: 0, eosId: null, padId: 0 };
    assert.deepStrictEqual((await pick(logits, [B, V], base)).ids, want);
    assert.deepStrictEqual((await pick(logits, [B, V], { ...base, temperature: 0.7, topK: 1 })).ids, want);
    assert.deepStrictEqual((await pick(logits, [B, V], { ...base, temperature: 2, topP: 1e-6 })).ids, want);
    logits[2 * V + 5] = 50;
    logits[2 * V + 900] = 50; // a tie: the lower index wins
    assert.deepStrictEqual((await pick(logits, [B, V], base)).ids, [want[0], want[1], 5, want[3]]);
  },
});

Deno.test({
  name: "sampling: frequencies follow softmax(logits / T) restricted to top-k / top-p; a seed fixes them",
  ...gpuTest,
  fn: async () => {
    const V = 300;
    const row = new Float32Array(V).fill(-20);
    const live = [7, 42, 43, 150, 299];
    const vals = [2.0, 1.5, 1.0, 0.5, 0.0];
    live.forEach((i, k) => (row[i] = vals[k]));
    // Many rows = many independent draws in one launch (each row has its own random stream).
    const B = 1200;
    const logits = new Float32Array(B * V);
    for (let b = 0; b < B; b++) logits.set(row, b * V);
    const T = 1.3;
    const cases: { topK?: number; topP?: number; support: number[] }[] = [
      { support: live },
      { topK: 3, support: [7, 42, 43] },
      // probabilities at T=1.3 ≈ .374 .254 .173 .118 .080: top-p keeps the smallest prefix reaching p
      { topP: 0.6, support: [7, 42] },
      { topP: 0.7, support: [7, 42, 43] },
      { topK: 4, topP: 0.99, support: [7, 42, 43, 150] },
    ];
    for (const cs of cases) {
      const { ids } = await pick(logits, [B, V], {
        step: 5,
        eosId: null,
        padId: 0,
        temperature: T,
        seed: 11,
        ...cs,
      });
      const p = softmax(row, T);
      const mass = cs.support.reduce((s, i) => s + p[i], 0);
      for (const id of ids) {
        assert.ok(cs.support.includes(id), `token ${id} outside the support ${cs.support}`);
      }
      for (const i of cs.support) {
        const want = p[i] / mass;
        const got = ids.filter((x) => x === i).length / B;
        const sd = Math.sqrt(want * (1 - want) / B);
        assert.ok(Math.abs(got - want) < 5 * sd + 1e-3, `token ${i}: frequency ${got}, expected ${want}`);
      }
      const again = await pick(logits, [B, V], {
        step: 5,
        eosId: null,
        padId: 0,
        temperature: T,
        seed: 11,
        ...cs,
      });
      assert.deepStrictEqual(again.ids, ids);
    }
    const other = await pick(logits, [B, V], { step: 6, eosId: null, padId: 0, temperature: T, seed: 11 });
    const first = await pick(logits, [B, V], { step: 5, eosId: null, padId: 0, temperature: T, seed: 11 });
    assert.notDeepStrictEqual(other.ids, first.ids);
  },
});

Deno.test({
  name: "sampling: a row that picks EOS is marked finished; finished rows emit the pad id",
  ...gpuTest,
  fn: async () => {
    const V = 10;
    const logits = new Float32Array(3 * V);
    logits[0 * V + 2] = 5; // row 0 → EOS (2)
    logits[1 * V + 7] = 5; // row 1 → 7
    logits[2 * V + 7] = 5; // row 2 was already finished → pad
    const out = await pick(logits, [3, V], { step: 0, eosId: 2, padId: 9 }, [0, 0, 1]);
    assert.deepStrictEqual(out.ids, [2, 7, 9]);
    assert.deepStrictEqual(out.finished, [1, 0, 1]);
  },
});

Deno.test({
  name: "generate: TinyStories continues 'Once upon a time' greedily as its README shows",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const dir = fixtureModel("tinystories-656k");
    const model = await loadModel(c, dir);
    const tok = await loadTokenizer(dir);
    try {
      const r = await generateText(model, tok, ["Once upon a time"], { maxNewTokens: 40 });
      console.log(`tinystories: ${JSON.stringify(r.texts[0])}`);
      // README: " Once upon a time, a little girl named Lily lived in a small house with her mom, dad, ..."
      assert.ok(
        r.texts[0].startsWith(", a little girl named Lily lived in a small house with her mom, dad"),
        `unexpected continuation ${JSON.stringify(r.texts[0])}`,
      );
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name: "generate: greedy with the KV cache equals full recomputation, batched with left padding",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    for (const name of ["tinystories-656k", "gpt2-d128"] as const) {
      const dir = fixtureModel(name);
      const model = await loadModel(c, dir);
      const tok = await loadTokenizer(dir);
      try {
        const prompts = ["Once upon a time", "The movie was", "She said that the little dog"].map((p) =>
          tok.encode(p)
        );
        const n = 12;
        const cached = await generate(model, prompts, {
          maxNewTokens: n,
          eosId: null,
          padId: tok.padId ?? 0,
        });
        const full = await generate(model, prompts, {
          maxNewTokens: n,
          eosId: null,
          padId: tok.padId ?? 0,
          useCache: false,
        });
        assert.deepStrictEqual(cached.tokens, full.tokens, `${name}: cache and recomputation differ`);
        // Each row alone (no padding) gives the same tokens as in the batch.
        for (let b = 0; b < prompts.length; b++) {
          const alone = await generate(model, [prompts[b]], { maxNewTokens: n, eosId: null });
          assert.deepStrictEqual(
            alone.tokens[0],
            cached.tokens[b],
            `${name}: row ${b} differs alone and batched`,
          );
        }
        assert.ok(cached.tokens.every((t) => t.length === n));
      } finally {
        model.dispose();
      }
    }
  },
});

Deno.test({
  name:
    "generate: gpt2-d128 (BF16) and its F16 two-shard copy load and generate the same greedy text; sampling is seeded",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    // The F16 two-shard copy stands in for gpt2-d256 (F16, two shards; checked in tests/shared/):
    // BF16 values are (nearly all) exact in F16, so greedy decoding must not change.
    const tmp = await Deno.makeTempDir();
    try {
      const sharded = join(tmp, "gpt2-d128-f16-sharded");
      await writeShardedCopy(fixtureModel("gpt2-d128"), sharded, { dtype: "F16", shards: 2 });
      const greedyTexts: string[] = [];
      for (const [name, dir] of [["gpt2-d128", fixtureModel("gpt2-d128")], ["F16 two-shard copy", sharded]]) {
        const model = await loadModel(c, dir);
        const tok = await loadTokenizer(dir);
        try {
          const greedy = await generateText(model, tok, ["This movie is"], { maxNewTokens: 12 });
          console.log(`${name} greedy: ${JSON.stringify(greedy.texts[0])}`);
          assert.ok(greedy.tokens[0].length > 0);
          greedyTexts.push(greedy.texts[0]);
          const opts = { maxNewTokens: 10, temperature: 0.9, topK: 40, topP: 0.95, seed: 7 };
          const a = await generateText(model, tok, ["This movie is", "I think"], opts);
          const b = await generateText(model, tok, ["This movie is", "I think"], opts);
          console.log(`${name} sampled: ${JSON.stringify(a.texts)}`);
          assert.deepStrictEqual(a.tokens, b.tokens);
        } finally {
          model.dispose();
        }
      }
      assert.strictEqual(greedyTexts[1], greedyTexts[0], "the F16 sharded copy decodes differently");
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
Deno.test({
  name: "generate: stops at EOS, and decoding does not grow GPU memory",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const dir = fixtureModel("tinystories-656k");
    const model = await loadModel(c, dir);
    const tok = await loadTokenizer(dir);
    try {
      // A long budget: the story ends with <|end_story|> before it.
      const r = await generate(model, [tok.encode("Once upon a time")], {
        maxNewTokens: 400,
        checkEvery: 16,
      });
      assert.strictEqual(r.finishReasons[0], "eos", `no EOS in ${r.tokens[0].length} tokens`);
      assert.ok(!r.tokens[0].includes(tok.eosId!));
      await c.sync();
      const before = c.pool.stats.bytesLive;
      await generate(model, [tok.encode("Once upon a time"), tok.encode("Tom")], { maxNewTokens: 20 });
      await c.sync();
      assert.strictEqual(c.pool.stats.bytesLive, before);
    } finally {
      model.dispose();
    }
  },
});
