/**
 * gradmm-ts: synthetic training text by gradient matching (GRADMM, ICML 2025), on WebGPU.
 *
 * The module exposes the layers from the bottom up: the device ({@link createContext}),
 * tensors and autograd ({@link Tensor}, {@link backward}), the ops, the optimisers, the models
 * (GPT-2, Llama, Phi from Hugging Face checkpoints) and GRADMM itself ({@link runSynth},
 * {@link matchingLoss}).
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

// Device and memory
export {
  type AdapterDescription,
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
} from "./kernels/device.ts";
export { GpuOutOfMemoryError, type PoolStats } from "./kernels/pool.ts";
export { StepGraph } from "./kernels/graph.ts";
export { type GpuTime, GpuTimer } from "./kernels/timing.ts";
export {
  autotune,
  type AutotuneOptions,
  type AutotuneReport,
  installMatmulTuning,
  loadMatmulTuning,
  MatmulTuningTable,
  recordMatmulShapes,
  type TuningCacheOptions,
  type TuningRuntime,
  type TuningStore,
} from "./kernels/autotune.ts";

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
  positionIdsFromMask,
} from "./models/model.ts";
export { gatherRows, linearRows, RowChunks, type RowMatrix } from "./models/chunked.ts";
export { HalfMatrix, HalfPrecisionError } from "./autograd/half.ts";
export { randomModel } from "./models/random_model.ts";
export { type ModelConfig, parseModelConfig, SUPPORTED_ARCHITECTURES } from "./models/config.ts";
export { Tokenizer } from "./models/tokenizer.ts";
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
  type SafetensorsFile,
  type TensorToWrite,
} from "./models/safetensors.ts";
export { generate, type GenerateOptions, generateText } from "./models/generate.ts";
export {
  sequenceMeanNll,
  type SequenceNll,
  sequenceNll,
  sequenceNll as sequenceNllTotals, // the 0.1 name, kept for existing callers
  type SequenceNllOptions,
} from "./models/perplexity.ts";
export { CheckpointError, ConfigError, HubError, SafetensorsError, TokenizerError } from "./models/errors.ts";

// GRADMM
export { type AdmmSettings, PAPER_SETTINGS } from "./admm/problem.ts";
export { type RoundOptions, runRound } from "./admm/round.ts";
export { xStep } from "./admm/xstep.ts";
export { InnerLoop } from "./admm/xstep.ts";
export { makeTarget, type MatchingKind, matchingLoss, oneHot, type TargetGradient } from "./admm/matching.ts";
export { computeTarget, lastLayerFactors } from "./admm/target.ts";
export { constrainedDecode, makeProjector, topkCosine } from "./admm/zstep.ts";
export { bannedTokenMask, tokenAllowed } from "./admm/tokenFilter.ts";
export { type DpOptions, gaussianSigma } from "./admm/dp.ts";
export { analyticGaussianSigma, gaussianDelta, gaussianEpsilon, type PrivacyAccount } from "./admm/dp.ts";
export { synthPrivacy } from "./admm/synth.ts";
export { REFINE_DEFAULTS, type RefineSettings, refineTokens, repeatedBigrams } from "./admm/refine.ts";
export { customTask, getTask, TASK_PRESETS, type TaskSpec } from "./data/tasks.ts";
export { type Example, parseJsonl, stratifiedSample } from "./data/examples.ts";
export { runSynth, type SynthOptions, type SynthRecord } from "./admm/synth.ts";
