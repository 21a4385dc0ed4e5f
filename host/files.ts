/**
 * Model folders on disk: a {@link ModelSource} over a folder (safetensors read through a file
 * handle, one tensor at a time), the folder-path forms of the model loaders, and writing
 * safetensors files and whole models atomically. The reading itself (header checks, shards,
 * config, tokenizer) is models/source.ts, the same for every source.
 *
 * @module
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { GpuContext } from "../kernels/device.ts";
import { SafetensorsError } from "../models/errors.ts";
import {
  type ByteSource,
  encodeSafetensorsParts,
  openSafetensorsSource,
  type SafetensorsFile,
  type SafetensorsWriteOptions,
  type TensorToWrite,
} from "../models/safetensors.ts";
import type { ModelConfig } from "../models/config.ts";
import type { Tokenizer } from "../models/tokenizer.ts";
import {
  loadModelConfig as loadConfigFrom,
  loadTokenizer as loadTokenizerFrom,
  type ModelSink,
  type ModelSource,
  openCheckpoint as openCheckpointFrom,
} from "../models/source.ts";
import { type CausalLM, loadModel as loadModelFrom, type LoadOptions } from "../models/model.ts";
import { writeFileAtomic } from "./atomic.ts";

export { WEIGHTS_FILE, WEIGHTS_INDEX_FILE } from "../models/source.ts";
export { writeFileAtomic } from "./atomic.ts";

function describeFsError(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "file not found";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied (run with --allow-read)";
  return (e as Error).message;
}

/**
 * A {@link ByteSource} over a file: each read seeks and reads exactly the requested range. Reads
 * are serialised because they share one file position.
 */
export async function fileSource(path: string): Promise<ByteSource> {
  try {
    return await openFileSource(path);
  } catch (e) {
    throw new SafetensorsError(path, `cannot open: ${describeFsError(e)}`);
  }
}

/** {@link fileSource} with the file system's own errors (NotFound, ...) left as they are. */
async function openFileSource(path: string): Promise<ByteSource> {
  const file = await Deno.open(path, { read: true });
  const info = await file.stat();
  if (!info.isFile) {
    file.close();
    throw new Error("is not a regular file");
  }
  let queue: Promise<unknown> = Promise.resolve();
  let closed = false;
  const readRange = async (start: number, end: number): Promise<Uint8Array> => {
    if (closed) throw new SafetensorsError(path, "read after close");
    const out = new Uint8Array(end - start);
    await file.seek(start, Deno.SeekMode.Start);
    let filled = 0;
    while (filled < out.length) {
      const n = await file.read(out.subarray(filled));
      if (n === null) break;
      filled += n;
    }
    return filled === out.length ? out : out.subarray(0, filled);
  };
  return {
    name: path,
    size: info.size,
    read(start, end) {
      const result = queue.then(() => readRange(start, end));
      queue = result.catch(() => {});
      return result;
    },
    close() {
      if (!closed) {
        closed = true;
        file.close();
      }
    },
  };
}

/** Opens one safetensors file: reads its header now, each tensor when asked. */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  return openSafetensorsSource(await fileSource(path));
}

/** A {@link ModelSource} over a model folder on disk. */
export function folderSource(dir: string): ModelSource {
  return {
    name: dir,
    locate: (file) => join(dir, file),
    async has(file) {
      try {
        await Deno.stat(join(dir, file));
        return true;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return false;
        throw e;
      }
    },
    async open(file) {
      try {
        return await openFileSource(join(dir, file));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return null;
        throw new Error(describeFsError(e));
      }
    },
  };
}

/** A folder path is read from disk; a {@link ModelSource} is used as it is. */
export function asModelSource(dirOrSource: string | ModelSource): ModelSource {
  return typeof dirOrSource === "string" ? folderSource(dirOrSource) : dirOrSource;
}

/** {@link openCheckpointFrom | openCheckpoint} of models/source.ts, also taking a folder path. */
export function openCheckpoint(dirOrSource: string | ModelSource): Promise<SafetensorsFile> {
  return openCheckpointFrom(asModelSource(dirOrSource));
}

/** Reads config.json (and generation_config.json) of a folder path or a {@link ModelSource}. */
export function loadModelConfig(dirOrSource: string | ModelSource): Promise<ModelConfig> {
  return loadConfigFrom(asModelSource(dirOrSource));
}

/** Loads the tokenizer of a folder path or a {@link ModelSource} (tokenizer.json required). */
export function loadTokenizer(dirOrSource: string | ModelSource): Promise<Tokenizer> {
  return loadTokenizerFrom(asModelSource(dirOrSource));
}

/**
 * Loads a model onto the GPU from a folder path or a {@link ModelSource} (see `loadModel` in
 * models/model.ts for the options and errors).
 */
export function loadModel(
  ctx: GpuContext,
  dirOrSource: string | ModelSource,
  opts: LoadOptions = {},
): Promise<CausalLM> {
  return loadModelFrom(ctx, asModelSource(dirOrSource), opts);
}

/** A {@link ModelSink} writing into a folder (created if needed), each file atomically. */
export function folderSink(dir: string): ModelSink {
  return async (file, parts) => {
    await mkdir(dir, { recursive: true });
    await writeFileAtomic(join(dir, file), parts);
  };
}

/** Writes a model's model.safetensors (F32), config.json and generation_config.json into `dir`. */
export function saveModel(model: CausalLM, dir: string): Promise<void> {
  return model.save(folderSink(dir));
}

/**
 * Writes tensors as a safetensors file (F32 by default, F16/BF16 per tensor), atomically.
 * The file carries `{"format": "pt"}` metadata so transformers can load it.
 */
export async function writeSafetensors(
  path: string,
  tensors: Readonly<Record<string, TensorToWrite>> | ReadonlyMap<string, TensorToWrite>,
  options: SafetensorsWriteOptions = {},
): Promise<void> {
  const parts = encodeSafetensorsParts(tensors, options);
  try {
    await writeFileAtomic(path, parts);
  } catch (e) {
    throw new SafetensorsError(path, `cannot write: ${describeFsError(e)}`);
  }
}
