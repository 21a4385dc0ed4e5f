/**
 * gradmm-ts: synthetic training text by gradient matching (GRADMM, ICML 2025), on WebGPU.
 *
 * The module exposes the layers from the bottom up: the device ({@link createContext}),
 * tensors and autograd ({@link Tensor}, {@link backward}), the ops, the optimisers, the models
 * (GPT-2, Llama, Phi from Hugging Face checkpoints), GRADMM's parts ({@link runRound},
 * {@link matchingLoss}) and the one-call API: {@link synth}, {@link generate}, {@link evaluate},
 * {@link finetune}, every option optional (defaults: {@link SYNTH_DEFAULTS} and its siblings).
 *
 * @example Autograd on the GPU
 * ```ts
 * import { backward, createContext, mul, Tensor } from "./mod.ts";
 * const ctx = await createContext();
 * const x = Tensor.from(ctx, [1, 2, 3], [3], { requiresGrad: true });
 * backward(mul(x, x));
 * console.log(await x.grad!.read()); // 2, 4, 6
 * ```
 *
 * This module is platform-neutral (it loads in a browser): models come from a {@link ModelSource}
 * such as {@link urlSource} or {@link bytesSource}. Files, environment variables, the hub cache and
 * the autotune cache on disk are in the Deno-only `./host` export (host/mod.ts), which also
 * takes folder paths.
 *
 * @example Generate text with a Hugging Face model folder served over HTTP
 * ```ts
 * import { createContext, generateText, loadModel, loadTokenizer, urlSource } from "./mod.ts";
 * const ctx = await createContext();
 * const source = urlSource("https://example.com/models/gpt2-d128/");
 * const model = await loadModel(ctx, source);
 * const tok = await loadTokenizer(source);
 * const out = await generateText(model, tok, ["This movie is"], { maxNewTokens: 10, greedy: true });
 * console.log(out.texts[0]);
 * ```
 * @module
 */

export { VERSION } from "./version.ts";

// Device and memory
export {
  type AdapterDescription,
  type CaptureRecorder,
  type ContextOptions,
  createContext,
  defaultContext,
  type DeviceLimits,
  GpuContext,
  GpuDeviceLostError,
  GpuLimitError,
  GpuUnavailableError,
  GpuValidationError,
  GraphCaptureError,
  REQUESTED_LIMITS,
} from "./kernels/device.ts";
export { BufferPool, GpuOutOfMemoryError, type PoolStats } from "./kernels/pool.ts";
export { StepGraph } from "./kernels/graph.ts";
export { type GpuTime, GpuTimer } from "./kernels/timing.ts";
export {
  autotune,
  type AutotuneEvent,
  type AutotuneOptions,
  type AutotuneReport,
  type CacheStatus,
  type CandidateResult,
  type ClassReport,
  installMatmulTuning,
  loadMatmulTuning,
  type LoadResult,
  type MatmulLauncher,
  MatmulTuningTable,
  recordMatmulShapes,
  type TunedEntry,
  type TuningCacheOptions,
  type TuningClock,
  type TuningRuntime,
  type TuningStore,
} from "./kernels/autotune.ts";
export { MATMUL_VARIANTS, type MatmulDims, type MatmulTuning, type MatmulVariant } from "./kernels/matmul.ts";
export type { HalfOperand } from "./kernels/matmul_f16.ts";
export type { FlashKind, FlashTiling } from "./kernels/attention_flash.ts";

// Tensors and autograd
export { type GradNode, scope, ShapeError, Tensor, type TensorOptions } from "./autograd/tensor.ts";
export { backward, type BackwardOptions, record } from "./autograd/tape.ts";
export { type AutogradState, autogradState, gradEnabled, noGrad } from "./autograd/grad_mode.ts";
export { Rng } from "./autograd/random.ts";
export { type HostTensor } from "./autograd/reference.ts";
export { addInto } from "./autograd/ops/accumulate.ts";
export * from "./autograd/ops/elementwise.ts";
export * from "./autograd/ops/matmul.ts";
export * from "./autograd/ops/reduce.ts";
export * from "./autograd/ops/softmax.ts";
export * from "./autograd/ops/loss.ts";
export * from "./autograd/ops/norm.ts";
export * from "./autograd/ops/shape.ts";
export * from "./autograd/ops/embedding.ts";
export * from "./autograd/ops/rope.ts";
export * from "./autograd/ops/attention.ts";
export * from "./autograd/ops/topk.ts";
export * from "./autograd/ops/gather.ts";
export {
  Adam,
  type AdamOptions,
  type AdamState,
  AdamW,
  clipGradNorm,
  linearWarmupDecay,
  OptimizerError,
} from "./autograd/optim.ts";

// Models
export {
  type CausalLM,
  createModel,
  type ForwardInput,
  type ForwardOutput,
  loadModel,
  type LogitsMode,
  positionIdsFromMask,
} from "./models/model.ts";
export type { LoadOptions } from "./models/transformer.ts";
export { type CachedKeysValues, type CacheStep, KVCache } from "./models/kvcache.ts";
export { gatherRows, linearRows, RowChunks, type RowMatrix } from "./models/chunked.ts";
export { HalfMatrix, HalfPrecisionError } from "./autograd/half.ts";
export { randomModel, type RandomModelOptions } from "./models/random_model.ts";
export {
  type Activation,
  type ModelConfig,
  type ModelFamily,
  type NormType,
  parseModelConfig,
  SUPPORTED_ARCHITECTURES,
} from "./models/config.ts";
export {
  type BatchEncodeOptions,
  type DecodeOptions,
  type EncodedBatch,
  type EncodeOptions,
  Tokenizer,
} from "./models/tokenizer.ts";
export {
  bytesSource,
  type FileContents,
  loadModelConfig,
  loadTokenizer,
  type ModelSink,
  type ModelSource,
  openCheckpoint,
  openSafetensorsFile,
  urlSource,
  type UrlSourceOptions,
  WEIGHTS_FILE,
  WEIGHTS_INDEX_FILE,
} from "./models/source.ts";
export {
  blobSource,
  type ByteSource,
  encodeSafetensors,
  encodeSafetensorsParts,
  memorySource,
  openSafetensorsBytes,
  openSafetensorsSource,
  type SafetensorsDtype,
  type SafetensorsFile,
  type SafetensorsWriteOptions,
  type TensorData,
  type TensorInfo,
  type TensorToWrite,
  type WritableDtype,
} from "./models/safetensors.ts";
export {
  type GenerateOptions,
  type GenerateResult,
  generateText,
  type GenerateTextResult,
} from "./models/generate.ts";
export type { SamplingOptions } from "./models/sampling.ts";
export {
  sequenceMeanNll,
  type SequenceNll,
  sequenceNll,
  sequenceNll as sequenceNllTotals, // the 0.1 name, kept for existing callers
  type SequenceNllOptions,
} from "./models/perplexity.ts";
export {
  CheckpointError,
  ConfigError,
  HubError,
  type HubErrorKind,
  SafetensorsError,
  TokenizerError,
} from "./models/errors.ts";

// GRADMM
export {
  type AdmmSettings,
  discreteMatchingLoss,
  lastHidden,
  PAPER_SETTINGS,
  type RoundProblem,
} from "./admm/problem.ts";
export { type RoundOptions, type RoundProgress, type RoundResult, runRound } from "./admm/round.ts";
export { InnerLoop, xStep } from "./admm/xstep.ts";
export {
  makeTarget,
  type MatchingKind,
  matchingLoss,
  oneHot,
  type OutputLayer,
  type TargetGradient,
} from "./admm/matching.ts";
export { computeTarget, lastLayerFactors, type TargetReport } from "./admm/target.ts";
export {
  constrainedDecode,
  makeProjector,
  projectIds,
  ProjectionStep,
  type Projector,
  type ProjectorChunk,
  topkCosine,
} from "./admm/zstep.ts";
export { BLEND_LM_TOP, type BlendDecode } from "./admm/blend_decode.ts";
export { bannedTokenMask, tokenAllowed } from "./admm/tokenFilter.ts";
export {
  analyticGaussianSigma,
  type ClassRelease,
  type DpCalibration,
  type DpOptions,
  gaussianDelta,
  gaussianEpsilon,
  gaussianSigma,
  type PrivacyAccount,
  type TargetNoise,
} from "./admm/dp.ts";
export {
  REFINE_DEFAULTS,
  type RefineProgress,
  type RefineResult,
  type RefineSettings,
  refineTokens,
  repeatedBigrams,
} from "./admm/refine.ts";
export {
  LM_REFINE_DEFAULTS,
  type LmRefineResult,
  type LmRefineSettings,
  NLL_TARGET_WEIGHT,
  type NllTarget,
  realTargetOffset,
  refineTokensLm,
} from "./admm/refine_lm.ts";
export {
  NonFiniteError,
  type RoundKey,
  runSynth,
  SynthError,
  type SynthEvent,
  type SynthOptions,
  synthPrivacy,
  type SynthRecord,
  type TextCodec,
} from "./admm/synth.ts";

// Sharding a synth run over processes (Slurm job arrays, Kubernetes Indexed Jobs; docs/scale-out.md)
export {
  canonicalRoundKeys,
  parseShard,
  parseShardOutputPath,
  type ResolvedShard,
  resolveShard,
  roundKeyId,
  type Shard,
  ShardError,
  shardOutputPath,
  shardRoundKeys,
} from "./admm/shard.ts";

// Tasks and data
export {
  customTask,
  type CustomTaskOptions,
  getTask,
  TASK_PRESETS,
  TaskError,
  type TaskSpec,
} from "./data/tasks.ts";
export {
  DataError,
  type Example,
  parseJsonl,
  type RealSelection,
  selectReal,
  stratifiedSample,
} from "./data/examples.ts";
export { deriveSeed } from "./data/seed.ts";

// Fine-tuning and evaluation
export {
  type Evaluation,
  type FinetuneEvent,
  type FinetuneOptions,
  type FinetuneResult,
} from "./train/finetune.ts";

// The one-call API: every option optional, defaults in api/defaults.ts (the CLI's too)
export {
  CPU_SYNTH_DEFAULTS,
  DP_DEFAULTS,
  EVALUATE_DEFAULTS,
  FINETUNE_DEFAULTS,
  GENERATE_DEFAULTS,
  LM_GUIDED_DEFAULTS,
  SYNTH_DEFAULTS,
  SYNTH_METHODS,
  type SynthMethod,
  usesLmRefine,
} from "./api/defaults.ts";
export { type LoadedModel, type ModelInput, type ModelLoadOptions } from "./api/model.ts";
export {
  type ResolvedSynthSettings,
  resolveSynthSettings,
  type SynthDpSettings,
  type SynthSettings,
} from "./api/synth_settings.ts";
export {
  SYNTH_TOOL_VERSION,
  type SynthInvocation,
  SynthLedger,
  type SynthLedgerState,
  type SynthManifest,
  synthSettingsRecord,
} from "./api/synth_manifest.ts";
export { synth, type SynthRequest, type SynthResult } from "./api/synth.ts";
export { generate, type GenerateRequest, GenerateRequestError, generateSettings } from "./api/generate.ts";
export { evaluate, type EvaluateRequest, EvaluateRequestError } from "./api/evaluate.ts";
export { finetune, type FinetuneCallResult, type FinetuneRequest } from "./api/finetune.ts";
