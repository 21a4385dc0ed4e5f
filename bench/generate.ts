/**
 * Model-level benchmarks on gpt2-d128 (4 layers, d=128, vocab 50257): greedy decoding tokens/s
 * with and without the KV cache, and forward+backward tokens/s on a batch of 10 × 32 tokens
 * (fine-tuning: LM loss at every position, gradients to all parameters; GRADMM's x-step: loss at
 * the last position, gradient to the input embeddings).
 *
 * Uses ../shared/models/gpt2-d128 when it is there, else random weights of the same shape (the
 * GPU machine has no ../shared). `deno run -A bench/generate.ts [--json] [--quick] [--random] [--model DIR]`.
 *
 * @module
 */
import { join } from "node:path";
import { createContext, type GpuContext } from "../kernels/device.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import { backward } from "../autograd/tape.ts";
import { crossEntropy } from "../autograd/ops/loss.ts";
import { Rng } from "../autograd/random.ts";
import { loadModel, writeSafetensors } from "../host/files.ts";
import type { CausalLM } from "../models/model.ts";
import { generate } from "../models/generate.ts";
import { expectedWeights } from "../models/weight_names.ts";
import { parseModelConfig } from "../models/config.ts";
import type { TensorToWrite } from "../models/safetensors.ts";
import type { BenchOptions, BenchResult, BenchSuite } from "./harness.ts";
import { noGrad } from "../autograd/grad_mode.ts";

/** One result row. */
export interface BenchRow {
  name: string;
  shape: string;
  /** Milliseconds per token (generation) or per step (forward+backward). */
  ms: number;
  tokensPerSecond: number;
  adapter: string;
  weights: "trained" | "random";
}

/** Options of {@link benchGenerate}. */
export interface GenerateBenchOptions {
  /** Model folder (default ../shared/models/gpt2-d128, else random weights of its shape). */
  modelDir?: string;
  /** New tokens per generation run (default 32; 8 with `quick`). */
  newTokens?: number;
  /** Fewer repetitions (CPU adapters). */
  quick?: boolean;
  /** Use random weights of gpt2-d128's shape even when the trained model is there. */
  random?: boolean;
}

const GPT2_D128_CONFIG = {
  architectures: ["GPT2LMHeadModel"],
  model_type: "gpt2",
  activation_function: "gelu_new",
  n_embd: 128,
  n_head: 4,
  n_layer: 4,
  n_positions: 256,
  vocab_size: 50257,
  layer_norm_epsilon: 1e-5,
  bos_token_id: 50256,
  eos_token_id: 50256,
  tie_word_embeddings: true,
};

/** Writes a random-weight GPT-2 of gpt2-d128's shape into a temporary folder; returns it. */
async function randomGpt2Dir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "gradmm-bench-" });
  const config = parseModelConfig(GPT2_D128_CONFIG);
  const rng = new Rng(0);
  const tensors = new Map<string, TensorToWrite>();
  for (const spec of expectedWeights(config)) {
    if (spec.optional) continue;
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const isNormWeight = /ln_\w+\.weight$/.test(spec.name);
    const data = isNormWeight
      ? new Float32Array(n).fill(1)
      : rng.normals(n, spec.shape.length === 1 ? 0 : 0.02);
    tensors.set(spec.name, { data, shape: spec.shape });
  }
  await writeSafetensors(join(dir, "model.safetensors"), tensors);
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(GPT2_D128_CONFIG));
  return dir;
}

async function openBenchModel(
  ctx: GpuContext,
  dir: string | undefined,
  random: boolean,
): Promise<{ model: CausalLM; weights: "trained" | "random"; cleanup: () => Promise<void> }> {
  const candidate = dir ?? new URL("../../shared/models/gpt2-d128", import.meta.url).pathname;
  if (!random) {
    try {
      await Deno.stat(join(candidate, "config.json"));
      return { model: await loadModel(ctx, candidate), weights: "trained", cleanup: async () => {} };
    } catch (e) {
      if (dir) throw e;
    }
  }
  const tmp = await randomGpt2Dir();
  return {
    model: await loadModel(ctx, tmp),
    weights: "random",
    cleanup: () => Deno.remove(tmp, { recursive: true }),
  };
}

async function timeIt(reps: number, fn: () => Promise<void>): Promise<number> {
  await fn(); // warm-up: pipeline compilation, pool fill
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

/** Runs the benchmarks and returns one row each. */
export async function benchGenerate(ctx: GpuContext, opts: GenerateBenchOptions = {}): Promise<BenchRow[]> {
  const { model, weights, cleanup } = await openBenchModel(ctx, opts.modelDir, opts.random ?? false);
  const rows: BenchRow[] = [];
  const adapter = ctx.adapterName;
  const reps = opts.quick ? 1 : 3;
  const rng = new Rng(1);
  const V = model.config.vocabSize;
  try {
    const newTokens = opts.newTokens ?? (opts.quick ? 8 : 32);
    const prompt = Array.from({ length: 8 }, () => rng.int(V));
    for (const useCache of [true, false]) {
      const ms = await timeIt(reps, async () => {
        await generate(model, [prompt], { maxNewTokens: newTokens, eosId: null, useCache });
      });
      rows.push({
        name: `generate greedy ${useCache ? "(KV cache)" : "(no cache, full recompute)"}`,
        shape: `B=1 prompt=8 new=${newTokens}`,
        ms: ms / newTokens,
        tokensPerSecond: (newTokens * 1000) / ms,
        adapter,
        weights,
      });
    }

    const B = 10, T = 32;
    const ids = Array.from({ length: B * T }, () => rng.int(V));
    const idsT = Tensor.from(ctx, ids, [B, T]).keep();
    const targets = [...ids.slice(1), 0];
    const lastLabels = Array.from({ length: B }, () => rng.int(V));

    // Fine-tuning step: LM loss at every position, gradients to all parameters.
    for (const p of model.parameters().values()) p.requiresGrad = true;
    const finetune = await timeIt(reps, async () => {
      await scope(ctx, async () => {
        const logits = model.forward({ ids: idsT, logits: "all" }).logits!;
        backward(crossEntropy(logits, targets));
        await ctx.sync();
      });
      for (const p of model.parameters().values()) p.zeroGrad();
    });
    rows.push({
      name: "forward+backward, LM loss, grads to all parameters",
      shape: `B=${B} T=${T}`,
      ms: finetune,
      tokensPerSecond: (B * T * 1000) / finetune,
      adapter,
      weights,
    });
    for (const p of model.parameters().values()) p.requiresGrad = false;

    // GRADMM x-step shape: CE at the last position, gradient to the input embeddings only.
    const xstep = await timeIt(reps, async () => {
      await scope(ctx, async () => {
        const embeds = noGrad(ctx, () => model.embed(idsT));
        embeds.requiresGrad = true;
        const logits = model.forward({ embeds, logits: "last" }).logits!;
        backward(crossEntropy(logits, lastLabels));
        await ctx.sync();
      });
    });
    rows.push({
      name: "forward+backward, last-position CE, grad to input embeddings",
      shape: `B=${B} T=${T}`,
      ms: xstep,
      tokensPerSecond: (B * T * 1000) / xstep,
      adapter,
      weights,
    });
    idsT.dispose();
  } finally {
    model.dispose();
    await cleanup();
  }
  return rows;
}

/**
 * The suite for bench/main.ts. `--filter=generate` or `--filter=forward` select
 * entries by name; on CPU adapters the runs are shortened.
 */
export const generateSuite: BenchSuite = {
  name: "generate",
  async run(ctx: GpuContext, options: BenchOptions, report: (r: BenchResult) => void): Promise<void> {
    const f = options.filter.toLowerCase();
    const wanted = (name: string) =>
      f === "" || name.toLowerCase().includes(f) || "gpt2-d128 model".includes(f);
    if (!["generate greedy", "forward+backward"].some(wanted)) return;
    const rows = await benchGenerate(ctx, { quick: ctx.isCpuAdapter || options.repeats < 3 });
    for (const r of rows) {
      if (!wanted(r.name)) continue;
      report({
        name: r.name,
        shape: `gpt2-d128 ${r.shape}`,
        ms: r.ms,
        tokensPerSecond: r.tokensPerSecond,
        adapter: r.adapter,
        note: r.weights === "random" ? "random weights" : undefined,
      });
    }
  },
};

/** Prints rows as an aligned table. */
export function formatRows(rows: BenchRow[]): string {
  const lines = rows.map((r) =>
    `${r.name.padEnd(62)} ${r.shape.padEnd(24)} ${r.ms.toFixed(2).padStart(10)} ms ${
      r.tokensPerSecond.toFixed(1).padStart(10)
    } tok/s  (${r.weights} weights, ${r.adapter})`
  );
  return lines.join("\n");
}

if (import.meta.main) {
  const json = Deno.args.includes("--json");
  const quick = Deno.args.includes("--quick");
  const ctx = await createContext();
  const at = Deno.args.indexOf("--model");
  const modelDir = at >= 0 ? Deno.args[at + 1] : undefined;
  const rows = await benchGenerate(ctx, { quick, modelDir, random: Deno.args.includes("--random") });
  if (json) { for (const r of rows) console.log(JSON.stringify(r)); }
  else console.log(formatRows(rows));
}
