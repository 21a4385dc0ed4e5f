/**
 * The synth bench: GRADMM's x-step (matching loss + penalty, one backward pass, clip, Adam) and
 * z-step (top-k cosine + constrained greedy decoding) on GPT-2 shapes with random weights
 * (gpt2-d128: 4 layers × 128; gpt2-d256: 6 layers × 256; vocabulary 50,257), batch 10, 30 free
 * tokens + 3 suffix tokens: the setting of the PyTorch baseline in bench/torch_ref.py.
 */
import { join } from "node:path";
import { tmpdir } from "node:os";
import type { AdmmSettings, RoundProblem } from "../admm/problem.ts";
import { xStep } from "../admm/xstep.ts";
import { InnerLoop } from "../admm/xstep.ts";
import { ProjectionStep } from "../admm/zstep.ts";
import { makeTarget, oneHot } from "../admm/matching.ts";
import { disposeProjector, makeProjector } from "../admm/zstep.ts";
import { Rng } from "../autograd/random.ts";
import { Adam } from "../autograd/optim.ts";
import { Tensor } from "../autograd/tensor.ts";
import type { GpuContext } from "../kernels/device.ts";
import { loadModel, writeSafetensors } from "../host/files.ts";
import type { CausalLM } from "../models/model.ts";
import type { BenchSuite } from "./harness.ts";
import { benchTimer, median, timeGpu, timingFields } from "./harness.ts";

const VOCAB = 50257;

/** Writes a random-weight GPT-2 of the given shape into a temporary folder. */
export async function randomGpt2(layers: number, d: number, heads: number): Promise<string> {
  const dir = await Deno.makeTempDir({ dir: tmpdir(), prefix: `gpt2-${d}-` });
  const rng = new Rng(d * 31 + layers);
  const t = (shape: number[], std: number, mean = 0) => ({
    data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => mean + std * rng.normal()),
    shape,
  });
  const tensors: Record<string, { data: Float32Array; shape: number[] }> = {
    "transformer.wte.weight": t([VOCAB, d], 0.02),
    "transformer.wpe.weight": t([256, d], 0.01),
    "transformer.ln_f.weight": t([d], 0, 1),
    "transformer.ln_f.bias": t([d], 0),
  };
  for (let i = 0; i < layers; i++) {
    const p = `transformer.h.${i}.`;
    Object.assign(tensors, {
      [p + "ln_1.weight"]: t([d], 0, 1),
      [p + "ln_1.bias"]: t([d], 0),
      [p + "attn.c_attn.weight"]: t([d, 3 * d], 0.02),
      [p + "attn.c_attn.bias"]: t([3 * d], 0),
      [p + "attn.c_proj.weight"]: t([d, d], 0.02),
      [p + "attn.c_proj.bias"]: t([d], 0),
      [p + "ln_2.weight"]: t([d], 0, 1),
      [p + "ln_2.bias"]: t([d], 0),
      [p + "mlp.c_fc.weight"]: t([d, 4 * d], 0.02),
      [p + "mlp.c_fc.bias"]: t([4 * d], 0),
      [p + "mlp.c_proj.weight"]: t([4 * d, d], 0.02),
      [p + "mlp.c_proj.bias"]: t([d], 0),
    });
  }
  await writeSafetensors(join(dir, "model.safetensors"), tensors);
  await Deno.writeTextFile(
    join(dir, "config.json"),
    JSON.stringify({
      architectures: ["GPT2LMHeadModel"],
      model_type: "gpt2",
      n_layer: layers,
      n_embd: d,
      n_head: heads,
      n_positions: 256,
      vocab_size: VOCAB,
      activation_function: "gelu_new",
      layer_norm_epsilon: 1e-5,
      tie_word_embeddings: true,
      bos_token_id: 50256,
      eos_token_id: 50256,
    }),
  );
  return dir;
}

/** The GPT-2 shapes of the synth bench. */
export const SHAPES = [
  { name: "gpt2-d128", layers: 4, d: 128, heads: 4 },
  { name: "gpt2-d256", layers: 6, d: 256, heads: 8 },
];

/** One of the bench's GPT-2 shapes. */
export type BenchShape = (typeof SHAPES)[number];

/**
 * The x-step bench problem for one shape: a random-weight GPT-2, a made-up class target over the
 * full vocabulary, x and the ADMM shift, and Adam after one step (so its moments exist and the
 * step can be captured as a step graph). `dispose()` frees it all and removes the model folder.
 */
export async function xstepProblem(ctx: GpuContext, shape: BenchShape) {
  const dir = await randomGpt2(shape.layers, shape.d, shape.heads);
  const model = await loadModel(ctx, dir);
  const bench = xstepProblemOn(ctx, model, shape.d);
  const dispose = async () => {
    bench.dispose();
    model.dispose();
    await Deno.remove(dir, { recursive: true });
  };
  return { ...bench, model, dispose };
}

/**
 * {@link xstepProblem} on an already loaded model of hidden size `d` (f32 or f16 weights, the
 * output layer as `model.headRows`); `dispose()` frees all but the model.
 */
export function xstepProblemOn(ctx: GpuContext, model: CausalLM, d: number) {
  const batch = 10, free = 30, suffix = [632, 373, 220]; // " It was " in GPT-2 ids
  const length = free + suffix.length;
  const rng = new Rng(5);
  const target = makeTarget(
    Tensor.from(ctx, rng.normals(25 * VOCAB, 1e-3), [25, VOCAB]).keep(),
    Tensor.from(ctx, rng.normals(25 * d), [25, d]).keep(),
    false,
    null,
  );
  const banned = new Uint8Array(VOCAB);
  for (let i = 0; i < VOCAB; i += 7) banned[i] = 1; // some banned ids, as the token filter would
  const projector = makeProjector(model, banned, 200);
  const problem: RoundProblem = {
    model,
    projector,
    target,
    head: { weight: model.headRows, bias: model.headBias },
    onehot: oneHot(ctx, new Array(batch).fill(1049), VOCAB).keep(),
    length,
    suffixIds: suffix,
    prefixIds: [464],
    batch,
    seed: 1,
  };
  const x = Tensor.from(ctx, rng.normals(batch * length * d, 0.05), [batch, length, d], {
    requiresGrad: true,
  }).keep();
  const shift = Tensor.from(ctx, rng.normals(batch * length * d, 0.05), [batch, length, d]).keep();
  const opt = new Adam([x], { lr: 0.008 });
  const settings: Pick<AdmmSettings, "rho" | "matching" | "gradClip"> = {
    rho: 0.7,
    matching: "cos",
    gradClip: 1,
  };
  xStep(problem, x, shift, opt, settings, null).dispose();
  const dispose = () => {
    opt.dispose();
    x.dispose();
    shift.dispose();
    disposeProjector(projector);
    problem.onehot.dispose();
    target.residuals.dispose();
    target.hidden.dispose();
    target.normW2.dispose();
  };
  return { problem, projector, x, shift, opt, settings, batch, length, suffix, dispose };
}

/** x-step and z-step timings for the GPT-2 shapes. */
export const synthSuite: BenchSuite = {
  name: "synth",
  async run(ctx: GpuContext, options, report) {
    for (const shape of SHAPES) {
      if (
        options.filter && !`xstep zstep ${shape.name}`.toLowerCase().includes(options.filter.toLowerCase())
      ) continue;
      const bench = await xstepProblem(ctx, shape);
      const { problem, x, shift, opt, batch, length } = bench;
      const settings = bench.settings;
      // "eager": every step through the autograd; the default path replays a captured step graph
      // from the third step on (admm/xstep.ts), as runRound does.
      const eager = await timeGpu(ctx, () => xStep(problem, x, shift, opt, settings, null).dispose(), {
        repeats: options.repeats,
        batchMs: 500,
        maxIterations: 256,
      });
      report({
        name: `xstep ${shape.name} eager`,
        shape: `B=${batch} T=${length}`,
        ...timingFields(eager),
        adapter: ctx.adapterName,
      });
      const loop = new InnerLoop(problem, x, shift, opt, settings, null);
      const tx = await timeGpu(ctx, () => loop.step(), {
        repeats: options.repeats,
        batchMs: 500,
        maxIterations: 256,
      });
      loop.dispose();
      report({
        name: `xstep ${shape.name}`,
        shape: `B=${batch} T=${length}`,
        ...timingFields(tx),
        adapter: ctx.adapterName,
      });
      // The z-step reads its ids back once per decode, so it is timed as a whole (its GPU time
      // over the same runs, where the adapter has timestamp queries; no encode time: it waits).
      // "eager" runs every op; the default replays the z-step's step graph, as runRound does
      // from the second outer step on (x + λ/ρ with λ = the bench's shift tensor).
      const timer = benchTimer(ctx);
      for (const useGraph of [false, true]) {
        const projection = new ProjectionStep(problem, x, shift, settings.rho, useGraph);
        if (useGraph) await projection.project(); // the capture
        const zTimes: number[] = [];
        const zGpu: number[] = [];
        for (let r = 0; r < Math.max(2, Math.min(options.repeats, 5)); r++) {
          const t0 = performance.now();
          timer.begin();
          try {
            await projection.project();
          } finally {
            timer.end();
          }
          zTimes.push(performance.now() - t0);
          const g = await timer.read();
          if (g && g.problem === null && g.untimed === 0) zGpu.push(g.sumMs);
        }
        projection.dispose();
        report({
          name: `zstep ${shape.name}${useGraph ? "" : " eager"}`,
          shape: `B=${batch} T=${length} k=200`,
          ms: median(zTimes),
          gpuMs: zGpu.length > 0 ? median(zGpu) : undefined,
          adapter: ctx.adapterName,
        });
      }
      await bench.dispose();
    }
  },
};

if (import.meta.main) {
  // Standalone: `deno run -A bench/synth.ts [--json] [--filter=d128]`.
  const { createContext } = await import("../kernels/device.ts");
  const json = Deno.args.includes("--json");
  const filter = Deno.args.find((a) => a.startsWith("--filter="))?.slice(9) ?? "";
  const ctx = await createContext();
  await synthSuite.run(
    ctx,
    { filter, sizes: [], maxSeconds: 60, repeats: 3 },
    (r) =>
      console.log(
        json
          ? JSON.stringify(r)
          : `${r.name.padEnd(20)} ${r.shape.padEnd(20)} ${r.ms?.toFixed(2)} ms  ${r.adapter}`,
      ),
  );
}
