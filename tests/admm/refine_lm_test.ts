/**
 * LM-aware token-swap refinement (admm/refine_lm.ts): batch-level bigram repeats, the choice of
 * proposals, the predicted effects of a swap against exact ones (the log-prob gain against the
 * NLL of the swapped text, the first-order loss change against a finite difference), and a
 * refinement that never raises loss + λ·NLL, keeps the batch mean NLL under its cap, keeps the
 * suffix, avoids banned ids and frees its buffers.
 */
import { roundPasses } from "../../admm/passes.ts";
import assert from "node:assert";
import { fileURLToPath } from "node:url";
import { discreteMatchingLoss, lastHidden, type RoundProblem } from "../../admm/problem.ts";
import { makeTarget, matchingLoss, oneHot } from "../../admm/matching.ts";
import {
  batchRepeatedBigrams,
  type NllTarget,
  parseNllTarget,
  pickSwaps,
  realTargetOffset,
  refineTokensLm,
  scanSwaps,
  type SwapScan,
} from "../../admm/refine_lm.ts";
import { disposeProjector, makeProjector } from "../../admm/zstep.ts";
import { Rng } from "../../autograd/random.ts";
import { scope, Tensor } from "../../autograd/tensor.ts";
import { add, scale } from "../../autograd/ops/elementwise.ts";
import { noGrad } from "../../autograd/grad_mode.ts";
import { sequenceNll } from "../../models/perplexity.ts";
import { loadModel } from "../../host/files.ts";
import { ctx, gpuTest } from "../helpers.ts";

const MODEL = fileURLToPath(new URL("../../assets/gpt2-d128", import.meta.url));

Deno.test("batch bigram repeats count across rows and adjacent duplicates, with or without a swap", () => {
  assert.strictEqual(batchRepeatedBigrams([[1, 2, 3], [2, 3, 4]]), 1);
  assert.strictEqual(batchRepeatedBigrams([[1, 2], [3, 4]]), 0);
  assert.strictEqual(batchRepeatedBigrams([[5, 5, 6]]), 1);
  assert.strictEqual(batchRepeatedBigrams([[1, 2, 1, 2]]), 1);
  assert.strictEqual(batchRepeatedBigrams([]), 0);
  const rows = [[1, 2, 3], [4, 5, 6]];
  assert.strictEqual(batchRepeatedBigrams(rows, { row: 1, pos: 1, id: 2 }), 0); // 4 2 6: nothing shared
  assert.strictEqual(batchRepeatedBigrams(rows, { row: 1, pos: 0, id: 1 }), 0); // 1 5 6
  assert.strictEqual(batchRepeatedBigrams(rows, { row: 1, pos: 1, id: 1 }), 0); // 4 1 6
  assert.strictEqual(batchRepeatedBigrams([[1, 2, 3], [1, 5, 3]], { row: 1, pos: 1, id: 2 }), 2); // 1 2 3 twice
  assert.deepStrictEqual(rows, [[1, 2, 3], [4, 5, 6]], "the swap must not change the rows");
});

Deno.test("NLL targets: numbers, 'real' and 'real+X' parse; anything else is refused", () => {
  assert.strictEqual(realTargetOffset(4.5), null);
  assert.strictEqual(realTargetOffset("real"), 0);
  assert.strictEqual(realTargetOffset("real+0.3"), 0.3);
  assert.strictEqual(realTargetOffset("real+.5"), 0.5);
  for (const bad of ["real-1", "realistic", "real+", "5", "real+x"]) {
    assert.throws(() => realTargetOffset(bad as NllTarget), RangeError, bad);
  }
  assert.throws(() => realTargetOffset(NaN), RangeError);
  // As users write them (flags): the same vocabulary, numbers read as numbers.
  assert.strictEqual(parseNllTarget("4.5"), 4.5);
  assert.strictEqual(parseNllTarget(" real+0.3 "), "real+0.3");
  for (const bad of ["", "4.5x", "realish", "real-1", "Infinity"]) {
    assert.throws(() => parseNllTarget(bad), RangeError, bad);
  }
});

Deno.test("swap proposals: lowest predicted change first; no row token, repeat, tabu or NLL-room breach", () => {
  // B = 2 rows of 2 free tokens (T = 3 with a suffix), k = 2 candidates per position.
  const rows = [[10, 11], [10, 21]];
  const k = 2;
  const ids = Int32Array.from([
    [30, 11],
    [31, 32],
    [0, 0], // row 0: 11 is already in the row
    [40, 41],
    [42, 11],
    [0, 0], // row 1: 11 after 10 would repeat row 0's bigram
  ].flat());
  const firstOrder = Float64Array.from([
    [-0.5, -9],
    [-0.4, -0.3],
    [0, 0],
    [-0.2, -0.1],
    [-0.6, -9],
    [0, 0],
  ].flat());
  const logpGain = Float64Array.from([
    [0, 0],
    [-4, 0],
    [0, 0],
    [0, 0],
    [0, 0],
    [0, 0],
  ].flat());
  const scan: SwapScan = { k, ids, firstOrder, logpGain };
  const key = (s: { row: number; pos: number; id: number }) => `${s.row},${s.pos},${s.id}`;

  // λ = 0: the order is the first-order change alone; neither 11 appears despite its −9.
  const plain = pickSwaps(scan, rows, 2, 0, 8, new Set());
  assert.deepStrictEqual(plain.map(key), ["1,1,42", "0,0,30", "0,1,31", "0,1,32", "1,0,40", "1,0,41"]);
  // λ = 1: the log-prob drop of 31 (−4 nats over B·(free−1) = 2 tokens) costs 2, pushing it back.
  const fluent = pickSwaps(scan, rows, 2, 1, 8, new Set());
  assert.deepStrictEqual(fluent.map((s) => s.id), [42, 30, 32, 40, 41, 31]);
  assert.ok(Math.abs(fluent[5].predicted - (-0.4 + 2)) < 1e-12);
  // Tabu entries and swaps whose own NLL rise exceeds the room are skipped.
  const limited = pickSwaps(scan, rows, 2, 0, 8, new Set(["1,1,42"]), 1);
  assert.deepStrictEqual(limited.map((s) => s.id), [30, 32, 40, 41]);
  // m = 2: the best two.
  assert.deepStrictEqual(pickSwaps(scan, rows, 2, 0, 2, new Set()).map(key), ["1,1,42", "0,0,30"]);
  // A swap that removes a repeated bigram gains λ/(B·(free−1)) per repeat removed (the other
  // candidates are the rows' own tokens).
  const twins = [[10, 11], [10, 11]];
  const one = {
    k: 1,
    ids: Int32Array.from([10, 11, 0, 10, 50, 0]),
    firstOrder: new Float64Array(6),
    logpGain: new Float64Array(6),
  };
  const [fix] = pickSwaps(one, twins, 2, 1, 1, new Set());
  assert.deepStrictEqual(key(fix), "1,1,50");
  assert.ok(Math.abs(fix.predicted - -0.5) < 1e-12, `${fix.predicted}`);
});

Deno.test({
  name: "LM-aware refinement: predicted effects match exact ones; J never rises, NLL capped, no leaks",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const model = await loadModel(c, MODEL);
    const [V, d] = model.headWeight.shape;
    const rng = new Rng(8);
    const banned = new Uint8Array(V);
    for (let i = 0; i < V; i += 3) banned[i] = 1;
    const projector = makeProjector(model, banned, 8);
    const batch = 3, length = 7, label = 11274;
    const suffixIds = [632, 373];
    const free = length - suffixIds.length;
    const target = makeTarget(
      Tensor.from(c, rng.normals(5 * V, 1e-3), [5, V]).keep(),
      Tensor.from(c, rng.normals(5 * d), [5, d]).keep(),
      false,
      null,
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
    const allowed = (i: number) => 1 + 3 * i;
    const ids = Array.from({ length: batch }, (_, b) => [
      ...Array.from({ length: free }, (_, t) => allowed(300 * b + 11 * t + 40)),
      ...suffixIds,
    ]);
    const k = 4;
    const scan = await scanSwaps(problem, ids, free, "cos", k);
    assert.strictEqual(scan.ids.length, batch * length * k);

    // The log-prob gain at the last free position is exactly minus the change of the text's NLL
    // sum (nothing after it is scored).
    const row = 1, pos = free - 1;
    const n = (row * length + pos) * k;
    const swapped = ids[row].map((v, t) => (t === pos ? scan.ids[n] : v));
    const [before, after] = await sequenceNll(model, [ids[row].slice(0, free), swapped.slice(0, free)]);
    assert.ok(
      Math.abs(-scan.logpGain[n] - (after.nll - before.nll)) < 2e-3,
      `log-prob gain ${scan.logpGain[n]} vs NLL change ${after.nll - before.nll}`,
    );

    // The first-order loss change is the directional derivative towards the candidate's embedding:
    // compare with a central difference along e_new − e_old at that one position.
    const lossAlong = (eps: number) =>
      scope(c, () =>
        noGrad(c, () => {
          const x = model.embed(Tensor.from(c, Float32Array.from(ids.flat()), [batch, length]));
          const cand = model.embed(Tensor.from(
            c,
            Float32Array.from(ids.flat().map((v, i) => i === row * length + pos ? scan.ids[n] : v)),
            [batch, length],
          ));
          const moved = add(x, scale(add(cand, scale(x, -1)), eps));
          return matchingLoss(target, lastHidden(model, moved), problem.head, problem.onehot, "cos").item();
        }));
    const eps = 0.05;
    const fd = ((await lossAlong(eps)) - (await lossAlong(-eps))) / (2 * eps);
    assert.ok(
      Math.abs(fd - scan.firstOrder[n]) < 0.1 * Math.abs(fd) + 2e-6,
      `first-order ${scan.firstOrder[n]} vs finite difference ${fd}`,
    );

    await c.sync();
    const live = c.pool.stats.buffersLive;
    const settings = { iterations: 4, proposals: 8, topk: 4, lambda: 0.05, nllSlack: 0 };
    const out = await refineTokensLm(problem, ids, label, "cos", settings);
    await c.sync();
    assert.strictEqual(c.pool.stats.buffersLive, live, "buffers leaked by the refinement");
    assert.ok(out.swaps > 0, "no swap was accepted: the test checks nothing");
    // The passes it reports stay within what admm/passes.ts charges for its iterations.
    const noAdmm = { initCandidates: 0, outerSteps: 0, innerSteps: 0, select: "discrete" as const };
    assert.ok(out.passes <= roundPasses(noAdmm, undefined, settings), `${out.passes} passes`);
    const direct = await scope(c, () => discreteMatchingLoss(problem, out.ids, "cos").item());
    assert.ok(Math.abs(out.matchLoss - direct) < 2e-5, "reported loss is not the ids' loss");
    const nllNow = (await sequenceNll(model, out.ids.map((r) => r.slice(0, free))))
      .reduce((a, x) => a + x.nll / x.tokens, 0) / batch;
    assert.ok(Math.abs(out.nll - nllNow) < 1e-3, `reported NLL ${out.nll} vs ${nllNow}`);
    assert.ok(out.nll <= out.nllBefore + 1e-6, `NLL rose above the cap: ${out.nllBefore} → ${out.nll}`);
    const freeRows = (rows: number[][]) => rows.map((r) => r.slice(0, free));
    const [repeatsBefore, repeatsAfter] = [ids, out.ids].map((r) => batchRepeatedBigrams(freeRows(r)));
    assert.ok(repeatsAfter <= repeatsBefore, `repeated bigrams ${repeatsBefore} → ${repeatsAfter}`);
    const j = (l: number, nll: number, repeats: number) =>
      l + settings.lambda * (nll + repeats / (batch * (free - 1)));
    assert.ok(
      j(out.matchLoss, out.nll, repeatsAfter) <= j(out.matchLossBefore, out.nllBefore, repeatsBefore) + 1e-5,
      `objective rose: ${out.matchLossBefore}/${out.nllBefore} → ${out.matchLoss}/${out.nll}`,
    );
    for (const r of out.ids) {
      assert.deepStrictEqual(r.slice(-2), suffixIds);
      for (const id of r.slice(0, -2)) assert.strictEqual(banned[id], 0, `banned id ${id}`);
    }

    // With the model's top-m tokens as extra candidates: they are allowed ids, the first is the
    // most likely allowed token (no cosine candidate gains more log-prob), and their log-prob
    // gains (looked up on the GPU) still match the exact NLL change at the last free position.
    const m = 3;
    const lmScan = await scanSwaps(problem, ids, free, "cos", k, m);
    assert.strictEqual(lmScan.k, k + m);
    const at = (row * length + pos) * (k + m);
    for (let j = k; j < k + m; j++) assert.strictEqual(banned[lmScan.ids[at + j]], 0, "banned LM candidate");
    for (let j = 0; j < k + m; j++) {
      assert.ok(
        lmScan.logpGain[at + k] >= lmScan.logpGain[at + j] - 1e-4,
        `candidate ${j} beats the LM's top`,
      );
    }
    const lmSwapped = ids[row].map((v, t) => (t === pos ? lmScan.ids[at + k + 1] : v));
    const [lmAfter] = await sequenceNll(model, [lmSwapped.slice(0, free)]);
    assert.ok(
      Math.abs(-lmScan.logpGain[at + k + 1] - (lmAfter.nll - before.nll)) < 2e-3,
      `LM candidate's log-prob gain ${lmScan.logpGain[at + k + 1]} vs NLL change ${lmAfter.nll - before.nll}`,
    );

    // An NLL target below the start: the hinge pulls the NLL down and the cap never lets it rise.
    // One above it: the NLL may rise, but never past the target.
    for (const shift of [-2, 1]) {
      const nllTarget = out.nllBefore + shift;
      const aimed = await refineTokensLm(problem, ids, label, "cos", { ...settings, nllTarget, lmTop: m });
      assert.ok(aimed.swaps > 0, `target ${shift}: no swap accepted`);
      assert.ok(
        aimed.nll <= Math.max(nllTarget, aimed.nllBefore) + 1e-6,
        `target ${shift}: NLL ${aimed.nll}`,
      );
      if (shift < 0) assert.ok(aimed.nll < aimed.nllBefore, `target below: NLL did not fall (${aimed.nll})`);
    }
    await c.sync();
    assert.strictEqual(c.pool.stats.buffersLive, live, "buffers leaked by the targeted refinement");
    await assert.rejects(
      () => refineTokensLm(problem, ids, label, "cos", { ...settings, nllTarget: "real" }),
      /resolve the NLL target/,
    );

    problem.onehot.dispose();
    target.residuals.dispose();
    target.hidden.dispose();
    target.normW2.dispose();
    disposeProjector(projector);
    model.dispose();
  },
});
