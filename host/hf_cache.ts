/**
 * The Hugging Face hub cache on disk, in the layout the Python `huggingface_hub` library uses, so
 * a researcher's existing downloads are found without network and ours are found by Python:
 *
 * ```
 * {cache}/models--{org}--{name}/
 *   blobs/{etag}                        file contents, named by the hub's ETag (sha256 for LFS files)
 *   blobs/{etag}.incomplete             a download in progress (resumed with a Range request)
 *   refs/{revision}                     the commit hash a branch or tag pointed to when downloaded
 *   snapshots/{commit}/{file}           relative symlink to ../../blobs/{etag} (a copy where links fail)
 * ```
 *
 * The cache root is `HF_HUB_CACHE`, else `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
 * `~/.cache/huggingface/hub`: the same search as Python's.
 *
 * This is a Deno I/O module (files and environment), like `files.ts`.
 *
 * @module
 */
import { dirname, join, relative } from "node:path";
import { HubError } from "../models/errors.ts";
import { parseShardIndex } from "../models/safetensors.ts";
import { WEIGHTS_FILE, WEIGHTS_INDEX_FILE } from "../models/source.ts";

/** Files a model folder must hold besides its weights. */
export const REQUIRED_FILES: readonly string[] = ["config.json", "tokenizer.json"];
/** Files fetched and used when the repository has them. */
export const OPTIONAL_FILES: readonly string[] = [
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
];

const COMMIT = /^[0-9a-f]{40}$/;

/** An environment variable, or undefined when unset, empty or not readable (no --allow-env). */
export function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/**
 * The hub cache root: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`,
 * else `~/.cache/huggingface/hub`.
 */
export function defaultHubCacheDir(): string {
  const explicit = env("HF_HUB_CACHE");
  if (explicit) return explicit;
  const hfHome = env("HF_HOME");
  if (hfHome) return join(hfHome, "hub");
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "huggingface", "hub");
  const home = env("HOME") ?? env("USERPROFILE");
  if (!home) {
    throw new HubError(
      "spec",
      "no hub cache folder: set HF_HUB_CACHE (or HF_HOME, or HOME) or pass { cacheDir }",
    );
  }
  return join(home, ".cache", "huggingface", "hub");
}

/** The folder of one repository in the hub cache: `{cacheDir}/models--{org}--{name}`. */
export function repoFolder(cacheDir: string, org: string, name: string): string {
  return join(cacheDir, `models--${org}--${name}`);
}

/** True for a full 40-hex commit hash (used as a revision, it needs no ref). */
export function isCommitHash(revision: string): boolean {
  return COMMIT.test(revision);
}

/**
 * The snapshot name of `revision`: itself for a commit hash, else what `refs/{revision}` holds;
 * undefined when the revision was never downloaded.
 */
export async function readRef(repoDir: string, revision: string): Promise<string | undefined> {
  if (isCommitHash(revision)) return revision;
  try {
    const ref = (await Deno.readTextFile(join(repoDir, "refs", revision))).trim();
    return ref && !ref.includes("/") && ref !== "." && ref !== ".." ? ref : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Records that `revision` (a branch or tag) resolved to `commit`, atomically. A commit hash needs
 * no ref; a server that names no commit gets the revision's own name as its snapshot.
 */
export async function writeRef(repoDir: string, revision: string, commit: string): Promise<void> {
  if (isCommitHash(revision)) return;
  const path = join(repoDir, "refs", revision);
  await Deno.mkdir(dirname(path), { recursive: true });
  const temp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(temp, commit);
  await Deno.rename(temp, path);
}

/** True when `path` exists (through symlinks: a link to a missing blob does not count). */
export async function present(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * The model files of a snapshot folder, in a fixed order (required, optional, weights), when it
 * holds a complete model: config, tokenizer and either single-file weights or an index with every
 * shard it names. Undefined when anything is missing. Blobs only get their name once verified,
 * so a file that is present is whole.
 */
export async function completeSnapshot(dir: string): Promise<string[] | undefined> {
  const files: string[] = [];
  for (const file of REQUIRED_FILES) {
    if (!(await present(join(dir, file)))) return undefined;
    files.push(file);
  }
  for (const file of OPTIONAL_FILES) if (await present(join(dir, file))) files.push(file);
  if (await present(join(dir, WEIGHTS_FILE))) return [...files, WEIGHTS_FILE];
  const indexPath = join(dir, WEIGHTS_INDEX_FILE);
  if (!(await present(indexPath))) return undefined;
  let shards: readonly string[];
  try {
    shards = parseShardIndex(JSON.parse(await Deno.readTextFile(indexPath)), indexPath).shards;
  } catch {
    return undefined; // a bad index is re-downloaded (and then reported) by the caller
  }
  for (const shard of shards) if (!(await present(join(dir, shard)))) return undefined;
  return [...files, WEIGHTS_INDEX_FILE, ...shards];
}

/**
 * Points `snapshots/{commit}/{file}` at a blob: a relative symlink as Python makes, or a copy
 * where the file system or the platform refuses links. Replaces whatever was there, atomically.
 */
export async function linkBlob(blobPath: string, pointerPath: string): Promise<void> {
  await Deno.mkdir(dirname(pointerPath), { recursive: true });
  const temp = `${pointerPath}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.symlink(relative(dirname(pointerPath), blobPath), temp);
  } catch {
    await Deno.copyFile(blobPath, temp);
  }
  try {
    await Deno.rename(temp, pointerPath);
  } catch (e) {
    await Deno.remove(temp).catch(() => {});
    throw e;
  }
}
