/**
 * Attention kernels on the GPU path: the row kernels (kernels/attention.ts, one workgroup per
 * query or key row) against the flash kernels (kernels/attention_flash.ts, tiles of K/V in
 * workgroup memory), forward and backward, at the shapes our models run:
 *
 * - gpt2-d256 x-step: B=10, H=8, T=33, Dh=32, q/k/v read in place from the fused c_attn output;
 * - phi-1.5: B in --batches, H=32, T=256/1024/2048, Dh=64, q/k/v [B, H, T, Dh], output heads merged;
 * - phi-2 (Dh=80): B=1, H=32, T=1024/2048;
 * - decode: 1 query over 1024 cached keys (B=10, H=32, Dh=64), forward only: where `auto` keeps
 *   the row kernels.
 *
 * Usage:
 *   deno run -A bench/attention_flash.ts [--json] [--kernel=rows,flash] [--filter=TEXT]
 *     [--batches=1,10] [--repeats=3] [--max-seconds=20] [--parts] [--check] [--sweep]
 *     [--tiling=forward:rows=64,tile=32;key:ns=4]
 *
 * --kernel    which kernel families to time (rows, flash, and cpu = the CPU-adapter variant)
 * --parts     also time the two backward kernels on their own (bwd-q: dQ, bwd-k: dK and dV)
 * --tiling    force parts of the flash block shapes (FlashTiling fields per kernel kind)
 * --check     compare the flash kernels' O, dQ, dK, dV with the row kernels' on each shape
 *             (a line named `attention check flash-vs-rows`, the errors in its note)
 * --sweep     also time each flash kernel with other block shapes (threads per row, rows per
 *             workgroup, tile) that fit the adapter: lines `attention <pass> flash ns2 r64 c32`,
 *             then `attention <pass> flash best` naming the fastest in its note. Use --filter
 *             to sweep one or two shapes (about 50 timings per shape).
 *
 * One line per (shape, kernel, pass): `{name, shape, ms, gflops, adapter}` with --json, where
 * name is `attention <pass> <kernel>`. GFLOP/s count the useful work on visible (causal) pairs:
 * 4·Dh per pair forward, 10·Dh backward (recomputing S, then dP, dV, dQ, dK); bwd-q counts
 * 6·Dh (S, dP, dQ) and bwd-k 8·Dh (S, dP, dV, dK), so the parts' figures do not add up.
 * `ms` is the median of wall-clock batches and `gpuMs` the kernels' time from timestamp queries
 * where the adapter has them (bench/harness.ts `timeGpu`); GFLOP/s use `ms`. The flash block
 * shapes used are printed to stderr.
 */
import { parseArgs } from "node:util";
import os from "node:os";
import { createContext, type GpuContext } from "../kernels/device.ts";
import {
  attentionBackwardKeyKernel,
  attentionBackwardQueryKernel,
  type AttentionDims,
  attentionForwardKernel,
  headsLayout,
  tokensLayout,
} from "../kernels/attention.ts";
import {
  flashAttentionBackwardKeyKernel,
  flashAttentionBackwardQueryKernel,
  flashAttentionForwardKernel,
  flashAttentionOptions,
  type FlashKind,
  flashSharedBytes,
  type FlashTiling,
  flashTiling,
} from "../kernels/attention_flash.ts";
import { Tensor } from "../autograd/tensor.ts";
import { type BenchResult, formatJson, formatTable, timeGpu, timingFields } from "./harness.ts";

/** One bench shape. */
interface Shape {
  /** Short name, matched by --filter. */
  label: string;
  batch: number;
  heads: number;
  queries: number;
  keys: number;
  headDim: number;
  /** q/k/v read from one fused [B, T, 3·H·Dh] projection (GPT-2) instead of [B, H, T, Dh] each. */
  fused: boolean;
  /** Forward only (decode). */
  forwardOnly?: boolean;
}

function shapes(batches: number[]): Shape[] {
  const list: Shape[] = [
    { label: "gpt2-d256 x-step", batch: 10, heads: 8, queries: 33, keys: 33, headDim: 32, fused: true },
  ];
  for (const t of [256, 1024, 2048]) {
    for (const b of batches) {
      list.push({ label: "phi-1.5", batch: b, heads: 32, queries: t, keys: t, headDim: 64, fused: false });
    }
  }
  for (const t of [1024, 2048]) {
    list.push({ label: "phi-2", batch: 1, heads: 32, queries: t, keys: t, headDim: 80, fused: false });
  }
  list.push({
    label: "decode",
    batch: 10,
    heads: 32,
    queries: 1,
    keys: 1024,
    headDim: 64,
    fused: false,
    forwardOnly: true,
  });
  return list;
}

function describe(s: Shape): string {
  const t = s.queries === s.keys ? `T${s.queries}` : `Tq${s.queries} Tk${s.keys}`;
  return `B${s.batch} H${s.heads} ${t} Dh${s.headDim}${s.fused ? " qkv" : ""}`;
}

/** Dims (and layouts) of a shape, as the autograd op builds them. */
function dimsOf(s: Shape): AttentionDims {
  const { batch, heads, queries, keys, headDim } = s;
  const width = 3 * heads * headDim;
  const layout = s.fused
    ? {
      q: tokensLayout(heads, queries, headDim, width, 0),
      k: tokensLayout(heads, keys, headDim, width, heads * headDim),
      v: tokensLayout(heads, keys, headDim, width, 2 * heads * headDim),
      out: tokensLayout(heads, queries, headDim),
    }
    : {
      q: headsLayout(heads, queries, headDim),
      k: headsLayout(heads, keys, headDim),
      v: headsLayout(heads, keys, headDim),
      out: tokensLayout(heads, queries, headDim),
    };
  return {
    batch,
    heads,
    kvHeads: heads,
    queries,
    keys,
    headDim,
    queryOffset: keys - queries,
    scale: 1 / Math.sqrt(headDim),
    hasMask: false,
    layout,
  };
}

/** (query, key) pairs under the causal mask, over all batch rows and heads. */
function visiblePairs(s: Shape): number {
  let perHead = 0;
  for (let i = 0; i < s.queries; i++) perHead += Math.min(s.keys, s.keys - s.queries + i + 1);
  return perHead * s.batch * s.heads;
}

/** Uniform values in [-1.7, 1.7) (cheap to make for 40M-element operands). */
function randomTensor(ctx: GpuContext, shape: number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    data[i] = ((x >>> 0) / 4294967296 - 0.5) * 3.4;
  }
  return Tensor.from(ctx, data, shape);
}

type Kernel = "rows" | "flash" | "cpu";

/** Parses `forward:rows=64,tile=32;key:ns=4` into forced tilings. */
function parseTiling(text: string): Partial<Record<FlashKind, Partial<FlashTiling>>> {
  const out: Partial<Record<FlashKind, Partial<FlashTiling>>> = {};
  for (const part of text.split(";").filter((p) => p.trim() !== "")) {
    const [kind, fields] = part.split(":");
    if (!["forward", "query", "key"].includes(kind)) throw new Error(`--tiling: unknown kernel '${kind}'`);
    const t: Partial<FlashTiling> = {};
    for (const f of (fields ?? "").split(",")) {
      const [k, v] = f.split("=");
      if (!["ns", "ds4", "rows", "tile"].includes(k) || !(Number(v) > 0)) {
        throw new Error(`--tiling: bad field '${f}' (ns, ds4, rows or tile = a positive integer)`);
      }
      t[k as keyof FlashTiling] = Number(v);
    }
    out[kind as FlashKind] = t;
  }
  return out;
}

/** Buffers of one shape: inputs, output, output gradient, input gradients, (L, D) rows. */
interface Operands {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  out: Tensor;
  gradOut: Tensor;
  gq: Tensor;
  gk: Tensor;
  gv: Tensor;
  ld: Tensor;
}

function operands(ctx: GpuContext, s: Shape): Operands {
  const { batch: B, heads: H, queries: Tq, keys: Tk, headDim: Dh } = s;
  let q: Tensor, k: Tensor, v: Tensor, gq: Tensor, gk: Tensor, gv: Tensor;
  if (s.fused) {
    q = k = v = randomTensor(ctx, [B, Tq, 3 * H * Dh], 1);
    gq = gk = gv = Tensor.empty(ctx, [B, Tq, 3 * H * Dh]);
  } else {
    q = randomTensor(ctx, [B, H, Tq, Dh], 1);
    k = randomTensor(ctx, [B, H, Tk, Dh], 2);
    v = randomTensor(ctx, [B, H, Tk, Dh], 3);
    gq = Tensor.empty(ctx, [B, H, Tq, Dh]);
    gk = Tensor.empty(ctx, [B, H, Tk, Dh]);
    gv = Tensor.empty(ctx, [B, H, Tk, Dh]);
  }
  return {
    q,
    k,
    v,
    out: Tensor.empty(ctx, [B, Tq, H * Dh]),
    gradOut: randomTensor(ctx, [B, Tq, H * Dh], 4),
    gq,
    gk,
    gv,
    ld: Tensor.empty(ctx, [B * H * Tq, 2]),
  };
}

function dispose(o: Operands): void {
  for (const t of new Set(Object.values(o))) t.dispose();
}

/** The three kernels of one family, encoding into the context's batch. */
function passes(ctx: GpuContext, kernel: Kernel, dims: AttentionDims, o: Operands) {
  const [q, k, v, m] = [o.q.buffer, o.k.buffer, o.v.buffer, o.k.buffer]; // no mask: any buffer
  const flash = kernel === "flash";
  return {
    forward: () =>
      flash
        ? flashAttentionForwardKernel(ctx, dims, q, k, v, m, o.out.buffer, o.ld.buffer)
        : attentionForwardKernel(ctx, dims, q, k, v, m, o.out.buffer),
    query: () =>
      (flash ? flashAttentionBackwardQueryKernel : attentionBackwardQueryKernel)(
        ctx,
        dims,
        q,
        k,
        v,
        m,
        o.out.buffer,
        o.gradOut.buffer,
        o.gq.buffer,
        o.ld.buffer,
      ),
    key: () =>
      (flash ? flashAttentionBackwardKeyKernel : attentionBackwardKeyKernel)(
        ctx,
        dims,
        q,
        k,
        v,
        m,
        o.gradOut.buffer,
        o.ld.buffer,
        o.gk.buffer,
        o.gv.buffer,
      ),
  };
}

/** max|a − b| / max|b|. */
function relErr(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return Number.isFinite(num) ? num / den : Infinity;
}

/** Runs both GPU families' forward and backward and compares the flash results with the rows'. */
async function check(
  ctx: GpuContext,
  dims: AttentionDims,
  o: Operands,
  shape: string,
  adapter: string,
): Promise<BenchResult> {
  const saved = ctx.cpuKernels;
  ctx.cpuKernels = false;
  const results: Float32Array[][] = [];
  try {
    for (const kernel of ["rows", "flash"] as const) {
      const p = passes(ctx, kernel, dims, o);
      p.forward();
      p.query();
      p.key();
      const outs = [o.out, o.gq, o.gk, o.gv];
      results.push(await Promise.all(outs.map((t) => t.read())));
    }
  } finally {
    ctx.cpuKernels = saved;
  }
  const names = ["O", "dQ", "dK", "dV"];
  const errs = names.map((n, i) => `${n} ${relErr(results[1][i], results[0][i]).toExponential(2)}`);
  return {
    name: "attention check flash-vs-rows",
    shape,
    adapter,
    note: `max|flash − rows| / max|rows|: ${errs.join(", ")}`,
  };
}

/** Block shapes to try for one kernel kind at head size `dh`: around the default. */
function candidates(ctx: GpuContext, kind: FlashKind, dh: number): FlashTiling[] {
  const base = flashTiling(kind, dh, ctx.limits);
  const out: FlashTiling[] = [];
  const nss = [...new Set([Math.max(1, base.ns >> 1), base.ns, base.ns * 2])];
  const rowsList = kind === "key" ? [16, 32, 64] : [32, 64, 128];
  for (const ns of nss) {
    const ds4 = Math.ceil(dh / (4 * ns));
    if (ds4 > 16) continue; // more than 64 floats per vector: spills
    for (const rows of rowsList) {
      for (const tile of [16, 32, 64]) {
        const t = { ns, ds4, rows, tile };
        const threads = ns * rows;
        if (threads < 32 || threads > Math.min(256, ctx.limits.maxComputeInvocationsPerWorkgroup)) continue;
        if (flashSharedBytes(kind, t) > ctx.limits.maxComputeWorkgroupStorageSize) continue;
        out.push(t);
      }
    }
  }
  return out;
}

/** Times each flash kernel with every candidate block shape; reports each and the fastest. */
async function sweep(
  ctx: GpuContext,
  s: Shape,
  dims: AttentionDims,
  o: Operands,
  env: { repeats: number; adapter: string; report: (r: BenchResult) => void },
): Promise<void> {
  const shape = describe(s);
  const pairs = visiblePairs(s);
  const saved = { cpu: ctx.cpuKernels, tiling: flashAttentionOptions.tiling };
  ctx.cpuKernels = false;
  try {
    const p = passes(ctx, "flash", dims, o);
    p.forward(); // log-sum-exps for the query side
    await ctx.sync();
    const kinds: [FlashKind, string, number, () => void][] = [["forward", "fwd", 4, p.forward]];
    if (!s.forwardOnly) kinds.push(["query", "bwd-q", 6, p.query], ["key", "bwd-k", 8, p.key]);
    for (const [kind, pass, flopsPerPair, run] of kinds) {
      let best: { ms: number; label: string } | null = null;
      for (const t of candidates(ctx, kind, s.headDim)) {
        flashAttentionOptions.tiling = { ...saved.tiling, [kind]: t };
        const label = `ns${t.ns} r${t.rows} c${t.tile}`;
        const timing = await timeGpu(ctx, run, { repeats: env.repeats, batchMs: 100 });
        const gflop = (flopsPerPair * s.headDim * pairs) / 1e9;
        const r = { name: `attention ${pass} flash ${label}`, shape, ...timingFields(timing) };
        env.report({ ...r, gflops: gflop / (timing.ms / 1e3), adapter: env.adapter });
        const ms = timing.gpuMs ?? timing.ms;
        if (!best || ms < best.ms) best = { ms, label };
      }
      if (best) {
        env.report({
          name: `attention ${pass} flash best`,
          shape,
          adapter: env.adapter,
          note: `${best.label} (${best.ms.toFixed(4)} ms, GPU time where measured)`,
        });
      }
    }
  } finally {
    ctx.cpuKernels = saved.cpu;
    flashAttentionOptions.tiling = saved.tiling;
  }
}

/** Assumed GFLOP/s for the skip estimate: what the slowest kernel family does on each adapter kind. */
function assumedGflops(ctx: GpuContext): number {
  return ctx.isCpuAdapter ? 0.3 : 200;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      json: { type: "boolean", default: false },
      kernel: { type: "string", default: "rows,flash" },
      filter: { type: "string", default: "" },
      batches: { type: "string", default: "1,10" },
      repeats: { type: "string", default: "3" },
      "max-seconds": { type: "string", default: "20" },
      parts: { type: "boolean", default: false },
      check: { type: "boolean", default: false },
      sweep: { type: "boolean", default: false },
      tiling: { type: "string", default: "" },
    },
  });
  const kernels = values.kernel.split(",").map((k) => k.trim()) as Kernel[];
  for (const k of kernels) {
    if (!["rows", "flash", "cpu"].includes(k)) throw new Error(`--kernel: unknown '${k}' (rows, flash, cpu)`);
  }
  const batches = values.batches.split(",").map(Number);
  if (batches.some((b) => !Number.isInteger(b) || b < 1)) throw new Error(`--batches: '${values.batches}'`);
  const repeats = Number(values.repeats);
  const maxSeconds = Number(values["max-seconds"]);
  flashAttentionOptions.tiling = parseTiling(values.tiling);

  const ctx = await createContext();
  const backend = Deno.env.get("DENO_WEBGPU_BACKEND");
  const adapter = backend ? `${ctx.adapterName} [${backend}]` : ctx.adapterName;
  const rows: BenchResult[] = [];
  // JSON lines stream (a timed-out run keeps what it measured); the table comes at the end.
  const report = (r: BenchResult) => (values.json ? console.log(formatJson(r)) : rows.push(r));
  const savedCpu = ctx.cpuKernels;

  for (const s of shapes(batches)) {
    const shape = describe(s);
    if (values.filter && !`${s.label} ${shape}`.toLowerCase().includes(values.filter.toLowerCase())) continue;
    const dims = dimsOf(s);
    const pairs = visiblePairs(s);
    const flops = { fwd: 4, bwd: 10, "bwd-q": 6, "bwd-k": 8 };
    const wanted = (["fwd", "bwd", "bwd-q", "bwd-k"] as const).filter((p) =>
      p === "fwd" || (!s.forwardOnly && (p === "bwd" || values.parts))
    );
    // The largest operand: the fused projection, or one of q, k, v.
    const bytes = 4 * s.batch * s.heads * Math.max(s.queries, s.keys) * s.headDim * (s.fused ? 3 : 1);
    if (bytes > ctx.limits.maxStorageBufferBindingSize) {
      for (const kernel of kernels) {
        report({
          name: `attention fwd ${kernel}`,
          shape,
          adapter,
          skipped: "operands exceed the binding limit",
        });
      }
      continue;
    }
    const estimate = (pass: keyof typeof flops) =>
      ((flops[pass] * s.headDim * pairs) / 1e9 / assumedGflops(ctx)) * (2 + repeats);
    if (wanted.every((pass) => estimate(pass) > maxSeconds)) {
      for (const kernel of kernels) {
        for (const pass of wanted) {
          const skipped = `estimated ${estimate(pass).toFixed(0)} s > --max-seconds`;
          report({ name: `attention ${pass} ${kernel}`, shape, adapter, skipped });
        }
      }
      continue;
    }
    const o = operands(ctx, s);
    if (kernels.includes("flash")) {
      const t = (kind: FlashKind) => JSON.stringify(flashTiling(kind, s.headDim, ctx.limits));
      console.error(`${shape}: flash blocks forward ${t("forward")} query ${t("query")} key ${t("key")}`);
    }
    for (const kernel of kernels) {
      ctx.cpuKernels = kernel === "cpu";
      try {
        const p = passes(ctx, kernel, dims, o);
        // The backward reads the forward's output and (flash) its log-sum-exps.
        p.forward();
        await ctx.sync();
        for (const pass of wanted) {
          const name = `attention ${pass} ${kernel}`;
          const gflop = (flops[pass] * s.headDim * pairs) / 1e9;
          if (estimate(pass) > maxSeconds) {
            report({
              name,
              shape,
              adapter,
              skipped: `estimated ${estimate(pass).toFixed(0)} s > --max-seconds`,
            });
            continue;
          }
          const run = pass === "fwd"
            ? p.forward
            : pass === "bwd-q"
            ? p.query
            : pass === "bwd-k"
            ? p.key
            : () => {
              p.query();
              p.key();
            };
          const t = await timeGpu(ctx, run, { repeats, batchMs: 100 });
          report({ name, shape, ...timingFields(t), gflops: gflop / (t.ms / 1e3), adapter });
        }
      } finally {
        ctx.cpuKernels = savedCpu;
      }
    }
    if (values.check) report(await check(ctx, dims, o, shape, adapter));
    if (values.sweep) await sweep(ctx, s, dims, o, { repeats, adapter, report });
    dispose(o);
    await ctx.sync();
  }
  if (!values.json) {
    const load = os.loadavg().map((l) => l.toFixed(2)).join(" ");
    console.log(`adapter: ${adapter}  (load average ${load}, ${os.cpus().length} CPUs)`);
    console.log(formatTable(rows));
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`bench/attention_flash: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
