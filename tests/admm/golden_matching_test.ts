/**
 * GRADMM's matching step against Hugging Face transformers (../shared/golden): the real target
 * gradient, the matching loss `match_cos` and its gradient `match_grad_x`, which PyTorch computed
 * by double backward and we compute in closed form with one ordinary backward pass.
 * Measure: max |ours − golden| / max |golden| per tensor, at most 1e-4.
 */
import { lastHidden } from "../../admm/admm.ts";
import { makeTarget, oneHot } from "../../admm/matching.ts";
import { matchingLoss } from "../../admm/matching.ts";
import { lastLayerFactors } from "../../admm/target.ts";
import { concat } from "../../autograd/ops/shape.ts";
import { matmul } from "../../autograd/ops/matmul.ts";
import { backward } from "../../autograd/tape.ts";
import { scope, Tensor } from "../../autograd/tensor.ts";
import { openSafetensors } from "../../models/files.ts";
import { loadModel } from "../../models/model.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { shared } from "../shared.ts";

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

for (const family of ["gpt2", "llama", "phi"]) {
  Deno.test({
    name:
      `golden ${family}: target gradient, match_cos and match_grad_x (closed form vs PyTorch double backward)`,
    ...gpuTest,
    fn: async () => {
      const c = await ctx();
      const dir = shared("golden", family);
      const g = await openSafetensors(`${dir}/golden.safetensors`);
      const ints = async (n: string) => Array.from(await g.readTyped(n) as Int32Array);
      const model = await loadModel(c, dir);
      const [, len] = g.info("real_ids").shape;
      const ids = await ints("real_ids");
      const mask = await ints("real_attention_mask");
      const rows: number[][] = [];
      for (let i = 0; i < ids.length / len; i++) {
        rows.push(ids.slice(i * len, (i + 1) * len).filter((_, j) => mask[i * len + j] === 1));
      }
      const vocab = model.headWeight.shape[0];
      const errors: Record<string, number> = {};
      await scope(c, async () => {
        const { residuals, hidden } = await lastLayerFactors(model, rows, await ints("real_labels"), 0);
        // The target gradient itself: T_W = R*ᵀ H* / N.
        const tw = c.noGrad(() => matmul(residuals, hidden, { transA: true }));
        const twv = (await tw.read()).map((x) => x / rows.length);
        errors.real_grad_head_weight = relErr(twv, await g.read("real_grad_head_weight"));
        const target = makeTarget(residuals, hidden, model.headBias !== null, null);
        const synX = Tensor.from(c, await g.read("syn_x"), g.info("syn_x").shape, { requiresGrad: true });
        const promptIds = await ints("syn_prompt_ids");
        const b = synX.shape[0];
        const prompt = c.noGrad(() =>
          model.embed(
            Tensor.from(c, Array.from({ length: b }, () => promptIds).flat(), [b, promptIds.length]),
          )
        );
        const x = concat([synX, prompt], 1);
        const loss = matchingLoss(target, lastHidden(model, x), {
          weight: model.headWeight,
          bias: model.headBias,
        }, oneHot(c, await ints("syn_labels"), vocab));
        backward(loss);
        errors.match_cos = relErr(await loss.read(), await g.read("match_cos"));
        errors.match_grad_x = relErr(await synX.grad!.read(), await g.read("match_grad_x"));
      });
      console.log(
        `${family}: ${Object.entries(errors).map(([k, v]) => `${k} ${v.toExponential(2)}`).join(", ")}`,
      );
      for (const [k, v] of Object.entries(errors)) {
        if (!(v <= 1e-4)) throw new Error(`${family} ${k}: relative error ${v}`);
      }
      model.dispose();
      g.close();
    },
  });
}
