/**
 * The flash attention kernels (kernels/attention_flash.ts): forward against the float64
 * reference and gradients against finite differences of it, on shapes that are not multiples of
 * the block sizes, with the default block shapes (chosen from this adapter's workgroup memory)
 * and with forced small ones, so that every shape crosses several query blocks, key tiles and
 * head slices.
 */
import assert from "node:assert";
import {
  causalAttention,
  causalAttentionQkv,
  causalAttentionQkvRef,
  causalAttentionRef,
} from "../../autograd/ops/attention.ts";
import { Tensor } from "../../autograd/tensor.ts";
import { backward } from "../../autograd/tape.ts";
import { Rng } from "../../autograd/random.ts";
import { host, type HostTensor } from "../../autograd/reference.ts";
import { GpuLimitError } from "../../kernels/device.ts";
import { flashSharedBytes, flashTiling, setFlashAttentionOptions } from "../../kernels/attention_flash.ts";
import { checkOp, ctx, gpuTest, randHost } from "../helpers.ts";
import { type ForcedTiling, withAttentionVariants } from "./attention_variants.ts";

const rng = new Rng(77);

/** Block shapes each case runs with: the adapter's default, and two forced small ones. */
const TILINGS: [string, ForcedTiling][] = [
  ["default blocks", {}],
  [
    "small blocks, 3/2/3 slices per row",
    {
      forward: { tile: 4, rows: 8, ns: 3 },
      query: { tile: 8, rows: 16, ns: 2 },
      key: { tile: 4, rows: 8, ns: 3 },
    },
  ],
  [
    "small blocks, one slice per row",
    {
      forward: { tile: 8, rows: 16, ns: 1 },
      query: { tile: 4, rows: 8, ns: 1 },
      key: { tile: 8, rows: 16, ns: 1 },
    },
  ],
];

/** [B, Tk] mask: row b left-padded by pads[b], plus the keys listed in `holes` masked. */
function keyMask(pads: number[], tk: number, holes: number[] = []): HostTensor {
  const data: number[] = [];
  for (const p of pads) for (let j = 0; j < tk; j++) data.push(j < p || holes.includes(j) ? 0 : 1);
  return host(data, [pads.length, tk]);
}

interface Case {
  name: string;
  b: number;
  h: number;
  hkv: number;
  tq: number;
  /** Rows of k and v (≥ keyLength). */
  tk: number;
  dh: number;
  pads?: number[];
  holes?: number[];
  queryOffset?: number;
  mergeHeads?: boolean;
  keyLength?: number;
}

const CASES: Case[] = [
  { name: "T=1, Dh=32, GQA 6/2", b: 2, h: 6, hkv: 2, tq: 1, tk: 1, dh: 32 },
  { name: "T=5, Dh=64, GQA 6/2, left padding", b: 2, h: 6, hkv: 2, tq: 5, tk: 5, dh: 64, pads: [2, 0] },
  {
    name: "T=37, Dh=80, GQA 6/2, padding and masked keys, heads merged",
    b: 2,
    h: 6,
    hkv: 2,
    tq: 37,
    tk: 37,
    dh: 80,
    pads: [5, 0],
    holes: [9, 20, 21],
    mergeHeads: true,
  },
  { name: "T=70, Dh=32, GQA 6/2, padding", b: 1, h: 6, hkv: 2, tq: 70, tk: 70, dh: 32, pads: [3] },
  { name: "T=70, Dh=64, multi-head", b: 1, h: 2, hkv: 2, tq: 70, tk: 70, dh: 64 },
  { name: "T=37, Dh=128, GQA 2/1", b: 1, h: 2, hkv: 1, tq: 37, tk: 37, dh: 128 },
  {
    name: "KV offset: 5 queries after 32 cached keys, Dh=64, GQA 6/2, padding",
    b: 2,
    h: 6,
    hkv: 2,
    tq: 5,
    tk: 37,
    dh: 64,
    pads: [4, 0],
  },
  {
    name: "KV cache read in place: 30 of 40 rows, 3 queries, Dh=80, heads merged",
    b: 2,
    h: 6,
    hkv: 2,
    tq: 3,
    tk: 40,
    dh: 80,
    keyLength: 30,
    pads: [0, 6],
    mergeHeads: true,
  },
  {
    name: "queryOffset 0: 37 queries, 70 keys, Dh=32",
    b: 1,
    h: 2,
    hkv: 1,
    tq: 37,
    tk: 70,
    dh: 32,
    queryOffset: 0,
  },
  {
    name: "queryOffset −3 (first rows see no key), Dh=7 (f32 rows)",
    b: 1,
    h: 6,
    hkv: 2,
    tq: 37,
    tk: 37,
    dh: 7,
    queryOffset: -3,
  },
  {
    name: "T=37, Dh=37 (f32 rows, padded slices), masked keys",
    b: 2,
    h: 2,
    hkv: 1,
    tq: 37,
    tk: 37,
    dh: 37,
    pads: [0, 1],
    holes: [30],
  },
];

async function check(c: Case): Promise<void> {
  const q = randHost(rng, [c.b, c.h, c.tq, c.dh]);
  const k = randHost(rng, [c.b, c.hkv, c.tk, c.dh]);
  const v = randHost(rng, [c.b, c.hkv, c.tk, c.dh]);
  const inputs = [q, k, v];
  if (c.pads) inputs.push(keyMask(c.pads, c.keyLength ?? c.tk, c.holes));
  const opts = { queryOffset: c.queryOffset, mergeHeads: c.mergeHeads, keyLength: c.keyLength };
  await checkOp({
    inputs,
    wrt: [0, 1, 2],
    gpu: ([q, k, v, m]) => causalAttention(q, k, v, { ...opts, keyMask: m }),
    ref: ([q, k, v, m]) => causalAttentionRef(q, k, v, { ...opts, keyMask: m }),
    atol: 2e-6,
    rtol: 1e-4,
    maxProbes: 30,
  });
}

for (const c of CASES) {
  Deno.test({
    name: `flash attention ${c.name}: forward and gradients of q, k, v`,
    ...gpuTest,
    fn: async () => {
      for (const [what, tiling] of TILINGS) {
        try {
          await withAttentionVariants(() => check(c), { tiling, only: ["flash"] });
        } catch (e) {
          throw new Error(`${what}: ${(e as Error).message}`, { cause: e });
        }
      }
    },
  });
}

for (const [dh, pads] of [[32, [3, 0]], [5, undefined]] as const) {
  Deno.test({
    name: `flash attention on a fused q/k/v projection, T=37, Dh=${dh}: forward and gradient`,
    ...gpuTest,
    fn: async () => {
      for (const [what, tiling] of TILINGS) {
        try {
          await withAttentionVariants(async () => {
            const [B, H, T] = [2, 3, 37];
            const inputs = [randHost(rng, [B, T, 3 * H * dh])];
            if (pads) inputs.push(keyMask([...pads], T));
            await checkOp({
              inputs,
              wrt: [0],
              gpu: ([qkv, m]) => causalAttentionQkv(qkv, H, { keyMask: m }),
              ref: ([qkv, m]) => causalAttentionQkvRef(qkv, H, { keyMask: m }),
              atol: 2e-6,
              rtol: 1e-4,
            });
          }, { tiling, only: ["flash"] });
        } catch (e) {
          throw new Error(`${what}: ${(e as Error).message}`, { cause: e });
        }
      }
    },
  });
}

Deno.test({
  name:
    "flash attention: the backward is deterministic (no atomics) and a second backward gives the same gradients",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const saved = setFlashAttentionOptions({ mode: "flash" });
    const savedCpu = c.cpuKernels;
    c.cpuKernels = false;
    try {
      const [B, H, G, T, D] = [2, 6, 2, 37, 64];
      const q = Tensor.from(c, rng.normals(B * H * T * D), [B, H, T, D], { requiresGrad: true });
      const k = Tensor.from(c, rng.normals(B * G * T * D), [B, G, T, D], { requiresGrad: true });
      const v = Tensor.from(c, rng.normals(B * G * T * D), [B, G, T, D], { requiresGrad: true });
      const w = Tensor.from(c, rng.normals(B * H * T * D), [B, H, T, D]);
      const y = causalAttention(q, k, v);
      const grads = async () => {
        backward(y, { grad: w });
        const gs = await Promise.all([q, k, v].map((t) => t.grad!.read()));
        for (const t of [q, k, v]) t.zeroGrad();
        return gs;
      };
      const first = await grads();
      const second = await grads(); // the saved log-sum-exps are still there
      for (let i = 0; i < 3; i++) assert.deepStrictEqual(second[i], first[i], `gradient ${i}`);
      for (const t of [q, k, v, w, y]) t.dispose();
    } finally {
      setFlashAttentionOptions(saved);
      c.cpuKernels = savedCpu;
    }
  },
});

Deno.test({
  name: "flash attention: block shapes fit the workgroup memory limit, or raise GpuLimitError",
  ...gpuTest,
  fn: () => {
    const kinds = ["forward", "query", "key"] as const;
    for (const limit of [16384, 32768, 49152]) {
      const limits = { maxComputeWorkgroupStorageSize: limit, maxComputeInvocationsPerWorkgroup: 256 };
      for (const kind of kinds) {
        for (const dh of [1, 5, 32, 64, 80, 128]) {
          const t = flashTiling(kind, dh, limits);
          assert.ok(flashSharedBytes(kind, t) <= limit, `${kind} Dh=${dh} at ${limit}: ${JSON.stringify(t)}`);
          assert.ok(t.ns * t.ds4 * 4 >= dh, `${kind} Dh=${dh}: slices cover the head`);
          assert.ok(t.ns * t.rows <= 256);
        }
      }
    }
    // 48 KiB (most GPUs) fits 32-key tiles of 64 queries for Dh = 64 in the forward.
    const gpu = { maxComputeWorkgroupStorageSize: 49152, maxComputeInvocationsPerWorkgroup: 256 };
    assert.deepStrictEqual(flashTiling("forward", 64, gpu), { ns: 2, ds4: 8, rows: 64, tile: 32 });
    assert.throws(
      () =>
        flashTiling("key", 128, {
          maxComputeWorkgroupStorageSize: 512,
          maxComputeInvocationsPerWorkgroup: 256,
        }),
      GpuLimitError,
    );
  },
});
