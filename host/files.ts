/**
 * Reading a model folder from disk with Deno: safetensors files through a file handle (one tensor
 * at a time), sharded checkpoints, config.json and the tokenizer files; and writing safetensors
 * atomically. This is the only module under `models/` besides `hub.ts` that touches `Deno.*`.
 *
 * @module
 */
import { join } from "node:path";
import { ConfigError, SafetensorsError, TokenizerError } from "../models/errors.ts";
import {
  type ByteSource,
  encodeSafetensorsParts,
  openSafetensorsSource,
  openShardedSafetensors,
  parseShardIndex,
  type SafetensorsFile,
  type SafetensorsWriteOptions,
  type TensorToWrite,
} from "../models/safetensors.ts";
import { type ModelConfig, parseModelConfig } from "../models/config.ts";
import { createTokenizer, type Tokenizer } from "../models/tokenizer.ts";

/** The single-file weights name. */
export const WEIGHTS_FILE = "model.safetensors";
/** The sharded-weights index name. */
export const WEIGHTS_INDEX_FILE = "model.safetensors.index.json";

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
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw new SafetensorsError(path, `cannot open: ${describeFsError(e)}`);
  }
  const info = await file.stat();
  if (!info.isFile) {
    file.close();
    throw new SafetensorsError(path, "is not a regular file");
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

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Opens a model folder's weights: `model.safetensors`, or `model.safetensors.index.json` and every
 * shard it lists (headers only), presented as one {@link SafetensorsFile}.
 */
export async function openCheckpoint(dir: string): Promise<SafetensorsFile> {
  const single = join(dir, WEIGHTS_FILE);
  if (await exists(single)) return openSafetensors(single);
  const indexPath = join(dir, WEIGHTS_INDEX_FILE);
  if (!(await exists(indexPath))) {
    const legacy = (await exists(join(dir, "pytorch_model.bin")))
      ? " It has pytorch_model.bin: convert it to safetensors (transformers: model.save_pretrained(dir, safe_serialization=True))."
      : "";
    throw new SafetensorsError(dir, `no ${WEIGHTS_FILE} or ${WEIGHTS_INDEX_FILE} in this folder.${legacy}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (e) {
    throw new SafetensorsError(indexPath, `cannot read the shard index: ${describeFsError(e)}`);
  }
  const index = parseShardIndex(json, indexPath);
  return openShardedSafetensors(index, (shard) => openSafetensors(join(dir, shard)), indexPath);
}

/**
 * Writes `chunks` to `path` through a temporary file in the same folder and a rename, so that
 * `path` is either the old file or the complete new one, never a half-written one.
 */
export async function writeFileAtomic(path: string, chunks: Iterable<Uint8Array>): Promise<void> {
  const temp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  let file: Deno.FsFile | undefined;
  try {
    file = await Deno.open(temp, { write: true, createNew: true });
    for (const chunk of chunks) {
      let written = 0;
      while (written < chunk.length) written += await file.write(chunk.subarray(written));
    }
    await file.syncData();
    file.close();
    file = undefined;
    await Deno.rename(temp, path);
  } catch (e) {
    file?.close();
    await Deno.remove(temp).catch(() => {});
    throw e;
  }
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

/** Reads and parses a JSON file; undefined when it does not exist and `optional` is set. */
async function readJson(
  path: string,
  optional: boolean,
  fail: (message: string) => Error,
): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (optional && e instanceof Deno.errors.NotFound) return undefined;
    throw fail(`${path}: ${describeFsError(e)}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw fail(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

/**
 * Reads a model folder's config.json (and generation_config.json for the stop ids) into a
 * {@link ModelConfig}.
 */
export async function loadModelConfig(dir: string): Promise<ModelConfig> {
  const fail = (m: string) => new ConfigError(m);
  const path = join(dir, "config.json");
  const config = await readJson(path, false, fail);
  const generation = await readJson(join(dir, "generation_config.json"), true, fail);
  return parseModelConfig(config, path, generation);
}

/**
 * Loads a model folder's tokenizer: tokenizer.json (required) with tokenizer_config.json,
 * special_tokens_map.json, generation_config.json and config.json when present.
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const fail = (m: string) => new TokenizerError(m);
  const tokenizerPath = join(dir, "tokenizer.json");
  const tokenizerJson = await readJson(tokenizerPath, true, fail);
  if (tokenizerJson === undefined) {
    throw new TokenizerError(
      `${dir}: no tokenizer.json. The engine needs the fast-tokenizer file; create it with transformers: ` +
        `AutoTokenizer.from_pretrained(model).save_pretrained(dir)`,
    );
  }
  return createTokenizer({
    tokenizerJson,
    tokenizerConfig: await readJson(join(dir, "tokenizer_config.json"), true, fail),
    specialTokensMap: await readJson(join(dir, "special_tokens_map.json"), true, fail),
    generationConfig: await readJson(join(dir, "generation_config.json"), true, fail),
    modelConfig: await readJson(join(dir, "config.json"), true, fail),
    source: dir,
  });
}
