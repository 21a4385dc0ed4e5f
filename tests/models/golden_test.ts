/**
 * Each family against transformers' float64 reference (tests/fixtures/golden/{gpt2,llama,phi}):
 * logits and last hidden states on real (non-padded) positions, the last-position cross-entropy,
 * and its gradients with respect to the output layer and the input embeddings. Inputs enter as
 * embeddings E[ids] with the golden attention mask and position ids (left padding).
 *
 * Measure: max|a − b| / max|b| over the compared elements of each tensor, at most 1e-4.
 */
import { join } from "node:path";
import { scope, Tensor } from "../../autograd/tensor.ts";
import { backward } from "../../autograd/tape.ts";
import { select } from "../../autograd/ops/shape.ts";
import { crossEntropy } from "../../autograd/ops/loss.ts";
import { loadModel, openSafetensors } from "../../host/files.ts";
import { ctx, gpuTest } from "../helpers.ts";
import { fixture } from "../fixtures.ts";
import { checkFigures, goldenInputs, relErr } from "./golden_fixtures.ts";
import { noGrad } from "../../autograd/grad_mode.ts";

const TOL = 1e-4;

/** Achieved figures, printed at the end of each family's test. */
export const FIGURES: Record<string, Record<string, number>> = {};

for (const family of ["gpt2", "llama", "phi"]) {
  Deno.test({
    name: `golden ${family}: logits, last hidden, CE and its gradients match transformers float64 (rel 1e-4)`,
    ...gpuTest,
    fn: async () => {
      const dir = fixture("golden", family);
      const c = await ctx();
      const model = await loadModel(c, dir);
      using g = await openSafetensors(join(dir, "golden.safetensors"));
      const { ids, mask, pos, labels, B, T, real } = await goldenInputs(g);
      const d = model.config.hiddenSize, V = model.config.vocabSize;
      const figures: Record<string, number> = {};
      const check = (name: string, got: Float32Array, want: Float32Array, keep?: (i: number) => boolean) => {
        figures[name] = relErr(got, want, keep);
      };
      await scope(c, async () => {
        const idsT = Tensor.from(c, ids, [B, T]);
        const maskT = Tensor.from(c, mask, [B, T]);
        const posT = Tensor.from(c, pos, [B, T]);
        const embeds = noGrad(c, () => model.embed(idsT));
        embeds.requiresGrad = true;
        model.headWeight.requiresGrad = true;
        if (model.headBias) model.headBias.requiresGrad = true;
        const out = model.forward({ embeds, attentionMask: maskT, positionIds: posT, logits: "all" });
        const last = select(out.logits!, 1, T - 1);
        const ce = crossEntropy(last, labels);
        backward(ce);
        check("logits", await out.logits!.read(), await g.read("logits"), real(V));
        check("last_hidden", await out.lastHidden.read(), await g.read("last_hidden"), real(d));
        check("ce_last", await ce.read(), await g.read("ce_last"));
        check("grad_head_weight", await model.headWeight.grad!.read(), await g.read("grad_head_weight"));
        if (family === "phi") {
          check("grad_head_bias", await model.headBias!.grad!.read(), await g.read("grad_head_bias"));
        }
        check("grad_inputs_embeds", await embeds.grad!.read(), await g.read("grad_inputs_embeds"));

        // logits: "last" computes the same last-position logits.
        const lastOnly = noGrad(
          c,
          () => model.forward({ embeds, attentionMask: maskT, positionIds: posT, logits: "last" }).logits!,
        );
        check("logits_last_mode", await lastOnly.read(), await last.read());
        // Default positions from the mask are the golden ones.
        const byMask = noGrad(
          c,
          () => model.forward({ embeds, attentionMask: maskT, logits: "last" }).logits!,
        );
        check("default_positions", await byMask.read(), await last.read());
      });
      model.headWeight.zeroGrad();
      model.headBias?.zeroGrad();
      model.dispose();
      FIGURES[family] = figures;
      checkFigures(`golden ${family}`, figures, TOL);
    },
  });
}
