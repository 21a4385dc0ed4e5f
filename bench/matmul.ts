/**
 * The matmul ladder: every kernel variant (naive → tiled → vec4 → blocked) at square sizes, then
 * the default variant with each transpose layout at the largest size that ran. Sizes whose
 * estimated time is too long for the adapter (naive 2048³ on a CPU takes minutes) are skipped and
 * say so, estimated from the variant's throughput at the previous size (or at a quick 512³ probe).
 */
import {
  defaultMatmulVariant,
  MATMUL_VARIANTS,
  type MatmulDims,
  matmulFlops,
  matmulKernel,
  type MatmulVariant,
} from "../kernels/matmul.ts";
import type { GpuContext } from "../kernels/device.ts";
import { Tensor } from "../autograd/tensor.ts";
import { Rng } from "../autograd/random.ts";
import {
  type BenchOptions,
  type BenchResult,
  type BenchSuite,
  selected,
  timeGpu,
  type Timing,
  timingFields,
} from "./harness.ts";

function randomTensor(ctx: GpuContext, rng: Rng, shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = rng.uniform() - 0.5;
  return Tensor.from(ctx, data, shape);
}

/** Times one (unbatched) matmul with fresh random operands. */
async function benchOne(
  ctx: GpuContext,
  rng: Rng,
  variant: MatmulVariant,
  dims: MatmulDims,
  repeats: number,
): Promise<Timing & { gflops: number }> {
  const { m, n, k } = dims;
  const a = randomTensor(ctx, rng, dims.transA ? [k, m] : [m, k]);
  const b = randomTensor(ctx, rng, dims.transB ? [n, k] : [k, n]);
  const c = Tensor.empty(ctx, [m, n]);
  try {
    const t = await timeGpu(ctx, () => matmulKernel(ctx, a.buffer, b.buffer, c.buffer, dims, { variant }), {
      repeats,
    });
    return { ...t, gflops: matmulFlops(1, m, n, k) / t.ms / 1e6 };
  } finally {
    for (const x of [a, b, c]) x.dispose();
  }
}

const PROBE_SIZE = 512;

/** GFLOP/s of one compiled run at {@link PROBE_SIZE}³: a cheap estimate for larger sizes. */
async function probe(ctx: GpuContext, rng: Rng, variant: MatmulVariant): Promise<number> {
  const s = PROBE_SIZE;
  const a = randomTensor(ctx, rng, [s, s]);
  const b = randomTensor(ctx, rng, [s, s]);
  const c = Tensor.empty(ctx, [s, s]);
  const dims = { batch: 1, m: s, n: s, k: s };
  try {
    matmulKernel(ctx, a.buffer, b.buffer, c.buffer, dims, { variant });
    await ctx.sync();
    const t = performance.now();
    matmulKernel(ctx, a.buffer, b.buffer, c.buffer, dims, { variant });
    await ctx.sync();
    return matmulFlops(1, s, s, s) / (performance.now() - t) / 1e6;
  } finally {
    for (const x of [a, b, c]) x.dispose();
  }
}

/** The matmul ladder suite. */
export const matmulSuite: BenchSuite = {
  name: "matmul",
  async run(ctx: GpuContext, options: BenchOptions, report: (r: BenchResult) => void): Promise<void> {
    const rng = new Rng(1);
    const adapter = ctx.adapterName;
    const best = defaultMatmulVariant(ctx);
    const label = (v: MatmulVariant) => `matmul ${v}${v === best ? " (default)" : ""}`;
    // GFLOP/s of each variant at its last measured size, to estimate the next one.
    const speed = new Map<MatmulVariant, number>();
    const skippedAt = new Map<MatmulVariant, number>();
    let largestRun = 0;
    for (const size of options.sizes) {
      for (const variant of MATMUL_VARIANTS) {
        const name = label(variant);
        if (!selected(options, name)) continue;
        const shape = `${size}x${size}x${size}`;
        const skipped = skippedAt.get(variant);
        if (skipped !== undefined) {
          report({ name, shape, adapter, skipped: `larger than the skipped ${skipped}³` });
          continue;
        }
        // Without an earlier size to go by, a quick unreported probe at a small size gives the estimate.
        if (!speed.has(variant) && size > PROBE_SIZE) speed.set(variant, await probe(ctx, rng, variant));
        const known = speed.get(variant);
        // Warm-up, one calibration run and the repeats, each at least one run.
        const estimate = known ? (matmulFlops(1, size, size, size) / known / 1e9) * (options.repeats + 2) : 0;
        if (known && estimate > options.maxSeconds) {
          report({
            name,
            shape,
            adapter,
            skipped: `estimated ${estimate.toFixed(0)} s (> ${options.maxSeconds} s) at ${
              known.toFixed(2)
            } GFLOP/s`,
          });
          skippedAt.set(variant, size);
          continue;
        }
        const r = await benchOne(ctx, rng, variant, { batch: 1, m: size, n: size, k: size }, options.repeats);
        speed.set(variant, r.gflops);
        largestRun = Math.max(largestRun, size);
        report({ name, shape, ...timingFields(r), gflops: r.gflops, adapter });
      }
    }
    // The layouts the models use (weights stored [out, in] are used transposed), default kernel.
    if (largestRun === 0) return;
    for (
      const [tag, transA, transB] of [["Aᵀ·B", true, false], ["A·Bᵀ", false, true], [
        "Aᵀ·Bᵀ",
        true,
        true,
      ]] as const
    ) {
      const name = `${label(best)} ${tag}`;
      if (!selected(options, name)) continue;
      const s = largestRun;
      const r = await benchOne(
        ctx,
        rng,
        best,
        { batch: 1, m: s, n: s, k: s, transA, transB },
        options.repeats,
      );
      report({ name, shape: `${s}x${s}x${s}`, ...timingFields(r), gflops: r.gflops, adapter });
    }
  },
};
