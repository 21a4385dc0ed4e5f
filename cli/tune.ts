/**
 * `tune`: measure the fastest matmul tiles of this adapter for the matmul ladder's squares and a
 * model's shapes, print them against the static defaults, and cache them (kernels/autotune.ts).
 * Also {@link tuneForModel}, the one call a command makes after loading its model to tune (or
 * load) the tiles of that model's shapes.
 */
import os from "node:os";
import { defaultContext, type GpuContext } from "../kernels/device.ts";
import {
  type AutotuneEvent,
  type AutotuneReport,
  type ClassReport,
  recordMatmulShapes,
} from "../kernels/autotune.ts";
import { autotune, autotuneMode, type AutotuneOptions, defaultCacheDir } from "../host/autotune.ts";
import {
  MATMUL_VARIANTS,
  type MatmulDims,
  type MatmulTuning,
  type MatmulVariant,
} from "../kernels/matmul.ts";
import { backward } from "../autograd/tape.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import { sumAll } from "../autograd/ops/reduce.ts";
import type { CausalLM } from "../models/model.ts";
import { type Command, numberFlag, parseFlags, UsageError } from "./args.ts";
import { openModelForCommand } from "./ppl.ts";

/** Which workload's matmuls a model is tuned for. */
export type TuneWorkload = "synth" | "finetune";

/**
 * The distinct matmul shapes (of the tile kernels) of one training step of `model` on a batch of
 * `batch` sequences of `length` tokens:
 * - `synth`: GRADMM's x-step: a forward from free input embeddings to the last position's logits
 *   and a backward to the embeddings (the weights get no gradient);
 * - `finetune`: a forward from token ids to every position's logits and a backward to every weight.
 * The values are zeros: only the shapes matter.
 */
export async function modelMatmulShapes(
  model: CausalLM,
  opts: { batch: number; length: number; workload: TuneWorkload },
): Promise<MatmulDims[]> {
  const ctx = model.ctx;
  const { batch, length } = opts;
  const params = [...model.parameters().values()];
  const saved = params.map((p) => p.requiresGrad);
  if (opts.workload === "finetune") { for (const p of params) p.requiresGrad = true; }
  try {
    const { shapes } = await recordMatmulShapes(ctx, () =>
      scope(ctx, async () => {
        let logits: Tensor | null;
        if (opts.workload === "synth") {
          const d = model.embedRows.shape[1];
          const x = Tensor.from(ctx, new Float32Array(batch * length * d), [batch, length, d], {
            requiresGrad: true,
          });
          logits = model.forward({ embeds: x, logits: "last" }).logits;
        } else {
          const ids = Tensor.from(ctx, new Float32Array(batch * length), [batch, length]);
          logits = model.forward({ ids, logits: "all" }).logits;
        }
        backward(sumAll(logits!));
        await ctx.sync();
      }));
    return shapes;
  } finally {
    params.forEach((p, i) => {
      p.zeroGrad();
      p.requiresGrad = saved[i];
    });
  }
}

/** Options of {@link tuneForModel}. */
export interface TuneForModelOptions extends Omit<AutotuneOptions, "onProgress" | "onWarning" | "measure"> {
  batch: number;
  length: number;
  workload: TuneWorkload;
  /** Where progress lines go (a command passes console.error). */
  log?: (line: string) => void;
}

/**
 * What a command calls after loading its model: unless GRADMM_AUTOTUNE=0, installs the cached
 * matmul tilings of this adapter, and (unless GRADMM_AUTOTUNE=cache) first measures the classes of
 * the model's shapes that the cache lacks, logging progress. Returns null when disabled.
 */
export async function tuneForModel(
  model: CausalLM,
  opts: TuneForModelOptions,
): Promise<AutotuneReport | null> {
  // Measuring on a CPU adapter costs minutes of shader compiles: there only the cache (written by
  // `tune`) is used unless GRADMM_AUTOTUNE=on; GPUs tune the missing classes in seconds.
  const mode = autotuneMode(model.ctx.isCpuAdapter ? "cache" : "on");
  if (mode === "off") return null;
  const log = opts.log ?? (() => {});
  const shapes = await modelMatmulShapes(model, opts);
  let announced = false;
  const report = await autotune(model.ctx, shapes, {
    ...opts,
    measure: mode === "on",
    onWarning: (w) => log(`warning: ${w}`),
    onProgress: (e) => {
      if (e.type === "class" && !announced) {
        announced = true;
        log("tuning matmul tiles for this adapter (once; cached; GRADMM_AUTOTUNE=0 disables)");
      }
      const line = progressLine(e);
      if (line && e.type !== "candidate") log(line);
    },
  });
  const tuned = report.classes.filter((c) => c.entry);
  if (tuned.length) {
    const changed = tuned.filter((c) =>
      c.entry!.speedup > 1 && !sameTiles(c.entry!.tuning, c.entry!.defaultTuning)
    );
    log(`matmul tiles: ${tuned.length} shape classes tuned, ${changed.length} differ from the defaults`);
  }
  return report;
}

const sameTiles = (a: MatmulTuning, b: MatmulTuning) =>
  a.tm === b.tm && a.tn === b.tn && a.wgx === b.wgx && a.wgy === b.wgy && a.bk === b.bk;

/** A tuning as `24×24/2×4` (outputs per thread / threads), with `k16` for `blocked`'s slices. */
export function formatTuning(t: MatmulTuning, variant: MatmulVariant = "vec4"): string {
  return `${t.tm}×${t.tn}/${t.wgx}×${t.wgy}${variant === "blocked" ? ` k${t.bk}` : ""}`;
}

function formatShape(d: MatmulDims): string {
  const lay = `${d.transA ? "Aᵀ" : "A"}·${d.transB ? "Bᵀ" : "B"}`;
  return `${d.batch > 1 ? `${d.batch}× ` : ""}${d.m}×${d.n}×${d.k} ${lay}`;
}

/** One progress line for an event (null for nothing to say). */
function progressLine(e: AutotuneEvent): string | null {
  if (e.type === "class") {
    return `[${e.index}/${e.count}] ${e.cls} (${formatShape(e.shape)}): ${e.candidates} candidates`;
  }
  if (e.type === "candidate") {
    const r = e.result;
    const compile = r.compileMs !== undefined ? `, compile ${(r.compileMs / 1000).toFixed(1)} s` : "";
    return `    ${formatTuning(r.tuning).padEnd(12)} ${r.status}${compile}${
      r.message ? `: ${r.message}` : ""
    }`;
  }
  const r = e.report;
  if (r.status === "skipped") return `    skipped: ${r.message}`;
  if (r.status === "cached") return null;
  const en = r.entry!;
  const untried = r.candidates.filter((c) => c.status === "skipped").length;
  return `    chose ${formatTuning(en.tuning, en.variant)} (${en.speedup.toFixed(2)}× the default) in ${
    (r.elapsedMs / 1000).toFixed(1)
  } s${untried ? `; ${untried} candidates not tried (time budget or slow compiles)` : ""}`;
}

const LAYOUTS = { nn: [false, false], nt: [false, true], tn: [true, false], tt: [true, true] } as const;

const HELP = `Usage: cli.ts tune [flags]

Measures, for this adapter, the fastest tile sizes of the matmul kernel (vec4 on CPU adapters,
blocked on GPUs) for each class of shapes, checks every candidate's output against the default
kernel, prints the choices against the static defaults, and caches them. Commands that tune
their model's shapes on first use read the same cache; GRADMM_AUTOTUNE=0 turns that off
(=cache: use the cache but never measure).

Shapes
  --matrix-sizes N[,N...] square products M = N = K (default 512,1024; none with --model)
  --layouts L[,L...]     layouts of the squares: nn, nt (B transposed), tn, tt (default all four)
  --model DIR|ORG/NAME   also the matmuls of this model's training step
  --workload W           synth (x-step: embeddings → last logits, default) or finetune
  --batch N              sequences per step (default 10)
  --length N             tokens per sequence (default 32)

Measurement
  --budget S             seconds per shape class (default 10 on CPU adapters, 2 on GPUs)
  --max-compile S        reject tiles whose pipeline compiles slower (default 5 on CPU, 1 on GPU)
  --variant V            vec4 or blocked (default: the adapter's)
  --retune               measure again the classes already cached
  --cache-dir DIR        cache directory (default ${"$"}GRADMM_CACHE, ${"$"}XDG_CACHE_HOME/gradmm-ts
                         or ~/.cache/gradmm-ts)
  --json                 print one JSON object on stdout: every shape class and candidate

Examples
  deno run -A cli.ts tune
  deno run -A cli.ts tune --model assets/gpt2-d128 --workload finetune --batch 8 --length 48
  deno run -A cli.ts tune --matrix-sizes 1024 --layouts nn --retune --json

Old flag name still accepted: --sizes (now --matrix-sizes).`;

/** The `tune` command. */
export const tuneCommand: Command = {
  name: "tune",
  summary: "measure and cache the fastest matmul tiles for this adapter",
  help: HELP,
  async run(args) {
    const { values: v } = parseFlags("tune", args, {
      "matrix-sizes": { type: "string" },
      layouts: { type: "string" },
      model: { type: "string" },
      workload: { type: "string" },
      batch: { type: "string" },
      length: { type: "string" },
      budget: { type: "string" },
      "max-compile": { type: "string" },
      variant: { type: "string" },
      retune: { type: "boolean" },
      "cache-dir": { type: "string" },
      json: { type: "boolean" },
    }, { aliases: { sizes: "matrix-sizes" } });
    if (v.help) {
      console.log(HELP);
      return 0;
    }
    const list = (s: string) => s.split(",").map((x) => x.trim()).filter(Boolean);
    const sizes = list(v["matrix-sizes"] ?? (v.model ? "" : "512,1024")).map((s) =>
      numberFlag("tune", "matrix-sizes", s, 0, { min: 1, max: 16384, integer: true })
    );
    const layouts = list(v.layouts ?? "nn,nt,tn,tt");
    for (const l of layouts) {
      if (!(l in LAYOUTS)) throw new UsageError(`tune: --layouts takes nn, nt, tn or tt, got '${l}'`);
    }
    const workload = (v.workload ?? "synth") as TuneWorkload;
    if (workload !== "synth" && workload !== "finetune") {
      throw new UsageError(`tune: --workload must be synth or finetune, got '${v.workload}'`);
    }
    const batch = numberFlag("tune", "batch", v.batch, 10, { min: 1, max: 4096, integer: true });
    const length = numberFlag("tune", "length", v.length, 32, { min: 1, max: 65536, integer: true });
    const budget = v.budget === undefined ? undefined : numberFlag("tune", "budget", v.budget, 0, { min: 0 });
    const maxCompile = v["max-compile"] === undefined
      ? undefined
      : numberFlag("tune", "max-compile", v["max-compile"], 0, { min: 0 });
    if (v.variant !== undefined && !(MATMUL_VARIANTS as readonly string[]).includes(v.variant)) {
      throw new UsageError(
        `tune: --variant must be one of ${MATMUL_VARIANTS.join(", ")}, got '${v.variant}'`,
      );
    }
    if (!v.model && sizes.length === 0) {
      throw new UsageError("tune: nothing to tune (give --matrix-sizes or --model)");
    }
    const cacheDir = v["cache-dir"] ?? defaultCacheDir();

    const ctx: GpuContext = await defaultContext();
    const backend = Deno.env.get("DENO_WEBGPU_BACKEND");
    console.error(
      `adapter: ${ctx.adapterName}${backend ? ` [${backend}]` : ""}, load average ${
        os.loadavg().map((x) => x.toFixed(2)).join(" ")
      }`,
    );
    const shapes: MatmulDims[] = [];
    for (const s of sizes) {
      for (const l of layouts) {
        const [transA, transB] = LAYOUTS[l as keyof typeof LAYOUTS];
        shapes.push({ batch: 1, m: s, n: s, k: s, transA, transB });
      }
    }
    if (v.model) {
      const { model } = await openModelForCommand(ctx, v.model);
      try {
        const own = await modelMatmulShapes(model, { batch, length, workload });
        console.error(`model ${v.model}: ${own.length} distinct matmul shapes in a ${workload} step`);
        shapes.push(...own);
      } finally {
        model.dispose();
      }
    }
    const report = await autotune(ctx, shapes, {
      cacheDir,
      retune: !!v.retune,
      variant: v.variant as MatmulVariant | undefined,
      budgetMs: budget === undefined ? undefined : budget * 1000,
      maxCompileMs: maxCompile === undefined ? undefined : maxCompile * 1000,
      onWarning: (w) => console.error(`warning: ${w}`),
      onProgress: (e) => {
        const line = e.type === "candidate" && e.result.status === "skipped" ? null : progressLine(e);
        if (line) console.error(line);
      },
    });
    console.error(
      `cache: ${report.file ?? "(none)"} (${report.cacheStatus}${report.saved ? ", updated" : ""})`,
    );
    if (v.json) {
      console.log(JSON.stringify({
        adapter: ctx.adapterName,
        cache: report.file ?? null,
        cacheStatus: report.cacheStatus,
        saved: report.saved,
        classes: report.classes.map(classJson),
      }));
    } else {
      printTable(report.classes);
    }
    return 0;
  },
};

function classJson(c: ClassReport) {
  return {
    class: c.cls,
    shape: c.shape,
    status: c.status,
    message: c.message,
    variant: c.entry?.variant,
    tuning: c.entry?.tuning,
    defaultTuning: c.entry?.defaultTuning,
    gflops: c.entry?.gflops,
    wallGflops: c.entry?.wallGflops,
    defaultGflops: c.entry?.defaultGflops,
    speedup: c.entry?.speedup,
    clock: c.entry?.clock,
    compileMs: c.entry?.compileMs,
    candidates: c.candidates,
  };
}

function printTable(classes: ClassReport[]): void {
  const rows = classes.map((c) => {
    const e = c.entry;
    if (!e) return [c.cls, formatShape(c.shape), "-", "-", "-", "-", "-", "-", c.message ?? c.status];
    return [
      c.cls,
      formatShape(e.shape),
      formatTuning(e.defaultTuning, e.variant),
      e.defaultGflops.toFixed(2),
      formatTuning(e.tuning, e.variant),
      e.gflops.toFixed(2),
      `${e.speedup.toFixed(2)}×`,
      e.compileMs === null ? "-" : `${(e.compileMs / 1000).toFixed(1)} s`,
      c.status === "cached" ? `cached (${e.measuredAt.slice(0, 10)})` : `tuned (${e.clock} clock)`,
    ];
  });
  const head = ["class", "shape", "default", "GFLOP/s", "chosen", "GFLOP/s", "speedup", "compile", ""];
  const cpu = classes.some((c) => c.entry?.clock === "cpu");
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r: string[]) => r.map((x, i) => x.padEnd(widths[i])).join("  ").trimEnd();
  console.log(fmt(head));
  for (const r of rows) console.log(fmt(r));
  if (cpu) {
    console.log(
      "GFLOP/s on the cpu clock are CPU-equivalent: the work over the process's CPU time per core, which other\n" +
        "processes disturb much less than wall time (wall-clock figures are in --json).",
    );
  }
}
