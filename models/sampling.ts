/**
 * Choosing the next token on the GPU: greedy (argmax), or sampling with temperature, top-k and
 * top-p (nucleus), one workgroup per row. The chosen ids stay in a GPU tensor that feeds the
 * next decoding step directly, so a decoding loop reads back only the ids it reports.
 *
 * Top-k and top-p thresholds are found exactly without sorting: logits are mapped to
 * order-preserving u32 keys and the threshold key is built bit by bit from the top (32 counting
 * passes over the row). Random numbers come from a PCG hash of (seed, step, row), so a seed
 * fixes the whole generation and nothing is uploaded per step.
 */
import type { GpuContext } from "../kernels/device.ts";
import { packParams } from "../kernels/launch.ts";
import { fmtShape, ShapeError, type Tensor } from "../autograd/tensor.ts";

/** How to pick the next token. `temperature <= 0` (or `greedy`) means argmax. */
export interface SamplingOptions {
  /** Always take the most likely token (the default when no temperature is given). */
  greedy?: boolean;
  /** Divide the logits by this before sampling; ≤ 0 means greedy. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 = no limit). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1 = no limit). */
  topP?: number;
  /** Seed of the sampling stream (same seed, same tokens). */
  seed?: number;
}

const WG = 256;

const SAMPLE_WGSL = /* wgsl */ `
struct P { B: u32, V: u32, mode: u32, topK: u32, invTemp: f32, topP: f32, seed: u32, step: u32,
           eos: i32, pad: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> ids: array<f32>;
@group(0) @binding(2) var<storage, read_write> finished: array<f32>;
@group(0) @binding(3) var<uniform> p: P;

const WG = ${WG}u;
var<workgroup> redF: array<f32, ${WG}>;
var<workgroup> redU: array<u32, ${WG}>;
var<workgroup> total: f32;
var<workgroup> chosen: atomic<u32>;
var<workgroup> lastKept: atomic<u32>;

// Order-preserving map f32 -> u32 (larger float, larger key).
fn orderKey(f: f32) -> u32 {
  let b = bitcast<u32>(f);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

fn sumF(tid: u32, v: f32) -> f32 {
  redF[tid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (tid < s) { redF[tid] = redF[tid] + redF[tid + s]; }
    workgroupBarrier();
  }
  let r = redF[0];
  workgroupBarrier();
  return r;
}

fn sumU(tid: u32, v: u32) -> u32 {
  redU[tid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (tid < s) { redU[tid] = redU[tid] + redU[tid + s]; }
    workgroupBarrier();
  }
  let r = redU[0];
  workgroupBarrier();
  return r;
}

// Max value with the lowest index among ties (torch.argmax's choice).
fn argmaxRow(tid: u32, base: u32) -> u32 {
  var bv = -3.0e38;
  var bi = 0xffffffffu;
  for (var i = tid; i < p.V; i += WG) {
    let v = logits[base + i];
    if (v > bv || bi == 0xffffffffu) { bv = v; bi = i; }
  }
  redF[tid] = bv;
  redU[tid] = bi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (tid < s) {
      let ov = redF[tid + s];
      let oi = redU[tid + s];
      let mine = redU[tid];
      if (oi != 0xffffffffu && (mine == 0xffffffffu || ov > redF[tid] || (ov == redF[tid] && oi < mine))) {
        redF[tid] = ov;
        redU[tid] = oi;
      }
    }
    workgroupBarrier();
  }
  let r = redU[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let row = wid.x;
  let base = row * p.V;
  var tok = 0u;
  if (p.mode == 0u) {
    tok = argmaxRow(tid, base);
  } else {
    // Row maximum, for a stable exp.
    var m = -3.0e38;
    for (var i = tid; i < p.V; i += WG) { m = max(m, logits[base + i]); }
    redF[tid] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (tid < s) { redF[tid] = max(redF[tid], redF[tid + s]); }
      workgroupBarrier();
    }
    m = redF[0];
    workgroupBarrier();

    // Top-k: the largest key K with count(key >= K) >= k, i.e. the k-th largest key.
    var kth = 0u;
    if (p.topK > 0u && p.topK < p.V) {
      var K = 0u;
      for (var bit = 31i; bit >= 0i; bit--) {
        let cand = K | (1u << u32(bit));
        var c = 0u;
        for (var i = tid; i < p.V; i += WG) { c += select(0u, 1u, orderKey(logits[base + i]) >= cand); }
        if (sumU(tid, c) >= p.topK) { K = cand; }
      }
      kth = K;
    }

    // Top-p: the largest key K whose kept mass (key >= max(K, kth)) still reaches topP.
    var thr = kth;
    if (p.topP < 1.0) {
      var sk = 0.0;
      for (var i = tid; i < p.V; i += WG) {
        let l = logits[base + i];
        if (orderKey(l) >= kth) { sk += exp((l - m) * p.invTemp); }
      }
      let goalMass = p.topP * sumF(tid, sk);
      var K = 0u;
      for (var bit = 31i; bit >= 0i; bit--) {
        let cand = K | (1u << u32(bit));
        let t = max(cand, kth);
        var s = 0.0;
        for (var i = tid; i < p.V; i += WG) {
          let l = logits[base + i];
          if (orderKey(l) >= t) { s += exp((l - m) * p.invTemp); }
        }
        if (sumF(tid, s) >= goalMass) { K = cand; }
      }
      thr = max(K, kth);
    }

    // Inverse CDF in index order over the kept tokens: per-thread contiguous chunks, a serial
    // exclusive scan of the 256 chunk sums, then the owning thread scans its chunk.
    let chunk = (p.V + WG - 1u) / WG;
    let start = min(tid * chunk, p.V);
    let end = min(start + chunk, p.V);
    var cs = 0.0;
    var myLast = 0u;
    var hasKept = false;
    for (var i = start; i < end; i++) {
      let l = logits[base + i];
      if (orderKey(l) >= thr) { cs += exp((l - m) * p.invTemp); myLast = i; hasKept = true; }
    }
    if (tid == 0u) {
      atomicStore(&chosen, 0xffffffffu);
      atomicStore(&lastKept, 0u);
    }
    redF[tid] = cs;
    workgroupBarrier();
    if (tid == 0u) {
      var acc = 0.0;
      for (var t = 0u; t < WG; t++) {
        let c = redF[t];
        redF[t] = acc;
        acc = acc + c;
      }
      total = acc;
    }
    workgroupBarrier();
    if (hasKept) { atomicMax(&lastKept, myLast); }
    let u = f32(pcg(pcg(pcg(p.seed) ^ p.step) ^ row) >> 8u) / 16777216.0;
    let goal = u * total;
    let pre = redF[tid];
    if (cs > 0.0 && goal >= pre && goal < pre + cs) {
      var acc = pre;
      var found = myLast;
      for (var i = start; i < end; i++) {
        let l = logits[base + i];
        if (orderKey(l) >= thr) {
          acc = acc + exp((l - m) * p.invTemp);
          if (goal < acc) { found = i; break; }
        }
      }
      atomicMin(&chosen, found);
    }
    workgroupBarrier();
    let c = atomicLoad(&chosen);
    tok = select(c, atomicLoad(&lastKept), c == 0xffffffffu);
  }
  if (tid == 0u) {
    let done = finished[row] > 0.5;
    let out = select(tok, p.pad, done);
    ids[row] = f32(out);
    if (!done && p.eos >= 0 && out == u32(p.eos)) { finished[row] = 1.0; }
  }
}`;

/**
 * Picks one token per row of `logits` [B, V] and writes it (as an f32 integer) into `ids` [B].
 * Rows whose `finished` flag is set get `padId`; a row that picks `eosId` gets its flag set.
 * `step` varies the random stream between decoding steps.
 */
export function sampleTokens(
  logits: Tensor,
  ids: Tensor,
  finished: Tensor,
  opts: SamplingOptions & { step: number; eosId: number | null; padId: number },
): void {
  const ctx: GpuContext = logits.ctx;
  if (logits.rank !== 2) {
    throw new ShapeError(`sampleTokens: logits must be [B, V], got ${fmtShape(logits.shape)}`);
  }
  const [B, V] = logits.shape;
  if (ids.size !== B || finished.size !== B) {
    throw new ShapeError(
      `sampleTokens: ids and finished need ${B} elements, got ${ids.size} and ${finished.size}`,
    );
  }
  const greedy = opts.greedy || !(opts.temperature !== undefined && opts.temperature > 0);
  const temperature = opts.temperature ?? 1;
  const topK = Math.max(0, Math.floor(opts.topK ?? 0));
  const topP = opts.topP ?? 1;
  const params = packParams([
    B,
    V,
    greedy ? 0 : 1,
    topK,
    { f: greedy ? 1 : 1 / temperature },
    { f: topP },
    (opts.seed ?? 0) >>> 0,
    opts.step >>> 0,
    opts.eosId ?? -1,
    opts.padId,
    0,
    0,
  ]);
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (B > max) throw new ShapeError(`sampleTokens: batch ${B} exceeds ${max} rows per dispatch`);
  ctx.dispatch(ctx.pipeline(SAMPLE_WGSL), [logits.buffer, ids.buffer, finished.buffer], params, [B]);
}
