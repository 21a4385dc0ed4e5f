/**
 * The z-step's decoding: the candidate pick against a float64 reference (and against the
 * full-logits pick), and the whole constrained decode against plain greedy generation when every
 * token is a candidate.
 */
import { pickCandidateByDotKernel, pickCandidateKernel } from "../../kernels/candidates.ts";
import { constrainedDecode } from "../../admm/zstep.ts";
import { Rng } from "../../autograd/random.ts";
import { Tensor } from "../../autograd/tensor.ts";
import { generate } from "../../models/generate.ts";
import { loadModel } from "../../host/files.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { fixtureModel } from "../fixtures.ts";

Deno.test({
  name:
    "z-step candidate pick: dot-product pick = float64 argmax = full-logits pick (odd sizes, out-of-range ids skipped)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const rng = new Rng(3);
    const B = 3, steps = 2, d = 37, V = 301, positions = 4, k = 23, t = 2;
    const hidden = rng.normals(B * steps * d);
    const weight = rng.normals(V * d);
    const bias = rng.normals(V);
    const cand = Float32Array.from({ length: B * positions * k }, () => rng.int(V + 5)); // a few ≥ V
    const expected: number[] = [];
    const logits = new Float32Array(B * V);
    for (let b = 0; b < B; b++) {
      let best = -Infinity, bestId = -1;
      for (let v = 0; v < V; v++) {
        let s = bias[v];
        for (let i = 0; i < d; i++) s += weight[v * d + i] * hidden[(b * steps + steps - 1) * d + i];
        logits[b * V + v] = s;
      }
      for (let j = 0; j < k; j++) {
        const id = cand[(b * positions + t) * k + j];
        if (id >= V) continue;
        const s = logits[b * V + id];
        if (s > best || (s === best && id < bestId)) [best, bestId] = [s, id];
      }
      expected.push(bestId);
    }
    const T = (a: Float32Array, shape: number[]) => Tensor.from(c, a, shape);
    const chosen = Tensor.zeros(c, [B, positions]);
    const next = Tensor.zeros(c, [B, 1]);
    pickCandidateByDotKernel(
      c,
      T(hidden, [B, steps, d]).buffer,
      T(weight, [V, d]).buffer,
      T(bias, [V]).buffer,
      T(cand, [B, positions, k]).buffer,
      chosen.buffer,
      next.buffer,
      { batch: B, vocab: V, k, positions, t, dim: d, steps },
    );
    const byDot = Array.from(await next.read());
    const col = Array.from(await chosen.read()).filter((_, i) => i % positions === t);
    pickCandidateKernel(
      c,
      T(logits, [B, V]).buffer,
      T(cand, [B, positions, k]).buffer,
      chosen.buffer,
      next.buffer,
      { batch: B, vocab: V, k, positions, t },
    );
    const byLogits = Array.from(await next.read());
    if (
      byDot.join() !== expected.join() || col.join() !== expected.join() ||
      byLogits.join() !== expected.join()
    ) {
      throw new Error(`picked ${byDot} / ${col} / ${byLogits}, expected ${expected}`);
    }
  },
});

Deno.test({
  name: "constrained decode with every token a candidate equals greedy generation (TinyStories, KV cache)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const model = await loadModel(c, fixtureModel("tinystories-656k"));
    const V = model.headWeight.shape[0];
    const B = 2, free = 6, suffix = [13];
    const all = new Float32Array(B * (free + 1) * V);
    for (let i = 0; i < B * (free + 1); i++) for (let v = 0; v < V; v++) all[i * V + v] = v;
    const cand = Tensor.from(c, all, [B, free + 1, V]);
    const prefix = [1, 415, 201]; // BOS and two ids of the TinyStories vocabulary
    const ids = await constrainedDecode(model, cand, prefix, suffix);
    const greedy = await generate(model, [prefix, prefix], { maxNewTokens: free, greedy: true, eosId: null });
    for (let b = 0; b < B; b++) {
      const want = [...greedy.tokens[b], ...suffix].join();
      if (ids[b].join() !== want) throw new Error(`row ${b}: decoded ${ids[b]}, greedy gives ${want}`);
    }
    cand.dispose();
    model.dispose();
  },
});
