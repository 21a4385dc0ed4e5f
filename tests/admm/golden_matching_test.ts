/**
 * GRADMM's matching step against Hugging Face transformers (tests/fixtures/golden): the real target
 * gradient, the matching loss `match_cos` and its gradient `match_grad_x`, which PyTorch computed
 * by double backward and we compute in closed form with one ordinary backward pass.
 * Measure: max |ours − golden| / max |golden| per tensor, at most 1e-4.
 */
import { makeTarget } from "../../admm/matching.ts";
import { lastLayerFactors } from "../../admm/target.ts";
import { matmul } from "../../autograd/ops/matmul.ts";
import { scope } from "../../autograd/tensor.ts";
import { loadModel, openSafetensors } from "../../host/files.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { fixture } from "../fixtures.ts";
import {
  checkFigures,
  goldenInts,
  goldenMatchingFigures,
  goldenRealRows,
  relErr,
} from "../models/golden_fixtures.ts";
import { noGrad } from "../../autograd/grad_mode.ts";

for (const family of ["gpt2", "llama", "phi"]) {
  Deno.test({
    name:
      `golden ${family}: target gradient, match_cos and match_grad_x (closed form vs PyTorch double backward)`,
    ...gpuTest,
    fn: async () => {
      const c = await ctx();
      const dir = fixture("golden", family);
      const g = await openSafetensors(`${dir}/golden.safetensors`);
      const model = await loadModel(c, dir);
      const rows = await goldenRealRows(g);
      const errors: Record<string, number> = {};
      await scope(c, async () => {
        const realLabels = await goldenInts(g, "real_labels");
        const { residuals, hidden } = await lastLayerFactors(model, rows, realLabels, 0);
        // The target gradient itself: T_W = R*ᵀ H* / N.
        const tw = noGrad(c, () => matmul(residuals, hidden, { transA: true }));
        const twv = (await tw.read()).map((x) => x / rows.length);
        errors.real_grad_head_weight = relErr(twv, await g.read("real_grad_head_weight"));
        const target = makeTarget(residuals, hidden, model.headBias !== null, null);
        const head = { weight: model.headWeight, bias: model.headBias };
        Object.assign(errors, await goldenMatchingFigures(c, model, g, target, head));
      });
      checkFigures(`golden ${family}`, errors, 1e-4);
      model.dispose();
      g.close();
    },
  });
}
