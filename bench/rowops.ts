/**
 * Row-wise ops, memory bound: softmax over the last axis and layer norm. Reported in GB/s, counting
 * each tensor the kernel reads or writes once (x in, y out; plus the weight and bias of layer norm).
 */
import type { GpuContext } from "../kernels/device.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import { Rng } from "../autograd/random.ts";
import { softmax } from "../autograd/ops/softmax.ts";
import { layerNorm } from "../autograd/ops/norm.ts";
import {
  type BenchOptions,
  type BenchResult,
  type BenchSuite,
  selected,
  timeGpu,
  timingFields,
} from "./harness.ts";

function randomTensor(ctx: GpuContext, rng: Rng, shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = 4 * (rng.uniform() - 0.5);
  return Tensor.from(ctx, data, shape);
}

/** Softmax (attention rows, vocabulary rows) and layer norm (GPT-2 small's width). */
const ENTRIES: { name: string; shape: [number, number] }[] = [
  { name: "softmax", shape: [4096, 1024] },
  { name: "softmax", shape: [64, 50257] },
  { name: "layerNorm", shape: [4096, 768] },
];

/** The row-ops suite. */
export const rowOpsSuite: BenchSuite = {
  name: "rowops",
  async run(ctx: GpuContext, options: BenchOptions, report: (r: BenchResult) => void): Promise<void> {
    const rng = new Rng(2);
    for (const { name, shape } of ENTRIES) {
      if (!selected(options, name)) continue;
      const [rows, cols] = shape;
      const x = randomTensor(ctx, rng, shape);
      const w = randomTensor(ctx, rng, [cols]);
      const b = randomTensor(ctx, rng, [cols]);
      // Each run's output is disposed as soon as it is encoded (the pool reuses its buffer).
      const run = name === "softmax"
        ? () => scope(ctx, () => void softmax(x))
        : () => scope(ctx, () => void layerNorm(x, w, b, 1e-5));
      const bytes = 4 * (2 * rows * cols + (name === "layerNorm" ? 2 * cols : 0));
      const t = await timeGpu(ctx, run, { repeats: options.repeats });
      report({
        name,
        shape: `${rows}x${cols}`,
        ...timingFields(t),
        gbps: bytes / t.ms / 1e6,
        adapter: ctx.adapterName,
      });
      for (const z of [x, w, b]) z.dispose();
    }
  },
};
