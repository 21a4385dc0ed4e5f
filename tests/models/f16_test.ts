/**
 * Models loaded with f16 weights (`loadModel(ctx, dir, { weights: "f16" })`, `--weights f16`):
 * the golden models of the three families against transformers' float64 values, GRADMM's matching
 * loss and its gradient, memory, a whole ADMM round (z-step and captured x-steps) and the CLI.
 *
 * Tolerance against the float64 goldens: relative error (max|a − b| / max|b|) of the model's
 * outputs (logits, hidden states, CE, input gradient) at most 2e-3. f16 keeps 11 significant
 * bits, so each weight carries a relative rounding error of up to 2⁻¹¹ ≈ 4.9e-4; the measured
 * errors are 4e-4 to 8e-4 (docs/f16.md), 1–1.5× that unit, and 2e-3 leaves a margin of ~2.5
 * while any real mistake (a wrong layout, a missing bias) gives errors of order 1. The matching
 * loss's gradient gets 1e-2: it is the gradient of 1 − cos between two gradients, whose
 * cancellations amplify the weights' rounding (measured 0.7e-3 to 3.2e-3). The logits' error must
 * also be above 1e-5, far above what f32 weights give (≤ 1e-6): the weights really are f16.
 */
import assert from "node:assert";
import { join } from "node:path";
import { PAPER_SETTINGS, type RoundProblem } from "../../admm/problem.ts";
import { runRound } from "../../admm/round.ts";
import { makeTarget, oneHot } from "../../admm/matching.ts";
import { lastLayerFactors } from "../../admm/target.ts";
import { disposeProjector, makeProjector } from "../../admm/zstep.ts";
import { HalfMatrix, HalfPrecisionError } from "../../autograd/half.ts";
import { crossEntropy } from "../../autograd/ops/loss.ts";
import { select } from "../../autograd/ops/shape.ts";
import { Rng } from "../../autograd/random.ts";
import { backward } from "../../autograd/tape.ts";
import { scope, Tensor } from "../../autograd/tensor.ts";
import { type GpuContext, GpuLimitError } from "../../kernels/device.ts";
import { folderSink, loadModel, openSafetensors } from "../../host/files.ts";
import { runCli } from "../cli/capture.ts";
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

const TOL = 2e-3;
/** The matching loss and its gradient (see the module doc). */
const TOL_MATCH = 1e-2;
/** Below this the weights were not really rounded to f16. */
const F16_AT_LEAST = 1e-5;

function checkHalfFigures(what: string, figures: Record<string, number>): void {
  checkFigures(`${what} (f16 weights)`, figures, (k) => k.startsWith("match_") ? TOL_MATCH : TOL);
  // Scalars (the losses) average the rounding out; the logits show it element by element.
  if (!(figures.logits >= F16_AT_LEAST)) {
    throw new Error(`${what}: logits relative error ${figures.logits}: are the weights f16 at all?`);
  }
}

for (const family of ["gpt2", "llama", "phi"]) {
  Deno.test({
    name:
      `golden ${family} with f16 weights: logits, hidden, CE, input gradient (rel 2e-3), matching loss (1e-2)`,
    ...gpuTest,
    fn: async () => {
      const c = await ctx();
      const dir = fixture("golden", family);
      const model = await loadModel(c, dir, { weights: "f16" });
      assert.ok(model.embedRows instanceof HalfMatrix && model.headRows instanceof HalfMatrix);
      using g = await openSafetensors(join(dir, "golden.safetensors"));
      const { ids, mask, pos, labels, B, T, real } = await goldenInputs(g);
      const { hiddenSize: d, vocabSize: V } = model.config;
      const figures: Record<string, number> = {};
      await scope(c, async () => {
        const embeds = noGrad(c, () => model.embed(Tensor.from(c, ids, [B, T])));
        embeds.requiresGrad = true;
        const out = model.forward({
          embeds,
          attentionMask: Tensor.from(c, mask, [B, T]),
          positionIds: Tensor.from(c, pos, [B, T]),
          logits: "all",
        });
        const ce = crossEntropy(select(out.logits!, 1, T - 1), labels);
        backward(ce);
        figures.logits = relErr(await out.logits!.read(), await g.read("logits"), real(V));
        figures.last_hidden = relErr(await out.lastHidden.read(), await g.read("last_hidden"), real(d));
        figures.ce_last = relErr(await ce.read(), await g.read("ce_last"));
        figures.grad_inputs_embeds = relErr(await embeds.grad!.read(), await g.read("grad_inputs_embeds"));

        // GRADMM's matching step (as tests/admm/golden_matching_test.ts), through the f16 head.
        const rows = await goldenRealRows(g);
        const realLabels = await goldenInts(g, "real_labels");
        const { residuals, hidden } = await lastLayerFactors(model, rows, realLabels, 0);
        const target = makeTarget(residuals, hidden, model.headBias !== null, null);
        const head = { weight: model.headRows, bias: model.headBias };
        Object.assign(figures, await goldenMatchingFigures(c, model, g, target, head));
      });
      model.dispose();
      checkHalfFigures(`golden ${family}`, figures);
    },
  });
}

Deno.test({
  name:
    "f16 model: half the model memory, frozen matrices, clear errors (feature, chunks, training, f32 views)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const dir = fixtureModel("gpt2-d128");
    const bytes: Record<string, number> = {};
    for (const weights of ["f32", "f16"] as const) {
      await c.sync();
      const before = c.pool.stats.bytesLive;
      const model = await loadModel(c, dir, { weights });
      await c.sync();
      bytes[weights] = c.pool.stats.bytesLive - before;
      if (weights === "f16") {
        // Norms, biases and the position table stay f32 parameters; matrices are not listed.
        const params = [...model.parameters().keys()];
        assert.ok(
          params.includes("transformer.wpe.weight") && params.includes("transformer.h.0.ln_1.weight"),
        );
        assert.ok(
          !params.includes("transformer.wte.weight") && !params.includes("transformer.h.0.mlp.c_fc.weight"),
        );
        assert.throws(
          () => model.headWeight,
          (e: Error) => e instanceof HalfPrecisionError && /f16/.test(e.message),
        );
        // A checkpoint saved from it holds the f16-rounded values as f32.
        const out = await Deno.makeTempDir();
        try {
          await model.save(folderSink(out));
          const again = await loadModel(c, out);
          const a = await again.inputEmbedding.read();
          const b = await (model.embedRows as HalfMatrix).read();
          assert.deepStrictEqual(a.subarray(0, 4096), b.subarray(0, 4096));
          again.dispose();
        } finally {
          await Deno.remove(out, { recursive: true });
        }
      }
      model.dispose();
    }
    console.log(
      `gpt2-d128 pool bytes: f32 ${bytes.f32}, f16 ${bytes.f16} (${(bytes.f16 / bytes.f32).toFixed(3)})`,
    );
    assert.ok(bytes.f16 < 0.55 * bytes.f32, `f16 ${bytes.f16} vs f32 ${bytes.f32} bytes`);

    const golden = fixture("golden", "gpt2");
    const noF16 = Object.create(c, { features: { value: new Set<string>() } }) as GpuContext;
    await assert.rejects(
      loadModel(noF16, golden, { weights: "f16" }),
      (e: Error) => e instanceof HalfPrecisionError && /"shader-f16"/.test(e.message),
    );
    await assert.rejects(
      loadModel(c, golden, { weights: "f16", requiresGrad: true }),
      (e: Error) => e instanceof HalfPrecisionError && /frozen/.test(e.message),
    );
    // A vocabulary matrix that would need row chunks is refused (f16 matrices are never split).
    await assert.rejects(
      loadModel(c, golden, { weights: "f16", maxChunkBytes: 1024 }),
      (e: Error) => e instanceof GpuLimitError && /not split into row chunks/.test(e.message),
    );
    await assert.rejects(
      loadModel(c, golden, { weights: "bf16" as "f16" }),
      /weights must be "f32" or "f16"/,
    );
  },
});

Deno.test({
  name: "ADMM round with f16 weights: replayed x-steps = autograd x-steps, bit for bit; z-step ids valid",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const model = await loadModel(c, fixtureModel("tinystories-656k"), { weights: "f16" });
    const [V, d] = model.headRows.shape;
    const rng = new Rng(9);
    const target = makeTarget(
      Tensor.from(c, rng.normals(6 * V, 1e-3), [6, V]).keep(),
      Tensor.from(c, rng.normals(6 * d), [6, d]).keep(),
      false,
      null,
    );
    const banned = new Uint8Array(V);
    for (let i = 0; i < V; i += 5) banned[i] = 1;
    const projector = makeProjector(model, banned, 7);
    assert.ok(projector.chunks[0].unitEmbeddingsT instanceof HalfMatrix, "the projector is f16 too");
    const batch = 3;
    const problem: RoundProblem = {
      model,
      projector,
      target,
      head: { weight: model.headRows, bias: model.headBias },
      onehot: oneHot(c, new Array(batch).fill(42), V).keep(),
      length: 6,
      suffixIds: [13, 201],
      prefixIds: [1],
      batch,
      seed: 3,
    };
    const settings = { ...PAPER_SETTINGS, outerSteps: 3, innerSteps: 5, initCandidates: 2 };
    const eager = await runRound(problem, settings, undefined, { stepGraphs: false });
    const replayed = await runRound(problem, settings, undefined, { stepGraphs: true });
    assert.deepStrictEqual(replayed.history, eager.history);
    assert.deepStrictEqual(replayed.ids, eager.ids);
    assert.ok(Number.isFinite(eager.matchLoss));
    for (const row of eager.ids) {
      assert.deepStrictEqual(row.slice(-2), [13, 201]);
      for (const id of row) assert.ok(Number.isInteger(id) && id >= 0 && id < V && !banned[id], `id ${id}`);
    }
    disposeProjector(projector);
    problem.onehot.dispose();
    model.dispose();
  },
});

Deno.test({
  name:
    "cli --weights f16 reaches the loader (ppl: a weight beyond f16 range is refused; close to f32); finetune refuses it",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const dir = await Deno.makeTempDir();
    try {
      const file = join(dir, "lines.jsonl");
      const lines = ["Tom had a red car.", "The sun was hot and the birds sang."];
      Deno.writeTextFileSync(file, lines.map((text) => JSON.stringify({ text })).join("\n") + "\n");
      const nll = async (model: string, extra: string[]) => {
        const r = await runCli(["ppl", "--model", model, "--data", file, ...extra]);
        assert.strictEqual(r.code, 0, r.stderr);
        return Number(/nll_nats_per_token: (\S+)/.exec(r.stdout)![1]);
      };
      // gpt2-d128 is stored as BF16 and TinyStories' weights are bf16 values too: f16 holds them
      // (nearly) exactly, so the perplexities agree to the printed digits (docs/f16.md).
      for (const name of ["tinystories-656k", "gpt2-d128"] as const) {
        const model = fixtureModel(name);
        const [f32, f16] = [await nll(model, []), await nll(model, ["--weights", "f16"])];
        console.log(`${name} ppl of two lines: nll f32 ${f32}, f16 ${f16}`);
        assert.ok(Math.abs(f16 - f32) < 0.01, `${name}: f32 ${f32} vs f16 ${f16}`);
      }
      // TinyStories with one output-layer weight beyond f16's range: fine as f32, refused as f16
      // with a one-line error naming the tensor (so the flag does reach the loader).
      const tiny = join(dir, "tiny");
      const src = fixtureModel("tinystories-656k");
      const model = await loadModel(c, src);
      const e = model.inputEmbedding; // tied: also the output layer
      const values = await e.read();
      values[5] = 70000;
      e.write(values);
      await model.save(folderSink(tiny));
      model.dispose();
      for (const f of ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]) {
        await Deno.copyFile(join(src, f), join(tiny, f));
      }
      assert.ok(Number.isFinite(await nll(tiny, [])));
      const refused = await runCli(["ppl", "--model", tiny, "--data", file, "--weights", "f16"]);
      assert.strictEqual(refused.code, 2, refused.stderr);
      assert.match(refused.stderr, /error: .*holds 70000 \(element 5\), beyond the f16 range/);

      const bad = await runCli(["ppl", "--model", tiny, "--data", file, "--weights", "f8"]);
      assert.strictEqual(bad.code, 2);
      assert.match(bad.stderr, /--weights must be f32 or f16/);
      const ft = await runCli([
        "finetune",
        "--model",
        tiny,
        "--data",
        file,
        "--out-dir",
        join(dir, "ft"),
        "--weights",
        "f16",
      ]);
      assert.strictEqual(ft.code, 2);
      assert.match(ft.stderr, /finetune: --weights f16 is not supported: fine-tuning trains the weights/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
