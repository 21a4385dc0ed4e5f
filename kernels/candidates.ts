/**
 * The step of GRADMM's constrained greedy decoding that runs on the GPU: for every row, the
 * candidate (from that position's top-k cosine set) with the highest language-model score.
 * Keeping it on the GPU means a whole decode reads nothing back until the end.
 */
import type { GpuContext } from "./device.ts";
import { packParams } from "./launch.ts";

const WG = 128;

const ARGMAX_SHARED = /* wgsl */ `var<workgroup> bestScore: array<f32, ${WG}>;
var<workgroup> bestId: array<u32, ${WG}>;`;

// Tree argmax over the workgroup's (score, id) pairs (ties: the lower id), then row b's choice is
// written to chosen[b, t] and next[b]. Each thread enters with its own best in `score`, `id`.
const ARGMAX_AND_STORE = /* wgsl */ `
  bestScore[lid] = score;
  bestId[lid] = id;
  workgroupBarrier();
  for (var stride = ${WG / 2}u; stride > 0u; stride = stride / 2u) {
    if (lid < stride) {
      let s = bestScore[lid + stride];
      let c = bestId[lid + stride];
      if (s > bestScore[lid] || (s == bestScore[lid] && c < bestId[lid])) {
        bestScore[lid] = s;
        bestId[lid] = c;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let c = select(0u, bestId[0], bestId[0] != 0xffffffffu);
    chosen[b * p.positions + p.t] = f32(c);
    next[b] = f32(c);
  }`;

const PICK_WGSL = /* wgsl */ `
struct P { vocab: u32, k: u32, positions: u32, t: u32 }
@group(0) @binding(0) var<storage, read> logits: array<f32>;      // [B, V]
@group(0) @binding(1) var<storage, read> candidates: array<f32>;  // [B, positions, k] token ids
@group(0) @binding(2) var<storage, read_write> chosen: array<f32>; // [B, positions]: column t written
@group(0) @binding(3) var<storage, read_write> next: array<f32>;   // [B]: the ids to feed next
@group(0) @binding(4) var<uniform> p: P;
${ARGMAX_SHARED}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.x;
  let cbase = (b * p.positions + p.t) * p.k;
  var score = -3.0e38;
  var id = 0xffffffffu;
  for (var j = lid; j < p.k; j += ${WG}u) {
    let c = u32(candidates[cbase + j]);
    if (c >= p.vocab) { continue; }
    let s = logits[b * p.vocab + c];
    // Highest score; on ties the lower token id (deterministic).
    if (s > score || (s == score && c < id)) { score = s; id = c; }
  }
${ARGMAX_AND_STORE}
}`;

/**
 * For each of `batch` rows: among `candidates[b, t, :]` pick the id with the highest
 * `logits[b, id]`, write it to `chosen[b, t]` and `next[b]`.
 */
export function pickCandidateKernel(
  ctx: GpuContext,
  logits: GPUBuffer,
  candidates: GPUBuffer,
  chosen: GPUBuffer,
  next: GPUBuffer,
  dims: { batch: number; vocab: number; k: number; positions: number; t: number },
): void {
  const params = packParams([dims.vocab, dims.k, dims.positions, dims.t]);
  ctx.dispatch(ctx.pipeline(PICK_WGSL), [logits, candidates, chosen, next], params, [dims.batch]);
}

const PICK_UNION_WGSL = /* wgsl */ `
struct P { vocab: u32, k: u32, positions: u32, t: u32, m: u32, noRepeat: u32 }
@group(0) @binding(0) var<storage, read> scores: array<f32>;      // [B, V]
@group(0) @binding(1) var<storage, read> candidates: array<f32>;  // [B, positions, k] token ids
@group(0) @binding(2) var<storage, read> extra: array<f32>;       // [B, m] more token ids
@group(0) @binding(3) var<storage, read_write> chosen: array<f32>; // [B, positions]: column t written
@group(0) @binding(4) var<storage, read_write> next: array<f32>;   // [B]: the ids to feed next
@group(0) @binding(5) var<uniform> p: P;
${ARGMAX_SHARED}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.x;
  let cbase = (b * p.positions + p.t) * p.k;
  let row = b * p.positions;
  var score = -3.0e38;
  var id = 0xffffffffu;
  for (var j = lid; j < p.k + p.m; j += ${WG}u) {
    var c: u32;
    if (j < p.k) { c = u32(candidates[cbase + j]); } else { c = u32(extra[b * p.m + j - p.k]); }
    if (c >= p.vocab) { continue; }
    var s = scores[b * p.vocab + c];
    // A token that would repeat a bigram of the row's decoded text ranks below every other (a
    // large finite penalty, so that a row whose every candidate repeats still gets its best).
    if (p.noRepeat == 1u && p.t >= 2u) {
      let prev = chosen[row + p.t - 1u];
      for (var q = 1u; q < p.t; q++) {
        if (chosen[row + q - 1u] == prev && u32(chosen[row + q]) == c) { s = s - 1.0e30; break; }
      }
    }
    if (s > score || (s == score && c < id)) { score = s; id = c; }
  }
${ARGMAX_AND_STORE}
}`;

/**
 * Like {@link pickCandidateKernel} over the union of two id lists per row: `candidates[b, t, :]`
 * (k ids) and `extra[b, :]` (m ids, e.g. the language model's own top tokens). An id in both
 * lists is simply scored twice. With `noRepeat`, a token that would repeat a bigram already in
 * `chosen[b, :t]` is taken only when every candidate would.
 */
export function pickUnionKernel(
  ctx: GpuContext,
  scores: GPUBuffer,
  candidates: GPUBuffer,
  extra: GPUBuffer,
  chosen: GPUBuffer,
  next: GPUBuffer,
  dims: {
    batch: number;
    vocab: number;
    k: number;
    m: number;
    positions: number;
    t: number;
    noRepeat: boolean;
  },
): void {
  const params = packParams([dims.vocab, dims.k, dims.positions, dims.t, dims.m, dims.noRepeat ? 1 : 0]);
  ctx.dispatch(ctx.pipeline(PICK_UNION_WGSL), [scores, candidates, extra, chosen, next], params, [
    dims.batch,
  ]);
}

/**
 * The pick-by-dot kernel for an output layer stored as `weightType` ([V, stride] rows, the first
 * `dim` of each used): the f32 layer here and the f16 one of matmul_f16.ts share it.
 */
export function pickByDotWgsl(weightType: "f32" | "f16"): string {
  return /* wgsl */ `${weightType === "f16" ? "enable f16;\n" : ""}
struct P { vocab: u32, k: u32, positions: u32, t: u32, dim: u32, steps: u32, hasBias: u32, stride: u32 }
@group(0) @binding(0) var<storage, read> hidden: array<f32>;     // [B, steps, dim]: the last step is used
@group(0) @binding(1) var<storage, read> weight: array<${weightType}>;     // [V, stride] output layer
@group(0) @binding(2) var<storage, read> bias: array<f32>;       // [V] (ignored without a bias)
@group(0) @binding(3) var<storage, read> candidates: array<f32>; // [B, positions, k] token ids
@group(0) @binding(4) var<storage, read_write> chosen: array<f32>;
@group(0) @binding(5) var<storage, read_write> next: array<f32>;
@group(0) @binding(6) var<uniform> p: P;
${ARGMAX_SHARED}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.x;
  let hbase = (b * p.steps + p.steps - 1u) * p.dim;
  let cbase = (b * p.positions + p.t) * p.k;
  var score = -3.0e38;
  var id = 0xffffffffu;
  for (var j = lid; j < p.k; j += ${WG}u) {
    let c = u32(candidates[cbase + j]);
    if (c >= p.vocab) { continue; }
    // The candidate's logit: one row of the output layer against the last hidden state.
    var s = select(0.0, bias[c], p.hasBias == 1u);
    let wbase = c * p.stride;
    for (var i = 0u; i < p.dim; i++) { s += f32(weight[wbase + i]) * hidden[hbase + i]; }
    // Highest score; on ties the lower token id (deterministic).
    if (s > score || (s == score && c < id)) { score = s; id = c; }
  }
${ARGMAX_AND_STORE}
}`;
}

const PICK_BY_DOT_WGSL = pickByDotWgsl("f32");

/**
 * Launches a {@link pickByDotWgsl} kernel: one workgroup per row. `bias` is already resolved (a
 * placeholder buffer when `hasBias` is false); `stride` is the weight's row length in elements.
 */
export function launchPickByDot(
  ctx: GpuContext,
  wgsl: string,
  buffers: {
    hidden: GPUBuffer;
    weight: GPUBuffer;
    bias: GPUBuffer;
    candidates: GPUBuffer;
    chosen: GPUBuffer;
    next: GPUBuffer;
  },
  dims: {
    batch: number;
    vocab: number;
    k: number;
    positions: number;
    t: number;
    dim: number;
    steps: number;
    hasBias: boolean;
    stride: number;
  },
): void {
  const params = packParams([
    dims.vocab,
    dims.k,
    dims.positions,
    dims.t,
    dims.dim,
    dims.steps,
    dims.hasBias ? 1 : 0,
    dims.stride,
  ]);
  const { hidden, weight, bias, candidates, chosen, next } = buffers;
  ctx.dispatch(ctx.pipeline(wgsl), [hidden, weight, bias, candidates, chosen, next], params, [dims.batch]);
}

/**
 * Like {@link pickCandidateKernel}, but computes only the k candidates' logits from the last
 * hidden state (`hidden` [B, steps, dim], last step) and the output layer, instead of reading
 * full-vocabulary logits: k·d multiply-adds per row instead of V·d (200·128 vs 50,257·128).
 * The argmax is the same up to float rounding of near-ties.
 */
export function pickCandidateByDotKernel(
  ctx: GpuContext,
  hidden: GPUBuffer,
  weight: GPUBuffer,
  bias: GPUBuffer | null,
  candidates: GPUBuffer,
  chosen: GPUBuffer,
  next: GPUBuffer,
  dims: { batch: number; vocab: number; k: number; positions: number; t: number; dim: number; steps: number },
): void {
  launchPickByDot(
    ctx,
    PICK_BY_DOT_WGSL,
    { hidden, weight, bias: bias ?? weight, candidates, chosen, next },
    { ...dims, hasBias: bias !== null, stride: dims.dim },
  );
}
