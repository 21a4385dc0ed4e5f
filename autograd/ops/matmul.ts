/**
 * Matrix products: {@link matmul} (batched, either operand transposed, either operand shared
 * across the batch) and {@link linear} (a layer's `x·W (+ b)` for both weight layouts found in
 * checkpoints). For each: the forward, the backward rule and the float64 reference.
 *
 * Shapes. `a` is `[...lead, M, K]` (`[...lead, K, M]` when `transA`) and `b` is `[K, N]`
 * (`[N, K]` when `transB`) or `[...lead, K, N]` with the same leading dims; a 2-D `a` with a
 * batched `b` is shared the same way. The result is `[...lead, M, N]`.
 *
 * When `b` is one matrix and `a` is not transposed, the leading dims of `a` are just more rows:
 * `x[B, T, d] · W[d, n]` runs as a single `[B·T, d] · [d, n]` product (tensors are contiguous, so
 * this needs no copy), and the weight gradient is the single product `x_flatᵀ · g_flat` instead of
 * a batch of products followed by a sum.
 *
 * Backward, per batch entry, with `op` the optional transpose:
 * `dA = g · op(B)ᵀ` (stored transposed when `transA`) and `dB = op(A)ᵀ · g` (stored transposed
 * when `transB`), summed over the batch for an operand that was shared.
 */
import { type MatmulDims, matmulKernel } from "../../kernels/matmul.ts";
import { HalfMatrix, linearHalf } from "../half.ts";
import type { HostTensor } from "../reference.ts";
import { record } from "../tape.ts";
import { fmtShape, ShapeError, Tensor } from "../tensor.ts";
import { add, sumToShape } from "./elementwise.ts";
import { transpose } from "./shape.ts";

/** Options of {@link matmul}. */
export interface MatmulOptions {
  /** `a` is stored `[..., K, M]` and used transposed. */
  transA?: boolean;
  /** `b` is stored `[..., N, K]` and used transposed. */
  transB?: boolean;
}

/** How `linear` reads its weight: GPT-2's Conv1D stores `[in, out]`, nn.Linear (Llama, Phi) `[out, in]`. */
export type WeightLayout = "in_out" | "out_in";

/** Options of {@link linear}. */
export interface LinearOptions {
  /** Default `"in_out"`. */
  weightLayout?: WeightLayout;
}

const prod = (dims: readonly number[]) => dims.reduce((x, y) => x * y, 1);

/** The resolved geometry of one product. */
interface Geometry {
  lead: number[];
  /** Leading dims of each operand: `lead` or empty (shared). */
  aShared: boolean;
  bShared: boolean;
  m: number;
  n: number;
  k: number;
  out: number[];
}

/** Works out M, N, K and the batch of `op(a) · op(b)`, or throws a ShapeError naming both shapes. */
function geometry(
  op: string,
  aShape: readonly number[],
  bShape: readonly number[],
  transA: boolean,
  transB: boolean,
): Geometry {
  const both = `${fmtShape(aShape)}${transA ? "ᵀ" : ""} and ${fmtShape(bShape)}${transB ? "ᵀ" : ""}`;
  if (aShape.length < 2 || bShape.length < 2) {
    throw new ShapeError(`${op}: operands must have at least 2 dimensions, got ${both}`);
  }
  const ra = aShape.length;
  const rb = bShape.length;
  const [m, ka] = transA ? [aShape[ra - 1], aShape[ra - 2]] : [aShape[ra - 2], aShape[ra - 1]];
  const [kb, n] = transB ? [bShape[rb - 1], bShape[rb - 2]] : [bShape[rb - 2], bShape[rb - 1]];
  if (ka !== kb) {
    throw new ShapeError(`${op}: inner dimensions differ (K = ${ka} vs ${kb}) for ${both}`);
  }
  const leadA = aShape.slice(0, -2);
  const leadB = bShape.slice(0, -2);
  const sameLead = leadA.length === leadB.length && leadA.every((d, i) => d === leadB[i]);
  if (!sameLead && leadA.length > 0 && leadB.length > 0) {
    throw new ShapeError(
      `${op}: batch dimensions ${fmtShape(leadA)} and ${fmtShape(leadB)} differ for ${both} ` +
        `(they must be equal, or one operand must be a single 2-D matrix)`,
    );
  }
  const lead = leadA.length > 0 ? leadA : leadB;
  return {
    lead,
    aShared: leadA.length === 0 && leadB.length > 0,
    bShared: leadB.length === 0 && leadA.length > 0,
    m,
    n,
    k: ka,
    out: [...lead, m, n],
  };
}

/**
 * `op(a) · op(b) (+ bias)` on the GPU without recording, for operands already checked by
 * {@link geometry}. A shared `b` with an untransposed `a` folds the batch into rows.
 */
function product(a: Tensor, b: Tensor, transA: boolean, transB: boolean, bias?: Tensor): Tensor {
  const g = geometry("matmul", a.shape, b.shape, transA, transB);
  const out = Tensor.empty(a.ctx, g.out);
  const batch = prod(g.lead);
  const dims: MatmulDims = !g.aShared && g.bShared && !transA
    ? { batch: 1, m: batch * g.m, n: g.n, k: g.k, transA, transB }
    : {
      batch,
      m: g.m,
      n: g.n,
      k: g.k,
      transA,
      transB,
      strideA: g.aShared ? 0 : g.m * g.k,
      strideB: g.bShared ? 0 : g.k * g.n,
    };
  matmulKernel(a.ctx, a.buffer, b.buffer, out.buffer, dims, { bias: bias?.buffer });
  return out;
}

/**
 * `xᵀ · y` with `x` read as `[rows, xCols]` and `y` as `[rows, yCols]` (all leading dims folded
 * into rows): the gradient of a weight shared by every row, as one product instead of a batch of
 * products and a sum.
 */
function contractRows(x: Tensor, y: Tensor, xCols: number, yCols: number): Tensor {
  const rows = x.size / xCols;
  const out = Tensor.empty(x.ctx, [xCols, yCols]);
  matmulKernel(x.ctx, x.buffer, y.buffer, out.buffer, {
    batch: 1,
    m: xCols,
    n: yCols,
    k: rows,
    transA: true,
  });
  return out;
}

/** The gradients of `op(a) · op(b)` given `g` (null for an input that needs none). */
function productGrads(
  a: Tensor,
  b: Tensor,
  g: Tensor,
  transA: boolean,
  transB: boolean,
): [Tensor | null, Tensor | null] {
  const geo = geometry("matmul", a.shape, b.shape, transA, transB);
  let ga: Tensor | null = null;
  let gb: Tensor | null = null;
  if (a.requiresGrad) {
    // dA = g · op(B)ᵀ, or its transpose op(B) · gᵀ when A is stored transposed.
    const d = transA ? product(b, g, transB, true) : product(g, b, false, !transB);
    ga = geo.aShared ? sumToShape(d, a.shape) : d;
  }
  if (b.requiresGrad) {
    if (geo.bShared && !transA) {
      // One product over all rows: dB = A_flatᵀ · g_flat (or its transpose g_flatᵀ · A_flat).
      gb = transB ? contractRows(g, a, geo.n, geo.k) : contractRows(a, g, geo.k, geo.n);
    } else {
      // dB = op(A)ᵀ · g, or its transpose gᵀ · op(A) when B is stored transposed.
      const d = transB ? product(g, a, true, transA) : product(a, g, !transA, false);
      gb = geo.bShared ? sumToShape(d, b.shape) : d;
    }
  }
  return [ga, gb];
}

function sameCtx(op: string, ...ts: Pick<Tensor, "ctx" | "label">[]): void {
  for (const t of ts) {
    if (t.ctx !== ts[0].ctx) {
      throw new Error(`${op}: ${ts[0].label} and ${t.label} live on different GPU contexts`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// matmul

/**
 * Batched matrix product `op(a) · op(b)`; see the module doc for the accepted shapes. Throws a
 * {@link ShapeError} naming both shapes when they do not fit.
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const transA = !!options.transA;
  const transB = !!options.transB;
  sameCtx("matmul", a, b);
  const out = product(a, b, transA, transB);
  if (a === b && transB && !transA) {
    // A Gram matrix x·xᵀ (the matching loss's R·Rᵀ over the vocabulary): the two gradients
    // g·x and gᵀ·x add up to one product, (g + gᵀ)·x, instead of two large products and a sum.
    return record(out, "matmul", [a], (g) => [product(add(g, transpose(g, -1, -2)), a, false, false)]);
  }
  return record(out, "matmul", [a, b], (g) => productGrads(a, b, g, transA, transB));
}

/** Float64 reference of {@link matmul}. */
export function matmulRef(a: HostTensor, b: HostTensor, options: MatmulOptions = {}): HostTensor {
  const transA = !!options.transA;
  const transB = !!options.transB;
  const g = geometry("matmulRef", a.shape, b.shape, transA, transB);
  const { m, n, k } = g;
  const batch = prod(g.lead);
  const out = new Float64Array(batch * m * n);
  for (let t = 0; t < batch; t++) {
    const ao = g.aShared ? 0 : t * m * k;
    const bo = g.bShared ? 0 : t * k * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let q = 0; q < k; q++) {
          s += a.data[ao + (transA ? q * m + i : i * k + q)] * b.data[bo + (transB ? j * k + q : q * n + j)];
        }
        out[t * m * n + i * n + j] = s;
      }
    }
  }
  return { data: out, shape: g.out };
}

// ---------------------------------------------------------------------------------------------
// linear

function linearGeometry(
  xShape: readonly number[],
  wShape: readonly number[],
  layout: WeightLayout,
  bias?: readonly number[],
) {
  const what = `input ${fmtShape(xShape)} and ${layout} weight ${fmtShape(wShape)}`;
  if (wShape.length !== 2) throw new ShapeError(`linear: the weight must be 2-D, got ${what}`);
  if (xShape.length < 1) {
    throw new ShapeError(`linear: the input must have at least 1 dimension, got ${what}`);
  }
  const [inF, outF] = layout === "in_out" ? wShape : [wShape[1], wShape[0]];
  if (xShape[xShape.length - 1] !== inF) {
    throw new ShapeError(
      `linear: ${what} disagree on the input features (${xShape[xShape.length - 1]} vs ${inF})`,
    );
  }
  if (bias && (bias.length !== 1 || bias[0] !== outF)) {
    throw new ShapeError(
      `linear: bias ${fmtShape(bias)} does not match the ${outF} output features of ${what}`,
    );
  }
  return { inF, outF };
}

/**
 * A linear layer `x · W (+ bias)` over the last axis of `x` (`[..., in]` → `[..., out]`), with the
 * weight stored `[in, out]` (`"in_out"`, GPT-2's Conv1D, the default) or `[out, in]`
 * (`"out_in"`, nn.Linear). Runs as one product over all rows, with the bias fused into it.
 * `w` may be an f16 {@link HalfMatrix} (frozen: x and the bias get gradients, w none).
 */
export function linear(
  x: Tensor,
  w: Tensor | HalfMatrix,
  bias?: Tensor | null,
  options: LinearOptions = {},
): Tensor {
  const layout = options.weightLayout ?? "in_out";
  if (layout !== "in_out" && layout !== "out_in") {
    throw new Error(`linear: unknown weightLayout '${layout}' (use "in_out" or "out_in")`);
  }
  const b = bias ?? undefined;
  sameCtx("linear", x, w, ...(b ? [b] : []));
  const { inF, outF } = linearGeometry(x.shape, w.shape, layout, b?.shape);
  if (w instanceof HalfMatrix) return linearHalf(x, w, b, layout);
  const transB = layout === "out_in";
  // A 1-D input is one row.
  const rows = x.size / Math.max(1, inF);
  const out = Tensor.empty(x.ctx, [...x.shape.slice(0, -1), outF]);
  matmulKernel(x.ctx, x.buffer, w.buffer, out.buffer, { batch: 1, m: rows, n: outF, k: inF, transB }, {
    bias: b?.buffer,
  });
  return record(out, "linear", b ? [x, w, b] : [x, w], (g) => {
    let gx: Tensor | null = null;
    let gw: Tensor | null = null;
    if (x.requiresGrad) {
      // dx = g · op(W)ᵀ, one product over all rows.
      gx = Tensor.empty(x.ctx, x.shape);
      matmulKernel(x.ctx, g.buffer, w.buffer, gx.buffer, {
        batch: 1,
        m: rows,
        n: inF,
        k: outF,
        transB: !transB,
      });
    }
    if (w.requiresGrad) gw = transB ? contractRows(g, x, outF, inF) : contractRows(x, g, inF, outF);
    const gb = b?.requiresGrad ? sumToShape(g, b.shape) : null;
    return b ? [gx, gw, gb] : [gx, gw];
  });
}

/** Float64 reference of {@link linear}. */
export function linearRef(
  x: HostTensor,
  w: HostTensor,
  bias?: HostTensor | null,
  options: LinearOptions = {},
): HostTensor {
  const layout = options.weightLayout ?? "in_out";
  const { inF, outF } = linearGeometry(x.shape, w.shape, layout, bias?.shape);
  const rows = x.data.length / Math.max(1, inF);
  const out = new Float64Array(rows * outF);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outF; o++) {
      let s = bias ? bias.data[o] : 0;
      for (let i = 0; i < inF; i++) {
        s += x.data[r * inF + i] * w.data[layout === "in_out" ? i * outF + o : o * inF + i];
      }
      out[r * outF + o] = s;
    }
  }
  return { data: out, shape: [...x.shape.slice(0, -1), outF] };
}
