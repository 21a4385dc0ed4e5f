/**
 * Phi (`PhiForCausalLM`, the phi-1/phi-1.5/phi-2 family): one LayerNorm feeding attention and
 * the MLP in parallel, `x + attn(ln(x)) + mlp(ln(x))`; partial rotary (only the first
 * `rotaryDim` dimensions of each head rotate); biased q/k/v and `dense` output projection;
 * gelu_new MLP `fc2(gelu(fc1(x)))`; `final_layernorm`; `lm_head` with a bias.
 *
 * @module
 */
import { add } from "../autograd/ops/elementwise.ts";
import type { Tensor } from "../autograd/tensor.ts";
import { rotaryQkv } from "./llama.ts";
import type { BlockState, FamilyBlock, TransformerLM } from "./transformer.ts";

export const PhiBlock: FamilyBlock = {
  embedName: "model.embed_tokens.weight",
  finalNorm: "model.final_layernorm",
  weightLayout: "out_in",

  inputHidden(_m: TransformerLM, x: Tensor): Tensor {
    return x;
  },

  block(m: TransformerLM, layer: number, x: Tensor, s: BlockState): Tensor {
    const p = `model.layers.${layer}.`;
    const h = m.norm(`${p}input_layernorm`, x);
    const [q, k, v] = rotaryQkv(m, `${p}self_attn.`, h, s);
    const attn = m.proj(`${p}self_attn.dense`, m.attend(layer, q, k, v, s));
    const mlp = m.proj(`${p}mlp.fc2`, m.act(m.proj(`${p}mlp.fc1`, h)));
    return add(add(x, attn), mlp);
  },
};
