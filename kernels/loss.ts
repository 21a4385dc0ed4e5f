/**
 * Cross-entropy kernels: a fused log-sum-exp per row (one workgroup per row), the sum or mean
 * over rows, and the backward `(softmax(x) − onehot(t)) · g` written straight into the logits'
 * gradient, so nothing bigger than the `[N, C]` logits is ever materialised.
 *
 * Targets are f32 arrays of exact integers. A row's target counts ("is valid") when it is in
 * [0, C) and is not the ignore index; invalid rows contribute a loss of 0, a gradient of 0 and
 * do not count in the mean. Out-of-range targets are treated like ignored ones on the GPU (the
 * op layer rejects them with an error when it knows the targets on the CPU).
 */
import type { GpuContext } from "./device.ts";
import { cachedWgsl, packParams } from "./launch.ts";
import { launchRows, type RowLayout, rowLayout, rowMain, treeSumWgsl } from "./reduce.ts";
import { onlineLseWgsl } from "./softmax.ts";

/** How targets are interpreted: the number of classes and an optional ignore index. */
export interface TargetSpec {
  classes: number;
  /** Targets equal to this contribute nothing (null: no ignore index). */
  ignoreIndex: number | null;
}

/** Parameter words shared by every kernel here: classes, has-ignore flag, ignore value (f32). */
function targetParams(t: TargetSpec): (number | { f: number })[] {
  return [t.classes, t.ignoreIndex === null ? 0 : 1, { f: t.ignoreIndex ?? 0 }];
}

/** WGSL: `fn targetOf(i) -> i32`, the class of row i, or -1 when the row does not count. */
const TARGET_WGSL = /* wgsl */ `
fn targetOf(i: u32) -> i32 {
  let t = T[i];
  if (p.hasIgnore != 0u && t == p.ignore) { return -1; }
  if (t < 0.0 || t >= f32(p.classes)) { return -1; }
  return i32(t);
}`;

const STRUCT = "classes: u32, hasIgnore: u32, ignore: f32";

function rowsWgsl(layout: RowLayout): string {
  return /* wgsl */ `
struct P { ${STRUCT}, rows: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> T: array<f32>;
@group(0) @binding(2) var<storage, read_write> L: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${TARGET_WGSL}
${onlineLseWgsl("lse", layout)}
${rowMain(layout)}
  if (row >= p.rows) { return; }
  let start = row * p.classes;
  let ms = lse(lid, lane, start, p.classes);
  if (lane == 0u) {
    let t = targetOf(row);
    var loss = 0.0;
    if (t >= 0) { loss = log(ms.y) - (X[start + u32(t)] - ms.x); }
    L[row] = loss;
  }
}`;
}

/**
 * Per-row cross-entropy `logsumexp(x[i]) − x[i, t[i]]` of `rows` rows of `classes` logits into
 * `loss` (`[rows]`), 0 for rows whose target does not count.
 */
export function crossEntropyRowsKernel(
  ctx: GpuContext,
  logits: GPUBuffer,
  targets: GPUBuffer,
  loss: GPUBuffer,
  rows: number,
  spec: TargetSpec,
): void {
  if (rows === 0) return;
  const layout = rowLayout(ctx, spec.classes, rows);
  const code = cachedWgsl(`crossEntropyRows ${layout.perThread} ${layout.wg}`, () => rowsWgsl(layout));
  launchRows(ctx, code, [logits, targets, loss], packParams([...targetParams(spec), rows]), rows, layout);
}

/** What {@link crossEntropyTotalKernel} writes. */
export type TotalMode = "mean" | "sum" | "inverseCount";
const MODE_CODE: Record<TotalMode, number> = { mean: 0, sum: 1, inverseCount: 2 };

const TOTAL_WG = 256;
const TOTAL_WGSL = /* wgsl */ `
struct P { ${STRUCT}, rows: u32, mode: u32 }
@group(0) @binding(0) var<storage, read> L: array<f32>;
@group(0) @binding(1) var<storage, read> T: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${TARGET_WGSL}
${treeSumWgsl("wsum", TOTAL_WG, "vec2f")}
@compute @workgroup_size(${TOTAL_WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  // (Σ loss with Kahan compensation, number of rows that count); counts are exact in f32 < 2^24.
  var acc = 0.0;
  var comp = 0.0;
  var count = 0.0;
  for (var i = lid; i < p.rows; i += ${TOTAL_WG}u) {
    if (targetOf(i) >= 0) {
      count += 1.0;
      if (p.mode != 2u) {
        let y = L[i] - comp;
        let t = acc + y;
        comp = (t - acc) - y;
        acc = t;
      }
    }
  }
  let s = wsum(lid, vec2f(acc, count));
  if (lid == 0u) {
    let inv = 1.0 / max(s.y, 1.0);
    if (p.mode == 0u) { O[0] = s.x * inv; }
    else if (p.mode == 1u) { O[0] = s.x; }
    else { O[0] = inv; }
  }
}`;

/**
 * One workgroup over all rows: writes to `out[0]` the mean of the per-row losses over the rows
 * that count (0 when none does), their sum, or `1 / max(count, 1)` (for the mean's backward;
 * `loss` is not read then).
 */
export function crossEntropyTotalKernel(
  ctx: GpuContext,
  loss: GPUBuffer,
  targets: GPUBuffer,
  out: GPUBuffer,
  rows: number,
  spec: TargetSpec,
  mode: TotalMode,
): void {
  const params = packParams([...targetParams(spec), rows, MODE_CODE[mode]]);
  ctx.dispatch(ctx.pipeline(TOTAL_WGSL), [loss, targets, out], params, [1]);
}

function backwardWgsl(layout: RowLayout): string {
  return /* wgsl */ `
struct P { ${STRUCT}, rows: u32, perRow: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> T: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read> S: array<f32>;
@group(0) @binding(4) var<storage, read_write> O: array<f32>;
@group(0) @binding(5) var<uniform> p: P;
${TARGET_WGSL}
${onlineLseWgsl("lse", layout)}
${rowMain(layout)}
  if (row >= p.rows) { return; }
  let start = row * p.classes;
  let t = targetOf(row);
  // The row's weight: its own output gradient (reduction "none") or the scalar one times S[0]
  // (1 for "sum", 1/count for "mean"); 0 when the row does not count.
  var w = select(G[0] * S[0], G[row], p.perRow != 0u);
  if (t < 0) { w = 0.0; }
  let ms = lse(lid, lane, start, p.classes);
  let inv = 1.0 / ms.y;
  for (var k = lane; k < p.classes; k += STEP) {
    let onehot = select(0.0, 1.0, i32(k) == t);
    O[start + k] = (exp(X[start + k] - ms.x) * inv - onehot) * w;
  }
}`;
}

/**
 * Gradient of the cross-entropy with respect to the logits, written to `out` (`[rows, classes]`).
 * `g` is the output gradient: `[rows]` when `perRow`, else `[1]`, scaled by `scale[0]` (a
 * one-element buffer: 1 for a sum, 1/count for a mean; ignored when `perRow`).
 */
export function crossEntropyBackwardKernel(
  ctx: GpuContext,
  logits: GPUBuffer,
  targets: GPUBuffer,
  g: GPUBuffer,
  scale: GPUBuffer,
  out: GPUBuffer,
  rows: number,
  spec: TargetSpec,
  perRow: boolean,
): void {
  if (rows === 0 || spec.classes === 0) return;
  const layout = rowLayout(ctx, spec.classes, rows);
  const params = packParams([...targetParams(spec), rows, perRow ? 1 : 0]);
  const code = cachedWgsl(
    `crossEntropyBackward ${layout.perThread} ${layout.wg}`,
    () => backwardWgsl(layout),
  );
  launchRows(ctx, code, [logits, targets, g, scale, out], params, rows, layout);
}
