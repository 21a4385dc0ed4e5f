/**
 * Reading and comparing against the golden fixtures (tests/fixtures/golden/{gpt2,llama,phi}/
 * golden.safetensors, transformers' float64 values), as the golden, chunked, f16 and matching
 * tests all do.
 */
import { lastHidden } from "../../admm/problem.ts";
import { matchingLoss, oneHot, type OutputLayer, type TargetGradient } from "../../admm/matching.ts";
import { concat } from "../../autograd/ops/shape.ts";
import { backward } from "../../autograd/tape.ts";
import { Tensor } from "../../autograd/tensor.ts";
import type { GpuContext } from "../../kernels/device.ts";
import type { CausalLM } from "../../models/model.ts";
import type { SafetensorsFile } from "../../models/safetensors.ts";
import { noGrad } from "../../autograd/grad_mode.ts";

/** max|a − b| / max|b| over the indices where `keep(i)` holds (Infinity if `a` is not finite). */
export function relErr(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  keep: (i: number) => boolean = () => true,
): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    if (!keep(i)) continue;
    if (!Number.isFinite(a[i])) return Infinity;
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

/**
 * The forward inputs: ids, attention mask and position ids [B, T] (left padding), the labels of
 * the last position, and `real(width)`, which keeps the elements of rows `width` wide (logits,
 * hidden states) at real, non-padded positions.
 */
export async function goldenInputs(g: SafetensorsFile) {
  const ids = await g.read("ids");
  const mask = await g.read("attention_mask");
  const pos = await g.read("position_ids");
  const labels = Array.from(await g.read("labels"));
  const [B, T] = g.info("ids").shape;
  const real = (width: number) => (i: number) => mask[Math.floor(i / width)] > 0.5;
  return { ids, mask, pos, labels, B, T, real };
}

/** An int32 fixture as numbers. */
export async function goldenInts(g: SafetensorsFile, name: string): Promise<number[]> {
  return Array.from(await g.readTyped(name) as Int32Array);
}

/** The real batch of the matching step: each row's real (unpadded) token ids. */
export async function goldenRealRows(g: SafetensorsFile): Promise<number[][]> {
  const [, len] = g.info("real_ids").shape;
  const ids = await goldenInts(g, "real_ids");
  const mask = await goldenInts(g, "real_attention_mask");
  const rows: number[][] = [];
  for (let i = 0; i < ids.length / len; i++) {
    rows.push(ids.slice(i * len, (i + 1) * len).filter((_, j) => mask[i * len + j] === 1));
  }
  return rows;
}

/**
 * GRADMM's matching step on the golden synthetic batch: the loss of `syn_x` (the prompt's
 * embeddings after it) against `target` through `head`, and its gradient dL/dx, compared with
 * `match_cos` and `match_grad_x`. Call inside a scope.
 */
export async function goldenMatchingFigures(
  c: GpuContext,
  model: CausalLM,
  g: SafetensorsFile,
  target: TargetGradient,
  head: OutputLayer,
): Promise<{ match_cos: number; match_grad_x: number }> {
  const synX = Tensor.from(c, await g.read("syn_x"), g.info("syn_x").shape, { requiresGrad: true });
  const promptIds = await goldenInts(g, "syn_prompt_ids");
  const b = synX.shape[0];
  const prompt = noGrad(c, () =>
    model.embed(
      Tensor.from(c, Array.from({ length: b }, () => promptIds).flat(), [b, promptIds.length]),
    ));
  const loss = matchingLoss(
    target,
    lastHidden(model, concat([synX, prompt], 1)),
    head,
    oneHot(c, await goldenInts(g, "syn_labels"), model.config.vocabSize),
  );
  backward(loss);
  return {
    match_cos: relErr(await loss.read(), await g.read("match_cos")),
    match_grad_x: relErr(await synX.grad!.read(), await g.read("match_grad_x")),
  };
}

/** Prints `what: name error, …` and throws for the first figure above its tolerance. */
export function checkFigures(
  what: string,
  figures: Record<string, number>,
  tol: number | ((name: string) => number),
): void {
  console.log(`${what}: ${Object.entries(figures).map(([k, v]) => `${k} ${v.toExponential(2)}`).join(", ")}`);
  for (const [k, v] of Object.entries(figures)) {
    const t = typeof tol === "number" ? tol : tol(k);
    if (!(v <= t)) throw new Error(`${what}: ${k} relative error ${v} exceeds ${t}`);
  }
}
