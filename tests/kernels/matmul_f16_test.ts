/**
 * f16 weights (kernels/matmul_f16.ts, autograd/half.ts): the f32 → f16 conversion bit for bit
 * against models/half_float.ts, the product kernels against a float64 reference computed on the
 * f16-rounded weights, the gradient of x through `linear` by finite differences, the embedding
 * gather, the decode's candidate pick, and the errors (no gradient for a half matrix, no
 * `shader-f16`).
 *
 * Tolerance of the products: |C − ref| ≤ 1e-6 · (|bias| + Σ_k |a_k w_k|) per element. With the
 * weights rounded the same way on both sides, the only error left is f32 accumulation (~1e-7 of
 * that sum here); using the unrounded weights instead would show up as ~1e-5 at K = 1030 (and
 * more at smaller K), so the check also pins down *which* values the kernel multiplies.
 */
import assert from "node:assert";
import { assertHalfSupported, embeddingHalf, HalfMatrix, HalfPrecisionError } from "../../autograd/half.ts";
import { linear, linearRef } from "../../autograd/ops/matmul.ts";
import { Rng } from "../../autograd/random.ts";
import { Tensor } from "../../autograd/tensor.ts";
import type { GpuContext } from "../../kernels/device.ts";
import { pickCandidateByDotKernel } from "../../kernels/candidates.ts";
import {
  type HalfLayout,
  halfMatmulKernel,
  type HalfMatmulPlan,
  halfStride,
  pickCandidateByDotHalfKernel,
} from "../../kernels/matmul_f16.ts";
import { float16BitsToNumber, numberToFloat16Bits } from "../../models/half_float.ts";
import { checkOp, ctx, gpuTest, withKernelVariants } from "../helpers.ts";

/** `x` rounded to f16 and widened back (the value the kernels multiply). */
const half = (x: number) => float16BitsToNumber(numberToFloat16Bits(x));

function normals(rng: Rng, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal() * scale);
}

/** Raw f16 bits of a half matrix's buffer, padding included. */
async function rawBits(c: GpuContext, m: HalfMatrix): Promise<Uint16Array> {
  return new Uint16Array(await c.readBuffer(m.buffer, 0, m.bytes));
}

Deno.test({
  name: "f16: GPU conversion matches models/half_float.ts bit for bit (ties, subnormals, overflow, NaN, -0)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const rng = new Rng(5);
    const special = [
      0,
      -0,
      1,
      -1,
      65504,
      -65504,
      65519.99,
      65520,
      -65520,
      1e9,
      Infinity,
      -Infinity,
      NaN,
      2 ** -14,
      2 ** -24,
      2 ** -25,
      2 ** -25 * 1.0001,
      3 * 2 ** -26,
      2 ** -26,
      1e-10,
      -1e-40,
      1 + 2 ** -11,
      1 + 3 * 2 ** -11,
      1 + 2 ** -11 + 2 ** -20,
      2049,
      2051,
      4097,
      0.1,
      -0.3333,
      5.960464477539063e-8,
      6.097555160522461e-5,
      6.103515625e-5,
    ];
    // Many magnitudes, so every exponent (and the subnormal range) is exercised.
    const values = [...special];
    while (values.length < 13 * 37) values.push(rng.normal() * 2 ** Math.floor(rng.uniform() * 50 - 30));
    const data = Float32Array.from(values);
    const rows = 13, cols = 37; // cols not a multiple of 4: rows are padded to 40
    const m = HalfMatrix.fromTensor(Tensor.from(c, data, [rows, cols]));
    assert.strictEqual(halfStride(cols), 40);
    const bits = await rawBits(c, m);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < 40; j++) {
        const got = bits[r * 40 + j];
        const want = j < cols ? numberToFloat16Bits(data[r * cols + j]) : 0;
        if (got !== want) {
          throw new Error(
            `element (${r}, ${j}) = ${data[r * cols + j]}: bits 0x${got.toString(16)}, expected 0x${
              want.toString(16)
            }`,
          );
        }
      }
    }
    // Widening back is exact.
    const back = await m.read();
    for (let i = 0; i < data.length; i++) {
      assert.ok(
        Object.is(back[i], Math.fround(half(data[i]))),
        `element ${i}: ${back[i]} vs ${half(data[i])}`,
      );
    }
    m.dispose();
  },
});

Deno.test({
  name: "f16: fromFloat32 refuses values that would overflow to inf, naming the matrix",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const ok = HalfMatrix.fromFloat32(c, Float32Array.from([65519, -65504, 1e-30, 0]), [2, 2]);
    assert.deepStrictEqual(Array.from(await ok.read()), [65504, -65504, 0, 0]);
    ok.dispose();
    assert.throws(
      () => HalfMatrix.fromFloat32(c, Float32Array.from([1, -70000]), [1, 2], { name: "h.0.mlp" }),
      (e: Error) => e instanceof HalfPrecisionError && /'h\.0\.mlp'.*-70000.*f16 range/.test(e.message),
    );
  },
});

/** float64 `A · op(W) + bias` with W already rounded to f16, and the per-element error scale. */
function reference(
  a: Float32Array,
  w: Float64Array,
  bias: Float32Array | null,
  m: number,
  n: number,
  k: number,
  layout: HalfLayout,
): { want: Float64Array; scale: Float64Array } {
  const want = new Float64Array(m * n);
  const scale = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = bias ? bias[j] : 0;
      let S = bias ? Math.abs(bias[j]) : 0;
      for (let q = 0; q < k; q++) {
        const t = a[i * k + q] * w[layout === "kn" ? q * n + j : j * k + q];
        s += t;
        S += Math.abs(t);
      }
      want[i * n + j] = s;
      scale[i * n + j] = S;
    }
  }
  return { want, scale };
}

async function checkProduct(
  c: GpuContext,
  rng: Rng,
  [m, n, k]: [number, number, number],
  layout: HalfLayout,
  withBias: boolean,
  plan?: Partial<HalfMatmulPlan>,
): Promise<void> {
  const [rows, cols] = layout === "kn" ? [k, n] : [n, k];
  const wData = normals(rng, rows * cols, 0.5);
  const a = normals(rng, m * k);
  const bias = withBias ? normals(rng, n) : null;
  const w = HalfMatrix.fromFloat32(c, wData, [rows, cols]);
  const aT = Tensor.from(c, a, [m, k]);
  const bT = bias ? Tensor.from(c, bias, [n]) : null;
  const out = Tensor.empty(c, [m, n]);
  halfMatmulKernel(c, aT.buffer, w.operand, out.buffer, { m, n, k, layout }, { bias: bT?.buffer, plan });
  const got = await out.read();
  const { want, scale } = reference(a, Float64Array.from(wData, half), bias, m, n, k, layout);
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= 1e-6 * scale[i] + 1e-30)) {
      throw new Error(
        `[${m}, ${k}]·${layout} → [${m}, ${n}]${withBias ? " + bias" : ""} plan ${
          JSON.stringify(plan ?? {})
        }: ` +
          `element ${i} is ${got[i]}, expected ${want[i]} (error ${
            (err / scale[i]).toExponential(2)
          } of Σ|a·w|)`,
      );
    }
  }
  for (const t of [aT, bT, out]) t?.dispose();
  w.dispose();
}

Deno.test({
  name: "f16 matmul: both layouts, odd shapes, bias, split K, against float64 on f16-rounded weights",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const rng = new Rng(11);
    const shapes: [number, number, number][] = [
      [1, 1, 1],
      [3, 5, 7],
      [10, 97, 16], // the x-step's logits, small
      [10, 16, 97], // and its dLogits · W (K = vocabulary)
      [17, 130, 259],
      [33, 9, 1030],
    ];
    await withKernelVariants(async () => {
      for (const shape of shapes) {
        for (const layout of ["kn", "nk"] as const) await checkProduct(c, rng, shape, layout, shape[0] !== 3);
      }
    });
    // Explicit splits of K, with a ragged last split (K % 4 != 0) and rows not vec4-aligned.
    for (const layout of ["kn", "nk"] as const) {
      await checkProduct(c, rng, [5, 13, 259], layout, true, { splits: 5, kChunk: 64, tm: 5, tn: 8 });
      await checkProduct(c, rng, [7, 6, 1030], layout, false, { kChunk: 128, tm: 4, tn: 4 });
    }
  },
});

Deno.test({
  name: "f16 matmul: K = 0 gives the bias (an empty sum)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const w = HalfMatrix.fromFloat32(c, new Float32Array(3), [3, 1]); // "nk": N = 3, K = 1 …
    const a = Tensor.zeros(c, [2, 4]);
    const bias = Tensor.from(c, [1, 2, 3], [3]);
    const out = Tensor.full(c, [2, 3], NaN);
    // … read as a [K = 0] product through a view of its geometry.
    halfMatmulKernel(c, a.buffer, { ...w.operand, cols: 0 }, out.buffer, { m: 2, n: 3, k: 0, layout: "nk" }, {
      bias: bias.buffer,
    });
    assert.deepStrictEqual(Array.from(await out.read()), [1, 2, 3, 1, 2, 3]);
    w.dispose();
  },
});

Deno.test({
  name: "linear with an f16 weight: forward vs float64 and finite-difference gradients of x and bias",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const rng = new Rng(21);
    for (const weightLayout of ["in_out", "out_in"] as const) {
      const [inF, outF] = [13, 7];
      const shape = weightLayout === "in_out" ? [inF, outF] : [outF, inF];
      const wData = normals(rng, inF * outF, 0.4);
      const w = HalfMatrix.fromFloat32(c, wData, shape, { name: "w" });
      const wRounded = { data: Float64Array.from(wData, half), shape };
      await withKernelVariants(() =>
        checkOp({
          gpu: ([x, b]) => linear(x, w, b, { weightLayout }),
          ref: ([x, b]) => linearRef(x, wRounded, b, { weightLayout }),
          inputs: [
            { data: Float64Array.from(normals(rng, 2 * 3 * inF)), shape: [2, 3, inF] },
            { data: Float64Array.from(normals(rng, outF)), shape: [outF] },
          ],
          atol: 1e-6,
          rtol: 1e-5,
        })
      );
      w.dispose();
    }
  },
});

Deno.test({
  name: "f16 matrices are frozen: requiresGrad = true throws; linear gives x a gradient and W none",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const w = HalfMatrix.fromFloat32(c, Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3], { name: "proj" });
    assert.throws(() => {
      w.requiresGrad = true;
    }, (e: Error) => e instanceof HalfPrecisionError && /'proj'.*frozen/.test(e.message));
    w.requiresGrad = false; // allowed: it is already
    assert.strictEqual(w.grad, null);
    const x = Tensor.from(c, [1, -1], [1, 2], { requiresGrad: true });
    const y = linear(x, w);
    assert.ok(y.requiresGrad && y.node && y.node.inputs.length === 1, "only x is an input of the node");
    w.dispose();
  },
});

Deno.test({
  name: "embeddingHalf: exact f16 rows for ids, zero rows for ids out of range",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const rng = new Rng(3);
    const [V, d] = [11, 6];
    const data = normals(rng, V * d);
    const w = HalfMatrix.fromFloat32(c, data, [V, d]);
    const ids = [3, 0, 10, 11, -1, 7];
    const out = await embeddingHalf(w, Tensor.from(c, ids, [2, 3])).read();
    ids.forEach((id, p) => {
      for (let j = 0; j < d; j++) {
        const want = id >= 0 && id < V ? Math.fround(half(data[id * d + j])) : 0;
        assert.strictEqual(out[p * d + j], want, `id ${id} column ${j}`);
      }
    });
    w.dispose();
  },
});

Deno.test({
  name: "decode pick against an f16 output layer = the f32 pick on the same (widened) weights",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const rng = new Rng(8);
    const [B, steps, d, V, k, positions] = [3, 2, 9, 50, 6, 4];
    const w = HalfMatrix.fromFloat32(c, normals(rng, V * d), [V, d]);
    const wide = w.toFloat32();
    const hidden = Tensor.from(c, normals(rng, B * steps * d), [B, steps, d]);
    const bias = Tensor.from(c, normals(rng, V), [V]);
    const cand = Tensor.from(c, Float32Array.from({ length: B * positions * k }, () => rng.int(V + 2)), [
      B,
      positions,
      k,
    ]);
    const run = (f16: boolean) => {
      const chosen = Tensor.zeros(c, [B, positions]);
      const next = Tensor.zeros(c, [B, 1]);
      for (let t = 0; t < positions; t++) {
        if (f16) {
          pickCandidateByDotHalfKernel(
            c,
            hidden.buffer,
            w.operand,
            bias.buffer,
            cand.buffer,
            chosen.buffer,
            next.buffer,
            {
              batch: B,
              k,
              positions,
              t,
              steps,
            },
          );
        } else {
          pickCandidateByDotKernel(
            c,
            hidden.buffer,
            wide.buffer,
            bias.buffer,
            cand.buffer,
            chosen.buffer,
            next.buffer,
            {
              batch: B,
              vocab: V,
              k,
              positions,
              t,
              dim: d,
              steps,
            },
          );
        }
      }
      return chosen.read();
    };
    const got = await run(true);
    assert.deepStrictEqual(Array.from(got), Array.from(await run(false)));
    assert.ok(got.some((x) => x !== 0), "some candidate was picked");
    w.dispose();
  },
});

Deno.test({
  name: "f16 without the shader-f16 feature: a clear error naming the feature",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    // The same device, seen through a context whose feature set lacks shader-f16.
    const noF16 = Object.create(c, {
      features: { value: new Set<string>(["timestamp-query"]) },
    }) as GpuContext;
    const check = (e: Error) =>
      e instanceof HalfPrecisionError && /"shader-f16"/.test(e.message) && /--weights f32/.test(e.message);
    assert.throws(() => assertHalfSupported(noF16), check);
    assert.throws(() => HalfMatrix.fromFloat32(noF16, new Float32Array(4), [2, 2]), check);
  },
});
