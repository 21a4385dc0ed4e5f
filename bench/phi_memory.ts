/**
 * The memory bench: a 1.4B-parameter model of phi-1.5's shapes (PhiForCausalLM: hidden 2048,
 * 24 layers, 32 heads, MLP 8192, vocabulary 51,200, partial rotary 0.5, untied output layer with
 * a bias) with random weights generated on the GPU (no 5.7 GB checkpoint is written), then one
 * forward of batch 10 × 33 tokens, a few GRADMM x-steps (matching loss against a made-up target
 * + ADMM penalty, backward, clip, Adam: admm/xstep.ts `xStep`, run by admm/xstep.ts as a
 * round runs them: eager, captured, replayed) and one z-step (top-k cosine candidates +
 * constrained greedy decode). Prints times, the pool's peak bytes and which tensors were held in
 * row chunks (models/chunked.ts).
 *
 *   deno run -A bench/phi_memory.ts                          # the full model (a big GPU)
 *   deno run -A bench/phi_memory.ts --max-binding=256MiB     # force the chunked path there too
 *   deno run -A bench/phi_memory.ts --layers=2 --hidden=512  # a smoke test on a CPU adapter
 *
 * Options: --layers --hidden --heads --intermediate --vocab (model shape), --batch --tokens
 * (the x-step's synthetic batch), --steps (x-steps), --max-binding=<bytes|NMiB|NGiB> (lower the
 * storage binding limit the engine assumes), --eager (no step-graph replay of the x-step),
 * --no-zstep, --json (one summary line at the end).
 *
 * On a GPU without enough memory it stops with GpuOutOfMemoryError and says how much the model
 * needs; on a CPU adapter (whose memory is the host's) it checks the host's available memory
 * before allocating.
 */
import type { AdmmSettings, RoundProblem } from "../admm/problem.ts";
import { InnerLoop } from "../admm/xstep.ts";
import { makeTarget, oneHot } from "../admm/matching.ts";
import {
  constrainedDecode,
  disposeProjector,
  makeProjector,
  type Projector,
  topkCosine,
} from "../admm/zstep.ts";
import { sumAll } from "../autograd/ops/reduce.ts";
import { Adam } from "../autograd/optim.ts";
import { Rng } from "../autograd/random.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import { createContext, GpuDeviceLostError, GpuLimitError } from "../kernels/device.ts";
import type { GpuContext } from "../kernels/device.ts";
import { formatBytes, GpuOutOfMemoryError, sizeClass } from "../kernels/pool.ts";
import { parseModelConfig } from "../models/config.ts";
import { randomModel } from "../models/random_model.ts";
import type { TransformerLM } from "../models/transformer.ts";
import { expectedWeights } from "../models/weight_names.ts";
import { noGrad } from "../autograd/grad_mode.ts";

/** Command-line settings. */
export interface PhiMemoryOptions {
  layers: number;
  hidden: number;
  heads: number;
  intermediate: number;
  vocab: number;
  batch: number;
  tokens: number;
  steps: number;
  /** Lowered storage binding limit in bytes, or undefined for the adapter's. */
  maxBinding?: number;
  zstep: boolean;
  /** Run every x-step through the autograd (no step-graph capture and replay). */
  eager: boolean;
  json: boolean;
}

/** phi-1.5's shapes, batch 10 × 33 tokens (30 free + 3 suffix), 4 x-steps. */
export const PHI_1_5: PhiMemoryOptions = {
  layers: 24,
  hidden: 2048,
  heads: 32,
  intermediate: 8192,
  vocab: 51200,
  batch: 10,
  tokens: 33,
  steps: 4,
  zstep: true,
  eager: false,
  json: false,
};

/** "268435456", "256MiB", "256M", "2GiB" → bytes. */
export function parseBytes(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(k|kib|m|mib|g|gib)?$/i.exec(s.trim());
  if (!m) throw new RangeError(`cannot read '${s}' as a size in bytes (e.g. 268435456, 256MiB, 2GiB)`);
  const unit = (m[2] ?? "").toLowerCase()[0];
  const mult = unit === "k" ? 1024 : unit === "m" ? 1024 ** 2 : unit === "g" ? 1024 ** 3 : 1;
  return Math.floor(Number(m[1]) * mult / 4) * 4;
}

/** Parses `--name=value` flags over {@link PHI_1_5}. */
export function parseArgs(args: string[]): PhiMemoryOptions {
  const o: PhiMemoryOptions = { ...PHI_1_5 };
  const ints = ["layers", "hidden", "heads", "intermediate", "vocab", "batch", "tokens", "steps"] as const;
  for (const a of args) {
    const [flag, value] = a.replace(/^--/, "").split("=", 2);
    if (flag === "json") o.json = true;
    else if (flag === "no-zstep") o.zstep = false;
    else if (flag === "eager") o.eager = true;
    else if (flag === "max-binding") o.maxBinding = parseBytes(value ?? "");
    else if ((ints as readonly string[]).includes(flag)) {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 1) {
        throw new RangeError(`--${flag} needs a positive integer, got '${value}'`);
      }
      o[flag as (typeof ints)[number]] = n;
    } else {
      throw new RangeError(`unknown option '${a}' (see the header of bench/phi_memory.ts)`);
    }
  }
  if (o.hidden % o.heads !== 0) {
    throw new RangeError(`--hidden ${o.hidden} is not a multiple of --heads ${o.heads}`);
  }
  if (o.tokens < 4) throw new RangeError("--tokens must be at least 4 (3 suffix tokens + 1 free)");
  return o;
}

/** The config.json of phi-1.5 with the chosen shapes. */
export function phiConfig(o: PhiMemoryOptions): Record<string, unknown> {
  return {
    architectures: ["PhiForCausalLM"],
    model_type: "phi",
    hidden_size: o.hidden,
    intermediate_size: o.intermediate,
    num_attention_heads: o.heads,
    num_key_value_heads: o.heads,
    num_hidden_layers: o.layers,
    vocab_size: o.vocab,
    max_position_embeddings: 2048,
    partial_rotary_factor: 0.5,
    rope_theta: 10000.0,
    layer_norm_eps: 1e-5,
    hidden_act: "gelu_new",
    tie_word_embeddings: false,
    qk_layernorm: false,
    bos_token_id: 1,
    eos_token_id: 2,
  };
}

/** Parameters and pooled bytes (size classes) of the weights. */
function weightBytes(config: Record<string, unknown>): { params: number; bytes: number } {
  let params = 0, bytes = 0;
  for (const s of expectedWeights(parseModelConfig(config, "config"))) {
    if (s.optional) continue;
    const n = s.shape.reduce((a, b) => a * b, 1);
    params += n;
    bytes += sizeClass(n * 4);
  }
  return { params, bytes };
}

/** MemAvailable of the host, in bytes (Linux), or null. */
function hostAvailable(): number | null {
  try {
    const m = /MemAvailable:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/meminfo"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

const GiB = (n: number) => `${(n / 1024 ** 3).toFixed(2)} GiB`;

/** Waits for the GPU and surfaces an allocation failure WebGPU reported meanwhile. */
async function settle(ctx: GpuContext): Promise<void> {
  try {
    await ctx.sync();
  } finally {
    ctx.pool.checkOutOfMemory();
  }
}

/** Runs the bench; returns the summary it prints. */
export async function runPhiMemory(o: PhiMemoryOptions): Promise<Record<string, unknown>> {
  const log = (s: string) => {
    if (!o.json) console.log(s);
  };
  const config = phiConfig(o);
  const { params, bytes: weightPool } = weightBytes(config);
  const ctx = await createContext({ maxStorageBufferBindingSize: o.maxBinding });
  const summary: Record<string, unknown> = {
    adapter: ctx.adapterName,
    params,
    layers: o.layers,
    hidden: o.hidden,
    vocab: o.vocab,
    bindingLimit: ctx.limits.maxStorageBufferBindingSize,
  };
  log(
    `adapter ${ctx.adapterName}; storage binding limit ${
      formatBytes(ctx.limits.maxStorageBufferBindingSize)
    }` +
      (o.maxBinding ? ` (lowered with --max-binding)` : "") +
      `, max buffer ${formatBytes(ctx.limits.maxBufferSize)}`,
  );
  log(
    `model: Phi ${o.layers} layers × ${o.hidden}, ${o.heads} heads, MLP ${o.intermediate}, vocabulary ${o.vocab}: ` +
      `${(params / 1e9).toFixed(3)}B parameters, ${GiB(weightPool)} of f32 weights`,
  );
  if (ctx.isCpuAdapter) {
    // A CPU adapter's buffers are host memory: the OS would kill the process without a word.
    const avail = hostAvailable();
    const need = weightPool * 1.3;
    if (avail !== null && need > avail) {
      throw new GpuOutOfMemoryError(
        `this model needs about ${GiB(need)} (weights + activations) and the host has ${
          GiB(avail)
        } available ` +
          `for this CPU adapter; use fewer --layers or a smaller --hidden`,
      );
    }
  }

  // Weights, generated on the GPU.
  let t0 = performance.now();
  // The row-chunk layout is an implementation detail of TransformerLM, read here on purpose.
  const model = randomModel(ctx, config, { seed: 1, std: 0.02 }) as TransformerLM;
  try {
    await settle(ctx);
    summary.buildMs = performance.now() - t0;
    summary.weightsBytes = ctx.pool.stats.bytesLive;
    const chunked = [...model.chunkedParameters].map(([name, m]) => ({
      name,
      shape: m.shape,
      chunks: m.chunks.length,
      rowsPerChunk: m.chunks[0].shape[0],
      chunkBytes: m.chunks[0].bytes,
    }));
    summary.chunked = chunked;
    log(
      `weights built on the GPU in ${(summary.buildMs as number).toFixed(0)} ms; ` +
        `${GiB(ctx.pool.stats.bytesLive)} live in the pool`,
    );
    if (chunked.length === 0) log("row-chunked tensors: none (everything fits one binding)");
    for (const c of chunked) {
      log(
        `row-chunked: ${c.name} [${c.shape.join(", ")}] in ${c.chunks} chunks of ${c.rowsPerChunk} rows ` +
          `(${formatBytes(c.chunkBytes)} each)`,
      );
    }

    // One forward of the batch, all positions' logits when [B·T, V] fits one binding (else only
    // the last position's); the second run is warm (pipelines compiled).
    const rng = new Rng(3);
    const B = o.batch, T = o.tokens, d = o.hidden, V = o.vocab;
    const mode = B * T * V * 4 <= ctx.limits.maxStorageBufferBindingSize ? "all" : "last";
    summary.forwardLogits = mode;
    const ids = Float32Array.from({ length: B * T }, () => rng.int(V));
    const forwardMs: number[] = [];
    let logitSum = NaN;
    ctx.pool.resetPeak();
    for (let run = 0; run < 2; run++) {
      t0 = performance.now();
      logitSum = await scope(
        ctx,
        () =>
          noGrad(
            ctx,
            () => sumAll(model.forward({ ids: Tensor.from(ctx, ids, [B, T]), logits: mode }).logits!).item(),
          ),
      );
      forwardMs.push(performance.now() - t0);
    }
    ctx.pool.checkOutOfMemory();
    if (!Number.isFinite(logitSum)) {
      throw new Error(`the forward produced non-finite logits (sum ${logitSum})`);
    }
    summary.forwardMs = forwardMs;
    summary.forwardPeakBytes = ctx.pool.peakBytes;
    const shape = mode === "all" ? `all logits [${B * T}, ${V}]` : `last-position logits [${B}, ${V}]`;
    log(
      `forward B=${B} T=${T} (${shape}): cold ${forwardMs[0].toFixed(0)} ms, ` +
        `warm ${forwardMs[1].toFixed(0)} ms; pool peak ${GiB(ctx.pool.peakBytes)}`,
    );

    // x-steps against a made-up target (as bench/synth.ts): 25 real examples' factors.
    ctx.pool.resetPeak();
    const target = makeTarget(
      Tensor.from(ctx, rng.normals(25 * V, 1e-3), [25, V]).keep(),
      Tensor.from(ctx, rng.normals(25 * d), [25, d]).keep(),
      true,
      null,
    );
    const banned = new Uint8Array(V);
    for (let i = 0; i < V; i += 7) banned[i] = 1; // some banned ids, as the token filter would
    // The x-step does not use the projector; it is built only for the z-step.
    const projector: Projector = o.zstep ? makeProjector(model, banned, 200) : { model, chunks: [], topk: 0 };
    const suffix = [3, 4, 5];
    const problem: RoundProblem = {
      model,
      projector,
      target,
      head: { weight: model.headRows, bias: model.headBias },
      onehot: oneHot(ctx, new Array(B).fill(17), V).keep(),
      length: T,
      suffixIds: suffix,
      prefixIds: [1],
      batch: B,
      seed: 1,
    };
    const x = Tensor.from(ctx, rng.normals(B * T * d, 0.05), [B, T, d], { requiresGrad: true, name: "x" })
      .keep();
    const shift = Tensor.from(ctx, rng.normals(B * T * d, 0.05), [B, T, d]).keep();
    const opt = new Adam([x], { lr: 0.008 });
    const settings: Pick<AdmmSettings, "rho" | "matching" | "gradClip"> = {
      rho: 0.7,
      matching: "cos",
      gradClip: 1,
    };
    const stepMs: number[] = [];
    const losses: number[] = [];
    // As runRound runs them: eager, then captured, then replayed (unless --eager).
    const loop = new InnerLoop(problem, x, shift, opt, settings, null, !o.eager);
    for (let s = 0; s < o.steps; s++) {
      t0 = performance.now();
      loop.step();
      losses.push(await loop.lastTotal!.item()); // waits for the step's kernels
      stepMs.push(performance.now() - t0);
    }
    loop.dispose();
    ctx.pool.checkOutOfMemory();
    if (!losses.every(Number.isFinite)) throw new Error(`an x-step produced a non-finite loss: ${losses}`);
    summary.xstepMs = stepMs;
    summary.xstepLoss = losses;
    summary.xstepPeakBytes = ctx.pool.peakBytes;
    log(
      `x-step B=${B} T=${T}${o.eager ? " (eager)" : " (eager, captured, replayed)"}: ` +
        `${stepMs.map((m) => m.toFixed(0)).join(", ")} ms (the first one compiles); ` +
        `loss ${losses.map((l) => l.toFixed(5)).join(" → ")}; pool peak ${GiB(ctx.pool.peakBytes)}`,
    );

    if (o.zstep) {
      ctx.pool.resetPeak();
      t0 = performance.now();
      const decoded = await scope(ctx, () => constrainedDecode(model, topkCosine(projector, x), [1], suffix));
      summary.zstepMs = performance.now() - t0;
      summary.zstepPeakBytes = ctx.pool.peakBytes;
      ctx.pool.checkOutOfMemory();
      if (
        decoded.length !== B ||
        decoded.some((r) =>
          r.some((id) => !(id >= 0 && id < V) || (banned[id] === 1 && !suffix.includes(id)))
        )
      ) {
        throw new Error(`the z-step decoded out-of-vocabulary or banned ids: ${JSON.stringify(decoded[0])}`);
      }
      log(
        `z-step (top-200 cosine + constrained decode of ${T - suffix.length} tokens, first run): ` +
          `${(summary.zstepMs as number).toFixed(0)} ms; pool peak ${GiB(ctx.pool.peakBytes)}`,
      );
      disposeProjector(projector);
    }
    opt.dispose();
    x.dispose();
    shift.dispose();
    problem.onehot.dispose();
    target.residuals.dispose();
    target.hidden.dispose();
    target.normW2.dispose();
    target.normB2?.dispose();
  } catch (e) {
    // After a failed allocation, later errors (invalid buffers, a lost device) are its symptoms.
    ctx.pool.checkOutOfMemory();
    throw e;
  } finally {
    model.dispose();
  }
  summary.peakBytes = Math.max(
    ...["forwardPeakBytes", "xstepPeakBytes", "zstepPeakBytes"].map((k) => (summary[k] as number) ?? 0),
  );
  log(`peak pool bytes over the run: ${GiB(summary.peakBytes as number)}`);
  ctx.device.destroy();
  return summary;
}

if (import.meta.main) {
  let o: PhiMemoryOptions;
  try {
    o = parseArgs(Deno.args);
  } catch (e) {
    console.error(`phi_memory: ${(e as Error).message}`);
    Deno.exit(2);
  }
  try {
    const summary = await runPhiMemory(o);
    if (o.json) console.log(JSON.stringify(summary));
  } catch (e) {
    const known = [GpuOutOfMemoryError, GpuLimitError, GpuDeviceLostError].some((k) => e instanceof k);
    if (!known) throw e;
    // Out of memory is the expected failure of a too-small machine: say so, without a stack.
    console.error(`phi_memory: ${(e as Error).name}: ${(e as Error).message}`);
    Deno.exit(3);
  }
}
