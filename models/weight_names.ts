/**
 * The tensors each family's checkpoint must hold, by name and shape, and a check that matches a
 * checkpoint against them in one pass, reporting every missing, unexpected and wrong-shaped
 * tensor in one error.
 *
 * Canonical names are those of transformers' `*ForCausalLM` / `GPT2LMHeadModel` classes
 * (`transformer.` prefix for GPT-2, `model.` for Llama and Phi). Stored names may lack the prefix
 * (checkpoints saved from `GPT2Model` / `LlamaModel`, such as the original `gpt2` repository),
 * tied embeddings may be stored only once (as `lm_head.weight`, with a metadata alias), and some
 * files carry non-parameter buffers (GPT-2's causal-mask `attn.bias`, old `rotary_emb.inv_freq`),
 * which are ignored.
 *
 * Layouts: GPT-2 uses Conv1D, so its projection weights are [in, out]; Llama and Phi use
 * nn.Linear, [out, in].
 *
 * @module
 */
import type { ModelConfig } from "./config.ts";
import { CheckpointError } from "./errors.ts";

/** One expected tensor. */
export interface WeightSpec {
  /** Canonical name (with the family's prefix). */
  readonly name: string;
  /** Expected shape. */
  readonly shape: readonly number[];
  /** True when the checkpoint may omit it (a tied output layer). */
  readonly optional?: boolean;
}

/** What {@link checkWeights} needs to know about a checkpoint (a `SafetensorsFile` fits). */
export interface CheckpointTensors {
  /** Stored tensors by name (only the shape is used). */
  readonly tensors: ReadonlyMap<string, { readonly shape: readonly number[] }>;
  /** `removed name → stored name` aliases from the metadata, if any. */
  readonly aliases?: ReadonlyMap<string, string>;
}

/** GPT-2: Conv1D projections stored [in, out]. */
function gpt2Weights(c: ModelConfig): WeightSpec[] {
  const d = c.hiddenSize, f = c.intermediateSize, p = "transformer.";
  const specs: WeightSpec[] = [
    { name: `${p}wte.weight`, shape: [c.vocabSize, d] },
    { name: `${p}wpe.weight`, shape: [c.maxPositions, d] },
  ];
  for (let i = 0; i < c.numLayers; i++) {
    const h = `${p}h.${i}.`;
    specs.push(
      { name: `${h}ln_1.weight`, shape: [d] },
      { name: `${h}ln_1.bias`, shape: [d] },
      { name: `${h}attn.c_attn.weight`, shape: [d, 3 * d] },
      { name: `${h}attn.c_attn.bias`, shape: [3 * d] },
      { name: `${h}attn.c_proj.weight`, shape: [d, d] },
      { name: `${h}attn.c_proj.bias`, shape: [d] },
      { name: `${h}ln_2.weight`, shape: [d] },
      { name: `${h}ln_2.bias`, shape: [d] },
      { name: `${h}mlp.c_fc.weight`, shape: [d, f] },
      { name: `${h}mlp.c_fc.bias`, shape: [f] },
      { name: `${h}mlp.c_proj.weight`, shape: [f, d] },
      { name: `${h}mlp.c_proj.bias`, shape: [d] },
    );
  }
  specs.push(
    { name: `${p}ln_f.weight`, shape: [d] },
    { name: `${p}ln_f.bias`, shape: [d] },
    { name: "lm_head.weight", shape: [c.vocabSize, d], optional: c.tieWordEmbeddings },
  );
  return specs;
}

/** Llama and Phi share the embedding, the q/k/v projections and the output layer. */
function rotaryFamilyWeights(c: ModelConfig): WeightSpec[] {
  const d = c.hiddenSize, f = c.intermediateSize;
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  const isPhi = c.family === "phi";
  const specs: WeightSpec[] = [{ name: "model.embed_tokens.weight", shape: [c.vocabSize, d] }];
  const linear = (name: string, out: number, inp: number, bias: boolean) => {
    specs.push({ name: `${name}.weight`, shape: [out, inp] });
    if (bias) specs.push({ name: `${name}.bias`, shape: [out] });
  };
  const norm = (name: string) => {
    specs.push({ name: `${name}.weight`, shape: [d] });
    if (c.normType === "layernorm") specs.push({ name: `${name}.bias`, shape: [d] });
  };
  for (let i = 0; i < c.numLayers; i++) {
    const l = `model.layers.${i}.`;
    norm(`${l}input_layernorm`);
    linear(`${l}self_attn.q_proj`, q, d, c.qkvBias);
    linear(`${l}self_attn.k_proj`, kv, d, c.qkvBias);
    linear(`${l}self_attn.v_proj`, kv, d, c.qkvBias);
    if (isPhi) {
      linear(`${l}self_attn.dense`, d, q, c.attnOutBias);
      linear(`${l}mlp.fc1`, f, d, c.mlpBias);
      linear(`${l}mlp.fc2`, d, f, c.mlpBias);
    } else {
      linear(`${l}self_attn.o_proj`, d, q, c.attnOutBias);
      norm(`${l}post_attention_layernorm`);
      linear(`${l}mlp.gate_proj`, f, d, c.mlpBias);
      linear(`${l}mlp.up_proj`, f, d, c.mlpBias);
      linear(`${l}mlp.down_proj`, d, f, c.mlpBias);
    }
  }
  norm(isPhi ? "model.final_layernorm" : "model.norm");
  specs.push({ name: "lm_head.weight", shape: [c.vocabSize, d], optional: c.tieWordEmbeddings });
  if (c.lmHeadBias) specs.push({ name: "lm_head.bias", shape: [c.vocabSize] });
  return specs;
}

/**
 * The tensors a checkpoint for `config` holds, canonical names and shapes, in model order.
 * With tied embeddings `lm_head.weight` is listed as optional.
 */
export function expectedWeights(config: ModelConfig): WeightSpec[] {
  return config.family === "gpt2" ? gpt2Weights(config) : rotaryFamilyWeights(config);
}

const FAMILY_PREFIX = { gpt2: "transformer.", llama: "model.", phi: "model." } as const;

/** Non-parameter buffers some checkpoints store; never needed. */
const IGNORED_BUFFERS = [
  /^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$/,
  /^(model\.)?layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/,
];

function listSome(names: string[], max = 12): string {
  return names.length <= max
    ? names.join(", ")
    : `${names.slice(0, max).join(", ")} (+${names.length - max} more)`;
}

/**
 * Matches a checkpoint's tensors against {@link expectedWeights} and returns the stored name of
 * every expected tensor, keyed by canonical name (optional ones only when present; a tied
 * embedding stored only as `lm_head.weight` maps to it). Throws one {@link CheckpointError} that
 * lists all missing, unexpected and wrong-shaped tensors.
 */
export function checkWeights(
  config: ModelConfig,
  checkpoint: CheckpointTensors,
  source = "checkpoint",
): Map<string, string> {
  const stored = checkpoint.tensors;
  const aliases = checkpoint.aliases ?? new Map<string, string>();
  const prefix = FAMILY_PREFIX[config.family];
  const specs = expectedWeights(config);
  const embedName = specs[0].name;
  const resolved = new Map<string, string>();
  const used = new Set<string>();
  const missing: string[] = [];
  const wrongShape: string[] = [];

  const find = (canonical: string): string | undefined => {
    const candidates = canonical.startsWith(prefix)
      ? [canonical, canonical.slice(prefix.length)]
      : [canonical];
    for (const name of candidates) {
      if (stored.has(name)) return name;
      const target = aliases.get(name);
      if (target !== undefined && stored.has(target)) return target;
    }
    return undefined;
  };

  for (const spec of specs) {
    let name = find(spec.name);
    if (name === undefined && spec.name === embedName && config.tieWordEmbeddings) {
      name = find("lm_head.weight");
    }
    if (name === undefined) {
      if (!spec.optional) missing.push(spec.name);
      continue;
    }
    used.add(name);
    resolved.set(spec.name, name);
    const shape = stored.get(name)!.shape;
    if (shape.length !== spec.shape.length || shape.some((n, i) => n !== spec.shape[i])) {
      wrongShape.push(`${name}: [${shape.join(", ")}] (expected [${spec.shape.join(", ")}])`);
    }
  }
  const unexpected = [...stored.keys()].filter((name) =>
    !used.has(name) && !IGNORED_BUFFERS.some((re) => re.test(name))
  );

  if (missing.length || unexpected.length || wrongShape.length) {
    const problems = [
      missing.length ? `missing ${missing.length}: ${listSome(missing)}` : "",
      unexpected.length ? `unexpected ${unexpected.length}: ${listSome(unexpected)}` : "",
      wrongShape.length ? `wrong shape ${wrongShape.length}: ${listSome(wrongShape, 6)}` : "",
    ].filter(Boolean);
    throw new CheckpointError(
      `${source} does not match its config (${config.architecture}, ${config.numLayers} layers, ` +
        `hidden ${config.hiddenSize}, vocab ${config.vocabSize}): ${problems.join("; ")}. ` +
        `Check that config.json and the weights come from the same model.`,
      missing,
      unexpected,
      wrongShape,
    );
  }
  return resolved;
}
