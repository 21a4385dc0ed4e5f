/**
 * GPT-2 (`GPT2LMHeadModel`): learned absolute positions (`wpe`) added to the token embeddings,
 * pre-LayerNorm blocks, one combined q/k/v projection (`c_attn`, split in three), Conv1D weights
 * stored [in, out], gelu_new MLP, final `ln_f`, output layer tied to `wte`.
 *
 * @module
 */
import { add } from "../autograd/ops/elementwise.ts";
import { embedding } from "../autograd/ops/embedding.ts";
import type { Tensor } from "../autograd/tensor.ts";
import type { BlockState, FamilyBlock, TransformerLM } from "./transformer.ts";

export const Gpt2Block: FamilyBlock = {
  embedName: "transformer.wte.weight",
  finalNorm: "transformer.ln_f",
  weightLayout: "in_out",

  inputHidden(m: TransformerLM, x: Tensor, positions: Tensor): Tensor {
    return add(x, embedding(m.w("transformer.wpe.weight"), positions));
  },

  block(m: TransformerLM, layer: number, x: Tensor, s: BlockState): Tensor {
    const p = `transformer.h.${layer}.`;
    const qkv = m.proj(`${p}attn.c_attn`, m.norm(`${p}ln_1`, x));
    x = add(x, m.proj(`${p}attn.c_proj`, m.attendFused(layer, qkv, s)));
    const h = m.act(m.proj(`${p}mlp.c_fc`, m.norm(`${p}ln_2`, x)));
    return add(x, m.proj(`${p}mlp.c_proj`, h));
  },
};
