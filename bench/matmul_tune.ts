/**
 * Tile-size sweep of the register-blocked matmul kernels, to choose their default tuning on a new
 * adapter: `deno run -A bench/matmul_tune.ts [--size=1024] [--variant=vec4|blocked|all] [--json]`.
 *
 * Candidates run interleaved, round after round, and the median per candidate is reported, so a
 * machine whose load changes during the sweep (CPU adapters shared with other work) affects all of
 * them alike. Besides wall-clock GFLOP/s, on CPU adapters it reports "cpu-equivalent" GFLOP/s:
 * the work divided by the process's CPU time per core, which is far less sensitive to other
 * processes competing for the cores.
 */
import { parseArgs } from "node:util";
import os from "node:os";
import process from "node:process";
import { createContext, type GpuContext } from "../kernels/device.ts";
import {
  BLOCKED_TUNING,
  matmulFlops,
  matmulKernel,
  type MatmulTuning,
  type MatmulVariant,
  VEC4_TUNING,
} from "../kernels/matmul.ts";
import { Tensor } from "../autograd/tensor.ts";
import { Rng } from "../autograd/random.ts";
import { median } from "./harness.ts";

/** Candidate tunings per variant. Workgroups stay multiples of 8 threads (one CPU SIMD vector). */
export const CANDIDATES: Record<"vec4" | "blocked", Partial<MatmulTuning>[]> = {
  vec4: [
    VEC4_TUNING,
    { tm: 8, tn: 8, wgx: 2, wgy: 4 },
    { tm: 8, tn: 8, wgx: 4, wgy: 4 },
    { tm: 16, tn: 8, wgx: 2, wgy: 4 },
    { tm: 16, tn: 12, wgx: 2, wgy: 4 },
    { tm: 16, tn: 16, wgx: 2, wgy: 4 },
    { tm: 24, tn: 16, wgx: 2, wgy: 4 },
    { tm: 24, tn: 24, wgx: 2, wgy: 4 },
    { tm: 4, tn: 4, wgx: 16, wgy: 16 },
    { tm: 8, tn: 4, wgx: 16, wgy: 8 },
  ],
  blocked: [
    BLOCKED_TUNING,
    { tm: 4, tn: 4, wgx: 16, wgy: 16, bk: 16 },
    { tm: 4, tn: 4, wgx: 16, wgy: 16, bk: 8 },
    { tm: 8, tn: 4, wgx: 16, wgy: 16, bk: 8 },
    { tm: 4, tn: 8, wgx: 16, wgy: 16, bk: 8 },
    { tm: 8, tn: 8, wgx: 16, wgy: 16, bk: 8 },
    { tm: 8, tn: 8, wgx: 8, wgy: 8, bk: 32 },
    { tm: 8, tn: 8, wgx: 16, wgy: 8, bk: 16 },
    { tm: 12, tn: 12, wgx: 8, wgy: 8, bk: 8 },
  ],
};

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      size: { type: "string", default: "1024" },
      variant: { type: "string", default: "all" },
      rounds: { type: "string", default: "5" },
      json: { type: "boolean", default: false },
    },
  });
  const size = Number(values.size);
  const rounds = Number(values.rounds);
  const variants =
    (values.variant === "all" ? ["vec4", "blocked"] : [values.variant]) as ("vec4" | "blocked")[];
  const ctx: GpuContext = await createContext();
  const rng = new Rng(3);
  const rand = (n: number) => Float32Array.from({ length: n }, () => rng.uniform() - 0.5);
  const a = Tensor.from(ctx, rand(size * size), [size, size]);
  const b = Tensor.from(ctx, rand(size * size), [size, size]);
  const c = Tensor.empty(ctx, [size, size]);
  const dims = { batch: 1, m: size, n: size, k: size };
  const flops = matmulFlops(1, size, size, size);
  const candidates: {
    variant: MatmulVariant;
    tuning: Partial<MatmulTuning>;
    wall: number[];
    cpu: number[];
    iters: number;
  }[] = [];
  for (const variant of variants) {
    for (const tuning of CANDIDATES[variant]) {
      try {
        // Compile and calibrate: enough runs per sync for about 200 ms.
        matmulKernel(ctx, a.buffer, b.buffer, c.buffer, dims, { variant, tuning });
        await ctx.sync();
        const t = performance.now();
        matmulKernel(ctx, a.buffer, b.buffer, c.buffer, dims, { variant, tuning });
        await ctx.sync();
        const iters = Math.max(1, Math.min(100, Math.round(200 / (performance.now() - t))));
        candidates.push({ variant, tuning, wall: [], cpu: [], iters });
      } catch (e) {
        console.error(`${variant} ${JSON.stringify(tuning)}: ${(e as Error).message}`);
      }
    }
  }
  for (let r = 0; r < rounds; r++) {
    for (const cand of candidates) {
      const t = performance.now();
      const c0 = process.cpuUsage();
      for (let i = 0; i < cand.iters; i++) {
        matmulKernel(ctx, a.buffer, b.buffer, c.buffer, dims, { variant: cand.variant, tuning: cand.tuning });
      }
      await ctx.sync();
      const used = process.cpuUsage(c0);
      cand.wall.push((performance.now() - t) / cand.iters);
      cand.cpu.push((used.user + used.system) / 1000 / cand.iters / os.cpus().length);
    }
  }
  if (!values.json) {
    console.log(
      `adapter: ${ctx.adapterName}, ${size}³, ${rounds} rounds, load average ${os.loadavg()[0].toFixed(2)}`,
    );
  }
  for (const cand of candidates) {
    const gflops = flops / median(cand.wall) / 1e6;
    const cpuEquiv = flops / median(cand.cpu) / 1e6;
    const tuning = { ...(cand.variant === "vec4" ? VEC4_TUNING : BLOCKED_TUNING), ...cand.tuning };
    if (values.json) {
      console.log(
        JSON.stringify({
          variant: cand.variant,
          tuning,
          size,
          gflops,
          cpuEquivGflops: ctx.isCpuAdapter ? cpuEquiv : undefined,
        }),
      );
    } else {
      const cpu = ctx.isCpuAdapter ? `  cpu-equivalent ${cpuEquiv.toFixed(2).padStart(8)}` : "";
      console.log(
        `${cand.variant.padEnd(8)} ${JSON.stringify(tuning).padEnd(44)} ${
          gflops.toFixed(2).padStart(9)
        } GFLOP/s${cpu}`,
      );
    }
  }
}

if (import.meta.main) await main();
