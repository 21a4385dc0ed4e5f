/**
 * The matrix products of one GRADMM x-step (gpt2-d128, batch 10, 33 tokens, vocabulary 50,257),
 * each timed with the tile kernel (`matmulKernel` with the adapter's default variant named
 * explicitly, which bypasses the routing) and with the default routing (the skinny / split-K
 * kernel of kernels/matmul_skinny.ts where `chooseMatmulPath` picks it), alternately in the same
 * process on the same buffers, so that the load of a shared machine hits both alike.
 *
 *   deno run -A bench/matmul_shapes.ts [--json] [--filter=TEXT] [--rounds=3] [--repeats=3]
 *
 * Each entry is the median over the rounds of `timeGpu`'s median (wall clock, sync amortised).
 */
import { parseArgs } from "node:util";
import os from "node:os";
import {
  chooseMatmulPath,
  defaultMatmulVariant,
  type MatmulDims,
  matmulFlops,
  matmulKernel,
} from "../kernels/matmul.ts";
import { createContext, type GpuContext } from "../kernels/device.ts";
import { Tensor } from "../autograd/tensor.ts";
import { Rng } from "../autograd/random.ts";
import { type BenchResult, formatJson, formatTable, median, selected, timeGpu } from "./harness.ts";

const V = 50257;

/** The x-step's products: what they are, and their dims as `matmulKernel` receives them. */
export const XSTEP_PRODUCTS: { name: string; dims: MatmulDims }[] = [
  { name: "logits h·Wᵀ", dims: { batch: 1, m: 10, n: V, k: 128, transB: true } },
  { name: "dH = dLogits·W", dims: { batch: 1, m: 10, n: 128, k: V } },
  { name: "Gram R*·Rᵀ", dims: { batch: 1, m: 25, n: 10, k: V, transB: true } },
  { name: "Gram R·Rᵀ", dims: { batch: 1, m: 10, n: 10, k: V, transB: true } },
  { name: "dR of R*·Rᵀ (gᵀ·R*)", dims: { batch: 1, m: 10, n: V, k: 25, transA: true } },
  // Before the Gram rule of autograd/ops/matmul.ts, R·Rᵀ's gradient was g·R + gᵀ·R (two products
  // and an accumulation); it is now the one product (g + gᵀ)·R, of the first shape.
  { name: "dR of R·Rᵀ (g·R)", dims: { batch: 1, m: 10, n: V, k: 10 } },
  { name: "dR of R·Rᵀ (gᵀ·R, before only)", dims: { batch: 1, m: 10, n: V, k: 10, transA: true } },
  { name: "linear c_fc x·W", dims: { batch: 1, m: 330, n: 512, k: 128 } },
  { name: "linear c_proj dx = g·Wᵀ", dims: { batch: 1, m: 330, n: 512, k: 128, transB: true } },
];

function randomTensor(ctx: GpuContext, rng: Rng, shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.from(ctx, Float32Array.from({ length: n }, () => rng.uniform() - 0.5), shape);
}

const shapeOf = (d: MatmulDims) => `${d.m}${d.transA ? "ᵀ" : ""}x${d.n}x${d.k}${d.transB ? " Bᵀ" : ""}`;

/**
 * Times every selected product with the tile kernel ("tile") and the default routing ("routed"),
 * `rounds` times alternately, and reports one result per product and path.
 */
export async function benchXstepProducts(
  ctx: GpuContext,
  options: { filter: string; rounds: number; repeats: number },
  report: (r: BenchResult) => void,
): Promise<void> {
  const rng = new Rng(3);
  const variant = defaultMatmulVariant(ctx);
  for (const { name, dims } of XSTEP_PRODUCTS) {
    if (!selected({ filter: options.filter, sizes: [], maxSeconds: 0, repeats: 0 }, name)) continue;
    const { m, n, k } = dims;
    const a = randomTensor(ctx, rng, dims.transA ? [k, m] : [m, k]);
    const b = randomTensor(ctx, rng, dims.transB ? [n, k] : [k, n]);
    const c = Tensor.empty(ctx, [m, n]);
    const path = chooseMatmulPath(ctx, a.buffer, b.buffer, dims);
    const runs = {
      tile: () => matmulKernel(ctx, a.buffer, b.buffer, c.buffer, dims, { variant }),
      routed: () => matmulKernel(ctx, a.buffer, b.buffer, c.buffer, dims),
    };
    const ms: Record<keyof typeof runs, number[]> = { tile: [], routed: [] };
    for (let r = 0; r < options.rounds; r++) {
      for (const key of ["tile", "routed"] as const) {
        ms[key].push((await timeGpu(ctx, runs[key], { repeats: options.repeats, timestamps: false })).ms);
      }
    }
    for (const key of ["tile", "routed"] as const) {
      const t = median(ms[key]);
      const how = key === "tile"
        ? variant
        : path === "tile"
        ? `${variant} (routed)`
        : `skinny ${path.tm}x${path.tn}, ${path.splits} split${path.splits > 1 ? "s" : ""}`;
      report({
        name: `${name} [${how}]`,
        shape: shapeOf(dims),
        ms: t,
        gflops: matmulFlops(1, m, n, k) / t / 1e6,
        adapter: ctx.adapterName,
        note: `rounds: ${ms[key].map((x) => x.toFixed(2)).join(", ")} ms`,
      });
    }
    for (const x of [a, b, c]) x.dispose();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      json: { type: "boolean", default: false },
      filter: { type: "string", default: "" },
      rounds: { type: "string", default: "3" },
      repeats: { type: "string", default: "3" },
    },
  });
  const ctx = await createContext();
  const load = os.loadavg().map((x) => x.toFixed(2)).join(", ");
  console.error(`adapter: ${ctx.adapterName}; load average before: ${load}`);
  const rows: BenchResult[] = [];
  await benchXstepProducts(
    ctx,
    { filter: values.filter, rounds: Number(values.rounds), repeats: Number(values.repeats) },
    (r) => {
      if (values.json) console.log(formatJson(r));
      else console.error(`${r.name}: ${r.ms?.toFixed(2)} ms`);
      rows.push(r);
    },
  );
  if (!values.json) console.log(formatTable(rows));
  console.error(`load average after: ${os.loadavg().map((x) => x.toFixed(2)).join(", ")}`);
}
