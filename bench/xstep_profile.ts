/**
 * Where an x-step's time goes: captures one x-step of the synth bench as a step graph and
 * measures
 *
 * - the whole step: eager (through the autograd) and replayed, wall-clock per step with the sync
 *   amortised over many steps, and the CPU time spent encoding one replay;
 * - every kernel on its own: GPU time from timestamp queries (each command repeated back to back
 *   in one timed region, median of a few regions), grouped by kernel source and listed by cost.
 *
 * `deno run -A bench/xstep_profile.ts [--shape=gpt2-d256] [--top=25] [--json]`
 *
 * On CPU adapters the timestamps are the CPU's clock around llvmpipe's work; on GPUs they are the
 * GPU's own. The per-kernel times include each dispatch's pass and barrier, so their sum is an
 * upper bound of the GPU work of one replay.
 */
import { parseArgs } from "node:util";
import { InnerLoop } from "../admm/xstep.ts";
import { xStep } from "../admm/xstep.ts";
import { createContext, type GpuContext } from "../kernels/device.ts";
import { StepGraph } from "../kernels/graph.ts";
import { GpuTimer } from "../kernels/timing.ts";
import { median, timeGpu } from "./harness.ts";
import { type BenchShape, SHAPES, xstepProblem } from "./synth.ts";

/** A short name for a kernel: its bindings and parameter fields, taken from the WGSL source. */
export function kernelName(source: string | undefined): string {
  if (!source) return "?";
  const vars = [...source.matchAll(/var<storage[^>]*>\s+(\w+)/g)].map((m) => m[1]);
  const fields = /struct P \{([^}]*)\}/.exec(source)?.[1].split(",").map((f) => f.split(":")[0].trim())
    .filter(Boolean) ?? [];
  return `${vars.join(",")}(${fields.slice(0, 5).join(",")}${fields.length > 5 ? ",…" : ""})`;
}

/** Profiles one shape; prints a report, returns the rows. */
export async function profileXStep(ctx: GpuContext, shape: BenchShape, top: number, json: boolean) {
  const bench = await xstepProblem(ctx, shape);
  const { problem, x, shift, opt, settings } = bench;
  const eager = await timeGpu(ctx, () => xStep(problem, x, shift, opt, settings, null).dispose(), {
    repeats: 3,
    batchMs: 500,
    maxIterations: 256,
  });
  const loop = new InnerLoop(problem, x, shift, opt, settings, null);
  const replay = await timeGpu(ctx, () => loop.step(), { repeats: 3, batchMs: 500, maxIterations: 256 });
  // CPU time to encode one replay (no sync inside).
  const encode: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    loop.step();
    encode.push(performance.now() - t0);
    ctx.flush();
  }
  await ctx.sync();
  loop.dispose();

  const { graph, result } = StepGraph.capture(ctx, () => xStep(problem, x, shift, opt, settings, null));
  result.dispose();
  const timer = new GpuTimer(ctx);
  const rows: { i: number; name: string; grid: string; params: string; ms: number }[] = [];
  if (!timer.available) {
    console.log(`${ctx.adapterName}: no timestamp queries; per-kernel times skipped`);
  } else {
    // Each command repeated back to back inside one timed region keeps the GPU busy (timed alone
    // between syncs, an idle GPU clocks down and every kernel looks several times slower).
    const reps = ctx.isCpuAdapter ? 2 : 20;
    const rounds = ctx.isCpuAdapter ? 2 : 3;
    for (let i = 0; i < graph.length; i++) {
      const d = graph.describe(i);
      const times: number[] = [];
      for (let r = 0; r < rounds; r++) {
        timer.begin();
        for (let k = 0; k < reps; k++) graph.replayCommand(i);
        timer.end();
        const t = await timer.read();
        if (t) times.push(t.sumMs / reps);
      }
      rows.push({
        i,
        name: d.kind === "dispatch" ? kernelName(ctx.sourceOf(d.pipeline!)) : d.kind,
        grid: d.grid ? d.grid.filter((g, k) => k === 0 || g > 1).join("×") : "",
        params: d.params ? d.params.slice(0, 4).join(",") : "",
        ms: median(times),
      });
    }
  }
  // In context: the GPU time of whole replays, and of replays without each of the costliest
  // kernel groups; the difference is what the group costs inside the step (overlap and
  // barriers included), which the per-kernel times above only bound.
  const ablation: { name: string; n: number; ms: number }[] = [];
  let replayGpuMs = NaN;
  if (timer.available) {
    const [rounds, perRound] = ctx.isCpuAdapter ? [2, 2] : [3, 30];
    const replayGpu = async (skip?: Set<number>) => {
      const times: number[] = [];
      for (let r = 0; r < rounds; r++) {
        timer.begin();
        for (let k = 0; k < perRound; k++) graph.replay(skip);
        timer.end();
        const t = await timer.read();
        if (t) times.push(t.spanMs / perRound);
      }
      return median(times);
    };
    replayGpuMs = await replayGpu();
    const groups = new Map<string, Set<number>>();
    for (const r of rows) {
      if (r.name === "copy" || r.name === "live") continue;
      const g = groups.get(r.name) ?? new Set<number>();
      g.add(r.i);
      groups.set(r.name, g);
    }
    const cost = (g: Set<number>) => [...g].reduce((a, i) => a + rows[i].ms, 0);
    for (const [name, g] of [...groups].sort((a, b) => cost(b[1]) - cost(a[1])).slice(0, 8)) {
      ablation.push({ name, n: g.size, ms: replayGpuMs - await replayGpu(g) });
    }
  }
  graph.dispose();
  await bench.dispose();

  const kernelSum = rows.reduce((a, r) => a + r.ms, 0);
  const summary = {
    name: `xstep profile ${shape.name}`,
    adapter: ctx.adapterName,
    eagerMs: eager.ms,
    replayMs: replay.ms,
    encodeReplayMs: median(encode),
    commands: graph.length,
    kernelSumMs: kernelSum,
    replayGpuMs,
  };
  if (json) {
    console.log(JSON.stringify(summary));
    for (const r of rows) {
      console.log(
        JSON.stringify({
          name: `xstep kernel ${shape.name}`,
          kernel: r.name,
          i: r.i,
          grid: r.grid,
          params: r.params,
          ms: r.ms,
        }),
      );
    }
    return rows;
  }
  console.log(`\n${summary.name} on ${summary.adapter}`);
  console.log(
    `  eager step ${eager.ms.toFixed(2)} ms, replayed step ${replay.ms.toFixed(2)} ms ` +
      `(encoding a replay: ${summary.encodeReplayMs.toFixed(3)} ms CPU), ${graph.length} commands, ` +
      `sum of per-kernel GPU times ${kernelSum.toFixed(3)} ms`,
  );
  const byName = new Map<string, { n: number; ms: number }>();
  for (const r of rows) {
    const g = byName.get(r.name) ?? { n: 0, ms: 0 };
    g.n++;
    g.ms += r.ms;
    byName.set(r.name, g);
  }
  console.log(
    `\n  GPU time of a replay (timestamps, several in a row): ${replayGpuMs.toFixed(3)} ms; in context,`,
  );
  console.log("  what removing each group of kernels saves:");
  for (const a of ablation) {
    console.log(`  ${a.ms.toFixed(3).padStart(9)} ms  ${String(a.n).padStart(3)}×  ${a.name}`);
  }
  console.log("\n  by kernel (each timed alone):");
  for (const [name, g] of [...byName].sort((a, b) => b[1].ms - a[1].ms)) {
    console.log(`  ${g.ms.toFixed(3).padStart(9)} ms  ${String(g.n).padStart(3)}×  ${name}`);
  }
  console.log(`\n  top ${top} commands:`);
  for (const r of [...rows].sort((a, b) => b.ms - a.ms).slice(0, top)) {
    console.log(
      `  ${r.ms.toFixed(3).padStart(9)} ms  #${String(r.i).padEnd(4)} grid ${r.grid.padEnd(9)} p ${
        r.params.padEnd(24)
      } ${r.name}`,
    );
  }
  return rows;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      shape: { type: "string", default: "gpt2-d256" },
      top: { type: "string", default: "25" },
      json: { type: "boolean", default: false },
    },
  });
  const shape = SHAPES.find((s) => s.name === values.shape);
  if (!shape) {
    throw new Error(`unknown --shape ${values.shape}; one of ${SHAPES.map((s) => s.name).join(", ")}`);
  }
  const ctx = await createContext();
  await profileXStep(ctx, shape, Number(values.top), values.json);
}
