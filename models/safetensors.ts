/**
 * The safetensors format, read and written by us: an 8-byte little-endian header length, a JSON
 * header mapping names to {dtype, shape, data_offsets}, then the tensor bytes.
 *
 * This module is platform-neutral: it reads through a {@link ByteSource} (a file handle in
 * `files.ts`, a `Blob` in a browser, or bytes in memory) so that a model is never held in memory
 * twice: the header is read first, then each tensor's byte range when it is asked for.
 *
 * Every length in the header is untrusted. Before anything is allocated the header length is
 * checked against the file size, and every tensor's byte span against its shape, its dtype and
 * the data section, so a corrupt or hostile file costs at most its own size in memory.
 *
 * @module
 */
import { SafetensorsError } from "./errors.ts";
import { bfloat16ToFloat32, float16ToFloat32, float32ToBfloat16, float32ToFloat16 } from "./half_float.ts";

/** Element types this reader understands (F8 and other exotic types are refused by name). */
export type SafetensorsDtype =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U64"
  | "U32"
  | "U16"
  | "U8"
  | "BOOL";

/** Bytes per element for each dtype. */
export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

/** Dtypes the writer can produce. */
export type WritableDtype = "F32" | "F16" | "BF16";

/**
 * Headers above this size are refused before allocating: real ones are kilobytes (a 70B-parameter
 * shard's is under 100 KB), so anything near this is corruption, not a model.
 */
export const MAX_HEADER_BYTES = 100_000_000;

/** Where one tensor lives and what it holds. */
export interface TensorInfo {
  /** The tensor's name in the checkpoint. */
  readonly name: string;
  /** Element type as stored. */
  readonly dtype: SafetensorsDtype;
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Number of elements (product of the shape; 1 for a scalar). */
  readonly numel: number;
  /** Absolute byte range [start, end) in the file that holds it. */
  readonly byteRange: readonly [number, number];
  /** The file it is in (the shard's name for a sharded checkpoint). */
  readonly file: string;
}

/**
 * Random access to the bytes of one file. `read` returns exactly `end - start` bytes, in a buffer
 * the caller may keep and modify.
 */
export interface ByteSource {
  /** A label for error messages (usually the path). */
  readonly name: string;
  /** Total size in bytes. */
  readonly size: number;
  /** Reads bytes [start, end). */
  read(start: number, end: number): Promise<Uint8Array>;
  /** Releases the underlying handle; later reads fail. */
  close(): void;
}

/** The parsed, validated header of one safetensors file. */
export interface SafetensorsHeader {
  /** Tensors by name, with absolute byte ranges. */
  readonly tensors: Map<string, TensorInfo>;
  /** The `__metadata__` string map (empty when absent). */
  readonly metadata: Record<string, string>;
  /** Byte offset where the data section starts (8 + header length). */
  readonly dataOffset: number;
}

/** Typed arrays that {@link SafetensorsFile.readTyped} returns, one per dtype family. */
export type TensorData =
  | Float64Array
  | Float32Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array;

/** An open safetensors file (or a sharded checkpoint seen as one): header now, tensors on demand. */
export interface SafetensorsFile extends Disposable {
  /** A label for error messages: the path, or the index path for a sharded checkpoint. */
  readonly source: string;
  /** Every stored tensor by name. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** `__metadata__` (merged over shards). */
  readonly metadata: Readonly<Record<string, string>>;
  /**
   * Names that were saved once under another name: torch's `save_model` drops shared tensors
   * (tied embeddings) and records `removed name → kept name` in the metadata.
   */
  readonly aliases: ReadonlyMap<string, string>;
  /** Whether `name` is stored or is an alias of a stored tensor. */
  has(name: string): boolean;
  /** The tensor's description (aliases resolved); throws {@link SafetensorsError} when absent. */
  info(name: string): TensorInfo;
  /** Reads a tensor as float32 (F16/BF16 widened exactly; F64 and integers converted). */
  read(name: string): Promise<Float32Array>;
  /** Reads a tensor in its stored type (F16/BF16 widened to float32, BOOL as 0/1 bytes). */
  readTyped(name: string): Promise<TensorData>;
  /** Reads a tensor's raw little-endian bytes. */
  readBytes(name: string): Promise<Uint8Array>;
  /** Releases the file handle(s). Idempotent. */
  close(): void;
}

// ---------------------------------------------------------------------------------------------
// Byte sources

/**
 * A {@link ByteSource} over bytes already in memory. Reads return copies, so tensors never alias
 * the caller's buffer (and are always aligned for their typed array).
 */
export function memorySource(bytes: Uint8Array, name = "<memory>"): ByteSource {
  let closed = false;
  return {
    name,
    size: bytes.length,
    read(start, end) {
      if (closed) return Promise.reject(new SafetensorsError(name, "read after close"));
      return Promise.resolve(bytes.slice(start, end));
    },
    close() {
      closed = true;
    },
  };
}

/** A {@link ByteSource} over a `Blob` or `File` (browsers: an `<input type=file>` or a fetched blob). */
export function blobSource(blob: Blob, name = "<blob>"): ByteSource {
  return {
    name,
    size: blob.size,
    async read(start, end) {
      return new Uint8Array(await blob.slice(start, end).arrayBuffer());
    },
    close() {},
  };
}

// ---------------------------------------------------------------------------------------------
// Header

/**
 * Reads the header length from the first 8 bytes and checks it against the file size and
 * {@link MAX_HEADER_BYTES}, so that no allocation ever follows from a corrupt length.
 */
export function readHeaderLength(prefix: Uint8Array, fileSize: number, source: string): number {
  if (fileSize < 8 || prefix.length < 8) {
    throw new SafetensorsError(
      source,
      `file is ${fileSize} bytes; a safetensors file starts with an 8-byte header length (truncated or not a safetensors file)`,
    );
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const low = view.getUint32(0, true);
  const high = view.getUint32(4, true);
  const length = high * 2 ** 32 + low;
  if (high !== 0 || low > MAX_HEADER_BYTES) {
    throw new SafetensorsError(
      source,
      `header length ${
        view.getBigUint64(0, true)
      } is above the ${MAX_HEADER_BYTES}-byte limit: the file is corrupt or not a safetensors file`,
    );
  }
  if (length > fileSize - 8) {
    throw new SafetensorsError(
      source,
      `header length ${length} is larger than the ${
        fileSize - 8
      } bytes that follow it: the file is truncated or corrupt`,
    );
  }
  if (length < 2) {
    throw new SafetensorsError(source, `header length ${length} is too small to hold a JSON object`);
  }
  return length;
}

const KNOWN_UNSUPPORTED = ["F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"];

function describeJson(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "string" ? `the string ${JSON.stringify(value.slice(0, 40))}` : `a ${typeof value}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Parses and validates the JSON header (the bytes after the 8-byte length). `fileSize` bounds the
 * data section: every tensor must fit in it, tensors must not overlap or leave gaps, and together
 * they must cover it exactly.
 */
export function parseSafetensorsHeader(
  headerBytes: Uint8Array,
  fileSize: number,
  source: string,
): SafetensorsHeader {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError(
      source,
      "header is not valid UTF-8: the file is corrupt or not a safetensors file",
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(
      source,
      `header is not valid JSON (${(e as Error).message}): the file is corrupt or not a safetensors file`,
    );
  }
  if (!isPlainObject(json)) {
    throw new SafetensorsError(source, `header must be a JSON object, got ${describeJson(json)}`);
  }
  const dataOffset = 8 + headerBytes.length;
  const dataSize = fileSize - dataOffset;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  const spans: { name: string; begin: number; end: number }[] = [];

  for (const [name, entry] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (!isPlainObject(entry)) {
        throw new SafetensorsError(
          source,
          `__metadata__ must be an object of strings, got ${describeJson(entry)}`,
        );
      }
      for (const [key, value] of Object.entries(entry)) {
        if (typeof value !== "string") {
          throw new SafetensorsError(
            source,
            `__metadata__["${key}"] must be a string, got ${describeJson(value)}`,
          );
        }
        metadata[key] = value;
      }
      continue;
    }
    const where = `tensor "${name}"`;
    if (!isPlainObject(entry)) {
      throw new SafetensorsError(source, `${where}: entry must be an object, got ${describeJson(entry)}`);
    }
    const dtype = entry.dtype;
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
      const hint = typeof dtype === "string" && KNOWN_UNSUPPORTED.includes(dtype)
        ? " (a valid safetensors dtype this engine does not support; convert the checkpoint to F32, F16 or BF16)"
        : "";
      throw new SafetensorsError(
        source,
        `${where}: unknown dtype ${JSON.stringify(dtype)}${hint}; supported: ${
          Object.keys(DTYPE_BYTES).join(", ")
        }`,
      );
    }
    const shape = entry.shape;
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw new SafetensorsError(
        source,
        `${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`,
      );
    }
    const offsets = entry.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      throw new SafetensorsError(
        source,
        `${where}: data_offsets must be [begin, end] with non-negative integers, got ${
          JSON.stringify(offsets)
        }`,
      );
    }
    const [begin, end] = offsets as number[];
    if (begin > end) {
      throw new SafetensorsError(source, `${where}: data_offsets [${begin}, ${end}] end before they begin`);
    }
    if (end > dataSize) {
      throw new SafetensorsError(
        source,
        `${where}: data_offsets [${begin}, ${end}] reach past the ${dataSize}-byte data section: the file is truncated`,
      );
    }
    // The product is only compared with a span that already fits in the file, so an absurd shape
    // is refused here without being allocated; zero dimensions give an empty tensor.
    let numel = 1;
    for (const dim of shape as number[]) numel *= dim;
    const itemBytes = DTYPE_BYTES[dtype as SafetensorsDtype];
    if (numel * itemBytes !== end - begin) {
      throw new SafetensorsError(
        source,
        `${where}: shape [${shape.join(", ")}] of ${dtype} needs ${numel * itemBytes} bytes, ` +
          `but data_offsets [${begin}, ${end}] hold ${end - begin}`,
      );
    }
    tensors.set(name, {
      name,
      dtype: dtype as SafetensorsDtype,
      shape: shape.slice() as number[],
      numel,
      byteRange: [dataOffset + begin, dataOffset + end],
      file: source,
    });
    spans.push({ name, begin, end });
  }

  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let previous = "";
  for (const span of spans) {
    if (span.begin < covered) {
      throw new SafetensorsError(
        source,
        `tensors "${previous}" and "${span.name}" overlap (byte ${span.begin} is before ${covered})`,
      );
    }
    if (span.begin > covered) {
      throw new SafetensorsError(
        source,
        `bytes ${covered}..${span.begin} of the data section belong to no tensor (gap before "${span.name}")`,
      );
    }
    covered = span.end;
    previous = span.name;
  }
  if (covered !== dataSize) {
    throw new SafetensorsError(
      source,
      `the data section has ${dataSize} bytes but the tensors cover ${covered}: ` +
        `${dataSize - covered} trailing bytes belong to no tensor`,
    );
  }
  return { tensors, metadata, dataOffset };
}

// ---------------------------------------------------------------------------------------------
// Element conversion

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
// Typed-array views need their element alignment; a custom ByteSource may hand back any subarray.
function aligned(bytes: Uint8Array, dtype: SafetensorsDtype, source: string): Uint8Array {
  if (bytes.length % DTYPE_BYTES[dtype] !== 0) {
    throw new SafetensorsError(source, `${bytes.length} bytes are not a whole number of ${dtype} elements`);
  }
  return bytes.byteOffset % DTYPE_BYTES[dtype] === 0 ? bytes : bytes.slice();
}

function requireLittleEndian(source: string): void {
  if (!LITTLE_ENDIAN) {
    throw new SafetensorsError(
      source,
      "this reader needs a little-endian host (safetensors data is little-endian)",
    );
  }
}

/** Widens stored bytes of the given dtype to float32. `bytes` must be aligned for the dtype. */
export function decodeToFloat32(
  bytes: Uint8Array,
  dtype: SafetensorsDtype,
  source = "<bytes>",
): Float32Array {
  requireLittleEndian(source);
  bytes = aligned(bytes, dtype, source);
  const n = bytes.length / DTYPE_BYTES[dtype];
  switch (dtype) {
    case "F32":
      return new Float32Array(bytes.buffer, bytes.byteOffset, n);
    case "F16":
      return float16ToFloat32(new Uint16Array(bytes.buffer, bytes.byteOffset, n));
    case "BF16":
      return bfloat16ToFloat32(new Uint16Array(bytes.buffer, bytes.byteOffset, n));
    default: {
      const typed = decodeTyped(bytes, dtype, source);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(typed[i]);
      return out;
    }
  }
}

/** Views stored bytes as the typed array of their dtype (F16/BF16 widened to float32). */
export function decodeTyped(bytes: Uint8Array, dtype: SafetensorsDtype, source = "<bytes>"): TensorData {
  requireLittleEndian(source);
  bytes = aligned(bytes, dtype, source);
  const { buffer, byteOffset } = bytes;
  const n = bytes.length / DTYPE_BYTES[dtype];
  switch (dtype) {
    case "F64":
      return new Float64Array(buffer, byteOffset, n);
    case "F32":
    case "F16":
    case "BF16":
      return decodeToFloat32(bytes, dtype, source);
    case "I64":
      return new BigInt64Array(buffer, byteOffset, n);
    case "I32":
      return new Int32Array(buffer, byteOffset, n);
    case "I16":
      return new Int16Array(buffer, byteOffset, n);
    case "I8":
      return new Int8Array(buffer, byteOffset, n);
    case "U64":
      return new BigUint64Array(buffer, byteOffset, n);
    case "U32":
      return new Uint32Array(buffer, byteOffset, n);
    case "U16":
      return new Uint16Array(buffer, byteOffset, n);
    case "U8":
    case "BOOL":
      return new Uint8Array(buffer, byteOffset, n);
  }
}

// ---------------------------------------------------------------------------------------------
// Reader

function missingTensorError(
  source: string,
  name: string,
  tensors: ReadonlyMap<string, TensorInfo>,
): SafetensorsError {
  const some = [...tensors.keys()].slice(0, 5).join(", ");
  return new SafetensorsError(
    source,
    `no tensor "${name}" (the file has ${tensors.size} tensors${tensors.size ? `, e.g. ${some}` : ""})`,
  );
}

/** Finds `removed name → kept name` aliases in metadata (see {@link SafetensorsFile.aliases}). */
function aliasesFromMetadata(
  metadata: Record<string, string>,
  tensors: ReadonlyMap<string, TensorInfo>,
): Map<string, string> {
  const aliases = new Map<string, string>();
  for (const [key, value] of Object.entries(metadata)) {
    if (!tensors.has(key) && tensors.has(value)) aliases.set(key, value);
  }
  return aliases;
}

/** Builds the lookup and read methods shared by single-file and sharded readers. */
function makeTensorFile(
  source: string,
  tensors: ReadonlyMap<string, TensorInfo>,
  metadata: Record<string, string>,
  readRange: (info: TensorInfo) => Promise<Uint8Array>,
  closeAll: () => void,
): SafetensorsFile {
  const aliases = aliasesFromMetadata(metadata, tensors);
  let closed = false;
  const info = (name: string): TensorInfo => {
    const found = tensors.get(name) ?? tensors.get(aliases.get(name) ?? "");
    if (!found) throw missingTensorError(source, name, tensors);
    return found;
  };
  const readBytes = async (name: string): Promise<Uint8Array> => {
    const tensor = info(name);
    if (closed) throw new SafetensorsError(source, `cannot read "${name}": the file was closed`);
    const bytes = await readRange(tensor);
    const expected = tensor.byteRange[1] - tensor.byteRange[0];
    if (bytes.length !== expected) {
      throw new SafetensorsError(
        tensor.file,
        `read ${bytes.length} of the ${expected} bytes of "${tensor.name}": the file changed or was truncated while open`,
      );
    }
    return bytes;
  };
  const close = () => {
    if (!closed) {
      closed = true;
      closeAll();
    }
  };
  return {
    source,
    tensors,
    metadata,
    aliases,
    has: (name) => tensors.has(name) || aliases.has(name),
    info,
    readBytes,
    read: async (name) => decodeToFloat32(await readBytes(name), info(name).dtype, source),
    readTyped: async (name) => decodeTyped(await readBytes(name), info(name).dtype, source),
    close,
    [Symbol.dispose]: close,
  };
}

/**
 * Opens a safetensors file through a {@link ByteSource}: reads and validates the header (two small
 * reads), and returns a reader that fetches each tensor's bytes on demand. Throws
 * {@link SafetensorsError} for any malformed file; the source is closed on failure.
 */
export async function openSafetensorsSource(source: ByteSource): Promise<SafetensorsFile> {
  try {
    const prefix = await source.read(0, Math.min(8, source.size));
    const headerLength = readHeaderLength(prefix, source.size, source.name);
    const headerBytes = await source.read(8, 8 + headerLength);
    if (headerBytes.length !== headerLength) {
      throw new SafetensorsError(
        source.name,
        `could read only ${headerBytes.length} of ${headerLength} header bytes`,
      );
    }
    const header = parseSafetensorsHeader(headerBytes, source.size, source.name);
    return makeTensorFile(
      source.name,
      header.tensors,
      header.metadata,
      (tensor) => source.read(tensor.byteRange[0], tensor.byteRange[1]),
      () => source.close(),
    );
  } catch (e) {
    source.close();
    throw e;
  }
}

/** Opens safetensors bytes held in memory (see {@link memorySource}). */
export function openSafetensorsBytes(bytes: Uint8Array, name = "<memory>"): Promise<SafetensorsFile> {
  return openSafetensorsSource(memorySource(bytes, name));
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints

/** The parsed `model.safetensors.index.json` of a sharded checkpoint. */
export interface ShardIndex {
  /** Tensor name → shard file name. */
  readonly weightMap: ReadonlyMap<string, string>;
  /** Distinct shard file names, sorted (so shards are opened and downloaded in file order). */
  readonly shards: readonly string[];
  /** The index's own `metadata` (e.g. total_size), untouched. */
  readonly metadata: unknown;
}

/**
 * Checks that a shard name is a plain file name, so that a hostile index cannot make us read or
 * download outside the checkpoint's folder.
 */
export function isSafeShardName(name: string): boolean {
  return name.length > 0 && name !== "." && name !== ".." && !name.includes("..") &&
    !/[\/\\:\0]/.test(name);
}

/** Validates a parsed `model.safetensors.index.json`: a `weight_map` of tensor → safe file name. */
export function parseShardIndex(json: unknown, source: string): ShardIndex {
  if (!isPlainObject(json) || !isPlainObject(json.weight_map)) {
    throw new SafetensorsError(source, `a sharded index must be an object with a "weight_map" object`);
  }
  const weightMap = new Map<string, string>();
  const shards: string[] = [];
  for (const [tensor, shard] of Object.entries(json.weight_map)) {
    if (typeof shard !== "string") {
      throw new SafetensorsError(
        source,
        `weight_map["${tensor}"] must be a file name, got ${describeJson(shard)}`,
      );
    }
    if (!isSafeShardName(shard)) {
      throw new SafetensorsError(
        source,
        `weight_map["${tensor}"] names shard ${JSON.stringify(shard)}, which is not a plain file name ` +
          `(no path separators or ".." allowed)`,
      );
    }
    weightMap.set(tensor, shard);
    if (!shards.includes(shard)) shards.push(shard);
  }
  if (weightMap.size === 0) {
    throw new SafetensorsError(source, "weight_map is empty: the index lists no tensors");
  }
  return { weightMap, shards: shards.sort(), metadata: json.metadata };
}

/**
 * Opens every shard of a sharded checkpoint (headers only) and presents them as one
 * {@link SafetensorsFile}. `openShard` opens one shard by file name. Each tensor the index lists
 * must be in the shard it names, and no tensor may be in two shards.
 */
export async function openShardedSafetensors(
  index: ShardIndex,
  openShard: (shard: string) => Promise<SafetensorsFile>,
  source: string,
): Promise<SafetensorsFile> {
  const opened: SafetensorsFile[] = [];
  const closeAll = () => opened.forEach((f) => f.close());
  try {
    const byShard = new Map<string, SafetensorsFile>();
    for (const shard of index.shards) {
      try {
        const file = await openShard(shard);
        opened.push(file);
        byShard.set(shard, file);
      } catch (e) {
        const listed = [...index.weightMap].filter(([, s]) => s === shard).length;
        throw new SafetensorsError(
          source,
          `the index lists shard "${shard}" (${listed} tensors) but it could not be opened: ${
            (e as Error).message
          }`,
        );
      }
    }
    const tensors = new Map<string, TensorInfo>();
    const metadata: Record<string, string> = {};
    for (const file of opened) {
      for (const [name, tensor] of file.tensors) {
        const other = tensors.get(name);
        if (other) {
          throw new SafetensorsError(
            source,
            `tensor "${name}" is in both "${other.file}" and "${tensor.file}"`,
          );
        }
        tensors.set(name, tensor);
      }
      for (const [key, value] of Object.entries(file.metadata)) if (!(key in metadata)) metadata[key] = value;
    }
    for (const [name, shard] of index.weightMap) {
      if (!byShard.get(shard)!.tensors.has(name)) {
        throw new SafetensorsError(
          source,
          `the index puts "${name}" in "${shard}", but that shard does not contain it`,
        );
      }
    }
    const fileOf = new Map<string, SafetensorsFile>();
    for (const file of opened) for (const name of file.tensors.keys()) fileOf.set(name, file);
    return makeTensorFile(
      source,
      tensors,
      metadata,
      (tensor) => fileOf.get(tensor.name)!.readBytes(tensor.name),
      closeAll,
    );
  } catch (e) {
    closeAll();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

/** One tensor to write: float data, its shape, and the stored dtype (default F32). */
export interface TensorToWrite {
  /** Values in row-major order; length must equal the product of `shape`. */
  readonly data: Float32Array | Float64Array | readonly number[];
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Stored element type (default "F32"). */
  readonly dtype?: WritableDtype;
}

/** Options for {@link encodeSafetensors}. */
export interface SafetensorsWriteOptions {
  /** Extra `__metadata__` entries; `{"format": "pt"}` is always added unless overridden here. */
  readonly metadata?: Readonly<Record<string, string>>;
}

function encodeTensorBytes(tensor: TensorToWrite, dtype: WritableDtype): Uint8Array {
  if (dtype === "F32") {
    const values = tensor.data instanceof Float32Array ? tensor.data : Float32Array.from(tensor.data);
    return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  }
  const bits = dtype === "F16" ? float32ToFloat16(tensor.data) : float32ToBfloat16(tensor.data);
  return new Uint8Array(bits.buffer);
}

/**
 * Encodes tensors as a safetensors file in pieces: the 8-byte length plus header (space-padded so
 * the data starts at a multiple of 8, as the reference writer does), then each tensor's bytes.
 * Tensors are ordered by element size, then name (wider first keeps every tensor aligned), and
 * `{"format": "pt"}` metadata lets transformers load the file. Writing the pieces one by one
 * avoids building the whole file in memory.
 */
export function encodeSafetensorsParts(
  tensors: Readonly<Record<string, TensorToWrite>> | ReadonlyMap<string, TensorToWrite>,
  options: SafetensorsWriteOptions = {},
): Uint8Array[] {
  const where = "writing safetensors";
  requireLittleEndian(where);
  const entries: [string, TensorToWrite][] = tensors instanceof Map
    ? [...(tensors as ReadonlyMap<string, TensorToWrite>)]
    : Object.entries(tensors as Readonly<Record<string, TensorToWrite>>);
  const metadata: Record<string, string> = { format: "pt", ...options.metadata };
  for (const [key, value] of Object.entries(metadata)) {
    if (typeof value !== "string") throw new SafetensorsError(where, `metadata "${key}" must be a string`);
  }
  const prepared = entries.map(([name, tensor]) => {
    if (name === "__metadata__") throw new SafetensorsError(where, `"__metadata__" cannot be a tensor name`);
    const dtype = tensor.dtype ?? "F32";
    if (!["F32", "F16", "BF16"].includes(dtype)) {
      throw new SafetensorsError(where, `tensor "${name}": cannot write dtype ${dtype} (F32, F16 or BF16)`);
    }
    if (!tensor.shape.every(isCount)) {
      throw new SafetensorsError(
        where,
        `tensor "${name}": shape [${tensor.shape}] must be non-negative integers`,
      );
    }
    const numel = tensor.shape.reduce((a, b) => a * b, 1);
    if (numel !== tensor.data.length) {
      throw new SafetensorsError(
        where,
        `tensor "${name}": shape [${tensor.shape}] holds ${numel} values but data has ${tensor.data.length}`,
      );
    }
    return { name, dtype, tensor };
  });
  prepared.sort((a, b) =>
    DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
  );
  const header: Record<string, unknown> = { __metadata__: metadata };
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const { name, dtype, tensor } of prepared) {
    const bytes = encodeTensorBytes(tensor, dtype);
    header[name] = { dtype, shape: [...tensor.shape], data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
    parts.push(bytes);
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const head = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  return [head, ...parts];
}

/** Encodes tensors as one safetensors byte array (see {@link encodeSafetensorsParts}). */
export function encodeSafetensors(
  tensors: Readonly<Record<string, TensorToWrite>> | ReadonlyMap<string, TensorToWrite>,
  options: SafetensorsWriteOptions = {},
): Uint8Array {
  const parts = encodeSafetensorsParts(tensors, options);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
