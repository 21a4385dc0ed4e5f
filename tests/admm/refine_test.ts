/**
 * Token-swap refinement (admm/refine.ts): the Gram-product rescoring of single-row swaps and of a
 * joint batch equals the matching loss of the swapped batch computed directly (with and without DP
 * noise in the target), the swapped rows' NLL from the same forward equals a separate scoring,
 * and a refinement never raises the exact loss, keeps the suffix, avoids banned ids and frees its
 * buffers.
 */
import assert from "node:assert";
import { fileURLToPath } from "node:url";
import { discreteMatchingLoss, lastHidden, type RoundProblem } from "../../admm/problem.ts";
import { drawNoise } from "../../admm/dp.ts";
import { makeTarget, oneHot } from "../../admm/matching.ts";
import { freeTokenNll, refineTokens, repeatedBigrams, rowSwapLosses, scoreSwaps } from "../../admm/refine.ts";
import { disposeProjector, makeProjector } from "../../admm/zstep.ts";
import { Rng } from "../../autograd/random.ts";
import { scope, Tensor } from "../../autograd/tensor.ts";
import { loadModel } from "../../host/files.ts";
import { noGrad } from "../../autograd/grad_mode.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { roundPasses } from "../../admm/passes.ts";

/** An ADMM part that costs nothing, so that roundPasses counts the refinement alone. */
const NO_ADMM = { initCandidates: 0, outerSteps: 0, innerSteps: 0, select: "discrete" as const };

const MODEL = fileURLToPath(new URL("../../assets/gpt2-d128", import.meta.url));

Deno.test("repeated token bigrams", () => {
  assert.strictEqual(repeatedBigrams([1, 2, 1, 2, 1, 2]), 3);
  assert.strictEqual(repeatedBigrams([1, 2, 3]), 0);
  assert.strictEqual(repeatedBigrams([]), 0);
});

Deno.test({
  name: "refinement: exact swap rescoring, a loss that never rises, suffix and bans kept, no leaks",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const model = await loadModel(c, MODEL);
    const [V, d] = model.headWeight.shape;
    const rng = new Rng(5);
    const banned = new Uint8Array(V);
    for (let i = 0; i < V; i += 3) banned[i] = 1;
    const projector = makeProjector(model, banned, 8);
    const batch = 3, length = 7, label = 11274; // " great"-like id; any id works for a synthetic target
    const suffixIds = [632, 373];
    for (const noisy of [false, true]) {
      const noise = noisy ? drawNoise(c, V, d, false, 1e-4, 77) : null;
      noise?.weight.keep();
      const target = makeTarget(
        Tensor.from(c, rng.normals(5 * V, 1e-3), [5, V]).keep(),
        Tensor.from(c, rng.normals(5 * d), [5, d]).keep(),
        false,
        noise,
      );
      const problem: RoundProblem = {
        model,
        projector,
        target,
        head: { weight: model.headWeight, bias: model.headBias },
        onehot: oneHot(c, new Array(batch).fill(label), V).keep(),
        length,
        suffixIds,
        prefixIds: [464],
        batch,
        seed: 1,
      };
      const allowed = (i: number) => 1 + 3 * i; // never a multiple of 3
      const ids = Array.from({ length: batch }, (_, b) => [
        ...Array.from({ length: length - 2 }, (_, t) => allowed(100 * b + 7 * t + 5)),
        ...suffixIds,
      ]);
      // Rescoring: rows 0 and 2 swapped for candidates, compared with the direct loss.
      const candRows = [
        ids[0].map((v, t) => (t === 1 ? allowed(999) : v)),
        ids[2].map((v, t) => (t === 0 ? allowed(4242) : v)),
      ];
      const hiddenOf = (rows: number[][]) =>
        noGrad(c, () =>
          lastHidden(
            model,
            model.embed(Tensor.from(c, Float32Array.from(rows.flat()), [rows.length, length])),
          ));
      const losses = await scope(
        c,
        () => rowSwapLosses(problem, hiddenOf(ids), hiddenOf(candRows), [0, 2], label, "cos"),
      );
      const direct = async (rows: number[][]) =>
        await scope(c, () => discreteMatchingLoss(problem, rows, "cos").item());
      const want = [
        await direct([candRows[0], ids[1], ids[2]]),
        await direct([ids[0], ids[1], candRows[1]]),
        await direct(ids),
      ];
      losses.forEach((l, i) =>
        assert.ok(Math.abs(l - want[i]) < 2e-5, `noisy=${noisy} swap ${i}: ${l} vs ${want[i]}`)
      );
      // scoreSwaps: the same losses, the joint batch's and the swapped rows' NLL from one forward.
      const free = length - suffixIds.length;
      const scored = await scoreSwaps(
        problem,
        ids,
        [
          { row: 0, pos: 1, id: allowed(999) },
          { row: 2, pos: 0, id: allowed(4242) },
        ],
        label,
        "cos",
        free,
      );
      assert.deepStrictEqual(scored.candRows, candRows);
      scored.losses.forEach((l, i) =>
        assert.ok(Math.abs(l - want[i]) < 2e-5, `noisy=${noisy} scored swap ${i}: ${l} vs ${want[i]}`)
      );
      const joint = await direct([candRows[0], ids[1], candRows[1]]);
      assert.ok(
        Math.abs(scored.jointLoss([0, 1]) - joint) < 2e-5,
        `joint ${scored.jointLoss([0, 1])} vs ${joint}`,
      );
      assert.ok(Math.abs(scored.jointLoss([]) - want[2]) < 2e-5);
      const nllWant = await freeTokenNll(model, candRows, free);
      scored.nll.forEach((x, i) =>
        assert.ok(Math.abs(x - nllWant[i]) < 1e-4, `NLL ${i}: ${x} vs ${nllWant[i]}`)
      );

      await c.sync();
      const live = c.pool.stats.buffersLive;
      const out = await refineTokens(problem, ids, label, "cos", {
        iterations: 4,
        proposals: 8,
        topk: 4,
        nllSlack: 5,
      }, 9);
      await c.sync();
      assert.strictEqual(c.pool.stats.buffersLive, live, "buffers leaked by the refinement");
      assert.ok(out.matchLoss <= out.matchLossBefore, `loss rose: ${out.matchLossBefore} → ${out.matchLoss}`);
      // The passes it reports stay within what admm/passes.ts charges for 4 iterations.
      assert.ok(out.passes <= roundPasses(NO_ADMM, { iterations: 4 }), `${out.passes} passes`);
      assert.ok(
        Math.abs(out.matchLoss - (await direct(out.ids))) < 2e-5,
        "reported loss is not the ids' loss",
      );
      assert.ok(Math.abs(out.matchLossBefore - want[2]) < 2e-5);
      for (const row of out.ids) {
        assert.deepStrictEqual(row.slice(-2), suffixIds);
        for (const id of row.slice(0, -2)) assert.strictEqual(banned[id], 0, `banned id ${id}`);
      }
      const changed = out.ids.flat().filter((v, i) => v !== ids.flat()[i]).length;
      assert.ok(changed <= out.swaps, `${changed} tokens changed by ${out.swaps} swaps`);
      problem.onehot.dispose();
      target.residuals.dispose();
      target.hidden.dispose();
      target.normW2.dispose();
      noise?.weight.dispose();
    }
    disposeProjector(projector);
    model.dispose();
  },
});
