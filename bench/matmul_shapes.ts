/**
 * The matrix products of one GRADMM x-step (gpt2-d128, batch 10, 33 tokens, vocabulary 50,257),
 * each timed with the tile kernel (`matmulKernel` with the adapter's default variant named
 * explicitly, which bypasses the routing) and with the default routing (the skinny / split-K
 * kernel of kernels/matmul_skinny.ts where `chooseMatmulPath` picks it), alternately in the same
 * process on the same buffers, so that the load of a shared machine hits both alike.
 *
 *   deno run -A bench/matmul_shapes.ts [--json] [--filter=TEXT] [--rounds=3] [--repeats=3] [--more]
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
import { planSkinnyMatmul, skinnyMatmulKernel, type SkinnyPlan } from "../kernels/matmul_skinny.ts";
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
  // gpt2-d256's layers (6 × 256, MLP 1024): the H200 profile's costliest products.
  { name: "d256 c_fc x·W", dims: { batch: 1, m: 330, n: 1024, k: 256 } },
  { name: "d256 c_proj x·W", dims: { batch: 1, m: 330, n: 256, k: 1024 } },
  { name: "d256 c_fc dx = g·Wᵀ", dims: { batch: 1, m: 330, n: 256, k: 1024, transB: true } },
  { name: "d256 c_attn dx = g·Wᵀ", dims: { batch: 1, m: 330, n: 256, k: 768, transB: true } },
];

/**
 * Extra paths with `--more`: the skinny kernel forced even where the routing keeps the tiles, and
 * the tile kernel with 32×32 tiles (4×4 per thread), to see which small-M choice pays on an adapter.
 */
const MORE_TUNING = { tm: 4, tn: 4, wgx: 8, wgy: 8 };

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
  options: { filter: string; rounds: number; repeats: number; more?: boolean },
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
    const forced = planSkinnyMatmul(ctx, dims, a.buffer, b.buffer);
    const runs: Record<string, () => void> = {
      tile: () => matmulKernel(ctx, a.buffer, b.buffer, c.buffer, dims, { variant }),
      routed: () => matmulKernel(ctx, a.buffer, b.buffer, c.buffer, dims),
    };
    if (options.more) {
      runs["tile 32x32"] = () =>
        matmulKernel(ctx, a.buffer, b.buffer, c.buffer, dims, { variant, tuning: MORE_TUNING });
      if (forced) runs.skinny = () => skinnyMatmulKernel(ctx, a.buffer, b.buffer, c.buffer, dims, forced);
    }
    const keys = Object.keys(runs);
    const ms: Record<string, number[]> = Object.fromEntries(keys.map((key) => [key, []]));
    for (let r = 0; r < options.rounds; r++) {
      for (const key of keys) {
        ms[key].push((await timeGpu(ctx, runs[key], { repeats: options.repeats, timestamps: false })).ms);
      }
    }
    const plan = (p: SkinnyPlan) => `skinny ${p.tm}x${p.tn}, ${p.splits} split${p.splits > 1 ? "s" : ""}`;
    for (const key of keys) {
      const t = median(ms[key]);
      const how = key === "tile"
        ? variant
        : key === "routed"
        ? (path === "tile" ? `${variant} (routed)` : plan(path))
        : key === "skinny"
        ? `${plan(forced!)} (forced)`
        : `${variant} ${key}`;
      report({
        name: `${name} [${how}]`,
        shape: shapeOf(dims),
        ms: t,
        gflops: matmulFlops(1, m, n, k) / t / 1e6,
        adapter: ctx.adapterName,
        note: `rounds: ${ms[key].map((x) => x.toFixed(3)).join(", ")} ms`,
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
      more: { type: "boolean", default: false },
    },
  });
  const ctx = await createContext();
  const load = os.loadavg().map((x) => x.toFixed(2)).join(", ");
  console.error(`adapter: ${ctx.adapterName}; load average before: ${load}`);
  const rows: BenchResult[] = [];
  await benchXstepProducts(
    ctx,
    {
      filter: values.filter,
      rounds: Number(values.rounds),
      repeats: Number(values.repeats),
      more: values.more,
    },
    (r) => {
      if (values.json) console.log(formatJson(r));
      else console.error(`${r.name}: ${r.ms?.toFixed(2)} ms`);
      rows.push(r);
    },
  );
  if (!values.json) console.log(formatTable(rows));
  console.error(`load average after: ${os.loadavg().map((x) => x.toFixed(2)).join(", ")}`);
}
