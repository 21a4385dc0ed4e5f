/**
 * Fine-tuning: the gathered option scoring equals the evaluation helper's full-logits scoring,
 * the plan dedupes shared prompts, the loss goes down on a tiny problem, the best checkpoint is
 * restored, and a saved checkpoint reloads with identical logits.
 */
import { join } from "node:path";
import { folderSink, loadModel, loadTokenizer } from "../../host/files.ts";
import { getTask } from "../../data/tasks.ts";
import { optionLogLikelihoods } from "../../train/classify.ts";
import {
  batchOrder,
  classificationLoss,
  evaluateAccuracy,
  finetune,
  FINETUNE_DEFAULTS,
  planScoring,
  scoreExamples,
  tokenizeExamples,
} from "../../train/finetune.ts";
import { scope, Tensor } from "../../autograd/tensor.ts";
import { backward } from "../../autograd/tape.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { fixtureModel } from "../fixtures.ts";
import { noGrad } from "../../autograd/grad_mode.ts";

const sst2 = getTask("sst2");
const TEXTS = [
  { text: "a gorgeous , witty , seductive movie . ", label: 1 },
  { text: "the acting is dreadful ", label: 0 },
  { text: "one of the year 's best films ", label: 1 },
  { text: "a boring , pointless mess ", label: 0 },
];

Deno.test("planScoring: single-token options share one sequence; multi-token options get their own", () => {
  const one = planScoring([{ prompt: [5, 6, 7], options: [[1], [2]], label: 0 }], 0);
  if (one.sequences !== 1 || one.tokens.join() !== "1,2" || one.gather.join() !== "2,2") {
    throw new Error(`single-token plan wrong: ${JSON.stringify(one)}`);
  }
  const two = planScoring(
    [
      { prompt: [5, 6], options: [[1, 3], [2]], label: 1 },
      { prompt: [9, 9, 9, 9], options: [[1, 3], [2]], label: 0 },
    ],
    0,
    Infinity,
  );
  // Example 0: sequences [5,6,1] (option 0) and [5,6] (option 1); example 1: [9,9,9,9,1] and [9,9,9,9].
  if (two.sequences !== 4 || two.length !== 5) {
    throw new Error(`expected 4 sequences of 5, got ${two.sequences}×${two.length}`);
  }
  // Option 0 of example 0 predicts 1 at padded position 3 (row 0) and 3 at position 4.
  if (two.gather.slice(0, 3).join() !== "3,4,9") throw new Error(`gather ${two.gather}`);
  const avg = Array.from(two.average.subarray(0, two.tokens.length));
  if (avg.join() !== "0.5,0.5,0,0,0,0") throw new Error(`averaging row ${avg}`);
  const cut = planScoring([{ prompt: [1, 2, 3, 4, 5, 6], options: [[7], [8]], label: 0 }], 0, 4);
  if (cut.length !== 4 || cut.gather[0] !== 3) throw new Error("truncation should keep the last 4 tokens");
});

Deno.test("batchOrder: seeded epochs cover every example once, last batch smaller", () => {
  const it = batchOrder(10, 4, 7);
  const epoch = [it.next().value!, it.next().value!, it.next().value!];
  if (epoch.map((b) => b.length).join() !== "4,4,2") {
    throw new Error(`batch sizes ${epoch.map((b) => b.length)}`);
  }
  if (epoch.flat().sort((a, b) => a - b).join() !== "0,1,2,3,4,5,6,7,8,9") {
    throw new Error("not a permutation");
  }
  const again = batchOrder(10, 4, 7).next().value!;
  if (again.join() !== epoch[0].join()) throw new Error("same seed, different order");
});

Deno.test({
  name:
    "option scores match optionLogLikelihoods (full logits) on tiny-gpt2, single- and multi-token options",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const dir = fixtureModel("tiny-gpt2");
    const model = await loadModel(c, dir);
    const tok = await loadTokenizer(dir);
    const enc = { encode: (t: string) => tok.encode(t), padId: tok.padId ?? 0 };
    const examples = tokenizeExamples(enc, sst2, TEXTS);
    // A two-token option on top of the task's single-token ones.
    const multi = examples.map((e) => ({ ...e, options: [...e.options, enc.encode(" so-so")] }));
    for (const set of [examples, multi]) {
      const mine = await scoreExamples(model, set, enc.padId, { batchSize: 3 });
      const ref = await optionLogLikelihoods(
        model,
        set.map((e) => ({ prompt: e.prompt, options: e.options })),
        enc.padId,
        5,
      );
      for (let i = 0; i < set.length; i++) {
        for (let k = 0; k < set[i].options.length; k++) {
          if (Math.abs(mine[i][k] - ref[i][k]) > 1e-4) {
            throw new Error(`score [${i}][${k}] ${mine[i][k]} vs ${ref[i][k]}`);
          }
        }
      }
    }
    model.dispose();
  },
});

Deno.test({
  name:
    "the option-score loss's gradient matches finite differences on tiny-gpt2 (embedding rows of the options)",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const dir = fixtureModel("tiny-gpt2");
    const model = await loadModel(c, dir, { requiresGrad: true });
    const tok = await loadTokenizer(dir);
    const enc = { encode: (t: string) => tok.encode(t), padId: tok.padId ?? 0 };
    const plan = planScoring(tokenizeExamples(enc, sst2, TEXTS.slice(0, 2)), enc.padId);
    const lossAt = () => scope(c, () => noGrad(c, () => classificationLoss(model, plan)).item());
    await scope(c, async () => {
      const l = classificationLoss(model, plan);
      backward(l);
      await l.item();
    });
    const wte = model.parameters().get("transformer.wte.weight")!;
    const g = await wte.grad!.read();
    const data = await wte.read();
    const eps = 1e-3;
    for (const word of [" great", " bad", " It"]) {
      const i = enc.encode(word)[0] * 2;
      const orig = data[i];
      data[i] = orig + eps;
      wte.write(data);
      const lp = await lossAt();
      data[i] = orig - eps;
      wte.write(data);
      const lm = await lossAt();
      data[i] = orig;
      wte.write(data);
      const fd = (lp - lm) / (2 * eps);
      if (Math.abs(fd - g[i]) > 2e-3 + 0.02 * Math.abs(fd)) {
        throw new Error(`d loss / d wte['${word}'][0]: ${g[i]} vs FD ${fd}`);
      }
    }
    model.dispose();
  },
});

Deno.test({
  name:
    "finetune on tiny-gpt2: the loss goes down, the best checkpoint is restored, a saved checkpoint reloads identically",
  ...gpuTest,
  fn: async () => {
    const c = await ctx();
    const dir = fixtureModel("tiny-gpt2");
    const model = await loadModel(c, dir);
    const tok = await loadTokenizer(dir);
    const enc = { encode: (t: string) => tok.encode(t), padId: tok.padId ?? 0 };
    // tiny-gpt2 (d = 2) can only learn a prior: every text is labelled " great".
    const train = tokenizeExamples(enc, sst2, TEXTS.map((e) => ({ ...e, label: 1 })));
    const valid = tokenizeExamples(enc, sst2, TEXTS);
    const o = {
      ...FINETUNE_DEFAULTS,
      steps: 12,
      batchSize: 2,
      lr: 0.05,
      maxGradNorm: 1,
      evalEvery: 4,
      seed: 1,
    };
    const scoresAt = new Map<number, number[][]>();
    const liveBefore = c.pool.stats.bytesLive;
    const liveAt: number[] = [];
    const res = await finetune(model, train, valid, enc.padId, o, async (e) => {
      if (e.kind === "step") liveAt.push(c.pool.stats.bytesLive);
      if (e.kind === "eval") scoresAt.set(e.step, await scoreExamples(model, train, enc.padId));
    });
    // GPU memory must not grow over the steps, and everything is returned at the end.
    if (liveAt[4] !== liveAt[10]) throw new Error(`live GPU bytes grew during training: ${liveAt}`);
    c.flush(); // buffers freed by the run go back to the pool at the next submit
    if (c.pool.stats.bytesLive !== liveBefore) {
      throw new Error(`live GPU bytes ${liveBefore} before, ${c.pool.stats.bytesLive} after`);
    }
    const first = res.history[0].loss, last = res.history.at(-1)!.loss;
    if (!(last < first - 0.2)) throw new Error(`loss did not go down: ${first} → ${last}`);
    if (res.evals.map((e) => e.step).join() !== "4,8,12") {
      throw new Error(`evals at ${res.evals.map((e) => e.step)}`);
    }
    const best = Math.max(...res.evals.map((e) => e.accuracy));
    if (res.bestAccuracy !== best || res.evals.find((e) => e.step === res.bestStep)!.accuracy !== best) {
      throw new Error(`best step ${res.bestStep} is not the first step with the best accuracy ${best}`);
    }
    const now = await scoreExamples(model, train, enc.padId);
    if (JSON.stringify(now) !== JSON.stringify(scoresAt.get(res.bestStep))) {
      throw new Error(`the model does not hold the step-${res.bestStep} weights after the run`);
    }
    for (const p of model.parameters().values()) {
      if (p.requiresGrad || p.grad) {
        throw new Error(`parameter ${p.label} still records gradients after the run`);
      }
    }
    const acc = await evaluateAccuracy(model, valid, enc.padId);
    if (acc.accuracy !== best) throw new Error(`restored weights give ${acc.accuracy}, best was ${best}`);

    // Save and reload: identical logits.
    const out = await Deno.makeTempDir();
    await model.save(folderSink(out));
    await Deno.copyFile(join(dir, "tokenizer.json"), join(out, "tokenizer.json"));
    const again = await loadModel(c, out);
    const idList = tok.encode("the movie was great , really");
    const ids = Tensor.from(c, idList, [1, idList.length]);
    const logitsOf = (m: typeof model) =>
      noGrad(c, () => scope(c, () => m.forward({ ids, logits: "last" }).logits!));
    const a = logitsOf(model), b = logitsOf(again);
    const [va, vb] = [await a.read(), await b.read()];
    for (let i = 0; i < va.length; i++) {
      if (va[i] !== vb[i]) throw new Error(`logit ${i}: ${va[i]} vs ${vb[i]}`);
    }
    const header = new TextDecoder().decode(
      Deno.readFileSync(join(out, "model.safetensors")).subarray(8, 4096),
    );
    if (!header.includes('"format":"pt"') || !header.includes('"F32"')) {
      throw new Error("checkpoint lacks F32 / format pt metadata");
    }
    for (const t of [a, b, ids]) t.dispose();
    again.dispose();
    model.dispose();
    await Deno.remove(out, { recursive: true });
  },
});
