/**
 * config.json → ModelConfig for every config in the test fixtures, the variants of rope settings and
 * error messages, and the per-family weight-name table checked against the real checkpoints.
 */
import nodeAssert from "node:assert";
import { join } from "node:path";
import { type ModelConfig, parseModelConfig } from "../../models/config.ts";
import { checkWeights, expectedWeights } from "../../models/weight_names.ts";
import { loadModelConfig, openCheckpoint } from "../../host/files.ts";
import { CheckpointError, ConfigError } from "../../models/errors.ts";
import { fixture as repoFixture, fixtureModel } from "../fixtures.ts";

const assert: (condition: unknown, message?: string) => asserts condition = nodeAssert.ok;
const assertEquals: <T>(actual: unknown, expected: T, message?: string) => asserts actual is T =
  nodeAssert.deepStrictEqual;

function assertThrows(fn: () => unknown, type: new (...a: never[]) => Error, ...texts: string[]): Error {
  let caught: Error | undefined;
  try {
    fn();
  } catch (e) {
    caught = e as Error;
  }
  assert(caught instanceof type, `expected ${type.name}, got ${caught}`);
  for (const text of texts) {
    assert(caught.message.includes(text), `message "${caught.message}" lacks "${text}"`);
  }
  return caught;
}

/** The checkpoints in the repository (gpt2-d256 is checked in tests/shared/). */
const FIXTURES = [
  "models/tiny-gpt2",
  "models/tinystories-656k",
  "models/gpt2-d128",
  "golden/gpt2",
  "golden/llama",
  "golden/phi",
];

/** "models/<name>" or "golden/<family>" → its folder in the repository. */
function fixture(path: string): string {
  const [top, name] = path.split("/");
  return top === "models" ? fixtureModel(name as Parameters<typeof fixtureModel>[0]) : repoFixture(top, name);
}

function readConfig(path: string): Record<string, unknown> {
  return JSON.parse(Deno.readTextFileSync(join(fixture(path), "config.json")));
}

function pick(c: ModelConfig, keys: (keyof ModelConfig)[]): Partial<ModelConfig> {
  return Object.fromEntries(keys.map((k) => [k, c[k]]));
}

Deno.test("config: the fixture GPT-2, Llama and Phi configs normalise as expected", async () => {
  const gpt2 = await loadModelConfig(fixture("models/gpt2-d128"));
  assertEquals(gpt2, {
    family: "gpt2",
    architecture: "GPT2LMHeadModel",
    vocabSize: 50257,
    hiddenSize: 128,
    numLayers: 4,
    numHeads: 4,
    numKvHeads: 4,
    headDim: 32,
    intermediateSize: 512,
    maxPositions: 256,
    normType: "layernorm",
    normEps: 1e-5,
    activation: "gelu_new",
    positionEmbedding: "learned",
    ropeTheta: null,
    rotaryDim: 0,
    gatedMlp: false,
    qkvBias: true,
    attnOutBias: true,
    mlpBias: true,
    tieWordEmbeddings: true,
    lmHeadBias: false,
    parallelBlock: false,
    attentionScale: 1 / Math.sqrt(32),
    bosTokenId: 50256,
    eosTokenId: 50256,
    eosTokenIds: [50256],
    padTokenId: null,
    dtype: "bfloat16",
  });
  const tiny = await loadModelConfig(fixture("models/tiny-gpt2"));
  assertEquals(pick(tiny, ["hiddenSize", "headDim", "maxPositions", "intermediateSize", "dtype"]), {
    hiddenSize: 2,
    headDim: 1,
    maxPositions: 1024,
    intermediateSize: 8,
    dtype: "float32",
  });

  const stories = await loadModelConfig(fixture("models/tinystories-656k"));
  assertEquals(
    pick(stories, [
      "family",
      "numHeads",
      "numKvHeads",
      "headDim",
      "intermediateSize",
      "normType",
      "normEps",
      "activation",
      "ropeTheta",
      "rotaryDim",
      "gatedMlp",
      "qkvBias",
      "mlpBias",
      "tieWordEmbeddings",
      "lmHeadBias",
      "parallelBlock",
    ]),
    {
      family: "llama",
      numHeads: 8,
      numKvHeads: 4,
      headDim: 16,
      intermediateSize: 384,
      normType: "rmsnorm",
      normEps: 1e-6,
      activation: "silu",
      ropeTheta: 10000,
      rotaryDim: 16,
      gatedMlp: true,
      qkvBias: false,
      mlpBias: false,
      tieWordEmbeddings: true,
      lmHeadBias: false,
      parallelBlock: false,
    },
  );

  const llama = await loadModelConfig(fixture("golden/llama"));
  assertEquals(
    pick(llama, ["numKvHeads", "headDim", "ropeTheta", "tieWordEmbeddings", "eosTokenId", "bosTokenId"]),
    {
      numKvHeads: 2,
      headDim: 4,
      ropeTheta: 10000,
      tieWordEmbeddings: false,
      eosTokenId: 2,
      bosTokenId: 1,
    },
  );

  const phi = await loadModelConfig(fixture("golden/phi"));
  assertEquals(
    pick(phi, [
      "family",
      "headDim",
      "rotaryDim",
      "ropeTheta",
      "normType",
      "normEps",
      "activation",
      "gatedMlp",
      "qkvBias",
      "attnOutBias",
      "mlpBias",
      "tieWordEmbeddings",
      "lmHeadBias",
      "parallelBlock",
    ]),
    {
      family: "phi",
      headDim: 4,
      rotaryDim: 2,
      ropeTheta: 10000,
      normType: "layernorm",
      normEps: 1e-5,
      activation: "gelu_new",
      gatedMlp: false,
      qkvBias: true,
      attnOutBias: true,
      mlpBias: true,
      tieWordEmbeddings: false,
      lmHeadBias: true,
      parallelBlock: true,
    },
  );
});

Deno.test("config: rope settings at the top level or nested, and unsupported scaling named", () => {
  const base = readConfig("golden/llama");
  const { rope_parameters: _, ...flat } = base;
  assertEquals(parseModelConfig({ ...flat, rope_theta: 500000 }).ropeTheta, 500000);
  assertEquals(parseModelConfig({ ...flat, rope_theta: 500000, rope_scaling: null }).ropeTheta, 500000);
  assertEquals(
    parseModelConfig({ ...base, rope_parameters: { rope_type: "default", rope_theta: 1e6 } }).ropeTheta,
    1e6,
  );
  assertEquals(parseModelConfig(flat).ropeTheta, 10000); // transformers' default
  assertThrows(
    () => parseModelConfig({ ...flat, rope_scaling: { type: "linear", factor: 2 } }, "x/config.json"),
    ConfigError,
    "x/config.json",
    `"linear"`,
    "rope_scaling",
  );
  assertThrows(
    () => parseModelConfig({ ...base, rope_parameters: { rope_type: "llama3", rope_theta: 5e5, factor: 8 } }),
    ConfigError,
    `"llama3"`,
  );
  const phi = readConfig("golden/phi");
  const { rope_parameters: __, ...phiFlat } = phi;
  assertEquals(
    parseModelConfig({
      ...phiFlat,
      partial_rotary_factor: 0.4,
      hidden_size: 64,
      num_attention_heads: 2,
      num_key_value_heads: 2,
    }).rotaryDim,
    12,
  );
  assertEquals(parseModelConfig({ ...phiFlat, partial_rotary_factor: undefined }).rotaryDim, 2); // default 0.5
  assertThrows(() => parseModelConfig({ ...phi, qk_layernorm: true }), ConfigError, "qk_layernorm");
});

Deno.test("config: unknown architectures and missing or bad keys give errors that name them", () => {
  const gpt2 = readConfig("golden/gpt2");
  assertThrows(
    () =>
      parseModelConfig(
        { ...gpt2, architectures: ["MistralForCausalLM"], model_type: "mistral" },
        "m/config.json",
      ),
    ConfigError,
    "MistralForCausalLM",
    "GPT2LMHeadModel",
    "LlamaForCausalLM",
    "PhiForCausalLM",
  );
  assertThrows(() => parseModelConfig({ model_type: "bert" }), ConfigError, `"bert"`, "supported");
  assertThrows(() => parseModelConfig({ vocab_size: 3 }), ConfigError, "model_type");
  assertThrows(() => parseModelConfig([1]), ConfigError, "JSON object");
  const { architectures: _, ...typeOnly } = gpt2;
  assertEquals(parseModelConfig(typeOnly).architecture, "GPT2LMHeadModel");

  const { n_embd: __, ...noWidth } = gpt2;
  assertThrows(() => parseModelConfig(noWidth), ConfigError, `"n_embd"`, "missing");
  assertThrows(
    () => parseModelConfig({ ...gpt2, n_layer: "2" }),
    ConfigError,
    `"n_layer"`,
    "positive integer",
  );
  assertThrows(() => parseModelConfig({ ...gpt2, n_head: 5 }), ConfigError, "not divisible");
  assertThrows(() => parseModelConfig({ ...gpt2, activation_function: "mish" }), ConfigError, `"mish"`);
  assertThrows(
    () => parseModelConfig({ ...gpt2, scale_attn_by_inverse_layer_idx: true }),
    ConfigError,
    "inverse",
  );
  assertEquals(parseModelConfig({ ...gpt2, scale_attn_weights: false }).attentionScale, 1);

  const llama = readConfig("golden/llama");
  assertThrows(
    () => parseModelConfig({ ...llama, num_key_value_heads: 3 }),
    ConfigError,
    "num_key_value_heads",
  );
  const { intermediate_size: ___, ...noMlp } = llama;
  assertThrows(() => parseModelConfig(noMlp), ConfigError, `"intermediate_size"`);
  assertEquals(parseModelConfig({ ...llama, hidden_act: "gelu_pytorch_tanh" }).activation, "gelu_new");
});

Deno.test("config: generation_config.json supplies the stop ids", () => {
  const llama = readConfig("golden/llama");
  const c = parseModelConfig(llama, "config.json", { eos_token_id: [2, 7], bos_token_id: 1 });
  assertEquals([c.eosTokenId, c.eosTokenIds, c.bosTokenId], [2, [2, 7], 1]);
  assertThrows(() => parseModelConfig({ ...llama, eos_token_id: "2" }), ConfigError, "eos_token_id");
});

Deno.test("weights: every test checkpoint matches its config's weight table", async () => {
  for (const path of FIXTURES) {
    const dir = fixture(path);
    const config = await loadModelConfig(dir);
    using checkpoint = await openCheckpoint(dir);
    const names = checkWeights(config, checkpoint, dir);
    const required = expectedWeights(config).filter((s) => !s.optional);
    assert(required.every((s) => names.has(s.name)), path);
    for (const [canonical, stored] of names) {
      const shape = checkpoint.info(stored).shape;
      assertEquals(
        shape,
        expectedWeights(config).find((s) => s.name === canonical)!.shape,
        `${path} ${canonical}`,
      );
    }
  }
  const stories = await loadModelConfig(fixture("models/tinystories-656k"));
  using checkpoint = await openCheckpoint(fixture("models/tinystories-656k"));
  // Tied and stored once as lm_head.weight (with a metadata alias): the embedding resolves to it.
  assertEquals(checkWeights(stories, checkpoint).get("model.embed_tokens.weight"), "lm_head.weight");
});

Deno.test("weights: unprefixed GPT-2 names and mask buffers are accepted; problems are listed together", async () => {
  const gpt2Config = await loadModelConfig(fixture("golden/gpt2"));
  using gpt2 = await openCheckpoint(fixture("golden/gpt2"));
  const unprefixed = new Map([...gpt2.tensors].map(([n, t]) => [n.replace(/^transformer\./, ""), t]));
  unprefixed.set("h.0.attn.bias", { ...gpt2.info("transformer.wpe.weight"), shape: [1, 1, 32, 32] });
  unprefixed.set("lm_head.weight", gpt2.info("transformer.wte.weight"));
  assertEquals(checkWeights(gpt2Config, { tensors: unprefixed }).get("transformer.wte.weight"), "wte.weight");

  const llamaConfig = await loadModelConfig(fixture("golden/llama"));
  using llama = await openCheckpoint(fixture("golden/llama"));
  const broken = new Map<string, { shape: readonly number[] }>(llama.tensors);
  broken.delete("model.layers.1.mlp.up_proj.weight");
  broken.delete("lm_head.weight");
  broken.set("model.layers.2.mlp.up_proj.weight", { shape: [40, 16] });
  broken.set("model.layers.0.self_attn.k_proj.weight", { shape: [16, 16] });
  const error = assertThrows(
    () => checkWeights(llamaConfig, { tensors: broken }, "golden/llama"),
    CheckpointError,
    "golden/llama",
    "model.layers.1.mlp.up_proj.weight",
    "lm_head.weight",
    "model.layers.2.mlp.up_proj.weight",
    "[16, 16] (expected [8, 16])",
  ) as CheckpointError;
  assertEquals(error.missing, ["model.layers.1.mlp.up_proj.weight", "lm_head.weight"]);
  assertEquals(error.unexpected, ["model.layers.2.mlp.up_proj.weight"]);
  assertEquals(error.wrongShape.length, 1);

  const phiConfig = await loadModelConfig(fixture("golden/phi"));
  using phi = await openCheckpoint(fixture("golden/phi"));
  const noBias = new Map(phi.tensors);
  noBias.delete("lm_head.bias");
  assertThrows(() => checkWeights(phiConfig, { tensors: noBias }), CheckpointError, "lm_head.bias");
  const mixed = assertThrows(
    () => checkWeights(phiConfig, llama),
    CheckpointError,
    "(+11 more)",
  ) as CheckpointError;
  assert(
    mixed.missing.includes("model.final_layernorm.weight") && mixed.unexpected.includes("model.norm.weight"),
  );
});

Deno.test("config: a folder without config.json is a ConfigError", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await nodeAssert.rejects(
      () => loadModelConfig(dir),
      (e: Error) => e instanceof ConfigError && /config\.json/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
