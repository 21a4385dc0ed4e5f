import {
  causalAttention,
  causalAttentionQkv,
  causalAttentionQkvRef,
  causalAttentionRef,
} from "../../autograd/ops/attention.ts";
import { ShapeError, Tensor } from "../../autograd/tensor.ts";
import { Rng } from "../../autograd/random.ts";
import { host, type HostTensor } from "../../autograd/reference.ts";
import { checkOp, ctx, gpuTest, randHost } from "../helpers.ts";
import { withAttentionVariants } from "./attention_variants.ts";

const rng = new Rng(41);

/** [B, Tk] mask with row b left-padded by pads[b]. */
function leftPadMask(pads: number[], tk: number): HostTensor {
  const data: number[] = [];
  for (const p of pads) for (let j = 0; j < tk; j++) data.push(j < p ? 0 : 1);
  return host(data, [pads.length, tk]);
}

interface Case {
  name: string;
  b: number;
  h: number;
  hkv: number;
  tq: number;
  tk: number;
  dh: number;
  pads?: number[];
  queryOffset?: number;
  scale?: number;
  mergeHeads?: boolean;
  keyLength?: number;
}

async function check(c: Case): Promise<Float32Array> {
  const q = randHost(rng, [c.b, c.h, c.tq, c.dh]);
  const k = randHost(rng, [c.b, c.hkv, c.tk, c.dh]);
  const v = randHost(rng, [c.b, c.hkv, c.tk, c.dh]);
  const inputs = [q, k, v];
  if (c.pads) inputs.push(leftPadMask(c.pads, c.keyLength ?? c.tk));
  const opts = {
    scale: c.scale,
    queryOffset: c.queryOffset,
    mergeHeads: c.mergeHeads,
    keyLength: c.keyLength,
  };
  return await checkOp({
    inputs,
    wrt: [0, 1, 2],
    gpu: ([q, k, v, m]) => causalAttention(q, k, v, { ...opts, keyMask: m }),
    ref: ([q, k, v, m]) => causalAttentionRef(q, k, v, { ...opts, keyMask: m }),
    atol: 2e-6,
    rtol: 1e-4,
  });
}

const CASES: Case[] = [
  { name: "GQA B=2 H=4 Hkv=2 T=7 Dh=12, no mask", b: 2, h: 4, hkv: 2, tq: 7, tk: 7, dh: 12 },
  {
    name: "GQA B=2 H=4 Hkv=2 T=7 Dh=12, left padding 3 and 0",
    b: 2,
    h: 4,
    hkv: 2,
    tq: 7,
    tk: 7,
    dh: 12,
    pads: [3, 0],
  },
  {
    name: "KV cache Tq=3 Tk=9 with padding and a custom scale",
    b: 2,
    h: 4,
    hkv: 2,
    tq: 3,
    tk: 9,
    dh: 12,
    pads: [0, 2],
    scale: 0.5,
  },
  { name: "KV cache decode Tq=1 Tk=9, multi-head (Hkv=H)", b: 2, h: 3, hkv: 3, tq: 1, tk: 9, dh: 5 },
  {
    name: "heads merged in the output, GQA with padding, Dh=8 (vec4 rows)",
    b: 2,
    h: 4,
    hkv: 2,
    tq: 6,
    tk: 6,
    dh: 8,
    pads: [2, 0],
    mergeHeads: true,
  },
  {
    name: "KV cache Tq=2 Tk=5, heads merged, Dh=3",
    b: 2,
    h: 2,
    hkv: 1,
    tq: 2,
    tk: 5,
    dh: 3,
    mergeHeads: true,
  },
  {
    name: "KV cache read in place: 6 of 9 rows (keyLength), padding, heads merged, Dh=4",
    b: 2,
    h: 4,
    hkv: 2,
    tq: 2,
    tk: 9,
    dh: 4,
    keyLength: 6,
    pads: [0, 1],
    mergeHeads: true,
  },
  {
    name: "queryOffset 0: Tq=Tk=5 queries see a prefix of keys",
    b: 1,
    h: 2,
    hkv: 1,
    tq: 4,
    tk: 9,
    dh: 7,
    queryOffset: 0,
  },
];

for (const c of CASES) {
  Deno.test({
    name: `attention ${c.name}: forward and gradients of q, k, v`,
    ...gpuTest,
    fn: () => withAttentionVariants(() => check(c)),
  });
}

Deno.test({
  name: "attention: more keys and queries than one workgroup block (online softmax across blocks)",
  ...gpuTest,
  fn: () =>
    withAttentionVariants(() =>
      check({ name: "long", b: 1, h: 2, hkv: 1, tq: 270, tk: 300, dh: 3, pads: [40] })
    ),
});

Deno.test({
  name: "attention: a head size of 128 (two columns per thread)",
  ...gpuTest,
  fn: () => withAttentionVariants(() => check({ name: "dh128", b: 1, h: 2, hkv: 2, tq: 3, tk: 4, dh: 128 })),
});

for (
  const [name, dh, pads] of [["Dh=5", 5, undefined], ["Dh=8 (vec4 rows), left padding", 8, [3, 0]]] as const
) {
  Deno.test({
    name: `attention on a fused q/k/v projection [B, T, 3·H·Dh], ${name}: forward and gradient`,
    ...gpuTest,
    fn: () =>
      withAttentionVariants(async () => {
        const [B, H, T] = [2, 3, 7];
        const inputs = [randHost(rng, [B, T, 3 * H * dh])];
        if (pads) inputs.push(leftPadMask([...pads], T));
        await checkOp({
          inputs,
          wrt: [0],
          gpu: ([qkv, m]) => causalAttentionQkv(qkv, H, { keyMask: m }),
          ref: ([qkv, m]) => causalAttentionQkvRef(qkv, H, { keyMask: m }),
          atol: 2e-6,
          rtol: 1e-4,
        });
      }),
  });
}

Deno.test({
  name: "attention: fully masked query rows (left padding) give zeros, not NaN",
  ...gpuTest,
  fn: () =>
    withAttentionVariants(async () => {
      const c = await ctx();
      const [B, H, T, D] = [1, 2, 6, 4];
      const q = Tensor.from(c, rng.normals(B * H * T * D), [B, H, T, D], { requiresGrad: true });
      const k = Tensor.from(c, rng.normals(B * H * T * D), [B, H, T, D], { requiresGrad: true });
      const v = Tensor.from(c, rng.normals(B * H * T * D), [B, H, T, D], { requiresGrad: true });
      const mask = Tensor.from(c, [0, 0, 0, 1, 1, 1], [B, T]);
      const y = causalAttention(q, k, v, { keyMask: mask });
      const out = await y.read();
      for (let h = 0; h < H; h++) {
        for (let i = 0; i < T; i++) {
          for (let d = 0; d < D; d++) {
            const x = out[(h * T + i) * D + d];
            if (Number.isNaN(x) || (i < 3 && x !== 0)) throw new Error(`output (${h}, ${i}, ${d}) is ${x}`);
          }
        }
      }
      for (const t of [q, k, v, mask, y]) t.dispose();
    }),
});

Deno.test({
  name: "attention: mismatched shapes raise ShapeError naming both",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const q = Tensor.zeros(c, [2, 4, 7, 12]);
    const k = Tensor.zeros(c, [2, 3, 7, 12]);
    try {
      causalAttention(q, k, k);
      throw new Error("expected a ShapeError");
    } catch (e) {
      if (
        !(e instanceof ShapeError) || !e.message.includes("[2, 4, 7, 12]") ||
        !e.message.includes("[2, 3, 7, 12]")
      ) {
        throw e;
      }
    }
    const k2 = Tensor.zeros(c, [2, 2, 7, 12]);
    const m = Tensor.zeros(c, [2, 6]);
    try {
      causalAttention(q, k2, k2, { keyMask: m });
      throw new Error("expected a ShapeError");
    } catch (e) {
      if (!(e instanceof ShapeError) || !e.message.includes("[2, 6]")) throw e;
    }
    for (const t of [q, k, k2, m]) t.dispose();
  },
});
