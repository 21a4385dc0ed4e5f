/**
 * Llama (`LlamaForCausalLM`): RMSNorm, rotary positions on q and k, grouped-query attention
 * (fewer key/value heads than query heads), SiLU-gated MLP `down(silu(gate(x)) · up(x))`,
 * nn.Linear weights stored [out, in], optional untied `lm_head`.
 *
 * @module
 */
import { add, mul } from "../autograd/ops/elementwise.ts";
import { rope } from "../autograd/ops/rope.ts";
import type { Tensor } from "../autograd/tensor.ts";
import type { BlockState, FamilyBlock, TransformerLM } from "./transformer.ts";

/** q, k (rotated) and v of a rotary-family attention layer: [B, H(kv), T, Dh]. */
export function rotaryQkv(
  m: TransformerLM,
  prefix: string,
  h: Tensor,
  s: BlockState,
): [Tensor, Tensor, Tensor] {
  const c = m.config;
  const ropeOpts = { rotaryDim: c.rotaryDim, theta: c.ropeTheta! };
  const q = rope(m.splitHeads(m.proj(`${prefix}q_proj`, h), c.numHeads), s.positions, ropeOpts);
  const k = rope(m.splitHeads(m.proj(`${prefix}k_proj`, h), c.numKvHeads), s.positions, ropeOpts);
  const v = m.splitHeads(m.proj(`${prefix}v_proj`, h), c.numKvHeads);
  return [q, k, v];
}

export const LlamaBlock: FamilyBlock = {
  embedName: "model.embed_tokens.weight",
  finalNorm: "model.norm",
  weightLayout: "out_in",

  inputHidden(_m: TransformerLM, x: Tensor): Tensor {
    return x;
  },

  block(m: TransformerLM, layer: number, x: Tensor, s: BlockState): Tensor {
    const p = `model.layers.${layer}.`;
    const [q, k, v] = rotaryQkv(m, `${p}self_attn.`, m.norm(`${p}input_layernorm`, x), s);
    x = add(x, m.proj(`${p}self_attn.o_proj`, m.attend(layer, q, k, v, s)));
    const h = m.norm(`${p}post_attention_layernorm`, x);
    const gated = mul(m.act(m.proj(`${p}mlp.gate_proj`, h)), m.proj(`${p}mlp.up_proj`, h));
    return add(x, m.proj(`${p}mlp.down_proj`, gated));
  },
};
