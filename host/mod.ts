/**
 * The Deno-only part of gradmm-ts: model folders on disk, the Hugging Face hub download and its
 * cache (shared with Python's huggingface_hub), the bundled default model and data, the matmul
 * autotune cache on disk, atomic file writes, the one-call API with folder paths and hub ids
 * (`synth`, `generate`, `evaluate`, `finetune`), and the resumable synth job on disk that
 * `cli.ts synth` runs (`runSynthJob`). Everything here reads files, environment variables or the
 * process; the engine itself (`mod.ts`) does none of that and runs
 * in a browser too.
 *
 * @example Load a model folder from disk
 * ```ts
 * import { createContext, generateText } from "../mod.ts";
 * import { loadModel, loadTokenizer } from "./mod.ts";
 * const ctx = await createContext();
 * const model = await loadModel(ctx, "assets/gpt2-d128");
 * const tok = await loadTokenizer("assets/gpt2-d128");
 * const out = await generateText(model, tok, ["This movie is"], { maxNewTokens: 10, greedy: true });
 * console.log(out.texts[0]);
 * ```
 * @module
 */

export { type AtomicContent, writeFileAtomic } from "./atomic.ts";
export {
  ASSET_FILES,
  type AssetFile,
  type AssetOptions,
  BUNDLED_DATA,
  BUNDLED_MODEL,
  bundledAsset,
  bundledData,
  bundledModel,
} from "./assets.ts";
export {
  asModelSource,
  fileSource,
  folderSink,
  folderSource,
  loadModel,
  loadModelConfig,
  loadTokenizer,
  openCheckpoint,
  openSafetensors,
  saveModel,
  writeSafetensors,
} from "./files.ts";
export {
  defaultHubCacheDir,
  type DownloadProgress,
  parseRepoSpec,
  type RepoSpec,
  type ResolvedModel,
  resolveModel,
  type ResolveOptions,
} from "./hub.ts";
export {
  autotune,
  autotuneMode,
  type AutotuneOptions,
  type CacheDirOption,
  cacheFile,
  defaultCacheDir as defaultTuningCacheDir,
  denoRuntime,
  folderTuningStore,
  loadMatmulTuning,
  processCpuTime,
} from "./autotune.ts";
export {
  evaluate,
  finetune,
  generate,
  type HostExamples,
  hostExamples,
  type HostModelInput,
  hostModelInput,
  type HostSynthRequest,
  synth,
} from "./api.ts";
export {
  DEFAULT_OUT,
  type JobModel,
  type JobModelOpener,
  openJobModel,
  parseRecords,
  runSynthJob,
  sha256File,
  SynthJobError,
  type SynthJobEvent,
  type SynthJobOptions,
  synthJobPaths,
  type SynthJobResult,
} from "./synth_job.ts";
