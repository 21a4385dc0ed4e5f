/**
 * Every matmul kernel variant against the float64 reference: odd sizes (not multiples of any
 * tile), each transpose combination, batch strides of 0 (a shared operand), the fused bias, and
 * both the vec4 and the scalar load paths (contiguous axes that are and are not multiples of 4).
 */
import { throws as assertThrows } from "node:assert";
import {
  BLOCKED_TUNING,
  MATMUL_VARIANTS,
  type MatmulDims,
  matmulKernel,
  type MatmulTuning,
  type MatmulVariant,
  matmulWgsl,
  VEC4_LARGE_TUNING,
} from "../../kernels/matmul.ts";
import { GpuLimitError } from "../../kernels/device.ts";
import { matmulRef } from "../../autograd/ops/matmul.ts";
import { Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import type { HostTensor } from "../../autograd/reference.ts";
import { assertClose, ctx, gpuTest, randHost, toGpu } from "../helpers.ts";

const rng = new Rng(11);

interface Case {
  batch: number;
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  /** Batch stride 0 for A or B (one matrix shared by the batch). */
  sharedA?: boolean;
  sharedB?: boolean;
  bias?: boolean;
}

/** Runs one case with one variant and checks it against the reference. */
async function check(
  variant: MatmulVariant,
  c: Case,
  tuning?: MatmulTuning,
  kInner?: boolean,
): Promise<void> {
  const g = await ctx();
  const aShape = c.transA ? [c.k, c.m] : [c.m, c.k];
  const bShape = c.transB ? [c.n, c.k] : [c.k, c.n];
  const a = randHost(rng, c.sharedA ? aShape : [c.batch, ...aShape]);
  const b = randHost(rng, c.sharedB ? bShape : [c.batch, ...bShape]);
  const bias = randHost(rng, [c.n]);
  // The reference sees f32-rounded inputs, as the GPU does.
  const round = (h: HostTensor) => ({ data: Float64Array.from(Float32Array.from(h.data)), shape: h.shape });
  const [ar, br, biasr] = [round(a), round(b), round(bias)];
  // matmulRef shares a 2-D operand across the other's batch; with both shared, add a batch of 1.
  const refA = c.sharedA && c.sharedB ? { ...ar, shape: [1, ...ar.shape] } : ar;
  const expected = matmulRef(refA, br, { transA: c.transA, transB: c.transB });
  if (c.bias) { for (let i = 0; i < expected.data.length; i++) expected.data[i] += biasr.data[i % c.n]; }
  const ta = toGpu(g, ar);
  const tb = toGpu(g, br);
  const tbias = toGpu(g, biasr);
  const out = Tensor.empty(g, [c.batch, c.m, c.n]);
  const dims: MatmulDims = {
    batch: c.batch,
    m: c.m,
    n: c.n,
    k: c.k,
    transA: c.transA,
    transB: c.transB,
    strideA: c.sharedA ? 0 : c.m * c.k,
    strideB: c.sharedB ? 0 : c.k * c.n,
  };
  matmulKernel(g, ta.buffer, tb.buffer, out.buffer, dims, {
    variant,
    tuning,
    bias: c.bias ? tbias.buffer : undefined,
    kInner,
  });
  const got = await out.read();
  // Products of K normals: errors grow like sqrt(K)·eps.
  const full = c.sharedA && c.sharedB
    ? Float64Array.from({ length: got.length }, (_, i) => expected.data[i % (c.m * c.n)])
    : expected.data;
  assertClose(got, full, `${variant} ${JSON.stringify(c)}`, 1e-5 * Math.sqrt(c.k + 1), 1e-4);
  for (const t of [ta, tb, tbias, out]) t.dispose();
}

const CASES: Case[] = [
  { batch: 1, m: 1, n: 1, k: 1 },
  { batch: 1, m: 65, n: 130, k: 1 },
  { batch: 1, m: 129, n: 33, k: 67 },
  { batch: 1, m: 37, n: 29, k: 53, transA: true },
  { batch: 1, m: 37, n: 29, k: 53, transB: true },
  { batch: 1, m: 37, n: 29, k: 53, transA: true, transB: true },
  // Contiguous axes that are multiples of 4 take the vec4 load paths, with partial tiles.
  { batch: 1, m: 68, n: 36, k: 40 },
  { batch: 1, m: 68, n: 36, k: 40, transA: true },
  { batch: 1, m: 68, n: 36, k: 40, transB: true },
  { batch: 1, m: 68, n: 36, k: 40, transA: true, transB: true, bias: true },
  { batch: 3, m: 17, n: 11, k: 9 },
  { batch: 3, m: 17, n: 11, k: 9, sharedB: true, transB: true, bias: true },
  { batch: 3, m: 12, n: 20, k: 8, sharedA: true, transA: true },
  { batch: 2, m: 5, n: 7, k: 0, bias: true },
];

for (const variant of MATMUL_VARIANTS) {
  Deno.test({
    name: `matmul kernel ${variant}: odd sizes, transposes, shared operands, bias vs float64`,
    ...gpuTest,
    fn: async () => {
      for (const c of CASES) await check(variant, c);
    },
  });
}

Deno.test({
  name: "matmul kernel vec4: the 24×24 tuning of large products, on partial tiles",
  ...gpuTest,
  fn: async () => {
    // The tuning products with M, N, K ≥ VEC4_LARGE_FROM get by default, forced on a smaller
    // product (the reference stays cheap): 96×48 outputs per workgroup, M and N not multiples.
    await check("vec4", { batch: 1, m: 200, n: 100, k: 68 }, VEC4_LARGE_TUNING);
  },
});

Deno.test({
  name: "matmul kernel blocked: the 64×64 tuning of large products, on every case",
  ...gpuTest,
  fn: async () => {
    // Small products default to 32×32 tiles (BLOCKED_SMALL_TUNING); large ones use 64×64 tiles,
    // forced here on the small cases (partial tiles everywhere).
    for (const c of CASES) await check("blocked", c, BLOCKED_TUNING);
  },
});

Deno.test({
  name: "matmul kernel vec4: both FMA orders (k innermost on CPU adapters, outermost on GPUs)",
  ...gpuTest,
  fn: async () => {
    for (const kInner of [false, true]) for (const c of CASES) await check("vec4", c, undefined, kInner);
  },
});

Deno.test({
  name: "matmul kernel: a batch larger than one grid dimension and shapes beyond the tile grid",
  ...gpuTest,
  fn: async () => {
    // 70,000 tiny products need more than 65,535 workgroups: the grid is split over x and y.
    await check("naive", { batch: 70_000, m: 1, n: 2, k: 3, sharedB: true });
  },
});

Deno.test({
  name: "matmul kernel: tunings that exceed the adapter's limits are rejected with GpuLimitError",
  ...gpuTest,
  fn: async () => {
    const g = await ctx();
    const t = Tensor.zeros(g, [4]);
    const dims = { batch: 1, m: 2, n: 2, k: 2 };
    assertThrows(
      () =>
        matmulKernel(g, t.buffer, t.buffer, t.buffer, dims, {
          variant: "blocked",
          tuning: { wgx: 64, wgy: 64 },
        }),
      GpuLimitError,
    );
    assertThrows(
      () => matmulKernel(g, t.buffer, t.buffer, t.buffer, dims, { variant: "blocked", tuning: { bk: 1024 } }),
      GpuLimitError,
    );
    t.dispose();
  },
});

Deno.test("matmul kernel: generated WGSL differs by layout and stays cached per layout", () => {
  const nn = matmulWgsl("vec4", {});
  const tn = matmulWgsl("vec4", { transA: true });
  if (nn === tn) throw new Error("transposed A must generate a different kernel");
  if (matmulWgsl("vec4", {}) !== nn) {
    throw new Error("code generation must be deterministic (pipeline cache key)");
  }
});
