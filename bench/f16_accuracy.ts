/**
 * The accuracy and memory cost of f16 weights (`loadModel(..., { weights: "f16" })`), the figures
 * of docs/f16.md:
 *
 * 1. the golden models (random f32 weights, ../shared/golden) with f32 and f16 weights against
 *    transformers' float64 values: logits, last hidden state, CE, the input-embedding gradient,
 *    GRADMM's matching loss and its gradient w.r.t. x;
 * 2. the trained checkpoints (../shared/models): the matching loss of a real SST-2 target and its
 *    gradient w.r.t. x, f16 against f32; the perplexity of SST-2 validation sentences; the z-step's
 *    top-200 candidate sets and the decoded tokens;
 * 3. the models' pool bytes, f32 and f16.
 *
 *   deno run -A bench/f16_accuracy.ts [--sentences=50] [--json]
 *
 * Relative errors are max|a − b| / max|b| over the compared elements.
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { lastHidden } from "../admm/problem.ts";
import { makeTarget, matchingLoss, oneHot } from "../admm/matching.ts";
import { lastLayerFactors } from "../admm/target.ts";
import { bannedTokenMask } from "../admm/tokenFilter.ts";
import { constrainedDecode, disposeProjector, makeProjector, topkCosine } from "../admm/zstep.ts";
import { crossEntropy } from "../autograd/ops/loss.ts";
import { concat, select } from "../autograd/ops/shape.ts";
import { Rng } from "../autograd/random.ts";
import { backward } from "../autograd/tape.ts";
import { scope, Tensor } from "../autograd/tensor.ts";
import { createContext, type GpuContext } from "../kernels/device.ts";
import { folderSink, loadModel, loadTokenizer, openSafetensors } from "../host/files.ts";
import type { CausalLM } from "../models/model.ts";
import { sequenceNll } from "../models/perplexity.ts";
import { parseJsonl } from "../data/examples.ts";
import { noGrad } from "../autograd/grad_mode.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SHARED = Deno.env.get("GRADMM_SHARED") ?? join(ROOT, "..", "shared");

function relErr(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  keep: (i: number) => boolean = () => true,
): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    if (!keep(i)) continue;
    if (!Number.isFinite(a[i])) return Infinity;
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

const fmt = (x: number) => x === 0 ? "0" : x.toExponential(2);

/** Golden model `family` with `weights` against the float64 goldens. */
async function golden(
  c: GpuContext,
  family: string,
  weights: "f32" | "f16",
): Promise<Record<string, number>> {
  const dir = join(SHARED, "golden", family);
  const model = await loadModel(c, dir, { weights });
  using g = await openSafetensors(join(dir, "golden.safetensors"));
  const ids = await g.read("ids");
  const mask = await g.read("attention_mask");
  const [B, T] = g.info("ids").shape;
  const { hiddenSize: d, vocabSize: V } = model.config;
  const f: Record<string, number> = {};
  await scope(c, async () => {
    const embeds = noGrad(c, () => model.embed(Tensor.from(c, ids, [B, T])));
    embeds.requiresGrad = true;
    const out = model.forward({
      embeds,
      attentionMask: Tensor.from(c, mask, [B, T]),
      positionIds: Tensor.from(c, await g.read("position_ids"), [B, T]),
      logits: "all",
    });
    const ce = crossEntropy(select(out.logits!, 1, T - 1), Array.from(await g.read("labels")));
    backward(ce);
    const real = (w: number) => (i: number) => mask[Math.floor(i / w)] > 0.5;
    f.logits = relErr(await out.logits!.read(), await g.read("logits"), real(V));
    f.last_hidden = relErr(await out.lastHidden.read(), await g.read("last_hidden"), real(d));
    f.ce_last = relErr(await ce.read(), await g.read("ce_last"));
    f.grad_inputs_embeds = relErr(await embeds.grad!.read(), await g.read("grad_inputs_embeds"));
    const ints = async (n: string) => Array.from(await g.readTyped(n) as Int32Array);
    const [, len] = g.info("real_ids").shape;
    const rIds = await ints("real_ids");
    const rMask = await ints("real_attention_mask");
    const rows: number[][] = [];
    for (let i = 0; i < rIds.length / len; i++) {
      rows.push(rIds.slice(i * len, (i + 1) * len).filter((_, j) => rMask[i * len + j] === 1));
    }
    const { residuals, hidden } = await lastLayerFactors(model, rows, await ints("real_labels"), 0);
    const target = makeTarget(residuals, hidden, model.headBias !== null, null);
    const synX = Tensor.from(c, await g.read("syn_x"), g.info("syn_x").shape, { requiresGrad: true });
    const prompt = await ints("syn_prompt_ids");
    const b = synX.shape[0];
    const pe = noGrad(
      c,
      () => model.embed(Tensor.from(c, Array.from({ length: b }, () => prompt).flat(), [b, prompt.length])),
    );
    const loss = matchingLoss(target, lastHidden(model, concat([synX, pe], 1)), {
      weight: model.headRows,
      bias: model.headBias,
    }, oneHot(c, await ints("syn_labels"), V));
    backward(loss);
    f.match_cos = relErr(await loss.read(), await g.read("match_cos"));
    f.match_grad_x = relErr(await synX.grad!.read(), await g.read("match_grad_x"));
  });
  model.dispose();
  return f;
}

interface Trained {
  loss: number;
  gradX: Float32Array;
  nll: number[];
  candidates: Float32Array;
  decoded: number[][];
  modelBytes: number;
}

/** The measurements on a trained checkpoint with `weights`. */
async function trained(
  c: GpuContext,
  dir: string,
  weights: "f32" | "f16",
  sentences: string[],
  labels: number[],
) {
  const tok = await loadTokenizer(dir);
  await c.sync();
  const before = c.pool.stats.bytesLive;
  const model: CausalLM = await loadModel(c, dir, { weights });
  await c.sync();
  const modelBytes = c.pool.stats.bytesLive - before;
  const [V, d] = model.embedRows.shape;
  const suffix = " It was";
  const labelIds = [" bad", " great"].map((w) => tok.encode(w)[0]);
  const rows = sentences.map((s) => tok.encode(s + suffix));
  const nll = (await sequenceNll(model, sentences.map((s) => tok.encode(s)))).map((x) => x.nll / x.tokens);
  const r: Partial<Trained> = { nll, modelBytes };
  await scope(c, async () => {
    // A class target from the real sentences of label 1, and a random synthetic batch x.
    const pos = rows.filter((_, i) => labels[i] === 1);
    const { residuals, hidden } = await lastLayerFactors(
      model,
      pos,
      pos.map(() => labelIds[1]),
      tok.padId ?? 0,
    );
    const target = makeTarget(residuals, hidden, model.headBias !== null, null);
    const rng = new Rng(7);
    const B = 10, T = 12;
    const x = Tensor.from(c, rng.normals(B * T * d, 0.05), [B, T, d], { requiresGrad: true });
    const suffixIds = tok.encode(suffix);
    const se = noGrad(
      c,
      () =>
        model.embed(Tensor.from(c, Array.from({ length: B }, () => suffixIds).flat(), [B, suffixIds.length])),
    );
    const loss = matchingLoss(target, lastHidden(model, concat([x, se], 1)), {
      weight: model.headRows,
      bias: model.headBias,
    }, oneHot(c, new Array(B).fill(labelIds[1]), V));
    backward(loss);
    r.loss = (await loss.read())[0];
    r.gradX = await x.grad!.read();
    // The z-step on the same x: top-200 cosine candidates and the constrained decode.
    const banned = bannedTokenMask(V, tok.vocabSize, (id) => tok.decode([id]));
    const projector = makeProjector(model, banned, 200);
    const cand = topkCosine(projector, x);
    r.candidates = await cand.read();
    r.decoded = await constrainedDecode(model, cand, tok.encode("The"), suffixIds);
    disposeProjector(projector);
  });
  model.dispose();
  return r as Trained;
}

/**
 * A copy of a checkpoint whose weights use all 24 bits of f32, as those of a model trained in f32
 * do: each value times (1 + u), u uniform in ±2⁻¹⁰ (a change far below the model's own noise, but
 * enough that f16 must round every value). Returns its folder (removed at exit).
 */
async function perturbedCopy(c: GpuContext, dir: string): Promise<string> {
  const out = await Deno.makeTempDir({ prefix: "f16-perturbed-" });
  addEventListener("unload", () => Deno.removeSync(out, { recursive: true }));
  const model = await loadModel(c, dir);
  const rng = new Rng(13);
  for (const t of model.parameters().values()) {
    const v = await t.read();
    for (let i = 0; i < v.length; i++) v[i] *= 1 + (rng.uniform() * 2 - 1) * 2 ** -10;
    t.write(v);
  }
  await model.save(folderSink(out));
  model.dispose();
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && !/safetensors|^config\.json$/.test(e.name)) {
      await Deno.copyFile(join(dir, e.name), join(out, e.name));
    }
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { sentences: { type: "string", default: "50" }, json: { type: "boolean", default: false } },
  });
  const n = Number(values.sentences);
  const c = await createContext();
  const out: Record<string, unknown> = { adapter: c.adapterName };
  console.log(`f16 accuracy on ${c.adapterName}\n`);

  console.log("## Golden models vs transformers float64 (max|a−b|/max|b|)\n");
  console.log(
    "| model | weights | logits | last hidden | CE | dCE/d inputs_embeds | match_cos | match_grad_x |",
  );
  console.log("|---|---|---|---|---|---|---|---|");
  for (const family of ["gpt2", "llama", "phi"]) {
    for (const w of ["f32", "f16"] as const) {
      const f = await golden(c, family, w);
      out[`golden ${family} ${w}`] = f;
      console.log(
        `| ${family} | ${w} | ${fmt(f.logits)} | ${fmt(f.last_hidden)} | ${fmt(f.ce_last)} | ${
          fmt(f.grad_inputs_embeds)
        } | ${fmt(f.match_cos)} | ${fmt(f.match_grad_x)} |`,
      );
    }
  }

  const data = parseJsonl(await Deno.readTextFile(join(ROOT, "assets", "sst2-validation.jsonl")), {
    source: "sst2-validation.jsonl",
  }).slice(0, n);
  const sentences = data.map((e) => e.text.trim());
  const labels = data.map((e) => e.label);
  console.log(`\n## Trained checkpoints: f16 vs f32 (${n} SST-2 validation sentences)\n`);
  console.log(
    "| model (stored as) | model MiB f32 → f16 | mean NLL f32 | mean NLL f16 | max abs ΔNLL | match loss f32 | rel. Δ loss | rel. err dL/dx | top-200 overlap | decoded tokens equal |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  const perturbed = await perturbedCopy(c, join(SHARED, "models", "gpt2-d128"));
  const models = [
    ["gpt2-d128", "BF16", join(SHARED, "models", "gpt2-d128")],
    ["gpt2-d256", "F16", join(SHARED, "models", "gpt2-d256")],
    ["tinystories-656k", "F32, bf16 values", join(SHARED, "models", "tinystories-656k")],
    ["gpt2-d128 perturbed", "F32, full mantissas", perturbed],
  ];
  for (const [name, stored, dir] of models) {
    const a = await trained(c, dir, "f32", sentences, labels);
    const b = await trained(c, dir, "f16", sentences, labels);
    const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
    const dNll = Math.max(...a.nll.map((x, i) => Math.abs(x - b.nll[i])));
    // Candidate sets per position: overlap of the id sets.
    const k = 200;
    let shared = 0;
    for (let p = 0; p < a.candidates.length / k; p++) {
      const s = new Set(a.candidates.subarray(p * k, (p + 1) * k));
      for (const id of b.candidates.subarray(p * k, (p + 1) * k)) if (s.has(id)) shared++;
    }
    let same = 0, total = 0;
    a.decoded.forEach((row, i) =>
      row.forEach((id, j) => {
        total++;
        if (id === b.decoded[i][j]) same++;
      })
    );
    const row = {
      modelMiB: [a.modelBytes / 2 ** 20, b.modelBytes / 2 ** 20],
      nll: [mean(a.nll), mean(b.nll)],
      maxAbsDeltaNll: dNll,
      matchLoss: [a.loss, b.loss],
      relDeltaLoss: Math.abs(a.loss - b.loss) / Math.abs(a.loss),
      relErrGradX: relErr(b.gradX, a.gradX),
      candidateOverlap: shared / a.candidates.length,
      decodedEqual: same / total,
    };
    out[name] = row;
    console.log(
      `| ${name} (${stored}) | ${row.modelMiB[0].toFixed(1)} → ${row.modelMiB[1].toFixed(1)} | ${
        row.nll[0].toFixed(5)
      } | ${row.nll[1].toFixed(5)} | ${fmt(dNll)} | ${row.matchLoss[0].toPrecision(6)} | ${
        fmt(row.relDeltaLoss)
      } | ${fmt(row.relErrGradX)} | ${(100 * row.candidateOverlap).toFixed(2)}% | ${
        (100 * row.decodedEqual).toFixed(1)
      }% |`,
    );
  }
  if (values.json) console.log(JSON.stringify(out));
}

if (import.meta.main) await main();
