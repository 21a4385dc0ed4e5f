/**
 * Causal self-attention kernels (kernels/attention.ts) on GPT-2's fused layout, as
 * `causalAttentionQkv` runs them in the models: q, k and v read in place from one projection
 * [B, T, 3·H·Dh], output [B, T, H·Dh], no key mask. Shapes: gpt2-d256's x-step (batch 10, 8 heads
 * of 32, T = 33) and a longer sequence (T = 256).
 *
 * "attention fwd" is the forward kernel; "attention bwd" is what the op's backward runs: the
 * query-side kernel (dQ, log-sum-exp and dO·O per row) and the key-side kernel (dK, dV).
 *
 * FLOPs are the algorithm's useful work over the P = B·H·T(T+1)/2 visible (query, key) pairs,
 * two per multiply-add: forward 4·Dh·P (q·k and p·v), backward 10·Dh·P (q·k, dO·v, dS·k, dS·q,
 * p·dO). Softmax exponentials and the backward's recomputations are not counted, so GFLOP/s
 * compares with other attention implementations, not with the kernels' raw instruction rate.
 */
import type { GpuContext } from "../kernels/device.ts";
import {
  attentionBackwardKeyKernel,
  attentionBackwardQueryKernel,
  type AttentionDims,
  attentionForwardKernel,
  tokensLayout,
} from "../kernels/attention.ts";
import { Tensor } from "../autograd/tensor.ts";
import { Rng } from "../autograd/random.ts";
import {
  type BenchOptions,
  type BenchResult,
  type BenchSuite,
  selected,
  timeGpu,
  timingFields,
} from "./harness.ts";

/** The attention shapes: batch, heads, tokens, head size. */
const SHAPES = [
  { label: "gpt2-d256", batch: 10, heads: 8, tokens: 33, headDim: 32 },
  { label: "gpt2-d256 T=256", batch: 10, heads: 8, tokens: 256, headDim: 32 },
];

/** The dims `causalAttentionQkv` builds for a fused [B, T, 3·H·Dh] input without a mask. */
export function fusedDims(batch: number, heads: number, tokens: number, headDim: number): AttentionDims {
  const width = 3 * heads * headDim;
  const part = (i: number) => tokensLayout(heads, tokens, headDim, width, i * heads * headDim);
  return {
    batch,
    heads,
    kvHeads: heads,
    queries: tokens,
    keys: tokens,
    headDim,
    queryOffset: 0,
    scale: 1 / Math.sqrt(headDim),
    hasMask: false,
    layout: { q: part(0), k: part(1), v: part(2), out: tokensLayout(heads, tokens, headDim) },
  };
}

/** Forward and backward FLOPs of causal attention (see the module comment). */
export function attentionFlops(
  batch: number,
  heads: number,
  tokens: number,
  headDim: number,
): { forward: number; backward: number } {
  const pairs = (batch * heads * tokens * (tokens + 1)) / 2;
  return { forward: 4 * headDim * pairs, backward: 10 * headDim * pairs };
}

function randomTensor(ctx: GpuContext, rng: Rng, shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.from(ctx, rng.normals(n), shape);
}

/** Milliseconds of one compiled run (run twice: the first compiles), to decide whether to skip. */
async function probeMs(ctx: GpuContext, run: () => void): Promise<number> {
  run();
  await ctx.sync();
  const t = performance.now();
  run();
  await ctx.sync();
  return performance.now() - t;
}

/** The attention suite: forward and backward at each shape. */
export const attentionSuite: BenchSuite = {
  name: "attention",
  async run(ctx: GpuContext, options: BenchOptions, report: (r: BenchResult) => void): Promise<void> {
    const rng = new Rng(3);
    for (const s of SHAPES) {
      const entries = ["attention fwd", "attention bwd"].filter((n) => selected(options, `${n} ${s.label}`));
      if (entries.length === 0) continue;
      const { batch: B, heads: H, tokens: T, headDim: Dh } = s;
      const dims = fusedDims(B, H, T, Dh);
      const qkv = randomTensor(ctx, rng, [B, T, 3 * H * Dh]);
      const gradOut = randomTensor(ctx, rng, [B, T, H * Dh]);
      const out = Tensor.empty(ctx, [B, T, H * Dh]);
      const gradQkv = Tensor.empty(ctx, [B, T, 3 * H * Dh]);
      const lseAndDelta = Tensor.empty(ctx, [B * H * T, 2]);
      const [q, k, v] = [qkv.buffer, qkv.buffer, qkv.buffer];
      const flops = attentionFlops(B, H, T, Dh);
      const runs: Record<string, { run: () => void; flops: number }> = {
        "attention fwd": {
          run: () => attentionForwardKernel(ctx, dims, q, k, v, k, out.buffer),
          flops: flops.forward,
        },
        "attention bwd": {
          run: () => {
            attentionBackwardQueryKernel(
              ctx,
              dims,
              q,
              k,
              v,
              k,
              out.buffer,
              gradOut.buffer,
              gradQkv.buffer,
              lseAndDelta.buffer,
            );
            attentionBackwardKeyKernel(
              ctx,
              dims,
              q,
              k,
              v,
              k,
              gradOut.buffer,
              lseAndDelta.buffer,
              gradQkv.buffer,
              gradQkv.buffer,
            );
          },
          flops: flops.backward,
        },
      };
      const shape = `B=${B} H=${H} T=${T} Dh=${Dh}`;
      try {
        // The backward reads the forward's output.
        runs["attention fwd"].run();
        for (const name of entries) {
          const { run, flops } = runs[name];
          const label = `${name} ${s.label}`;
          // Warm-up, calibration and the repeats take at least repeats + 2 runs.
          const estimate = ((await probeMs(ctx, run)) * (options.repeats + 2)) / 1000;
          if (estimate > options.maxSeconds) {
            report({
              name: label,
              shape,
              adapter: ctx.adapterName,
              skipped: `estimated ${estimate.toFixed(0)} s (> ${options.maxSeconds} s)`,
            });
            continue;
          }
          const t = await timeGpu(ctx, run, { repeats: options.repeats });
          report({
            name: label,
            shape,
            ...timingFields(t),
            gflops: flops / t.ms / 1e6,
            adapter: ctx.adapterName,
          });
        }
      } finally {
        await ctx.sync();
        for (const x of [qkv, gradOut, out, gradQkv, lseAndDelta]) x.dispose();
      }
    }
  },
};
