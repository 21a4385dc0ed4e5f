/**
 * Where a model's files come from, and reading a model folder's parts through it. A
 * {@link ModelSource} hands out the bytes of a file by name (config.json, model.safetensors, the
 * shards, tokenizer.json): from bytes or `Blob`s in memory ({@link bytesSource}), from a base URL
 * through `fetch` ({@link urlSource}), or from a folder on disk (`folderSource` in host/files.ts).
 * Everything after the bytes (safetensors header and size checks, shard index checks, config and
 * tokenizer parsing) is the same code whichever source, so a page and the CLI load a model alike
 * and see the same errors.
 *
 * Platform-neutral: only `fetch`, `Blob` and `URL`.
 *
 * @module
 */
import { ConfigError, SafetensorsError, TokenizerError } from "./errors.ts";
import {
  blobSource,
  type ByteSource,
  memorySource,
  openSafetensorsSource,
  openShardedSafetensors,
  parseShardIndex,
  type SafetensorsFile,
} from "./safetensors.ts";
import { type ModelConfig, parseModelConfig } from "./config.ts";
import { createTokenizer, type Tokenizer } from "./tokenizer.ts";

/** The single-file weights name. */
export const WEIGHTS_FILE = "model.safetensors";
/** The sharded-weights index name. */
export const WEIGHTS_INDEX_FILE = "model.safetensors.index.json";

/** Read access to the files of one model folder, wherever it lives. */
export interface ModelSource {
  /** A label for messages: the folder path, the base URL, or "<memory>". */
  readonly name: string;
  /** A label for one file of the folder (its path or URL), for messages. */
  locate(file: string): string;
  /**
   * Random access to `file`'s bytes, or null when the folder has no such file. Any other failure
   * (permission, HTTP error, network) throws an `Error` whose message says what went wrong.
   */
  open(file: string): Promise<ByteSource | null>;
  /** Whether the folder has `file` (used only for hints, e.g. a stray pytorch_model.bin). */
  has(file: string): Promise<boolean>;
}

/** Where a model's files are written ({@link CausalLM.save}): one call per file, its bytes in parts. */
export type ModelSink = (file: string, parts: readonly Uint8Array[]) => Promise<void>;

/** A file's contents for {@link bytesSource}: bytes, a `Blob`/`File`, or text. */
export type FileContents = Uint8Array | ArrayBuffer | Blob | string;

/**
 * A {@link ModelSource} over files held in memory, by file name (e.g. from a page's
 * `<input type=file multiple>`, or bytes built in a test).
 */
export function bytesSource(
  files: ReadonlyMap<string, FileContents> | Readonly<Record<string, FileContents>>,
  name = "<memory>",
): ModelSource {
  const get = (file: string): FileContents | undefined =>
    files instanceof Map
      ? files.get(file)
      : Object.hasOwn(files, file)
      ? (files as Record<string, FileContents>)[file]
      : undefined;
  const locate = (file: string) => `${name}/${file}`;
  return {
    name,
    locate,
    has: (file) => Promise.resolve(get(file) !== undefined),
    open(file) {
      const data = get(file);
      if (data === undefined) return Promise.resolve(null);
      if (data instanceof Blob) return Promise.resolve(blobSource(data, locate(file)));
      const bytes = typeof data === "string"
        ? new TextEncoder().encode(data)
        : data instanceof Uint8Array
        ? data
        : new Uint8Array(data);
      return Promise.resolve(memorySource(bytes, locate(file)));
    },
  };
}

/** Options of {@link urlSource}. */
export interface UrlSourceOptions {
  /** The fetch to use (default `globalThis.fetch`): inject one for tests or authentication. */
  fetch?: typeof fetch;
  /** Extra request options (headers, credentials, signal). */
  init?: RequestInit;
}

/**
 * A {@link ModelSource} over a folder served by HTTP: `base` is the folder's URL (absolute, or
 * relative to the page in a browser), and each file is fetched whole when opened (a 404 means the
 * file is absent). Responses shorter than their Content-Length are refused.
 *
 * Approximate on purpose: a file is held in memory (as a `Blob`) while open, rather than read in
 * ranges; fine for the small models a page runs, not for multi-GB checkpoints.
 */
export function urlSource(base: string | URL, options: UrlSourceOptions = {}): ModelSource {
  const page = (globalThis as { location?: { href: string } }).location?.href;
  let root: URL;
  try {
    const text = String(base);
    root = new URL(text.endsWith("/") ? text : `${text}/`, page);
  } catch {
    throw new TypeError(
      `urlSource: '${base}' is not a URL; give an absolute URL (http://host/folder/)` +
        (page ? "" : " (relative URLs need a page)"),
    );
  }
  const doFetch = options.fetch ?? globalThis.fetch;
  const urlOf = (file: string) => new URL(file, root).href;
  const request = async (file: string, method: "GET" | "HEAD"): Promise<Response | null> => {
    let response: Response;
    try {
      response = await doFetch(urlOf(file), { ...options.init, method });
    } catch (e) {
      throw new Error(`fetch failed (${(e as Error).message})`);
    }
    if (response.status === 404 || response.status === 410) {
      await response.body?.cancel();
      return null;
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw new Error(`HTTP ${response.status} ${response.statusText}`.trim());
    }
    return response;
  };
  return {
    name: root.href,
    locate: urlOf,
    async has(file) {
      const response = await request(file, "HEAD");
      return response !== null;
    },
    async open(file) {
      const response = await request(file, "GET");
      if (!response) return null;
      const blob = await response.blob();
      const announced = response.headers.get("content-length");
      // A compressed response announces its compressed length; compare only identity encodings.
      const encoded = (response.headers.get("content-encoding") ?? "identity") !== "identity";
      if (announced !== null && !encoded && Number(announced) !== blob.size) {
        throw new Error(`the server announced ${announced} bytes but sent ${blob.size}`);
      }
      return blobSource(blob, urlOf(file));
    },
  };
}

/** The message for a file that could not be opened (the same words for every source). */
function openProblem(e: unknown): string {
  return `cannot open: ${(e as Error).message}`;
}

/** Opens `file` of `source` as one safetensors file (header now, tensors when asked). */
export async function openSafetensorsFile(source: ModelSource, file: string): Promise<SafetensorsFile> {
  let bytes: ByteSource | null;
  try {
    bytes = await source.open(file);
  } catch (e) {
    throw new SafetensorsError(source.locate(file), openProblem(e));
  }
  if (!bytes) throw new SafetensorsError(source.locate(file), "cannot open: file not found");
  return openSafetensorsSource(bytes);
}

/** The whole of `file` as text, or null when the source does not have it. */
export async function readSourceText(source: ModelSource, file: string): Promise<string | null> {
  const bytes = await source.open(file);
  if (!bytes) return null;
  try {
    return new TextDecoder().decode(await bytes.read(0, bytes.size));
  } finally {
    bytes.close();
  }
}

/**
 * Opens a model folder's weights: `model.safetensors`, or `model.safetensors.index.json` and every
 * shard it lists (headers only), presented as one {@link SafetensorsFile}.
 */
export async function openCheckpoint(source: ModelSource): Promise<SafetensorsFile> {
  let single: ByteSource | null;
  try {
    single = await source.open(WEIGHTS_FILE);
  } catch (e) {
    throw new SafetensorsError(source.locate(WEIGHTS_FILE), openProblem(e));
  }
  if (single) return openSafetensorsSource(single);
  const indexPath = source.locate(WEIGHTS_INDEX_FILE);
  let text: string | null;
  try {
    text = await readSourceText(source, WEIGHTS_INDEX_FILE);
  } catch (e) {
    throw new SafetensorsError(indexPath, `cannot read the shard index: ${(e as Error).message}`);
  }
  if (text === null) {
    const legacy = (await source.has("pytorch_model.bin").catch(() => false))
      ? " It has pytorch_model.bin: convert it to safetensors (transformers: model.save_pretrained(dir, safe_serialization=True))."
      : "";
    throw new SafetensorsError(
      source.name,
      `no ${WEIGHTS_FILE} or ${WEIGHTS_INDEX_FILE} in this folder.${legacy}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(indexPath, `cannot read the shard index: ${(e as Error).message}`);
  }
  const index = parseShardIndex(json, indexPath);
  return openShardedSafetensors(index, (shard) => openSafetensorsFile(source, shard), indexPath);
}

/** Reads and parses a JSON file of `source`; undefined when it is absent and `optional` is set. */
export async function readSourceJson(
  source: ModelSource,
  file: string,
  optional: boolean,
  fail: (message: string) => Error,
): Promise<unknown> {
  let text: string | null;
  try {
    text = await readSourceText(source, file);
  } catch (e) {
    throw fail(`${source.locate(file)}: ${(e as Error).message}`);
  }
  if (text === null) {
    if (optional) return undefined;
    throw fail(`${source.locate(file)}: file not found`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw fail(`${source.locate(file)}: not valid JSON (${(e as Error).message})`);
  }
}

/**
 * Reads a model folder's config.json (and generation_config.json for the stop ids) into a
 * {@link ModelConfig}.
 */
export async function loadModelConfig(source: ModelSource): Promise<ModelConfig> {
  const fail = (m: string) => new ConfigError(m);
  const config = await readSourceJson(source, "config.json", false, fail);
  const generation = await readSourceJson(source, "generation_config.json", true, fail);
  return parseModelConfig(config, source.locate("config.json"), generation);
}

/**
 * Loads a model folder's tokenizer: tokenizer.json (required) with tokenizer_config.json,
 * special_tokens_map.json, generation_config.json and config.json when present.
 */
export async function loadTokenizer(source: ModelSource): Promise<Tokenizer> {
  const fail = (m: string) => new TokenizerError(m);
  const read = (file: string) => readSourceJson(source, file, true, fail);
  const tokenizerJson = await read("tokenizer.json");
  if (tokenizerJson === undefined) {
    throw new TokenizerError(
      `${source.name}: no tokenizer.json. The engine needs the fast-tokenizer file; create it with transformers: ` +
        `AutoTokenizer.from_pretrained(model).save_pretrained(dir)`,
    );
  }
  return createTokenizer({
    tokenizerJson,
    tokenizerConfig: await read("tokenizer_config.json"),
    specialTokensMap: await read("special_tokens_map.json"),
    generationConfig: await read("generation_config.json"),
    modelConfig: await read("config.json"),
    source: source.name,
  });
}
