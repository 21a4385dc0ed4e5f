/**
 * Vocabulary matrices held in row chunks (models/chunked.ts), as models larger than one storage
 * binding need them:
 *
 * - the golden models (tests/fixtures/golden, vocabulary 97) loaded with their embedding and output
 *   layer split into 4 chunks still match transformers' float64 values (logits, hidden states,
 *   CE and its gradients, the matching loss and its gradient; rel 1e-4 as in golden_test.ts).
 *   These are split with `maxChunkBytes`, not a lowered binding limit: their [3, 9, 97] logits
 *   are larger than the whole embedding, so a binding limit a third of the embedding's size
 *   could not hold them.
 * - TinyStories (vocabulary 2048 × 128, 1 MiB) on a context whose binding limit is lowered to
 *   384 KiB, so that loading splits it into 4 chunks on its own: logits, the matching loss and
 *   its gradient equal the unchunked model's, the z-step's top-k candidates are the same ids,
 *   constrained decoding equals greedy generation, and saving writes the whole matrix back.
 * - random-weight models built on the GPU (models/random_model.ts) hold the same values
 *   chunked or not.
 */
import type { TransformerLM } from "../../models/transformer.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { lastHidden } from "../../admm/problem.ts";
import { makeTarget, matchingLoss, oneHot } from "../../admm/matching.ts";
import { lastLayerFactors } from "../../admm/target.ts";
import { constrainedDecode, disposeProjector, makeProjector, topkCosine } from "../../admm/zstep.ts";
import { crossEntropy } from "../../autograd/ops/loss.ts";
import { select } from "../../autograd/ops/shape.ts";
import { Rng } from "../../autograd/random.ts";
import { backward } from "../../autograd/tape.ts";
import { scope, Tensor } from "../../autograd/tensor.ts";
import { createContext, type GpuContext, GpuLimitError } from "../../kernels/device.ts";
import { chunkRows, RowChunks, type RowMatrix } from "../../models/chunked.ts";
import { folderSink, loadModel, openSafetensors } from "../../host/files.ts";
import { generate } from "../../models/generate.ts";
import type { CausalLM } from "../../models/model.ts";
import { sequenceNll } from "../../models/perplexity.ts";
import { randomModel } from "../../models/random_model.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { fixture, fixtureModel } from "../fixtures.ts";
import {
  checkFigures,
  goldenInputs,
  goldenInts,
  goldenMatchingFigures,
  goldenRealRows,
  relErr,
} from "./golden_fixtures.ts";
import { noGrad } from "../../autograd/grad_mode.ts";

const TOL = 1e-4;

function chunkCount(m: RowMatrix): number {
  return m instanceof RowChunks ? m.chunks.length : 1;
}

async function gradOf(m: RowMatrix): Promise<Float32Array> {
  const g = m instanceof RowChunks ? await m.readGrad() : await m.grad?.read();
  if (!g) throw new Error("the output layer has no gradient");
  return g;
}

Deno.test("chunkRows: fewest even chunks whose pooled buffers fit the limit", () => {
  assert.deepEqual(chunkRows(97, 16, 1 << 20), { count: 1, rowsPerChunk: 97 });
  // 97 rows of 64 B in ≤ 2 KiB: 4 chunks of 25 rows (1600 B, pooled as 2 KiB).
  assert.deepEqual(chunkRows(97, 16, 2048), { count: 4, rowsPerChunk: 25 });
  // phi-1.5's 51,200 × 2,048 under a 128 MiB limit: 4 chunks of 100 MiB.
  assert.deepEqual(chunkRows(51200, 2048, 128 << 20), { count: 4, rowsPerChunk: 12800 });
  assert.throws(() => chunkRows(10, 1024, 1000), GpuLimitError);
});

for (const family of ["gpt2", "llama", "phi"]) {
  Deno.test({
    name:
      `chunked golden ${family}: embedding and output layer in 4 row chunks still match transformers (rel 1e-4)`,
    ...gpuTest,
    fn: async () => {
      const dir = fixture("golden", family);
      const c = await ctx();
      const model = await loadModel(c, dir, { maxChunkBytes: 2048 });
      using g = await openSafetensors(join(dir, "golden.safetensors"));
      assert.equal(chunkCount(model.embedRows), 4, "embedding chunks");
      assert.equal(chunkCount(model.headRows), 4, "output layer chunks");
      // Code that needs the whole matrix in one binding fails with a clear error.
      assert.throws(
        () => model.inputEmbedding,
        (e: Error) => e instanceof GpuLimitError && /row chunks/.test(e.message),
      );
      const { ids, mask, pos, labels, B, T, real } = await goldenInputs(g);
      const d = model.config.hiddenSize, V = model.config.vocabSize;
      const figures: Record<string, number> = {};
      await scope(c, async () => {
        const idsT = Tensor.from(c, ids, [B, T]);
        const maskT = Tensor.from(c, mask, [B, T]);
        const posT = Tensor.from(c, pos, [B, T]);
        const embeds = noGrad(c, () => model.embed(idsT));
        embeds.requiresGrad = true;
        (model.headRows as RowChunks).requiresGrad = true;
        if (model.headBias) model.headBias.requiresGrad = true;
        const out = model.forward({ embeds, attentionMask: maskT, positionIds: posT, logits: "all" });
        const ce = crossEntropy(select(out.logits!, 1, T - 1), labels);
        backward(ce);
        figures.logits = relErr(await out.logits!.read(), await g.read("logits"), real(V));
        figures.last_hidden = relErr(await out.lastHidden.read(), await g.read("last_hidden"), real(d));
        figures.ce_last = relErr(await ce.read(), await g.read("ce_last"));
        figures.grad_head_weight = relErr(await gradOf(model.headRows), await g.read("grad_head_weight"));
        if (model.headBias) {
          figures.grad_head_bias = relErr(await model.headBias.grad!.read(), await g.read("grad_head_bias"));
        }
        figures.grad_inputs_embeds = relErr(await embeds.grad!.read(), await g.read("grad_inputs_embeds"));
      });
      (model.headRows as RowChunks).zeroGrad();
      (model.headRows as RowChunks).requiresGrad = false;
      if (model.headBias) {
        model.headBias.zeroGrad();
        model.headBias.requiresGrad = false;
      }

      // The matching step: target from the real batch, loss and dL/dx for the synthetic one.
      const rows = await goldenRealRows(g);
      await scope(c, async () => {
        const realLabels = await goldenInts(g, "real_labels");
        const { residuals, hidden } = await lastLayerFactors(model, rows, realLabels, 0);
        const target = makeTarget(residuals, hidden, model.headBias !== null, null);
        const head = { weight: model.headRows, bias: model.headBias };
        Object.assign(figures, await goldenMatchingFigures(c, model, g, target, head));
      });
      model.dispose();
      checkFigures(`chunked golden ${family}`, figures, TOL);
    },
  });
}

Deno.test({
  name: "chunked z-step: top-k over 4 chunks narrower than k equals the unchunked top-k (golden phi, k = 30)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const dir = fixture("golden", "phi");
    const whole = await loadModel(c, dir);
    const chunked = await loadModel(c, dir, { maxChunkBytes: 2048 }); // chunks of 25 rows
    assert.equal(chunkCount(chunked.embedRows), 4);
    const V = whole.config.vocabSize, d = whole.config.hiddenSize;
    const banned = Uint8Array.from({ length: V }, (_, i) => (i % 5 === 3 ? 1 : 0));
    const rng = new Rng(11);
    const u = rng.normals(3 * 7 * d);
    const ids = async (m: CausalLM) => {
      const p = makeProjector(m, banned, 30);
      const out = await scope(c, () => topkCosine(p, Tensor.from(c, u, [3, 7, d])).read());
      disposeProjector(p);
      return Array.from(out);
    };
    const want = await ids(whole);
    const got = await ids(chunked);
    assert.deepEqual(got, want);
    assert.ok(want.every((id) => banned[id] === 0), "banned ids must not be candidates");
    whole.dispose();
    chunked.dispose();
  },
});

/** Random target factors and synthetic inputs for a model with vocabulary V and width d. */
function matchingInputs(V: number, d: number) {
  const rng = new Rng(7);
  return {
    residuals: rng.normals(6 * V, 1e-2),
    hidden: rng.normals(6 * d),
    x: rng.normals(2 * 5 * d, 0.5),
    labels: [17, 912],
  };
}

/** Matching loss and dL/dx of `model` (created on its own context). */
async function matchingOn(model: CausalLM, inp: ReturnType<typeof matchingInputs>) {
  const c = model.ctx;
  const V = model.config.vocabSize, d = model.config.hiddenSize;
  return await scope(c, async () => {
    const target = makeTarget(
      Tensor.from(c, inp.residuals, [6, V]),
      Tensor.from(c, inp.hidden, [6, d]),
      false,
      null,
    );
    const x = Tensor.from(c, inp.x, [2, 5, d], { requiresGrad: true });
    const loss = matchingLoss(
      target,
      lastHidden(model, x),
      { weight: model.headRows, bias: model.headBias },
      oneHot(c, inp.labels, V),
    );
    backward(loss);
    return { loss: await loss.item(), grad: await x.grad!.read() };
  });
}

Deno.test({
  name:
    "lowered binding limit: TinyStories loads in 4 chunks; logits, matching loss + gradient, top-k, decode, NLL and save equal the unchunked model",
  ...gpuTest,
  fn: async () => {
    const dir = fixtureModel("tinystories-656k");
    const c = await ctx();
    const small: GpuContext = await createContext({ maxStorageBufferBindingSize: 384 * 1024 });
    assert.equal(small.limits.maxStorageBufferBindingSize, 384 * 1024);
    const whole = await loadModel(c, dir);
    const chunked = await loadModel(small, dir);
    assert.equal(chunkCount(whole.embedRows), 1);
    assert.equal(chunkCount(chunked.embedRows), 4, "a 1 MiB embedding under a 384 KiB limit");
    assert.equal(chunked.headRows, chunked.embedRows, "tied output layer");
    const V = whole.config.vocabSize, d = whole.config.hiddenSize;
    const tmp = await Deno.makeTempDir();
    try {
      // Logits of every position.
      const rng = new Rng(5);
      const ids = Float32Array.from({ length: 2 * 8 }, () => rng.int(V));
      const logitsOf = (m: CausalLM) =>
        scope(
          m.ctx,
          () => noGrad(m.ctx, () => m.forward({ ids: Tensor.from(m.ctx, ids, [2, 8]) }).logits!.read()),
        );
      const logitsErr = relErr(await logitsOf(chunked), await logitsOf(whole));
      assert.ok(logitsErr <= 1e-5, `logits differ by ${logitsErr}`);

      // The matching loss and its gradient with respect to the input embeddings.
      const inp = matchingInputs(V, d);
      const a = await matchingOn(whole, inp);
      const b = await matchingOn(chunked, inp);
      assert.ok(Math.abs(a.loss - b.loss) <= 1e-5 * Math.abs(a.loss), `loss ${b.loss} vs ${a.loss}`);
      const gradErr = relErr(b.grad, a.grad);
      assert.ok(gradErr <= 1e-4, `dL/dx differs by ${gradErr}`);
      assert.ok(a.grad.some((v) => v !== 0), "the gradient must not be zero");

      // z-step top-k: 4 × 60 query rows exceed one block of the 384 KiB limit, so the queries
      // are split too.
      const banned = Uint8Array.from({ length: V }, (_, i) => (i % 7 === 0 ? 1 : 0));
      const u = new Rng(9).normals(4 * 60 * d);
      const candidates = async (m: CausalLM) => {
        const p = makeProjector(m, banned, 50);
        const out = await scope(m.ctx, () => topkCosine(p, Tensor.from(m.ctx, u, [4, 60, d])).read());
        disposeProjector(p);
        return Array.from(out);
      };
      assert.deepEqual(await candidates(chunked), await candidates(whole));

      // Constrained decoding with every token a candidate is greedy generation (the chunked
      // path picks from full logits), and it agrees with the unchunked model.
      const free = 5, suffix = [13], prefix = [1, 415, 201];
      const all = new Float32Array(2 * (free + 1) * V);
      for (let i = 0; i < 2 * (free + 1); i++) for (let v = 0; v < V; v++) all[i * V + v] = v;
      const decode = async (m: CausalLM) => {
        const cand = Tensor.from(m.ctx, all, [2, free + 1, V]);
        const out = await constrainedDecode(m, cand, prefix, suffix);
        cand.dispose();
        return out;
      };
      const decoded = await decode(chunked);
      const greedy = await generate(chunked, [prefix, prefix], {
        maxNewTokens: free,
        greedy: true,
        eosId: null,
      });
      assert.deepEqual(decoded, greedy.tokens.map((t) => [...t, ...suffix]));
      assert.deepEqual(decoded, await decode(whole));

      // Sequence NLL goes through the chunked output layer too.
      const seqs = [[1, 415, 201, 13, 77], [1, 99, 300]];
      const nllA = await sequenceNll(whole, seqs);
      const nllB = await sequenceNll(chunked, seqs);
      nllA.forEach((r, i) =>
        assert.ok(Math.abs(r.nll - nllB[i].nll) <= 1e-4 * r.nll, `nll ${nllB[i].nll} vs ${r.nll}`)
      );

      // Parameters list the chunks by row range; saving writes the whole matrix.
      const names = [...chunked.parameters().keys()].filter((n) => n.startsWith("model.embed_tokens.weight"));
      assert.deepEqual(names, [0, 512, 1024, 1536].map((s) => `model.embed_tokens.weight[${s}:${s + 512}]`));
      await chunked.save(folderSink(tmp));
      const again = await loadModel(c, tmp);
      assert.deepEqual(await again.inputEmbedding.read(), await whole.inputEmbedding.read());
      again.dispose();
    } finally {
      whole.dispose();
      chunked.dispose();
      await Deno.remove(tmp, { recursive: true });
      small.device.destroy();
    }
  },
});

Deno.test({
  name: "random Phi built on the GPU: the same weights and logits with the vocabulary matrices in 3 chunks",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const config = {
      architectures: ["PhiForCausalLM"],
      model_type: "phi",
      hidden_size: 32,
      intermediate_size: 64,
      num_attention_heads: 4,
      num_hidden_layers: 2,
      vocab_size: 300,
      max_position_embeddings: 64,
      partial_rotary_factor: 0.5,
      layer_norm_eps: 1e-5,
      hidden_act: "gelu_new",
      tie_word_embeddings: false,
    };
    const whole = randomModel(c, config, { seed: 3, std: 0.2 });
    const chunked = randomModel(c, config, { seed: 3, std: 0.2, maxChunkBytes: 16 * 1024 });
    assert.deepEqual(
      // chunkedParameters is TransformerLM's own (randomModel returns the CausalLM interface).
      [...(chunked as TransformerLM).chunkedParameters].map(([n, m]) => [n, m.chunks.length]),
      [["model.embed_tokens.weight", 3], ["lm_head.weight", 3]],
    );
    const embA = await whole.inputEmbedding.read();
    const embB = await (chunked.embedRows as RowChunks).read();
    assert.deepEqual(embB, embA);
    const std = Math.sqrt(embA.reduce((s, v) => s + v * v, 0) / embA.length);
    assert.ok(Math.abs(std - 0.2) < 0.01, `std ${std}`);
    const rng = new Rng(2);
    const ids = Float32Array.from({ length: 3 * 6 }, () => rng.int(300));
    const logitsOf = (m: CausalLM) =>
      scope(
        c,
        () => noGrad(c, () => m.forward({ ids: Tensor.from(c, ids, [3, 6]), logits: "last" }).logits!.read()),
      );
    const err = relErr(await logitsOf(chunked), await logitsOf(whole));
    assert.ok(err <= 1e-5, `logits differ by ${err}`);
    whole.dispose();
    chunked.dispose();
  },
});
