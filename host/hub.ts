/**
 * Resolves a model spec to a local folder: a directory is used as is; a Hugging Face repo id
 * (`org/name` or `org/name@revision`) is downloaded once into the hub cache and reused after.
 *
 * The cache is the one the Python `huggingface_hub` library keeps (layout in `hf_cache.ts`): models
 * a researcher downloaded with transformers are used without network, and ours are found by
 * Python. Each file's metadata comes from a HEAD request (commit, ETag, size); its contents go to
 * `blobs/{etag}.incomplete` and are renamed to `blobs/{etag}` only once complete and verified (size
 * against X-Linked-Size / Content-Length, or the hub's file listing when the server sends no
 * length; sha256 against the LFS ETag or the listing when the hub gives one), so a blob with its
 * final name is always whole. An interrupted download resumes with a Range request. Once a
 * revision's snapshot holds a complete model, later calls do not touch the network at all (pin a
 * commit, or delete `refs/{revision}`, to get a newer `main`).
 *
 * The earlier private cache (`GRADMM_CACHE`, else `~/.cache/gradmm-ts`, as
 * `{org}--{name}/{revision}/` with a `.gradmm-complete.json` marker) is still read when it holds a
 * complete download and the hub cache does not; nothing is written there any more.
 *
 * Environment: `HF_TOKEN` (sent as `Authorization: Bearer`), `HF_ENDPOINT` (default
 * https://huggingface.co), `HF_HUB_CACHE` / `HF_HOME` (the cache), `HF_HUB_OFFLINE=1`.
 *
 * This is a Deno I/O module (files and fetch), like `files.ts`.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { HubError, SafetensorsError } from "../models/errors.ts";
import { parseShardIndex } from "../models/safetensors.ts";
import { WEIGHTS_FILE, WEIGHTS_INDEX_FILE } from "../models/source.ts";
import {
  completeSnapshot,
  defaultHubCacheDir,
  env,
  isCommitHash,
  linkBlob,
  OPTIONAL_FILES,
  present,
  readRef,
  repoFolder,
  REQUIRED_FILES,
  writeRef,
} from "./hf_cache.ts";

export { defaultHubCacheDir };

/** Progress of one file's download. */
export interface DownloadProgress {
  /** File name within the repository. */
  readonly file: string;
  /** Bytes on disk so far (a resumed download starts above 0). */
  readonly loaded: number;
  /** Total size when the server announced it. */
  readonly total: number | null;
}

/** Options for {@link resolveModel}. */
export interface ResolveOptions {
  /** Hub cache root (Hugging Face layout); default {@link defaultHubCacheDir}. */
  readonly cacheDir?: string;
  /** Hub base URL; default `HF_ENDPOINT`, else https://huggingface.co. */
  readonly endpoint?: string;
  /** Access token for private or gated repos; default `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`). */
  readonly token?: string;
  /** fetch to use (tests, proxies); default the global one. */
  readonly fetch?: typeof fetch;
  /** Called as bytes arrive. */
  readonly onProgress?: (progress: DownloadProgress) => void;
  /** Use only the cache, never the network; default from `HF_HUB_OFFLINE` (1, true, yes, on). */
  readonly offline?: boolean;
}

/** Where a resolved model lives. */
export interface ResolvedModel {
  /** The folder holding config.json, tokenizer files and weights (hub: a snapshot folder). */
  readonly dir: string;
  /** "local" for a directory spec, "hub" for a repo id. */
  readonly origin: "local" | "hub";
  /** `org/name` (hub only). */
  readonly repo?: string;
  /** The revision asked for (hub only). */
  readonly revision?: string;
  /** The commit the files come from, when the hub said (hub only). */
  readonly commit?: string;
  /** Files of the model present in `dir` (hub only: those this module manages). */
  readonly files: readonly string[];
  /** Files fetched (fully or in part) by this call. */
  readonly downloaded: readonly string[];
}

/** A parsed hub model id. */
export interface RepoSpec {
  /** Owner (user or organisation). */
  readonly org: string;
  /** Repository name. */
  readonly name: string;
  /** Branch, tag or commit; "main" by default. */
  readonly revision: string;
}

const LEGACY_MARKER = ".gradmm-complete.json";
const REPO_PART = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const REVISION = /^[A-Za-z0-9._\/-]+$/;

/** First line of an error's message: runtime messages can carry a nested stack trace. */
function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split("\n")[0];
}

/**
 * Parses `org/name` or `org/name@revision`; returns undefined when `spec` is not a repo id.
 * Parts with `..` or `--` are refused (the cache folder is `models--org--name`).
 */
export function parseRepoSpec(spec: string): RepoSpec | undefined {
  const at = spec.indexOf("@");
  const id = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? "main" : spec.slice(at + 1);
  const parts = id.split("/");
  if (parts.length !== 2) return undefined;
  const [org, name] = parts;
  const valid = (part: string) => REPO_PART.test(part) && !part.includes("..") && !part.includes("--");
  if (!valid(org) || !valid(name)) return undefined;
  if (!REVISION.test(revision) || revision.split("/").some((s) => s === "" || s === "." || s === "..")) {
    return undefined;
  }
  return { org, name, revision };
}

/** The earlier private cache root (`GRADMM_CACHE`, else `~/.cache/gradmm-ts`); read only. */
function legacyCacheDir(): string | undefined {
  const explicit = env("GRADMM_CACHE");
  if (explicit) return explicit;
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "gradmm-ts");
  const home = env("HOME") ?? env("USERPROFILE");
  return home ? join(home, ".cache", "gradmm-ts") : undefined;
}

/** The files of a complete download in the earlier private cache, if its marker still matches. */
async function legacyFiles(dir: string, repoId: string, revision: string): Promise<string[] | undefined> {
  let marker: { repo?: unknown; revision?: unknown; files?: { name: string; size: number }[] };
  try {
    marker = JSON.parse(await Deno.readTextFile(join(dir, LEGACY_MARKER)));
  } catch {
    return undefined;
  }
  if (marker.repo !== repoId || marker.revision !== revision || !Array.isArray(marker.files)) {
    return undefined;
  }
  for (const { name, size } of marker.files) {
    if ((await statOrNull(join(dir, name)))?.size !== size) return undefined;
  }
  return marker.files.map((f) => f.name);
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** Everything one resolution needs, computed once. */
interface Session {
  readonly repo: RepoSpec;
  readonly repoId: string;
  /** `{cache}/models--{org}--{name}`. */
  readonly repoDir: string;
  readonly endpoint: string;
  readonly token?: string;
  readonly fetch: typeof fetch;
  readonly onProgress?: (progress: DownloadProgress) => void;
  readonly downloaded: string[];
  /**
   * The snapshot being filled: the commit the first file's metadata named (later files are asked
   * for at that commit, so all come from one), or the revision's name when the server names none.
   */
  snapshot?: string;
  /** The repo's file listing (sizes, LFS sha256), fetched once when a download needs it. */
  listing?: Promise<Map<string, ListedFile> | null>;
}

/** The revision to put in URLs: the pinned snapshot commit once known. */
function urlRevision(s: Session): string {
  return s.snapshot && isCommitHash(s.snapshot) ? s.snapshot : s.repo.revision;
}

/** What the hub's file listing says about one file. */
interface ListedFile {
  size: number;
  sha256?: string;
}

/**
 * The hub's listing of the revision's top-level files (`/api/models/{repo}/tree/{revision}`), or
 * null when it cannot be had. Used to verify downloads whose server announced no length.
 */
function fileListing(s: Session): Promise<Map<string, ListedFile> | null> {
  s.listing ??= (async () => {
    const url = `${s.endpoint}/api/models/${s.repo.org}/${s.repo.name}/tree/${
      encodeURIComponent(urlRevision(s))
    }`;
    try {
      const headers = new Headers();
      if (s.token) headers.set("authorization", `Bearer ${s.token}`);
      const response = await s.fetch(url, { headers });
      if (!response.ok) {
        await response.body?.cancel();
        return null;
      }
      const entries = await response.json();
      if (!Array.isArray(entries)) return null;
      const out = new Map<string, ListedFile>();
      for (const e of entries) {
        if (e?.type !== "file" || typeof e.path !== "string") continue;
        const size = e.lfs?.size ?? e.size;
        if (!Number.isSafeInteger(size)) continue;
        const sha = typeof e.lfs?.oid === "string"
          ? e.lfs.oid.replace(/^sha256:/, "").toLowerCase()
          : undefined;
        out.set(e.path, { size, sha256: sha && /^[0-9a-f]{64}$/.test(sha) ? sha : undefined });
      }
      return out;
    } catch {
      return null;
    }
  })();
  return s.listing;
}

/** Headers the hub puts on the first (pre-redirect) response of an LFS file. */
interface LinkedHeaders {
  etag?: string;
  size?: number;
}

function fileUrl(s: Session, file: string): string {
  return `${s.endpoint}/${s.repo.org}/${s.repo.name}/resolve/${encodeURIComponent(urlRevision(s))}/${file}`;
}

function networkError(s: Session, url: string, e: unknown): HubError {
  return new HubError(
    "network",
    `cannot reach ${new URL(url).origin} for ${s.repoId}: ${firstLine(e)}. ` +
      `Check the connection or HF_ENDPOINT; a partial download resumes on the next run.`,
  );
}

/** What a HEAD request on a file's resolve URL says, as Python's `get_hf_file_metadata` reads it. */
interface FileMetadata {
  /** `X-Repo-Commit`: the commit the revision points to. */
  commit?: string;
  /** `X-Linked-Etag` (LFS: the sha256) or `ETag`, without quotes or `W/`. */
  etag?: string;
  /** `X-Linked-Size` or Content-Length. */
  size?: number;
}

/**
 * HEAD on the resolve URL, following only same-origin redirects (a renamed repo), not the one to
 * the CDN: the metadata is on the hub's own response. Null for an optional file the repo lacks.
 */
async function fileMetadata(s: Session, file: string, optional: boolean): Promise<FileMetadata | null> {
  let current = fileUrl(s, file);
  const origin = new URL(current).origin;
  for (let hop = 0; hop < 10; hop++) {
    const headers = new Headers({ "accept-encoding": "identity" });
    if (s.token) headers.set("authorization", `Bearer ${s.token}`);
    let response: Response;
    try {
      response = await s.fetch(current, { method: "HEAD", headers, redirect: "manual" });
    } catch (e) {
      throw networkError(s, current, e);
    }
    await response.body?.cancel();
    const location = response.headers.get("location");
    const redirect = response.status >= 300 && response.status < 400 && location;
    if (redirect && new URL(location, current).origin === origin && !response.headers.get("x-linked-etag")) {
      current = new URL(location, current).href;
      continue;
    }
    if (
      response.status === 404 && optional && !response.headers.get("x-error-code")?.match(/Repo|Revision/)
    ) {
      return null;
    }
    if (!redirect && !response.ok) throw statusError(s, file, response);
    const h = response.headers;
    const etag = (h.get("x-linked-etag") ?? h.get("etag"))?.replace(/^W\//, "").replaceAll('"', "");
    const length = h.get("content-encoding") ? NaN : Number(h.get("content-length") ?? NaN);
    const size = Number(h.get("x-linked-size") ?? (redirect ? NaN : length));
    const commit = h.get("x-repo-commit")?.toLowerCase();
    return {
      commit: commit && isCommitHash(commit) ? commit : undefined,
      // An etag names a file in blobs/: refuse anything that could leave that folder.
      etag: etag && /^[A-Za-z0-9._-]+$/.test(etag) && !etag.startsWith(".") ? etag : undefined,
      size: Number.isSafeInteger(size) ? size : undefined,
    };
  }
  throw new HubError("http", `too many redirects for ${file} of ${s.repoId}`);
}

/**
 * GET with redirects followed by hand, so that the hub's X-Linked-* headers (only on the
 * redirect) are seen, and the token is never sent to another origin (the CDN needs none).
 */
async function get(
  s: Session,
  url: string,
  range?: number,
): Promise<{ response: Response; linked: LinkedHeaders }> {
  const origin = new URL(url).origin;
  const linked: LinkedHeaders = {};
  let current = url;
  for (let hop = 0; hop < 10; hop++) {
    const headers = new Headers({ "accept-encoding": "identity" });
    if (s.token && new URL(current).origin === origin) headers.set("authorization", `Bearer ${s.token}`);
    if (range) headers.set("range", `bytes=${range}-`);
    let response: Response;
    try {
      response = await s.fetch(current, { headers, redirect: "manual" });
    } catch (e) {
      throw networkError(s, current, e);
    }
    const etag = response.headers.get("x-linked-etag");
    const size = Number(response.headers.get("x-linked-size") ?? NaN);
    if (etag && !linked.etag) linked.etag = etag;
    if (Number.isSafeInteger(size) && linked.size === undefined) linked.size = size;
    const location = response.headers.get("location");
    if (response.status >= 300 && response.status < 400 && location) {
      await response.body?.cancel();
      current = new URL(location, current).href;
      continue;
    }
    return { response, linked };
  }
  throw new HubError("http", `too many redirects for ${url}`);
}

/** Turns an error status into a {@link HubError} that says what to do. */
function statusError(s: Session, file: string, response: Response): HubError {
  const code = response.headers.get("x-error-code") ?? "";
  const status = response.status;
  const at = `${s.repoId}@${s.repo.revision}`;
  if (code === "RepoNotFound") {
    return new HubError(
      "not-found",
      `repository ${s.repoId} not found at ${s.endpoint}` +
        (s.token ? "" : " (if it is private, set HF_TOKEN to a token that can read it)"),
      status,
    );
  }
  if (code === "RevisionNotFound") {
    return new HubError("not-found", `revision "${s.repo.revision}" not found in ${s.repoId}`, status);
  }
  if (code === "GatedRepo") {
    return new HubError(
      "auth",
      `${s.repoId} is gated: accept its terms at ${s.endpoint}/${s.repoId} and set HF_TOKEN to a token of that account`,
      status,
    );
  }
  if (status === 401) {
    return new HubError(
      "auth",
      s.token
        ? `the hub rejected the token for ${at} (HTTP 401): check HF_TOKEN`
        : `${at} needs authentication (HTTP 401): set HF_TOKEN to an access token`,
      status,
    );
  }
  if (status === 403) {
    return new HubError(
      "auth",
      `access to ${at} denied (HTTP 403): the token lacks permission, or the repo is gated or private`,
      status,
    );
  }
  if (status === 404) {
    return new HubError(
      "not-found",
      `${file} not found in ${at} (HTTP 404): check the repo id and revision`,
      status,
    );
  }
  return new HubError("http", `HTTP ${status} ${response.statusText} for ${file} of ${at}`, status);
}

function sha256FromEtag(etag: string | null | undefined): string | undefined {
  const value = etag?.replace(/^W\//, "").replaceAll('"', "").toLowerCase();
  return value && /^[0-9a-f]{64}$/.test(value) ? value : undefined;
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path, { read: true });
  const buffer = new Uint8Array(1 << 20);
  for (;;) {
    const n = await file.read(buffer);
    if (n === null) break;
    hash.update(buffer.subarray(0, n));
  }
  return hash.digest("hex");
}

function contentRangeStart(header: string | null): { start: number; total: number | null } | undefined {
  const match = header?.match(/^bytes (\d+)-\d+\/(\d+|\*)$/);
  if (!match) return undefined;
  return { start: Number(match[1]), total: match[2] === "*" ? null : Number(match[2]) };
}

/**
 * Makes `file` present in the snapshot folder: linked to its blob when the blob is already there
 * (another revision had the same contents), downloaded into `blobs/` otherwise. Returns false when
 * an optional file does not exist on the hub.
 */
async function ensureFile(s: Session, file: string, optional: boolean): Promise<boolean> {
  const meta = await fileMetadata(s, file, optional);
  if (!meta) return false;
  if (!s.snapshot) {
    s.snapshot = meta.commit ?? s.repo.revision.replaceAll("/", "--");
    await writeRef(s.repoDir, s.repo.revision, s.snapshot);
  }
  const pointer = join(s.repoDir, "snapshots", s.snapshot, file);
  if (await present(pointer)) return true;
  const blobs = join(s.repoDir, "blobs");
  const blob = meta.etag ? join(blobs, meta.etag) : undefined;
  if (!blob || !(await present(blob))) {
    await Deno.mkdir(blobs, { recursive: true });
    // Without an ETag the blob's name (its sha256) is known only after the download.
    const partial = `${blob ?? join(blobs, `${s.snapshot}.${file}`)}.incomplete`;
    const verifiedSha = await download(s, file, meta, partial);
    const target = blob ?? join(blobs, verifiedSha ?? await sha256OfFile(partial));
    await Deno.rename(partial, target);
    await linkBlob(target, pointer);
    return true;
  }
  await linkBlob(blob, pointer);
  return true;
}

/**
 * Downloads `file` into `partial`, resuming what is there, and verifies it (size, then sha256
 * when known). Returns the sha256 it checked, if any. A corrupt or oversized partial is deleted.
 */
async function download(
  s: Session,
  file: string,
  meta: FileMetadata,
  partial: string,
): Promise<string | undefined> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const have = (await statOrNull(partial))?.size ?? 0;
    const { response, linked } = await get(s, fileUrl(s, file), have);
    if (response.status === 416) {
      // The partial is not a prefix the server can extend: start over.
      await response.body?.cancel();
      await Deno.remove(partial).catch(() => {});
      continue;
    }
    if (response.status !== 200 && response.status !== 206) {
      await response.body?.cancel();
      throw statusError(s, file, response);
    }
    let start = 0;
    let total: number | null = null;
    if (response.status === 206) {
      const range = contentRangeStart(response.headers.get("content-range"));
      if (!range || range.start !== have) {
        await response.body?.cancel();
        await Deno.remove(partial).catch(() => {});
        continue;
      }
      start = have;
      total = range.total;
    } else if (!response.headers.get("content-encoding")) {
      const length = Number(response.headers.get("content-length") ?? NaN);
      if (Number.isSafeInteger(length)) total = length;
    }
    const announced = linked.size ?? meta.size;
    if (announced !== undefined) {
      if (total !== null && total !== announced) {
        await response.body?.cancel();
        throw new HubError(
          "integrity",
          `${file} of ${s.repoId}: the hub announced ${announced} bytes but the download server ${total}; ` +
            `try again later`,
        );
      }
      total = announced;
    }
    await streamToFile(s, file, response, partial, start, total);
    const size = (await Deno.stat(partial)).size;
    if (total !== null && size !== total) {
      if (size > total) await Deno.remove(partial);
      throw new HubError(
        "integrity",
        `${file} of ${s.repoId}: received ${size} bytes but ${total} were announced` +
          (size < total ? "; run again to resume the download" : "; the partial file was deleted, run again"),
      );
    }
    let expectedSha = sha256FromEtag(meta.etag ?? linked.etag ?? response.headers.get("etag"));
    if (total === null) {
      // No length was announced, so a connection that closed early looks like a complete file:
      // only the hub's listing can tell. Unverifiable downloads never get a blob name.
      const listed = (await fileListing(s))?.get(file);
      if (!listed) {
        throw new HubError(
          "integrity",
          `${file} of ${s.repoId}: the server sent no length and the hub's file listing gives none, so the ` +
            `download cannot be verified; run again, or download the model yourself and pass its folder`,
        );
      }
      if (size !== listed.size) {
        if (size > listed.size) await Deno.remove(partial);
        throw new HubError(
          "integrity",
          `${file} of ${s.repoId}: received ${size} bytes but the hub lists ${listed.size}` +
            (size < listed.size
              ? "; run again to resume the download"
              : "; the partial file was deleted, run again"),
        );
      }
      expectedSha ??= listed.sha256;
    }
    if (expectedSha) {
      const actual = await sha256OfFile(partial);
      if (actual !== expectedSha) {
        await Deno.remove(partial);
        throw new HubError(
          "integrity",
          `${file} of ${s.repoId}: sha256 ${actual} does not match the hub's ${expectedSha}; ` +
            `the download was corrupted and has been deleted: run again`,
        );
      }
    }
    return expectedSha;
  }
  throw new HubError(
    "http",
    `${file} of ${s.repoId}: the server did not honour resumption; delete ${partial}`,
  );
}

async function streamToFile(
  s: Session,
  file: string,
  response: Response,
  partial: string,
  start: number,
  total: number | null,
): Promise<void> {
  s.downloaded.push(file);
  using out = await Deno.open(
    partial,
    start > 0 ? { append: true } : { write: true, create: true, truncate: true },
  );
  let loaded = start;
  s.onProgress?.({ file, loaded, total });
  if (!response.body) return;
  try {
    for await (const chunk of response.body) {
      let written = 0;
      while (written < chunk.length) written += await out.write(chunk.subarray(written));
      loaded += chunk.length;
      s.onProgress?.({ file, loaded, total });
    }
  } catch (e) {
    throw new HubError(
      "network",
      `download of ${file} from ${s.repoId} interrupted at ${loaded}${
        total === null ? "" : ` of ${total}`
      } bytes ` +
        `(${firstLine(e)}): run again to resume`,
    );
  }
}

/** Downloads the model's files into a snapshot; returns the snapshot folder and its files. */
async function downloadRepo(s: Session): Promise<{ dir: string; files: string[] }> {
  const files: string[] = [];
  for (const file of REQUIRED_FILES) {
    await ensureFile(s, file, false);
    files.push(file);
  }
  for (const file of OPTIONAL_FILES) if (await ensureFile(s, file, true)) files.push(file);
  const dir = join(s.repoDir, "snapshots", s.snapshot!);
  if (await ensureFile(s, WEIGHTS_FILE, true)) {
    files.push(WEIGHTS_FILE);
  } else if (await ensureFile(s, WEIGHTS_INDEX_FILE, true)) {
    files.push(WEIGHTS_INDEX_FILE);
    const indexPath = join(dir, WEIGHTS_INDEX_FILE);
    let index;
    try {
      index = parseShardIndex(JSON.parse(await Deno.readTextFile(indexPath)), indexPath);
    } catch (e) {
      await Deno.remove(indexPath).catch(() => {});
      if (e instanceof SafetensorsError) throw e;
      throw new SafetensorsError(indexPath, `not valid JSON (${(e as Error).message}); deleted, run again`);
    }
    for (const shard of index.shards) {
      await ensureFile(s, shard, false);
      files.push(shard);
    }
  } else {
    throw new HubError(
      "not-found",
      `${s.repoId}@${s.repo.revision} has no ${WEIGHTS_FILE} or ${WEIGHTS_INDEX_FILE}; ` +
        `only safetensors weights are supported (convert pytorch_model.bin with transformers' save_pretrained)`,
    );
  }
  return { dir, files };
}

function offlineFlag(): boolean {
  return ["1", "true", "yes", "on"].includes(env("HF_HUB_OFFLINE")?.toLowerCase() ?? "");
}

/**
 * Resolves `spec` to a folder holding config.json, the tokenizer files and safetensors weights.
 * A directory is returned as is. A repo id `org/name[@revision]` is looked up in the hub cache
 * (`{cacheDir}/models--{org}--{name}/snapshots/{commit}/`, the layout Python's `huggingface_hub`
 * uses) and downloaded from `{endpoint}/{org}/{name}/resolve/{revision}/{file}` when incomplete,
 * reusing complete blobs and resuming partial ones. Throws {@link HubError} (auth, not-found,
 * network, integrity, offline) with a message that says what to do.
 */
export async function resolveModel(spec: string, options: ResolveOptions = {}): Promise<ResolvedModel> {
  const local = await statOrNull(spec).catch(() => null);
  if (local?.isDirectory) {
    const files: string[] = [];
    for await (const entry of Deno.readDir(spec)) if (entry.isFile) files.push(entry.name);
    return { dir: spec, origin: "local", files: files.sort(), downloaded: [] };
  }
  const repo = /^(\.|\/|~|[A-Za-z]:)/.test(spec) ? undefined : parseRepoSpec(spec);
  if (!repo) {
    throw new HubError(
      "spec",
      `"${spec}" is neither a model folder nor a Hugging Face repo id (org/name or org/name@revision)`,
    );
  }
  const repoId = `${repo.org}/${repo.name}`;
  const found = { origin: "hub", repo: repoId, revision: repo.revision, downloaded: [] } as const;
  const repoDir = repoFolder(options.cacheDir ?? defaultHubCacheDir(), repo.org, repo.name);
  const snapshot = await readRef(repoDir, repo.revision);
  if (snapshot) {
    const dir = join(repoDir, "snapshots", snapshot);
    const files = await completeSnapshot(dir);
    if (files) return { ...found, dir, files, commit: isCommitHash(snapshot) ? snapshot : undefined };
  }
  const legacyRoot = options.cacheDir === undefined ? legacyCacheDir() : undefined;
  if (legacyRoot) {
    const dir = join(legacyRoot, `${repo.org}--${repo.name}`, repo.revision.replaceAll("/", "--"));
    const files = await legacyFiles(dir, repoId, repo.revision);
    if (files) return { ...found, dir, files };
  }
  if (options.offline ?? offlineFlag()) {
    throw new HubError(
      "offline",
      `${repoId}@${repo.revision} is not fully in the cache (${repoDir}) and offline mode is on (HF_HUB_OFFLINE)`,
    );
  }
  const session: Session = {
    repo,
    repoId,
    repoDir,
    endpoint: (options.endpoint ?? env("HF_ENDPOINT") ?? "https://huggingface.co").replace(/\/+$/, ""),
    token: options.token ?? env("HF_TOKEN") ?? env("HUGGING_FACE_HUB_TOKEN"),
    fetch: options.fetch ?? fetch,
    onProgress: options.onProgress,
    downloaded: [],
  };
  const { dir, files } = await downloadRepo(session);
  const commit = isCommitHash(session.snapshot!) ? session.snapshot : undefined;
  return { ...found, dir, files, commit, downloaded: session.downloaded };
}
