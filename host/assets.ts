/**
 * The bundled defaults of the CLI (assets/: the gpt2-d128 model and the SST-2 validation split),
 * found relative to this module's own URL. From a checkout (a file: URL) they are read in place.
 * Run from a URL (`deno run -A https://…/cli.ts synth`), the module has no folder beside it: the
 * files are fetched from beside it on first use, checked against the sizes and sha256 listed
 * here, and kept in the Hugging Face hub cache (see `hf_cache.ts`) as the repository
 * `gradmm-ts/assets`, in a snapshot named after this list, so later runs need no network.
 *
 * This is a Deno I/O module (files and fetch), like `hub.ts`.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { HubError } from "../models/errors.ts";
import { writeFileAtomic } from "./atomic.ts";
import { defaultHubCacheDir, linkBlob, present, repoFolder } from "./hf_cache.ts";

/** One file of the bundled assets, by path under assets/. */
export interface AssetFile {
  /** Path under assets/, with `/` separators. */
  readonly path: string;
  /** Size in bytes. */
  readonly size: number;
  /** sha256 of the contents, hex. */
  readonly sha256: string;
}

/**
 * Every file the defaults need (tests/host/assets_test.ts checks it against assets/ on disk:
 * update it when an asset changes).
 */
export const ASSET_FILES: readonly AssetFile[] = [
  {
    path: "gpt2-d128/config.json",
    size: 830,
    sha256: "731dbd3b658f5be072b05381c09551758d705602f9c7b6579bebd2540fab6504",
  },
  {
    path: "gpt2-d128/generation_config.json",
    size: 203,
    sha256: "83e45aa60a9f7930ae18ad3accbaec9a315b101d78cdcecad132b55860c4b8c4",
  },
  {
    path: "gpt2-d128/model.safetensors",
    size: 14523064,
    sha256: "34209f0361e29be7366079c4e46d44142fa5b0e50e97d97479199d50b9b11d4f",
  },
  {
    path: "gpt2-d128/special_tokens_map.json",
    size: 438,
    sha256: "98412137ae43c77f8af52eb51b19c3536d3242cb55339167d841005fa94a23b7",
  },
  {
    path: "gpt2-d128/tokenizer.json",
    size: 3557680,
    sha256: "1fe93b6152957cf9cfd6d89002467f789ce8b3f3e000b3a2edf27c808ddd0b9e",
  },
  {
    path: "gpt2-d128/tokenizer_config.json",
    size: 545,
    sha256: "b6d6e2d83b34280f18571d8306ae4a9a43f672d50a78c5c1b1f249f696fe3a7a",
  },
  {
    path: "sst2-validation.jsonl",
    size: 114100,
    sha256: "4598ef8f34122fcbde99a08817794a200a5325fcf878ee493f3b7f2ab9030d19",
  },
];

/** The bundled model's folder under assets/. */
export const BUNDLED_MODEL = "gpt2-d128";
/** The bundled data file under assets/. */
export const BUNDLED_DATA = "sst2-validation.jsonl";

/** Options of {@link bundledAsset}; the defaults suit the CLI. */
export interface AssetOptions {
  /** URL of the assets folder; default `../assets/` relative to this module. */
  readonly base?: URL | string;
  /** Hub cache root for fetched assets; default {@link defaultHubCacheDir}. */
  readonly cacheDir?: string;
  /** fetch to use; default the global one. */
  readonly fetch?: typeof fetch;
  /** Called before each file is fetched (a few MB on first use from a URL). */
  readonly onFetch?: (file: AssetFile, url: string) => void;
}

/** The snapshot name of this asset list: 40 hex digits, like a commit, changing with the list. */
function snapshotName(): string {
  return createHash("sha1").update(JSON.stringify(ASSET_FILES)).digest("hex");
}

/**
 * A local path for `path` under assets/ (a file, or a folder such as {@link BUNDLED_MODEL}): the
 * file itself when this module was loaded from disk; else a verified copy in the hub cache,
 * fetched on first use. Throws HubError ("network", "not-found", "integrity") when a fetch fails.
 */
export async function bundledAsset(path: string, options: AssetOptions = {}): Promise<string> {
  const base = new URL(options.base ?? new URL("../assets/", import.meta.url));
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  if (base.protocol === "file:") return fileURLToPath(new URL(path, base));
  const files = ASSET_FILES.filter((f) => f.path === path || f.path.startsWith(`${path}/`));
  if (files.length === 0) throw new Error(`no bundled asset "${path}"`); // a caller's typo
  const repoDir = repoFolder(options.cacheDir ?? defaultHubCacheDir(), "gradmm-ts", "assets");
  const snapshot = join(repoDir, "snapshots", snapshotName());
  for (const file of files) {
    const pointer = join(snapshot, ...file.path.split("/"));
    if (await present(pointer)) continue;
    const blob = join(repoDir, "blobs", file.sha256);
    if (!(await present(blob))) await fetchBlob(file, new URL(file.path, base).href, blob, options);
    await linkBlob(blob, pointer);
  }
  return join(snapshot, ...path.split("/"));
}

/** Downloads one asset and writes it as `blob` once its size and sha256 are right. */
async function fetchBlob(file: AssetFile, url: string, blob: string, options: AssetOptions): Promise<void> {
  options.onFetch?.(file, url);
  let bytes: Uint8Array;
  try {
    const response = await (options.fetch ?? fetch)(url);
    if (!response.ok) {
      await response.body?.cancel();
      throw new HubError(
        response.status === 404 ? "not-found" : "network",
        `the bundled ${file.path} is not at ${url} (HTTP ${response.status}); pass --model / --data`,
        response.status,
      );
    }
    bytes = new Uint8Array(await response.arrayBuffer());
  } catch (e) {
    if (e instanceof HubError) throw e;
    throw new HubError(
      "network",
      `cannot fetch the bundled ${file.path} from ${url}: ${(e as Error).message}`,
    );
  }
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  if (bytes.length !== file.size || sha256 !== file.sha256) {
    throw new HubError(
      "integrity",
      `the bundled ${file.path} from ${url} is not the expected file (${bytes.length} bytes, sha256 ${sha256}; ` +
        `expected ${file.size} bytes, ${file.sha256}); run again, or pass --model / --data`,
    );
  }
  await Deno.mkdir(join(blob, ".."), { recursive: true });
  await writeFileAtomic(blob, bytes);
}

/** The bundled model's folder (see {@link bundledAsset}). */
export function bundledModel(options: AssetOptions = {}): Promise<string> {
  return bundledAsset(BUNDLED_MODEL, options);
}

/** The bundled data file (see {@link bundledAsset}). */
export function bundledData(options: AssetOptions = {}): Promise<string> {
  return bundledAsset(BUNDLED_DATA, options);
}
