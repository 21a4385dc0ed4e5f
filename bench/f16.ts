/**
 * f16 weights vs f32 weights, in the same process on the same values: the output layer's products
 * of a GRADMM x-step (logits `[10, d]·Wᵀ` over the 50,257-token vocabulary and the input
 * gradient `dLogits·W`, K = 50,257), one greedy decode step (batch 10, one new token with a KV
 * cache, logits of the last position) and the whole x-step of GPT-2-shaped random-weight models,
 * with the model's pool bytes.
 *
 *   deno run -A bench/f16.ts [--json] [--filter=TEXT] [--d=128,256] [--repeats=3] [--rounds=2] [--plans]
 *
 * `--plans` adds the f16 head products with other kernel plans (tiles, splits of K) than the
 * default one of kernels/matmul_f16.ts, to tune the plan on a new adapter.
 *
 * With `--json`, one object per line: {name, shape, ms, gpuMs, encodeMs, submitMs, gflops or gbps,
 * adapter, note}; `gbps` counts the bytes of the weight read once plus the activations. f32 and
 * f16 entries alternate within each round (so the load of a shared machine hits both alike); each
 * entry is the median over the rounds of `timeGpu`'s median (wall clock, sync amortised).
 */
import { parseArgs } from "node:util";
import os from "node:os";
import { xStep } from "../admm/xstep.ts";
import { InnerLoop } from "../admm/xstep.ts";
import { HalfMatrix } from "../autograd/half.ts";
import { Rng } from "../autograd/random.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import { createContext, type GpuContext } from "../kernels/device.ts";
import { matmulFlops, matmulKernel } from "../kernels/matmul.ts";
import { halfMatmulKernel, type HalfMatmulPlan } from "../kernels/matmul_f16.ts";
import { loadModel } from "../host/files.ts";
import type { CausalLM } from "../models/model.ts";
import {
  type BenchResult,
  formatJson,
  formatTable,
  median,
  selected,
  timeGpu,
  timingFields,
} from "./harness.ts";
import { randomGpt2, xstepProblemOn } from "./synth.ts";
import { noGrad } from "../autograd/grad_mode.ts";

const V = 50257;
const BATCH = 10;

/** Layers and heads of the GPT-2 shapes by width (as bench/synth.ts). */
const GPT2 = new Map([[128, { layers: 4, heads: 4 }], [256, { layers: 6, heads: 8 }]]);

interface Options {
  json: boolean;
  filter: string;
  widths: number[];
  repeats: number;
  rounds: number;
  /** Also time the f16 head products with other tilings and splits of K than the default plan. */
  plans: boolean;
}

function parse(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      json: { type: "boolean", default: false },
      filter: { type: "string", default: "" },
      d: { type: "string", default: "256" },
      repeats: { type: "string", default: "3" },
      rounds: { type: "string", default: "2" },
      plans: { type: "boolean", default: false },
    },
  });
  const widths = values.d.split(",").map(Number);
  for (const d of widths) {
    if (!GPT2.has(d)) throw new Error(`--d: the GPT-2 widths are ${[...GPT2.keys()].join(", ")}, got '${d}'`);
  }
  const repeats = Number(values.repeats);
  const rounds = Number(values.rounds);
  if (!(Number.isInteger(repeats) && repeats >= 1 && Number.isInteger(rounds) && rounds >= 1)) {
    throw new Error("--repeats and --rounds must be positive integers");
  }
  return { json: values.json, filter: values.filter, widths, repeats, rounds, plans: values.plans };
}

/** A timed entry: its name and shape, how to run it, and its work (FLOPs or bytes). */
interface Entry {
  name: string;
  shape: string;
  run: () => void;
  flops?: number;
  bytes?: number;
  note?: string;
}

/** Runs the entries round after round (alternating), reporting each one's median over the rounds. */
async function timeEntries(ctx: GpuContext, entries: Entry[], o: Options, report: (r: BenchResult) => void) {
  const picked = entries.filter((e) =>
    selected({ filter: o.filter, sizes: [], maxSeconds: 0, repeats: 0 }, e.name)
  );
  const samples = new Map<Entry, ReturnType<typeof timingFields>[]>();
  for (let r = 0; r < o.rounds; r++) {
    for (const e of picked) {
      const t = await timeGpu(ctx, e.run, { repeats: o.repeats, batchMs: 300, maxIterations: 512 });
      samples.set(e, [...(samples.get(e) ?? []), timingFields(t)]);
    }
  }
  for (const e of picked) {
    const s = samples.get(e)!;
    const pick = (k: "ms" | "gpuMs" | "encodeMs" | "submitMs") => {
      const xs = s.map((x) => x[k]).filter((x): x is number => x !== undefined);
      return xs.length ? median(xs) : undefined;
    };
    const ms = pick("ms")!;
    report({
      name: e.name,
      shape: e.shape,
      ms,
      gpuMs: pick("gpuMs"),
      encodeMs: pick("encodeMs"),
      submitMs: pick("submitMs"),
      gflops: e.flops ? e.flops / ms / 1e6 : undefined,
      gbps: e.bytes ? e.bytes / ms / 1e6 : undefined,
      adapter: ctx.adapterName,
      note: [e.note, s.find((x) => x.note)?.note].filter(Boolean).join("; ") || undefined,
    });
  }
}

/** The output layer's two products at width d, f32 and f16 on the same (f16-representable) values. */
function headEntries(ctx: GpuContext, d: number, plans: boolean): { entries: Entry[]; dispose: () => void } {
  const rng = new Rng(d);
  // Values rounded to f16 first, so both paths multiply exactly the same numbers.
  const w16 = HalfMatrix.fromFloat32(ctx, rng.normals(V * d, 0.02), [V, d], { name: "wte" });
  const w32 = w16.toFloat32().keep();
  const h = Tensor.from(ctx, rng.normals(BATCH * d), [BATCH, d]).keep();
  const g = Tensor.from(ctx, rng.normals(BATCH * V, 1e-3), [BATCH, V]).keep();
  const logits = Tensor.empty(ctx, [BATCH, V]).keep();
  const dh = Tensor.empty(ctx, [BATCH, d]).keep();
  const act = (m: number, n: number, k: number) => 4 * (m * k + m * n);
  const fwd = `${BATCH}x${V}x${d}`;
  const bwd = `${BATCH}x${d}x${V}`;
  const entries: Entry[] = [
    {
      name: `head logits h·Wᵀ d${d} f32`,
      shape: fwd,
      run: () =>
        matmulKernel(ctx, h.buffer, w32.buffer, logits.buffer, {
          batch: 1,
          m: BATCH,
          n: V,
          k: d,
          transB: true,
        }),
      flops: matmulFlops(1, BATCH, V, d),
      bytes: 4 * V * d + act(BATCH, V, d),
    },
    {
      name: `head logits h·Wᵀ d${d} f16`,
      shape: fwd,
      run: () =>
        halfMatmulKernel(ctx, h.buffer, w16.operand, logits.buffer, { m: BATCH, n: V, k: d, layout: "nk" }),
      flops: matmulFlops(1, BATCH, V, d),
      bytes: 2 * V * d + act(BATCH, V, d),
    },
    {
      name: `head dH = dLogits·W d${d} f32`,
      shape: bwd,
      run: () => matmulKernel(ctx, g.buffer, w32.buffer, dh.buffer, { batch: 1, m: BATCH, n: d, k: V }),
      flops: matmulFlops(1, BATCH, d, V),
      bytes: 4 * V * d + act(BATCH, d, V),
    },
    {
      name: `head dH = dLogits·W d${d} f16`,
      shape: bwd,
      run: () =>
        halfMatmulKernel(ctx, g.buffer, w16.operand, dh.buffer, { m: BATCH, n: d, k: V, layout: "kn" }),
      flops: matmulFlops(1, BATCH, d, V),
      bytes: 2 * V * d + act(BATCH, d, V),
    },
  ];
  if (plans) {
    // Other plans than planHalfMatmul's, to see what the adapter prefers (kernel tiles: rows ×
    // columns per thread; kChunk: the length of K each thread sums, so splits = ⌈K / kChunk⌉).
    const fwdPlans: Partial<HalfMatmulPlan>[] = [
      { tm: 10, tn: 1, kChunk: d },
      { tm: 10, tn: 2, kChunk: d },
      { tm: 10, tn: 4, kChunk: d },
      { tm: 10, tn: 8, kChunk: d },
      { tm: 5, tn: 4, kChunk: d / 2 },
      { tm: 10, tn: 4, kChunk: d / 4 },
    ];
    const bwdPlans: Partial<HalfMatmulPlan>[] = [
      { tm: 10, tn: 4, kChunk: 100 },
      { tm: 10, tn: 4, kChunk: 400 },
      { tm: 10, tn: 8, kChunk: 200 },
      { tm: 5, tn: 4, kChunk: 200 },
      { tm: 10, tn: 4, kChunk: 1600 },
    ];
    for (const plan of fwdPlans) {
      entries.push({
        name: `head logits h·Wᵀ d${d} f16 plan ${JSON.stringify(plan)}`,
        shape: fwd,
        run: () =>
          halfMatmulKernel(
            ctx,
            h.buffer,
            w16.operand,
            logits.buffer,
            { m: BATCH, n: V, k: d, layout: "nk" },
            { plan },
          ),
        flops: matmulFlops(1, BATCH, V, d),
        bytes: 2 * V * d + act(BATCH, V, d),
      });
    }
    for (const plan of bwdPlans) {
      entries.push({
        name: `head dH = dLogits·W d${d} f16 plan ${JSON.stringify(plan)}`,
        shape: bwd,
        run: () =>
          halfMatmulKernel(ctx, g.buffer, w16.operand, dh.buffer, { m: BATCH, n: d, k: V, layout: "kn" }, {
            plan,
          }),
        flops: matmulFlops(1, BATCH, d, V),
        bytes: 2 * V * d + act(BATCH, d, V),
      });
    }
  }
  const dispose = () => {
    for (const t of [w32, h, g, logits, dh]) t.dispose();
    w16.dispose();
  };
  return { entries, dispose };
}

/**
 * The x-step problem of bench/synth.ts on an already loaded model (f32 or f16 weights), with the
 * step captured (`loop`) and eager (`eager`).
 */
function xstepBench(ctx: GpuContext, model: CausalLM, d: number) {
  const bench = xstepProblemOn(ctx, model, d);
  const { problem, x, shift, opt, settings, length } = bench;
  const loop = new InnerLoop(problem, x, shift, opt, settings, null);
  const eager = () => xStep(problem, x, shift, opt, settings, null).dispose();
  const dispose = () => {
    loop.dispose();
    bench.dispose();
  };
  return { loop, eager, length, dispose };
}

/** One greedy decode step: B sequences of `past` cached tokens, one new token, last-position logits. */
function decodeEntry(ctx: GpuContext, model: CausalLM, past: number) {
  const cache = model.newCache(BATCH, past + 1);
  const prompt = Tensor.from(ctx, Float32Array.from({ length: BATCH * past }, (_, i) => (i * 37) % V), [
    BATCH,
    past,
  ]).keep();
  noGrad(ctx, () => scope(ctx, () => model.forward({ ids: prompt, cache, logits: "none" })));
  const next = Tensor.from(ctx, Float32Array.from({ length: BATCH }, (_, i) => i + 11), [BATCH, 1]).keep();
  const run = () =>
    noGrad(ctx, () =>
      scope(ctx, () => {
        // Every run is the same step: the cache is rewound to its `past` tokens (its position
        // counter still advances; it only changes the values, not the work).
        cache.length = past;
        model.forward({ ids: next, cache, logits: "last" });
      }));
  return {
    run,
    dispose: () => {
      cache.dispose();
      prompt.dispose();
      next.dispose();
    },
  };
}

async function main(): Promise<void> {
  const o = parse(Deno.args);
  const ctx = await createContext();
  const results: BenchResult[] = [];
  const report = (r: BenchResult) => {
    results.push(r);
    if (o.json) console.log(formatJson(r));
  };
  const load = os.loadavg().map((x) => x.toFixed(2)).join(" ");
  console.error(
    `f16 bench on ${ctx.adapterName} (shader-f16: ${ctx.features.has("shader-f16")}), load ${load}`,
  );
  for (const d of o.widths) {
    const head = headEntries(ctx, d, o.plans);
    await timeEntries(ctx, head.entries, o, report);
    head.dispose();

    const { layers, heads } = GPT2.get(d)!;
    const dir = await randomGpt2(layers, d, heads);
    try {
      const entries: Entry[] = [];
      const disposers: (() => void)[] = [];
      for (const weights of ["f32", "f16"] as const) {
        await ctx.sync();
        const before = ctx.pool.stats.bytesLive;
        const model = await loadModel(ctx, dir, { weights });
        await ctx.sync();
        const modelBytes = ctx.pool.stats.bytesLive - before;
        const x = xstepBench(ctx, model, d);
        await ctx.sync();
        const withProblem = ctx.pool.stats.bytesLive - before;
        const mem = `model ${(modelBytes / 2 ** 20).toFixed(1)} MiB, with the x-step's tensors ` +
          `${(withProblem / 2 ** 20).toFixed(1)} MiB (pool bytes live)`;
        entries.push(
          {
            name: `xstep gpt2-d${d} ${weights}`,
            shape: `B=${BATCH} T=${x.length}`,
            run: () => x.loop.step(),
            note: mem,
          },
          { name: `xstep gpt2-d${d} eager ${weights}`, shape: `B=${BATCH} T=${x.length}`, run: x.eager },
        );
        const dec = decodeEntry(ctx, model, 16);
        entries.push({
          name: `decode step gpt2-d${d} ${weights}`,
          shape: `B=${BATCH} past=16`,
          run: dec.run,
        });
        disposers.push(() => {
          x.dispose();
          dec.dispose();
          model.dispose();
        });
      }
      // Alternate f32 / f16 entries of the same kind.
      const order = entries.map((_, i) => i).sort((a, b) => (a % 3) - (b % 3) || a - b);
      await timeEntries(ctx, order.map((i) => entries[i]), o, report);
      for (const f of disposers) f();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  if (!o.json) console.log(formatTable(results));
}

if (import.meta.main) await main();
