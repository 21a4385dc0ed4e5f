/**
 * The final decode's β ladder (admm/decode_beta.ts) inside a real ADMM round: each β's batch is
 * what the blend decode at that β gives, its matching loss and NLL are the exact ones, J is the
 * refine-lm objective written out by hand here, the lowest J wins and becomes the round's result;
 * a one-β ladder at the z-step's own β gives exactly the round without a ladder.
 */
import assert from "node:assert";
import { discreteMatchingLoss, PAPER_SETTINGS, type RoundProblem } from "../../admm/problem.ts";
import { runRound } from "../../admm/round.ts";
import { makeTarget, oneHot } from "../../admm/matching.ts";
import { chooseDecodeBeta, type DecodeBetaChoice } from "../../admm/decode_beta.ts";
import { freeTokenNll } from "../../admm/refine.ts";
import { batchRepeatedBigrams, type LmRefineSettings } from "../../admm/refine_lm.ts";
import { disposeProjector, makeProjector } from "../../admm/zstep.ts";
import { Rng } from "../../autograd/random.ts";
import { scope, Tensor } from "../../autograd/tensor.ts";
import { loadModel } from "../../host/files.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { fixtureModel } from "../fixtures.ts";

Deno.test({
  name: "decode β ladder: exact loss and NLL per β, lowest refine-lm J wins; one β = no ladder",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const model = await loadModel(c, fixtureModel("tinystories-656k"));
    const [V, d] = model.headWeight.shape;
    const rng = new Rng(21);
    const target = makeTarget(
      Tensor.from(c, rng.normals(6 * V, 1e-3), [6, V]).keep(),
      Tensor.from(c, rng.normals(6 * d), [6, d]).keep(),
      false,
      null,
    );
    const banned = new Uint8Array(V);
    for (let i = 0; i < V; i += 5) banned[i] = 1;
    const blend = { beta: 30, lmTop: 4, noRepeat: true };
    const projector = makeProjector(model, banned, 7, blend);
    const batch = 3;
    const suffixIds = [13, 201];
    const problem: RoundProblem = {
      model,
      projector,
      target,
      head: { weight: model.headWeight, bias: model.headBias },
      onehot: oneHot(c, new Array(batch).fill(42), V).keep(),
      length: 9,
      suffixIds,
      prefixIds: [1],
      batch,
      seed: 5,
    };
    const settings = {
      ...PAPER_SETTINGS,
      outerSteps: 2,
      innerSteps: 3,
      initCandidates: 2,
      freezeSuffixGradient: false,
    };
    const refine: LmRefineSettings = {
      iterations: 0,
      proposals: 4,
      topk: 4,
      lambda: 0.05,
      nllSlack: 0,
      nllTarget: 4,
      targetWeight: 0.3,
    };
    try {
      // A ladder of three β, far apart so the batches differ.
      const ladder = [120, 30, 2];
      let choice: DecodeBetaChoice | null = null;
      const decoded = new Map<number, number[][]>();
      const result = await runRound(problem, settings, undefined, {
        finalDecode: async (decodeAt) => {
          const recording = async (beta: number) => {
            const ids = await decodeAt(beta);
            decoded.set(beta, ids);
            return ids;
          };
          choice = await chooseDecodeBeta(problem, recording, ladder, "cos", refine);
          return choice;
        },
      });
      assert.ok(choice, "the round did not call the final-decode hook");
      const chosen = choice as DecodeBetaChoice;
      assert.deepStrictEqual(chosen.tried.map((t) => t.beta), ladder);
      const free = problem.length - suffixIds.length;
      const distinct = new Set(ladder.map((b) => JSON.stringify(decoded.get(b))));
      assert.ok(distinct.size > 1, "every β decoded the same batch: the test checks nothing");
      for (const t of chosen.tried) {
        const ids = decoded.get(t.beta)!;
        for (const row of ids) assert.deepStrictEqual(row.slice(free), suffixIds, "suffix kept");
        const loss = await scope(c, () => discreteMatchingLoss(problem, ids, "cos").item());
        assert.strictEqual(t.matchLoss, loss, `β ${t.beta}: matching loss`);
        const nllRows = await freeTokenNll(model, ids, free);
        const nll = nllRows.reduce((a, x) => a + x, 0) / batch;
        assert.ok(Math.abs(t.nll - nll) < 1e-9, `β ${t.beta}: NLL ${t.nll} vs ${nll}`);
        // J written out: loss + λ·(NLL + repeats / (B·(free − 1))) + μ·max(0, NLL − target).
        const repeats = batchRepeatedBigrams(ids.map((r) => r.slice(0, free)));
        const j = loss + 0.05 * (nll + repeats / (batch * (free - 1))) + 0.3 * Math.max(0, nll - 4);
        assert.ok(Math.abs(t.objective - j) < 1e-9, `β ${t.beta}: J ${t.objective} vs ${j}`);
      }
      const best = chosen.tried.reduce((a, t) => (t.objective < a.objective ? t : a));
      assert.strictEqual(chosen.beta, best.beta, "the lowest J wins");
      assert.deepStrictEqual(result.ids, decoded.get(best.beta), "the round returns the chosen batch");
      assert.strictEqual(result.matchLoss, best.matchLoss);

      // A one-β ladder at the z-step's own β is the round without a ladder, bit for bit.
      const plain = await runRound(problem, settings);
      const single = await runRound(problem, settings, undefined, {
        finalDecode: (decodeAt) => chooseDecodeBeta(problem, decodeAt, [blend.beta], "cos", refine),
      });
      assert.deepStrictEqual(single.ids, plain.ids);
      assert.strictEqual(single.matchLoss, plain.matchLoss);
      await assert.rejects(
        () => chooseDecodeBeta(problem, () => Promise.resolve([]), [], "cos", refine),
        /ladder is empty/,
      );
    } finally {
      problem.onehot.dispose();
      disposeProjector(projector);
      model.dispose();
    }
  },
});
