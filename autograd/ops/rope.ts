/**
 * Rotary position embeddings as Hugging Face transformers applies them to Llama and Phi:
 * "rotate_half" pairs (i, i + rotaryDim/2), partial rotary (dims ≥ rotaryDim pass through), and
 * the inverse frequencies and angles rounded to f32 exactly where transformers rounds them.
 * The backward rotates the gradient by the negative angle.
 */
import { MAX_ROTARY_PAIRS, ropeKernel } from "../../kernels/rope.ts";
import type { HostTensor } from "../reference.ts";
import { record } from "../tape.ts";
import { fmtShape, ShapeError, Tensor } from "../tensor.ts";

/** Options for {@link rope}. */
export interface RopeOptions {
  /**
   * Number of leading head dimensions that are rotated (even): the head size for Llama,
   * `int(headDim · partial_rotary_factor)` for Phi.
   */
  rotaryDim: number;
  /** Base of the frequencies (`rope_theta`, 10000 for Llama-2 and Phi). */
  theta: number;
}

/**
 * The inverse frequencies `1 / theta^(2i / rotaryDim)` as transformers computes them in f32:
 * `1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))`, each step rounded to f32
 * (computed here in float64 and rounded, which equals a correctly rounded f32 operation).
 */
export function ropeInvFreq(rotaryDim: number, theta: number): Float32Array {
  const half = rotaryDim / 2;
  const out = new Float32Array(half);
  const base = Math.fround(theta);
  for (let i = 0; i < half; i++) {
    const exponent = Math.fround((2 * i) / rotaryDim);
    out[i] = Math.fround(1 / Math.fround(Math.pow(base, exponent)));
  }
  return out;
}

function checkRope(
  x: readonly number[],
  pos: readonly number[],
  o: RopeOptions,
): [number, number, number, number] {
  if (x.length !== 4) {
    throw new ShapeError(`rope: x must be [batch, heads, seq, headDim], got ${fmtShape(x)}`);
  }
  const [b, h, t, dh] = x;
  const posOk = (pos.length === 2 && pos[0] === b && pos[1] === t) || (pos.length === 1 && pos[0] === t);
  if (!posOk) {
    throw new ShapeError(
      `rope: positions ${fmtShape(pos)} do not match x ${fmtShape(x)} (want [${b}, ${t}] or [${t}])`,
    );
  }
  const rd = o.rotaryDim;
  if (!Number.isInteger(rd) || rd <= 0 || rd % 2 !== 0 || rd > dh || rd / 2 > MAX_ROTARY_PAIRS) {
    throw new RangeError(
      `rope: rotaryDim ${rd} must be even, positive, at most the head size ${dh} and at most ${
        2 * MAX_ROTARY_PAIRS
      }`,
    );
  }
  if (!(o.theta > 0)) throw new RangeError(`rope: theta ${o.theta} must be positive`);
  return [b, h, t, dh];
}

/**
 * Rotates the first `rotaryDim` dimensions of every head vector of `x` [B, H, T, Dh] by the
 * angles `positions[b, t] · invFreq` (positions are f32 integers of shape [B, T], or [T] shared
 * by the batch). Differentiable in `x`.
 */
export function rope(x: Tensor, positions: Tensor, options: RopeOptions): Tensor {
  const [batch, heads, seq, headDim] = checkRope(x.shape, positions.shape, options);
  const dims = {
    batch,
    heads,
    seq,
    headDim,
    rotaryDim: options.rotaryDim,
    posBatchStride: positions.rank === 2 ? seq : 0,
  };
  const inv = ropeInvFreq(options.rotaryDim, options.theta);
  const out = Tensor.empty(x.ctx, x.shape);
  ropeKernel(x.ctx, x.buffer, positions.buffer, out.buffer, dims, inv, 1);
  return record(out, "rope", [x, positions], (g) => {
    const gx = Tensor.empty(x.ctx, x.shape);
    ropeKernel(x.ctx, g.buffer, positions.buffer, gx.buffer, dims, inv, -1);
    return [gx, null];
  });
}

/**
 * Float64 reference of {@link rope}. The cos/sin tables are transformers' f32 values (angle
 * rounded to f32, cosine rounded to f32); the rotation itself is in float64.
 */
export function ropeRef(x: HostTensor, positions: HostTensor, options: RopeOptions): HostTensor {
  const [b, h, t, dh] = checkRope(x.shape, positions.shape, options);
  const inv = ropeInvFreq(options.rotaryDim, options.theta);
  const half = options.rotaryDim / 2;
  const data = Float64Array.from(x.data);
  for (let bi = 0; bi < b; bi++) {
    for (let hi = 0; hi < h; hi++) {
      for (let ti = 0; ti < t; ti++) {
        const pos = positions.data[positions.shape.length === 2 ? bi * t + ti : ti];
        const base = ((bi * h + hi) * t + ti) * dh;
        for (let i = 0; i < half; i++) {
          const angle = Math.fround(pos * inv[i]);
          const c = Math.fround(Math.cos(angle));
          const s = Math.fround(Math.sin(angle));
          const x1 = x.data[base + i];
          const x2 = x.data[base + i + half];
          data[base + i] = x1 * c - x2 * s;
          data[base + i + half] = x2 * c + x1 * s;
        }
      }
    }
  }
  return { data, shape: [...x.shape] };
}
