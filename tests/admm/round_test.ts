/**
 * A whole ADMM round with the x-steps replayed from a captured step graph must give exactly the
 * result of running every x-step through the autograd (admm/xstep.ts), with and without the
 * suffix-gradient mask.
 */
import assert from "node:assert";
import { PAPER_SETTINGS, type RoundProblem } from "../../admm/problem.ts";
import { runRound } from "../../admm/round.ts";
import { makeTarget, oneHot } from "../../admm/matching.ts";
import { disposeProjector, makeProjector } from "../../admm/zstep.ts";
import { Rng } from "../../autograd/random.ts";
import { Tensor } from "../../autograd/tensor.ts";
import { loadModel } from "../../host/files.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { fixtureModel } from "../fixtures.ts";

Deno.test({
  name: "ADMM round: replayed x-steps (step graphs) = x-steps run through the autograd, bit for bit",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const model = await loadModel(c, fixtureModel("tinystories-656k"));
    const [V, d] = model.headWeight.shape;
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
    const batch = 3;
    const problem: RoundProblem = {
      model,
      projector,
      target,
      head: { weight: model.headWeight, bias: model.headBias },
      onehot: oneHot(c, new Array(batch).fill(42), V).keep(),
      length: 6,
      suffixIds: [13, 201],
      prefixIds: [1],
      batch,
      seed: 3,
    };
    for (const freezeSuffixGradient of [false, true]) {
      const settings = {
        ...PAPER_SETTINGS,
        outerSteps: 3,
        innerSteps: 5,
        initCandidates: 2,
        freezeSuffixGradient,
      };
      await c.sync(); // deferred releases happen at the submit
      const live = c.pool.stats.buffersLive;
      const eager = await runRound(problem, settings, undefined, { stepGraphs: false });
      await c.sync();
      assert.strictEqual(c.pool.stats.buffersLive, live, "buffers leaked by the round");
      const replayed = await runRound(problem, settings, undefined, { stepGraphs: true });
      await c.sync();
      assert.deepStrictEqual(replayed.history, eager.history, `history (freeze=${freezeSuffixGradient})`);
      assert.deepStrictEqual(replayed.ids, eager.ids);
      assert.strictEqual(replayed.matchLoss, eager.matchLoss);
      // The graph gave back every buffer it held when the round ended.
      assert.strictEqual(
        c.pool.stats.buffersLive,
        live,
        "buffers leaked by the replayed round (graph not released?)",
      );
    }
    disposeProjector(projector);
    problem.onehot.dispose();
    model.dispose();
  },
});
