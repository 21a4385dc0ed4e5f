/**
 * The skinny / split-K matmul kernel (kernels/matmul_skinny.ts) against the float64 reference:
 * odd M, N and K (never multiples of 4 or of a tile), each transpose, batches with a shared
 * operand, the fused bias (in the store with one split, in the reduce pass with several), aligned
 * and misaligned rows (the shifted vec4 reads), and the routing of `matmulKernel` with both the
 * CPU and the GPU plans (`ctx.cpuKernels`).
 */
import assert from "node:assert";
import { chooseMatmulPath, type MatmulDims, matmulKernel } from "../../kernels/matmul.ts";
import {
  planSkinnyMatmul,
  skinnyMatmulKernel,
  skinnyMatmulWgsl,
  type SkinnyPlan,
} from "../../kernels/matmul_skinny.ts";
import { matmul, matmulRef } from "../../autograd/ops/matmul.ts";
import { Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import type { HostTensor } from "../../autograd/reference.ts";
import { assertClose, checkOp, ctx, gpuTest, randHost, toGpu, withKernelVariants } from "../helpers.ts";

const rng = new Rng(5);

interface Case {
  batch?: number;
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  sharedA?: boolean;
  sharedB?: boolean;
  bias?: boolean;
}

/**
 * Runs one case and checks it against the reference. `plan` forces the skinny kernel with that
 * plan (over the planner's); without it the product goes through `matmulKernel`'s routing, which
 * must pick the skinny kernel.
 */
async function check(c: Case, plan?: Partial<SkinnyPlan>): Promise<void> {
  const g = await ctx();
  const batch = c.batch ?? 1;
  const aShape = c.transA ? [c.k, c.m] : [c.m, c.k];
  const bShape = c.transB ? [c.n, c.k] : [c.k, c.n];
  // The reference sees the f32-rounded inputs, as the GPU does.
  const round = (h: HostTensor) => ({ data: Float64Array.from(Float32Array.from(h.data)), shape: h.shape });
  const a = round(randHost(rng, c.sharedA || batch === 1 ? aShape : [batch, ...aShape]));
  const b = round(randHost(rng, c.sharedB ? bShape : [batch, ...bShape]));
  const bias = round(randHost(rng, [c.n]));
  const one = c.sharedA && c.sharedB;
  const expected = matmulRef(one || batch === 1 ? { ...a, shape: [1, ...a.shape] } : a, b, c);
  const full = Float64Array.from({ length: batch * c.m * c.n }, (_, i) => {
    const v = expected.data[one ? i % (c.m * c.n) : i];
    return c.bias ? v + bias.data[i % c.n] : v;
  });
  const [ta, tb, tbias] = [toGpu(g, a), toGpu(g, b), toGpu(g, bias)];
  const out = Tensor.empty(g, [batch, c.m, c.n]);
  const dims: MatmulDims = {
    batch,
    m: c.m,
    n: c.n,
    k: c.k,
    transA: c.transA,
    transB: c.transB,
    strideA: c.sharedA ? 0 : c.m * c.k,
    strideB: c.sharedB ? 0 : c.k * c.n,
  };
  const what = `${JSON.stringify(c)} ${g.cpuKernels ? "CPU" : "GPU"} plan ${JSON.stringify(plan ?? null)}`;
  const biasBuf = c.bias ? tbias.buffer : undefined;
  if (plan) {
    const base = planSkinnyMatmul(g, dims, ta.buffer, tb.buffer)!;
    skinnyMatmulKernel(g, ta.buffer, tb.buffer, out.buffer, dims, { ...base, ...plan }, biasBuf);
  } else {
    const path = chooseMatmulPath(g, ta.buffer, tb.buffer, dims);
    assert(path !== "tile", `${what}: expected the skinny kernel, got the tile kernel`);
    matmulKernel(g, ta.buffer, tb.buffer, out.buffer, dims, { bias: biasBuf });
  }
  const got = await out.read();
  assertClose(got, full, what, 1e-5 * Math.sqrt(c.k + 1), 1e-4);
  for (const t of [ta, tb, tbias, out]) t.dispose();
}

const LAYOUTS = [
  {},
  { transA: true },
  { transB: true },
  { transA: true, transB: true },
] as const;

/**
 * Every layout with the CPU plans; with the GPU plans (which differ in tile and workgroup sizes,
 * not in code paths) the two layouts that between them read each operand both ways, to keep the
 * number of pipelines compiled by this file down.
 */
async function layouts() {
  return (await ctx()).cpuKernels ? LAYOUTS : [LAYOUTS[0], LAYOUTS[3]];
}

Deno.test({
  name: "skinny matmul: routed skinny products (M = 1, 3, 10; N = 1, 13, 130), every layout, bias",
  ...gpuTest,
  fn: async () => {
    await withKernelVariants(async () => {
      const g = await ctx();
      if (!g.cpuKernels) return; // GPUs keep the tile kernel for short K (checked below)
      for (const t of await layouts()) {
        await check({ m: 1, n: 130, k: 7, ...t });
        await check({ m: 3, n: 13, k: 1, ...t, bias: true });
        await check({ m: 10, n: 130, k: 29, ...t, bias: true });
        await check({ m: 130, n: 3, k: 9, ...t });
      }
    });
  },
});

Deno.test({
  name: "skinny matmul: split-K over a long K (5003 and 50257), every layout, bias in the reduce",
  ...gpuTest,
  fn: async () => {
    await withKernelVariants(async () => {
      for (const t of await layouts()) {
        await check({ m: 10, n: 13, k: 5003, ...t, bias: true });
        await check({ m: 25, n: 10, k: 5003, ...t });
      }
      // The x-step's shapes: dH = dLogits · W and the Gram products over a vocabulary.
      await check({ m: 10, n: 128, k: 50257 });
      await check({ m: 25, n: 10, k: 50257, transB: true });
      await check({ m: 1, n: 1, k: 50257, transB: true, bias: true });
    });
  },
});

Deno.test({
  name: "skinny matmul: forced plans cover tails, aligned rows and several splits on small K",
  ...gpuTest,
  fn: async () => {
    await withKernelVariants(async () => {
      for (const t of await layouts()) {
        // K = 29 in 3 splits of 12, 12 and 5: a partial (masked) step in the last split only.
        await check({ m: 3, n: 13, k: 29, ...t, bias: true }, { splits: 3, kChunk: 12 });
        // Multiples of 4 everywhere: every read aligned, no shifts.
        await check({ m: 8, n: 16, k: 40, ...t }, { tm: 4, tn: 8, splits: 2, kChunk: 20 });
        // Misaligned rows with tiles that are not multiples of 4 and a partial last tile.
        await check({ m: 25, n: 13, k: 7, ...t, bias: true }, { tm: 5, tn: 3, splits: 1, kChunk: 8 });
        // K = 1: one masked step.
        await check({ m: 10, n: 1, k: 1, ...t }, { splits: 1, kChunk: 4 });
      }
    });
  },
});

Deno.test({
  name: "skinny matmul: batches with a shared operand, with and without splits",
  ...gpuTest,
  fn: async () => {
    await withKernelVariants(async () => {
      for (const t of await layouts()) {
        await check({ batch: 3, m: 10, n: 13, k: 7, ...t, sharedB: true, bias: true }, {
          splits: 1,
          kChunk: 8,
        });
        await check({ batch: 3, m: 3, n: 130, k: 29, ...t, sharedA: true }, { splits: 2, kChunk: 16 });
        await check({ batch: 2, m: 25, n: 10, k: 1001, ...t }, { splits: 5, kChunk: 204 });
        await check({ batch: 2, m: 3, n: 5, k: 11, ...t, sharedA: true, sharedB: true }, {
          splits: 2,
          kChunk: 8,
        });
      }
    });
  },
});

Deno.test({
  name:
    "skinny matmul: routing keeps the tile kernels for large squares, Bᵀ layers on GPUs and explicit variants",
  ...gpuTest,
  fn: async () => {
    const g = await ctx();
    const t = Tensor.zeros(g, [4]);
    const saved = g.cpuKernels;
    try {
      for (const cpu of [true, false]) {
        g.cpuKernels = cpu;
        const square = { batch: 1, m: 2048, n: 2048, k: 2048 };
        assert.deepStrictEqual(chooseMatmulPath(g, t.buffer, t.buffer, square), "tile");
        // A layer of the x-step: the tile kernel on CPU adapters; on GPUs the skinny kernel when
        // B is read as stored (too few 64×64 tiles to fill the GPU), the tile kernel with Bᵀ.
        const layer = { batch: 1, m: 330, n: 512, k: 128 };
        const layerPath = chooseMatmulPath(g, t.buffer, t.buffer, layer);
        if (cpu) assert.deepStrictEqual(layerPath, "tile");
        else assert(layerPath !== "tile", "GPU: a small layer product goes to the skinny kernel");
        assert.deepStrictEqual(chooseMatmulPath(g, t.buffer, t.buffer, { ...layer, transB: true }), "tile");
        const dH = { batch: 1, m: 10, n: 128, k: 50257 };
        assert.deepStrictEqual(chooseMatmulPath(g, t.buffer, t.buffer, dH, { variant: "vec4" }), "tile");
        const plan = chooseMatmulPath(g, t.buffer, t.buffer, dH);
        assert(plan !== "tile" && plan.splits > 1, `${cpu ? "CPU" : "GPU"}: dH must be split along K`);
        // Logits [10, 128] · [128, 50257]: skinny on CPU adapters, the tile kernel on GPUs.
        const logits = { batch: 1, m: 10, n: 50257, k: 128, transB: true };
        const lp = chooseMatmulPath(g, t.buffer, t.buffer, logits);
        if (cpu) assert(lp !== "tile" && lp.splits === 1 && lp.tm === 10, "CPU: logits as one skinny pass");
        else assert.deepStrictEqual(lp, "tile");
      }
    } finally {
      g.cpuKernels = saved;
      t.dispose();
    }
  },
});

Deno.test("skinny matmul: generated WGSL differs by layout and alignment", () => {
  const l = {
    transA: false,
    transB: false,
    bias: false,
    tm: 3,
    tn: 4,
    wg: 8,
    alignA: false,
    alignB: true,
    ragged: true,
  };
  const base = skinnyMatmulWgsl(l);
  assert(base !== skinnyMatmulWgsl({ ...l, alignA: true }), "alignment must change the kernel");
  assert(base !== skinnyMatmulWgsl({ ...l, transB: true }), "layout must change the kernel");
  assert.deepStrictEqual(base, skinnyMatmulWgsl({ ...l }), "code generation must be deterministic");
});

Deno.test({
  name: "matmul op: the gradient of a Gram matrix x·xᵀ (one product with g + gᵀ) vs finite differences",
  ...gpuTest,
  fn: async () => {
    const tol = { atol: 1e-4, rtol: 1e-4, gradAtol: 2e-4, gradRtol: 2e-3 };
    // 2-D as in the matching loss (a vocabulary-long K, cut down), and batched.
    for (const shape of [[10, 503], [3, 5, 7]]) {
      await checkOp({
        inputs: [randHost(rng, shape)],
        gpu: ([x]) => matmul(x, x, { transB: true }),
        ref: ([x]) => matmulRef(x, x, { transB: true }),
        ...tol,
      });
    }
  },
});
