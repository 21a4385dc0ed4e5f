/**
 * Normalisation over the last axis: LayerNorm (GPT-2, Phi) and RMSNorm (Llama). For each: the
 * forward (one workgroup per row), the backward for x, weight (and bias), and the float64 CPU
 * reference. Weight and bias gradients are summed over all rows.
 */
import {
  layerNormBackwardKernel,
  layerNormKernel,
  rmsNormBackwardKernel,
  rmsNormKernel,
} from "../../kernels/norm.ts";
import { sumAxisKernel } from "../../kernels/reduce.ts";
import type { HostTensor } from "../reference.ts";
import { record } from "../tape.ts";
import { fmtShape, ShapeError, Tensor } from "../tensor.ts";

/** `[rows, n]` of `x` along its last axis, after checking that each parameter has shape `[n]`. */
function checkNormShapes(op: string, x: Tensor, params: [string, Tensor][]): [number, number] {
  if (x.rank === 0) {
    throw new ShapeError(`${op}: x must have at least one axis, got shape ${fmtShape(x.shape)}`);
  }
  const n = x.shape[x.rank - 1];
  for (const [name, p] of params) {
    if (p.rank !== 1 || p.shape[0] !== n) {
      throw new ShapeError(
        `${op}: ${name} of shape ${fmtShape(p.shape)} does not match the last dimension of x ` +
          `${fmtShape(x.shape)} (expected [${n}])`,
      );
    }
    if (p.ctx !== x.ctx) throw new Error(`${op}: x and ${name} live on different GPU contexts`);
  }
  return [n === 0 ? 0 : x.size / n, n];
}

// ---------------------------------------------------------------------------------------------
// layerNorm: y = (x − mean) / sqrt(var + eps) · w + b, var biased (divided by n) as in PyTorch.
// dx = rstd · (d − mean(d) − x̂ · mean(d ⊙ x̂)) with d = g ⊙ w;  dw = Σ_rows g ⊙ x̂;  db = Σ_rows g.

/** Layer normalisation over the last axis with weight and bias of shape `[x.shape.at(-1)]`. */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps = 1e-5): Tensor {
  const [rows, n] = checkNormShapes("layerNorm", x, [["weight", weight], ["bias", bias]]);
  const ctx = x.ctx;
  const out = Tensor.empty(ctx, x.shape);
  layerNormKernel(ctx, x.buffer, weight.buffer, bias.buffer, out.buffer, rows, n, eps);
  return record(out, "layerNorm", [x, weight, bias], (g) => {
    const dx = Tensor.empty(ctx, x.shape);
    const gw = weight.requiresGrad ? Tensor.empty(ctx, x.shape) : null;
    layerNormBackwardKernel(
      ctx,
      x.buffer,
      weight.buffer,
      g.buffer,
      dx.buffer,
      gw?.buffer ?? null,
      rows,
      n,
      eps,
    );
    const dw = gw ? sumRows(gw, rows, n) : null;
    gw?.dispose();
    const db = bias.requiresGrad ? sumRows(g, rows, n) : null;
    return [x.requiresGrad ? dx : null, dw, db];
  });
}

/** Float64 reference of {@link layerNorm}. */
export function layerNormRef(x: HostTensor, weight: HostTensor, bias: HostTensor, eps = 1e-5): HostTensor {
  const n = x.shape[x.shape.length - 1];
  const data = new Float64Array(x.data.length);
  for (let s = 0; s < data.length; s += n) {
    let mean = 0;
    for (let k = 0; k < n; k++) mean += x.data[s + k];
    mean /= n;
    let v = 0;
    for (let k = 0; k < n; k++) v += (x.data[s + k] - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / n + eps);
    for (let k = 0; k < n; k++) data[s + k] = (x.data[s + k] - mean) * rstd * weight.data[k] + bias.data[k];
  }
  return { data, shape: [...x.shape] };
}

// ---------------------------------------------------------------------------------------------
// rmsNorm: y = x · r · w with r = 1/sqrt(mean(x²) + eps).
// dx = r · d − x · r³ · mean(d ⊙ x) with d = g ⊙ w;  dw = Σ_rows g ⊙ x · r.

/** RMS normalisation over the last axis (Llama) with a weight of shape `[x.shape.at(-1)]`. */
export function rmsNorm(x: Tensor, weight: Tensor, eps = 1e-6): Tensor {
  const [rows, n] = checkNormShapes("rmsNorm", x, [["weight", weight]]);
  const ctx = x.ctx;
  const out = Tensor.empty(ctx, x.shape);
  rmsNormKernel(ctx, x.buffer, weight.buffer, out.buffer, rows, n, eps);
  return record(out, "rmsNorm", [x, weight], (g) => {
    const dx = Tensor.empty(ctx, x.shape);
    const gw = weight.requiresGrad ? Tensor.empty(ctx, x.shape) : null;
    rmsNormBackwardKernel(
      ctx,
      x.buffer,
      weight.buffer,
      g.buffer,
      dx.buffer,
      gw?.buffer ?? null,
      rows,
      n,
      eps,
    );
    const dw = gw ? sumRows(gw, rows, n) : null;
    gw?.dispose();
    return [x.requiresGrad ? dx : null, dw];
  });
}

/** Float64 reference of {@link rmsNorm}. */
export function rmsNormRef(x: HostTensor, weight: HostTensor, eps = 1e-6): HostTensor {
  const n = x.shape[x.shape.length - 1];
  const data = new Float64Array(x.data.length);
  for (let s = 0; s < data.length; s += n) {
    let ms = 0;
    for (let k = 0; k < n; k++) ms += x.data[s + k] ** 2;
    const r = 1 / Math.sqrt(ms / n + eps);
    for (let k = 0; k < n; k++) data[s + k] = x.data[s + k] * r * weight.data[k];
  }
  return { data, shape: [...x.shape] };
}

/** Σ over rows of a `[..., n]` tensor seen as `[rows, n]`: a new tensor of shape `[n]`. */
function sumRows(t: Tensor, rows: number, n: number): Tensor {
  const out = Tensor.empty(t.ctx, [n]);
  sumAxisKernel(t.ctx, t.buffer, out.buffer, 1, rows, n);
  return out;
}
