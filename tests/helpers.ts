/**
 * Test helpers: the shared GPU context, random inputs, and the two checks every op must pass:
 * the forward against its float64 CPU reference, and the backward against central finite
 * differences of that reference.
 *
 * Why finite differences of the float64 reference rather than of the f32 GPU forward: in f32 a
 * central difference carries rounding noise of order 1e-7·|L|/eps, which hides real errors in
 * small gradients. The reference is itself checked against the GPU forward in the same call, so
 * the chain "GPU backward ≈ FD(reference) and reference ≈ GPU forward" pins the GPU backward to
 * the derivative of the GPU forward.
 */
import { defaultContext, type GpuContext } from "../kernels/device.ts";
import { Tensor } from "../autograd/tensor.ts";
import { backward } from "../autograd/tape.ts";
import type { HostTensor } from "../autograd/reference.ts";
import { Rng } from "../autograd/random.ts";

/** The context shared by all tests in one `deno test` process. */
export function ctx(): Promise<GpuContext> {
  return defaultContext();
}

/** Test options for WebGPU tests: leak sanitizers off (the GPU runtime keeps resources). */
export const gpuTest = { sanitizeResources: false, sanitizeOps: false } as const;

/**
 * Runs `fn` with the GPU kernel variants and then with the CPU-tuned ones (one thread per short
 * row, one thread per attention row; see `GpuContext.cpuKernels`), whatever the adapter, so
 * that every check covers both. A failure says which variant failed.
 */
export async function withKernelVariants(fn: () => Promise<unknown>): Promise<void> {
  const c = await ctx();
  const saved = c.cpuKernels;
  try {
    for (const cpu of [false, true]) {
      c.cpuKernels = cpu;
      try {
        await fn();
      } catch (e) {
        throw new Error(`${cpu ? "CPU" : "GPU"} kernel variant: ${(e as Error).message}`, { cause: e });
      }
    }
  } finally {
    c.cpuKernels = saved;
  }
}

/** A host tensor of normals (or uniforms in [lo, hi) if given). */
export function randHost(rng: Rng, shape: number[], lo?: number, hi?: number): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = lo === undefined ? rng.normal() : lo + (hi! - lo) * rng.uniform();
  return { data, shape };
}

/** Uploads a host tensor (rounded to f32). */
export function toGpu(c: GpuContext, h: HostTensor, requiresGrad = false): Tensor {
  return Tensor.from(c, Float32Array.from(h.data), h.shape, { requiresGrad });
}

/** Largest |a-b| / (atol + rtol·|b|); ≤ 1 means within tolerance. */
export function worstError(a: ArrayLike<number>, b: ArrayLike<number>, atol: number, rtol: number): {
  ratio: number;
  index: number;
} {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let ratio = 0;
  let index = -1;
  for (let i = 0; i < a.length; i++) {
    const r = Math.abs(a[i] - b[i]) / (atol + rtol * Math.abs(b[i]));
    if (!(r <= ratio)) {
      ratio = r;
      index = i;
    }
  }
  return { ratio, index };
}

/** Throws unless `actual` matches `expected` elementwise within atol + rtol·|expected|. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  what: string,
  atol = 1e-5,
  rtol = 1e-4,
): void {
  const { ratio, index } = worstError(actual, expected, atol, rtol);
  if (!(ratio <= 1)) {
    throw new Error(
      `${what}: element ${index} is ${actual[index]}, expected ${expected[index]} ` +
        `(error ${(ratio * 100).toFixed(0)}% of the tolerance atol=${atol}, rtol=${rtol})`,
    );
  }
}

/** Options for {@link checkOp}. */
export interface CheckOpOptions {
  /** The op on the GPU. */
  gpu: (xs: Tensor[]) => Tensor;
  /** The float64 reference. */
  ref: (xs: HostTensor[]) => HostTensor;
  /** Inputs (host, float64; uploaded rounded to f32, and the reference sees the rounded values). */
  inputs: HostTensor[];
  /** Which inputs to differentiate (default: all). */
  wrt?: number[];
  /** Forward tolerance. */
  atol?: number;
  rtol?: number;
  /** Gradient tolerance (defaults 1e-4 / 2e-3). */
  gradAtol?: number;
  gradRtol?: number;
  /** Finite-difference step (float64, default 1e-6 relative to max(1, |x|)). */
  eps?: number;
  /** At most this many elements per input are probed by finite differences (default 40). */
  maxProbes?: number;
  seed?: number;
}

/**
 * The forward and gradient check used for every op. Returns the GPU forward output values.
 */
export async function checkOp(o: CheckOpOptions): Promise<Float32Array> {
  const c = await ctx();
  const rng = new Rng(o.seed ?? 1234);
  // The reference sees exactly the f32-rounded inputs the GPU sees.
  const inputs = o.inputs.map((h) => ({
    data: Float64Array.from(Float32Array.from(h.data)),
    shape: h.shape,
  }));
  const wrt = o.wrt ?? inputs.map((_, i) => i);
  const ts = inputs.map((h, i) => toGpu(c, h, wrt.includes(i)));
  const y = o.gpu(ts);
  const yRef = o.ref(inputs);
  if (y.size !== yRef.data.length) {
    throw new Error(
      `GPU output has ${y.size} elements ([${y.shape}]), reference ${yRef.data.length} ([${yRef.shape}])`,
    );
  }
  const yv = await y.read();
  assertClose(yv, yRef.data, "forward", o.atol ?? 1e-5, o.rtol ?? 1e-4);

  if (wrt.length > 0) {
    // Loss = Σ w ⊙ y with random w: its gradient exercises every output element.
    const w = new Float64Array(y.size);
    for (let i = 0; i < w.length; i++) w[i] = rng.normal();
    const wT = Tensor.from(c, Float32Array.from(w), y.shape);
    backward(y, { grad: wT });
    const loss = (xs: HostTensor[]) => {
      const r = o.ref(xs).data;
      let s = 0;
      for (let i = 0; i < r.length; i++) s += r[i] * w[i];
      return s;
    };
    for (const k of wrt) {
      const t = ts[k];
      if (!t.grad) throw new Error(`input ${k} received no gradient`);
      const g = await t.grad.read();
      const n = inputs[k].data.length;
      const probes = n <= (o.maxProbes ?? 40)
        ? [...Array(n).keys()]
        : Array.from({ length: o.maxProbes ?? 40 }, () => rng.int(n));
      const analytic: number[] = [];
      const numeric: number[] = [];
      for (const i of probes) {
        const x = inputs[k].data;
        const orig = x[i];
        const h = (o.eps ?? 1e-6) * Math.max(1, Math.abs(orig));
        x[i] = orig + h;
        const lp = loss(inputs);
        x[i] = orig - h;
        const lm = loss(inputs);
        x[i] = orig;
        numeric.push((lp - lm) / (2 * h));
        analytic.push(g[i]);
      }
      assertClose(analytic, numeric, `gradient of input ${k}`, o.gradAtol ?? 1e-4, o.gradRtol ?? 2e-3);
    }
    wT.dispose();
  }
  for (const t of ts) t.dispose();
  y.dispose();
  return yv;
}
