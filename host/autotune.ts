/**
 * The matmul autotuner's Deno side: its cache as JSON files in a folder ($GRADMM_CACHE, else the
 * user's cache folder), the runtime's identity for the cache key (DENO_WEBGPU_BACKEND, the Deno
 * version), process CPU time for ranking on CPU adapters, and the GRADMM_AUTOTUNE switch. The
 * measuring and the in-memory table are kernels/autotune.ts; the functions here are the same ones
 * with a `cacheDir` instead of a store.
 *
 * @module
 */
import process from "node:process";
import { join } from "node:path";
import type { GpuContext } from "../kernels/device.ts";
import type { MatmulDims } from "../kernels/matmul.ts";
import {
  autotune as autotuneWith,
  type AutotuneOptions as StoreAutotuneOptions,
  type AutotuneReport,
  cacheEntryName,
  type CacheKey,
  cacheKey as cacheKeyFor,
  loadMatmulTuning as loadWith,
  type LoadResult,
  type TuningRuntime,
  type TuningStore,
} from "../kernels/autotune.ts";
import { writeFileAtomic } from "./atomic.ts";

/** Reads an environment variable, or undefined when unset or not permitted. */
function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Where tunings are cached: $GRADMM_CACHE, else $XDG_CACHE_HOME/gradmm-ts, else
 * ~/.cache/gradmm-ts (%LOCALAPPDATA%\gradmm-ts on Windows); null when none is known.
 */
export function defaultCacheDir(): string | null {
  const explicit = env("GRADMM_CACHE");
  if (explicit) return explicit;
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "gradmm-ts");
  const local = env("LOCALAPPDATA");
  if (Deno.build.os === "windows" && local) return join(local, "gradmm-ts");
  const home = env("HOME") ?? env("USERPROFILE");
  return home ? join(home, ".cache", "gradmm-ts") : null;
}

/**
 * Whether commands should tune, from GRADMM_AUTOTUNE: `0`/`off`/`false` = never (static
 * defaults), `cache` = use cached tunings but measure nothing, `on`/`1` = tune what the cache
 * lacks; unset or anything else = `fallback` (the caller's default for its adapter).
 */
export function autotuneMode(fallback: "off" | "cache" | "on" = "on"): "off" | "cache" | "on" {
  const v = env("GRADMM_AUTOTUNE")?.toLowerCase();
  if (v === "0" || v === "off" || v === "false" || v === "no") return "off";
  if (v === "cache") return "cache";
  return v === "on" || v === "1" ? "on" : fallback;
}

/** This process's runtime for the cache key: DENO_WEBGPU_BACKEND and the Deno version. */
export function denoRuntime(): TuningRuntime {
  return { backend: env("DENO_WEBGPU_BACKEND") ?? "", version: Deno.version.deno };
}

/** Process CPU time (user + system) so far, ms. */
export function processCpuTime(): number {
  const used = process.cpuUsage();
  return (used.user + used.system) / 1000;
}

/** A {@link TuningStore} of files in `dir` (created when first written), written atomically. */
export function folderTuningStore(dir: string): TuningStore {
  return {
    locate: (name) => join(dir, name),
    async read(name) {
      try {
        return await Deno.readTextFile(join(dir, name));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return null;
        throw e;
      }
    },
    async write(name, text) {
      await Deno.mkdir(dir, { recursive: true });
      await writeFileAtomic(join(dir, name), text);
    },
  };
}

/** Where the cache is kept, for the functions of this module. */
export interface CacheDirOption {
  /** Directory of the cache files; null = no disk cache. Default {@link defaultCacheDir}. */
  cacheDir?: string | null;
}

/** {@link StoreAutotuneOptions} with a cache folder in place of the store and runtime. */
export type AutotuneOptions = Omit<StoreAutotuneOptions, "store" | "runtime"> & CacheDirOption;

function storeOptions(options: CacheDirOption): { store: TuningStore | null; runtime: TuningRuntime } {
  const dir = options.cacheDir === undefined ? defaultCacheDir() : options.cacheDir;
  return { store: dir ? folderTuningStore(dir) : null, runtime: denoRuntime() };
}

/**
 * `autotune` of kernels/autotune.ts with the cache in `options.cacheDir` (default
 * {@link defaultCacheDir}) and candidates ranked by process CPU time on CPU adapters.
 */
export function autotune(
  ctx: GpuContext,
  shapes: MatmulDims[],
  options: AutotuneOptions = {},
): Promise<AutotuneReport> {
  return autotuneWith(ctx, shapes, { cpuTime: processCpuTime, ...options, ...storeOptions(options) });
}

/** `loadMatmulTuning` of kernels/autotune.ts with the cache in `options.cacheDir`. */
export function loadMatmulTuning(ctx: GpuContext, options: CacheDirOption = {}): Promise<LoadResult> {
  return loadWith(ctx, storeOptions(options));
}

/** The cache key of a context in this process. */
export function cacheKey(ctx: GpuContext): Promise<CacheKey> {
  return cacheKeyFor(ctx, denoRuntime());
}

/** The cache file of a context in `dir`: one file per key, so adapters and versions coexist. */
export async function cacheFile(ctx: GpuContext, dir: string): Promise<string> {
  return join(dir, await cacheEntryName(ctx, denoRuntime()));
}
