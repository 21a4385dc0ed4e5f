/**
 * The closed-form matching loss against an explicit float64 computation that forms the V×d
 * gradient matrices, and its gradient with respect to the synthetic hidden states against
 * finite differences (what PyTorch's double backward computes).
 */
import { makeTarget, matchingLoss, oneHot, type TargetGradient } from "../../admm/matching.ts";
import type { TargetNoise } from "../../admm/dp.ts";
import type { HostTensor } from "../../autograd/reference.ts";
import { Rng } from "../../autograd/random.ts";
import type { Tensor } from "../../autograd/tensor.ts";
import { checkOp, ctx, gpuTest, randHost, toGpu } from "../helpers.ts";
import { noGrad } from "../../autograd/grad_mode.ts";

const V = 37;
const D = 6;
const N = 5;
const B = 3;

/** Explicit output-layer gradient [W (V×d); b (V)] of mean CE at the given hidden states. */
function explicitGradient(
  h: Float64Array,
  rows: number,
  w: Float64Array,
  bias: Float64Array | null,
  labels: number[],
) {
  const gW = new Float64Array(V * D);
  const gb = new Float64Array(V);
  for (let i = 0; i < rows; i++) {
    const logits = new Float64Array(V);
    for (let v = 0; v < V; v++) {
      let s = bias ? bias[v] : 0;
      for (let k = 0; k < D; k++) s += w[v * D + k] * h[i * D + k];
      logits[v] = s;
    }
    const m = Math.max(...logits);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(logits[v] - m);
    for (let v = 0; v < V; v++) {
      const r = Math.exp(logits[v] - m) / z - (v === labels[i] ? 1 : 0);
      gb[v] += r / rows;
      for (let k = 0; k < D; k++) gW[v * D + k] += (r * h[i * D + k]) / rows;
    }
  }
  return { gW, gb };
}

function cos(a: Float64Array, b: Float64Array): number {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / Math.sqrt(aa * bb);
}

async function run(withBias: boolean, kind: "cos" | "l2", noisy: boolean) {
  const c = await ctx();
  const rng = new Rng(withBias ? 11 : 12);
  const w = randHost(rng, [V, D]);
  const bias = withBias ? randHost(rng, [V]) : null;
  const hReal = randHost(rng, [N, D]);
  const realLabels = [3, 7, 3, 30, 1];
  const synLabels = [3, 3, 8];
  const noiseW = noisy ? randHost(rng, [V, D]) : null;
  const noiseB = noisy && withBias ? randHost(rng, [V]) : null;
  for (const t of [w, bias, hReal, noiseW, noiseB]) {
    if (t) t.data = Float64Array.from(Float32Array.from(t.data));
  }

  const target = explicitGradient(hReal.data, N, w.data, bias?.data ?? null, realLabels);
  if (noiseW) { for (let i = 0; i < target.gW.length; i++) target.gW[i] += noiseW.data[i] * 0.01; }
  if (noiseB) { for (let i = 0; i < target.gb.length; i++) target.gb[i] += noiseB.data[i] * 0.01; }

  // GPU target in factored form.
  const W = toGpu(c, w);
  const Bt = bias ? toGpu(c, bias) : null;
  const head = { weight: W, bias: Bt };
  const residualRows = noGrad(c, () => {
    const onehotReal = oneHot(c, realLabels, V);
    const hr = toGpu(c, hReal);
    return { hr, onehotReal };
  });
  const { outputResiduals } = await import("../../admm/matching.ts");
  const r = noGrad(c, () => outputResiduals(residualRows.hr, head, residualRows.onehotReal));
  let noise: TargetNoise | null = null;
  if (noiseW) {
    const scaleHost = (h: HostTensor) => ({ data: h.data.map((x) => x * 0.01), shape: h.shape });
    noise = {
      sigma: 0.01,
      weight: toGpu(c, scaleHost(noiseW)),
      bias: noiseB ? toGpu(c, scaleHost(noiseB)) : null,
    };
  }
  const tg: TargetGradient = makeTarget(r, residualRows.hr, withBias, noise);
  const onehot = oneHot(c, synLabels, V);

  await checkOp({
    inputs: [randHost(rng, [B, D])],
    gpu: ([h]) => matchingLoss(tg, h, head, onehot, kind),
    ref: ([h]) => {
      const g = explicitGradient(h.data, B, w.data, bias?.data ?? null, synLabels);
      let loss: number;
      if (kind === "cos") {
        loss = withBias ? 1 - (cos(target.gW, g.gW) + cos(target.gb, g.gb)) / 2 : 1 - cos(target.gW, g.gW);
      } else {
        loss = 0;
        for (let i = 0; i < g.gW.length; i++) loss += (target.gW[i] - g.gW[i]) ** 2;
        if (withBias) { for (let i = 0; i < g.gb.length; i++) loss += (target.gb[i] - g.gb[i]) ** 2; }
      }
      return { data: Float64Array.of(loss), shape: [1] };
    },
    atol: 1e-5,
    rtol: 1e-4,
    gradAtol: 1e-5,
    gradRtol: 2e-3,
  });
  for (
    const t of [
      W,
      Bt,
      onehot,
      r,
      residualRows.hr,
      residualRows.onehotReal,
      tg.normW2,
      tg.normB2,
      noise?.weight,
      noise?.bias,
    ]
  ) {
    (t as Tensor | null | undefined)?.dispose();
  }
}

for (const withBias of [false, true]) {
  for (const kind of ["cos", "l2"] as const) {
    for (const noisy of [false, true]) {
      Deno.test({
        name:
          `matching loss ${kind}${withBias ? " with output bias" : ""}${
            noisy ? " and dense DP noise" : ""
          }: ` +
          "closed form = explicit V×d gradients, and its gradient w.r.t. h = finite differences",
        ...gpuTest,
        fn: () => run(withBias, kind, noisy),
      });
    }
  }
}
