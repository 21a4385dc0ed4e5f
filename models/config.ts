/**
 * Hugging Face `config.json` → one normalised {@link ModelConfig} for the three families the
 * engine runs: GPT-2 (`GPT2LMHeadModel`), Llama (`LlamaForCausalLM`, grouped-query attention)
 * and Phi (`PhiForCausalLM`, partial rotary, parallel attention + MLP, biased output layer).
 *
 * Each family spells the same quantity differently (`n_embd` / `hidden_size`, `layer_norm_epsilon`
 * / `rms_norm_eps` / `layer_norm_eps`) and older and newer transformers put `rope_theta` in
 * different places; the model code should see none of that. Structural sizes are required;
 * everything else falls back to the default transformers itself uses when the key is absent.
 *
 * @module
 */
import { ConfigError } from "./errors.ts";

/** The model families the engine implements. */
export type ModelFamily = "gpt2" | "llama" | "phi";

/** Normalisation layer type. */
export type NormType = "layernorm" | "rmsnorm";

/**
 * MLP activation. `gelu_new` is the tanh approximation (transformers' `gelu_pytorch_tanh` is the
 * same function and is normalised to it), `gelu` the exact erf form, `silu` x·sigmoid(x).
 */
export type Activation = "gelu_new" | "gelu" | "silu" | "relu";

/** Everything the model code needs from config.json, in one vocabulary for all families. */
export interface ModelConfig {
  /** Which implementation runs it. */
  readonly family: ModelFamily;
  /** The transformers class named in `architectures` (or implied by `model_type`). */
  readonly architecture: string;
  /** Rows of the embedding and output matrices (may exceed the tokenizer's vocabulary). */
  readonly vocabSize: number;
  /** Model width d. */
  readonly hiddenSize: number;
  /** Number of transformer blocks. */
  readonly numLayers: number;
  /** Query heads. */
  readonly numHeads: number;
  /** Key/value heads (< numHeads for grouped-query attention; divides numHeads). */
  readonly numKvHeads: number;
  /** Width of one head. */
  readonly headDim: number;
  /** Hidden width of the MLP. */
  readonly intermediateSize: number;
  /** Longest sequence the position encoding supports. */
  readonly maxPositions: number;
  /** LayerNorm (with bias) or RMSNorm (weight only). */
  readonly normType: NormType;
  /** Epsilon inside the norm's square root. */
  readonly normEps: number;
  /** MLP activation. */
  readonly activation: Activation;
  /** Learned absolute position embeddings (GPT-2) or rotary embeddings on q and k. */
  readonly positionEmbedding: "learned" | "rotary";
  /** Rotary base frequency; null without rotary embeddings. */
  readonly ropeTheta: number | null;
  /**
   * How many leading dimensions of each head are rotated (rotate-half layout, as in
   * transformers): headDim for Llama, floor(headDim · partial_rotary_factor) for Phi, 0 for GPT-2.
   */
  readonly rotaryDim: number;
  /** Llama's gated MLP: down(act(gate(x)) · up(x)); otherwise fc2(act(fc1(x))). */
  readonly gatedMlp: boolean;
  /** Whether the q, k, v projections have biases. */
  readonly qkvBias: boolean;
  /** Whether the attention output projection has a bias. */
  readonly attnOutBias: boolean;
  /** Whether the MLP projections have biases. */
  readonly mlpBias: boolean;
  /** Output layer shares the input embedding matrix. */
  readonly tieWordEmbeddings: boolean;
  /** Output layer has a bias (Phi). */
  readonly lmHeadBias: boolean;
  /** Attention and MLP both read the same normed input and are added together (Phi). */
  readonly parallelBlock: boolean;
  /** Factor on q·k before softmax: 1/sqrt(headDim) (or 1 for GPT-2 with scale_attn_weights false). */
  readonly attentionScale: number;
  /** Beginning-of-sequence id from config (the tokenizer's may be more reliable). */
  readonly bosTokenId: number | null;
  /** First end-of-sequence id (generation_config.json wins over config.json). */
  readonly eosTokenId: number | null;
  /** All end-of-sequence ids (some models stop on several). */
  readonly eosTokenIds: readonly number[];
  /** Padding id from config; null when the model defines none (GPT-2). */
  readonly padTokenId: number | null;
  /** Stored weight dtype the config announces (`torch_dtype` / `dtype`), if any. */
  readonly dtype: string | null;
}

/** Architectures the engine runs, with the family that implements each. */
export const SUPPORTED_ARCHITECTURES: Readonly<Record<string, ModelFamily>> = {
  GPT2LMHeadModel: "gpt2",
  GPT2Model: "gpt2",
  LlamaForCausalLM: "llama",
  PhiForCausalLM: "phi",
};

const MODEL_TYPE_ARCHITECTURE: Readonly<Record<string, string>> = {
  gpt2: "GPT2LMHeadModel",
  llama: "LlamaForCausalLM",
  phi: "PhiForCausalLM",
};

const SUPPORTED_LIST = "GPT2LMHeadModel (gpt2), LlamaForCausalLM (llama), PhiForCausalLM (phi)";

type Json = Record<string, unknown>;

/** Typed accessors that name the file and key in every error. */
class ConfigReader {
  constructor(readonly json: Json, readonly source: string, readonly family: string) {}

  private fail(key: string, problem: string): never {
    throw new ConfigError(`${this.source}: ${this.family} config key "${key}" ${problem}`);
  }

  has(key: string): boolean {
    return this.json[key] !== undefined && this.json[key] !== null;
  }

  /** The first present key among `keys` (aliases), as a positive integer; required. */
  int(keys: string[], fallback?: number): number {
    for (const key of keys) {
      if (!this.has(key)) continue;
      const value = this.json[key];
      if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
        this.fail(key, `must be a positive integer, got ${JSON.stringify(value)}`);
      }
      return value;
    }
    if (fallback !== undefined) return fallback;
    throw new ConfigError(
      `${this.source}: ${this.family} config is missing "${keys.join('" or "')}" (a required size); ` +
        `is this the model's config.json?`,
    );
  }

  number(key: string, fallback: number, nested?: unknown): number {
    const value = nested ?? this.json[key];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      this.fail(key, `must be a positive number, got ${JSON.stringify(value)}`);
    }
    return value;
  }

  bool(key: string, fallback: boolean): boolean {
    const value = this.json[key];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== "boolean") this.fail(key, `must be true or false, got ${JSON.stringify(value)}`);
    return value;
  }

  string(key: string, fallback: string): string {
    const value = this.json[key];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== "string") this.fail(key, `must be a string, got ${JSON.stringify(value)}`);
    return value;
  }

  /** A token id or a list of them (null/absent → []). */
  ids(key: string, from: Json = this.json): number[] {
    const value = from[key];
    if (value === undefined || value === null) return [];
    const list = Array.isArray(value) ? value : [value];
    if (!list.every((v) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0)) {
      this.fail(key, `must be a token id or a list of ids, got ${JSON.stringify(value)}`);
    }
    return list as number[];
  }
}

function normaliseActivation(name: string, reader: ConfigReader, key: string): Activation {
  switch (name) {
    case "gelu_new":
    case "gelu_pytorch_tanh":
      return "gelu_new";
    case "gelu":
      return "gelu";
    case "silu":
    case "swish":
      return "silu";
    case "relu":
      return "relu";
    default:
      throw new ConfigError(
        `${reader.source}: activation ${JSON.stringify(name)} in "${key}" is not supported; ` +
          `supported: gelu_new (gelu_pytorch_tanh), gelu, silu (swish), relu`,
      );
  }
}

/**
 * Finds the rotary settings whichever way the config spells them: `rope_theta` at the top level
 * (transformers 4) or inside `rope_parameters` (transformers 5), with `rope_scaling` /
 * `rope_parameters.rope_type` allowed only when it is the plain default.
 */
function readRope(reader: ConfigReader): { theta: number; partialFactor: unknown } {
  const params = reader.json.rope_parameters;
  const scaling = reader.json.rope_scaling;
  for (const [key, block] of [["rope_parameters", params], ["rope_scaling", scaling]] as const) {
    if (block === undefined || block === null) continue;
    if (typeof block !== "object" || Array.isArray(block)) {
      throw new ConfigError(`${reader.source}: "${key}" must be an object, got ${JSON.stringify(block)}`);
    }
    const ropeType = (block as Json).rope_type ?? (block as Json).type ?? "default";
    if (ropeType !== "default") {
      throw new ConfigError(
        `${reader.source}: rope scaling type ${JSON.stringify(ropeType)} (in "${key}") is not supported; ` +
          `only plain rotary embeddings ("default") are implemented. Use a checkpoint without rope scaling ` +
          `or remove it from config.json if the model was trained without it.`,
      );
    }
  }
  const nested = params && typeof params === "object" ? (params as Json) : {};
  const theta = reader.number("rope_theta", 10000, reader.json.rope_theta ?? nested.rope_theta);
  return { theta, partialFactor: reader.json.partial_rotary_factor ?? nested.partial_rotary_factor };
}

function detectArchitecture(json: Json, source: string): { architecture: string; family: ModelFamily } {
  const architectures = json.architectures;
  const modelType = typeof json.model_type === "string" ? json.model_type : undefined;
  if (Array.isArray(architectures) && architectures.length > 0) {
    const known = architectures.find((a) =>
      typeof a === "string" && Object.hasOwn(SUPPORTED_ARCHITECTURES, a)
    ) as
      | string
      | undefined;
    if (known) return { architecture: known, family: SUPPORTED_ARCHITECTURES[known] };
    throw new ConfigError(
      `${source}: unsupported architecture ${architectures.map((a) => JSON.stringify(a)).join(", ")}` +
        `${modelType ? ` (model_type "${modelType}")` : ""}; supported: ${SUPPORTED_LIST}`,
    );
  }
  if (modelType && Object.hasOwn(MODEL_TYPE_ARCHITECTURE, modelType)) {
    const architecture = MODEL_TYPE_ARCHITECTURE[modelType];
    return { architecture, family: SUPPORTED_ARCHITECTURES[architecture] };
  }
  throw new ConfigError(
    `${source}: ${
      modelType ? `unsupported model_type "${modelType}"` : `no "architectures" or "model_type" key`
    }; supported: ${SUPPORTED_LIST}`,
  );
}

function check(condition: boolean, source: string, message: string): void {
  if (!condition) throw new ConfigError(`${source}: ${message}`);
}

/**
 * Parses a config.json (already JSON-parsed) into a {@link ModelConfig}. `generationConfig`
 * (generation_config.json), when given, supplies the end-of-sequence ids as HF generation uses
 * them. Throws {@link ConfigError} naming the file and key for an unknown architecture, a missing
 * size, or an option the engine does not implement.
 */
export function parseModelConfig(
  json: unknown,
  source = "config.json",
  generationConfig?: unknown,
): ModelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new ConfigError(`${source}: a model config must be a JSON object`);
  }
  const raw = json as Json;
  const { architecture, family } = detectArchitecture(raw, source);
  const reader = new ConfigReader(raw, source, family);
  const generation = typeof generationConfig === "object" && generationConfig !== null
    ? generationConfig as Json
    : {};

  const eosFromGeneration = reader.ids("eos_token_id", generation);
  const eosTokenIds = eosFromGeneration.length ? eosFromGeneration : reader.ids("eos_token_id");
  const tokens = {
    bosTokenId: reader.ids("bos_token_id", generation)[0] ?? reader.ids("bos_token_id")[0] ?? null,
    eosTokenId: eosTokenIds[0] ?? null,
    eosTokenIds,
    padTokenId: reader.ids("pad_token_id", generation)[0] ?? reader.ids("pad_token_id")[0] ?? null,
    dtype: reader.has("torch_dtype")
      ? reader.string("torch_dtype", "")
      : reader.has("dtype")
      ? reader.string("dtype", "")
      : null,
  };

  let config: ModelConfig;
  if (family === "gpt2") {
    const hiddenSize = reader.int(["n_embd", "hidden_size"]);
    const numHeads = reader.int(["n_head", "num_attention_heads"]);
    check(
      hiddenSize % numHeads === 0,
      source,
      `n_embd ${hiddenSize} is not divisible by n_head ${numHeads}`,
    );
    check(
      !reader.bool("scale_attn_by_inverse_layer_idx", false),
      source,
      `scale_attn_by_inverse_layer_idx=true is not supported (it scales attention by 1/(layer+1))`,
    );
    const headDim = hiddenSize / numHeads;
    config = {
      family,
      architecture,
      vocabSize: reader.int(["vocab_size"]),
      hiddenSize,
      numLayers: reader.int(["n_layer", "num_hidden_layers"]),
      numHeads,
      numKvHeads: numHeads,
      headDim,
      intermediateSize: reader.int(["n_inner"], 4 * hiddenSize),
      maxPositions: reader.int(["n_positions", "n_ctx", "max_position_embeddings"]),
      normType: "layernorm",
      normEps: reader.number("layer_norm_epsilon", 1e-5),
      activation: normaliseActivation(
        reader.string("activation_function", "gelu_new"),
        reader,
        "activation_function",
      ),
      positionEmbedding: "learned",
      ropeTheta: null,
      rotaryDim: 0,
      gatedMlp: false,
      qkvBias: true,
      attnOutBias: true,
      mlpBias: true,
      tieWordEmbeddings: reader.bool("tie_word_embeddings", true),
      lmHeadBias: false,
      parallelBlock: false,
      attentionScale: reader.bool("scale_attn_weights", true) ? 1 / Math.sqrt(headDim) : 1,
      ...tokens,
    };
  } else {
    const hiddenSize = reader.int(["hidden_size"]);
    const numHeads = reader.int(["num_attention_heads"]);
    const numKvHeads = reader.int(["num_key_value_heads"], numHeads);
    if (!reader.has("head_dim")) {
      check(
        hiddenSize % numHeads === 0,
        source,
        `hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads} (and no head_dim is given)`,
      );
    }
    const headDim = reader.int(["head_dim"], hiddenSize / numHeads);
    check(
      numHeads % numKvHeads === 0,
      source,
      `num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`,
    );
    const rope = readRope(reader);
    const isPhi = family === "phi";
    let rotaryDim = headDim;
    if (isPhi) {
      const factor = rope.partialFactor ?? 0.5;
      check(
        typeof factor === "number" && factor > 0 && factor <= 1,
        source,
        `partial_rotary_factor must be a number in (0, 1], got ${JSON.stringify(factor)}`,
      );
      rotaryDim = Math.floor(headDim * (factor as number));
      check(qkLayernormOff(reader), source, `qk_layernorm=true is not supported for Phi`);
    }
    check(
      rotaryDim % 2 === 0 && rotaryDim > 0,
      source,
      `the rotary dimension ${rotaryDim} (head_dim ${headDim}) must be a positive even number`,
    );
    const attentionBias = isPhi ? true : reader.bool("attention_bias", false);
    config = {
      family,
      architecture,
      vocabSize: reader.int(["vocab_size"]),
      hiddenSize,
      numLayers: reader.int(["num_hidden_layers"]),
      numHeads,
      numKvHeads,
      headDim,
      intermediateSize: reader.int(["intermediate_size"]),
      maxPositions: reader.int(["max_position_embeddings"], 2048),
      normType: isPhi ? "layernorm" : "rmsnorm",
      normEps: isPhi ? reader.number("layer_norm_eps", 1e-5) : reader.number("rms_norm_eps", 1e-6),
      activation: normaliseActivation(
        reader.string("hidden_act", isPhi ? "gelu_new" : "silu"),
        reader,
        "hidden_act",
      ),
      positionEmbedding: "rotary",
      ropeTheta: rope.theta,
      rotaryDim,
      gatedMlp: !isPhi,
      qkvBias: attentionBias,
      attnOutBias: attentionBias,
      mlpBias: isPhi ? true : reader.bool("mlp_bias", false),
      tieWordEmbeddings: reader.bool("tie_word_embeddings", false),
      lmHeadBias: isPhi,
      parallelBlock: isPhi,
      attentionScale: 1 / Math.sqrt(headDim),
      ...tokens,
    };
  }
  return config;
}

function qkLayernormOff(reader: ConfigReader): boolean {
  return !reader.bool("qk_layernorm", false);
}
