/**
 * Hub download against a local imitation of the Hugging Face hub on 127.0.0.1 (no test touches
 * the internet). It serves an F16 two-shard copy of tiny-gpt2 (written for the test, standing in for
 * gpt2-d256's layout) like the real hub: weights
 * through a redirect to a "CDN" path, with X-Linked-Etag (sha256) and X-Linked-Size on the
 * redirect, X-Repo-Commit on every answer, HEAD and Range support, X-Error-Code on errors, and
 * optional token checks and faults. Downloads land in the Hugging Face cache layout
 * (models--org--name/{blobs,refs,snapshots}), which is also read when Python made it.
 */
import nodeAssert from "node:assert";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { type DownloadProgress, parseRepoSpec, resolveModel } from "../../host/hub.ts";
import { defaultHubCacheDir } from "../../host/hf_cache.ts";
import { HubError } from "../../models/errors.ts";
import { loadModelConfig, loadTokenizer, openCheckpoint } from "../../host/files.ts";
import { fixtureModel } from "../fixtures.ts";
import { writeShardedCopy } from "../sharded_fixture.ts";

const assert: (condition: unknown, message?: string) => asserts condition = nodeAssert.ok;
const assertEquals: <T>(actual: unknown, expected: T, message?: string) => asserts actual is T =
  nodeAssert.deepStrictEqual;

async function assertHubError(promise: Promise<unknown>, kind: HubError["kind"], ...texts: string[]) {
  await nodeAssert.rejects(promise, (e: Error) => {
    assert(e instanceof HubError, `expected HubError, got ${e}`);
    assertEquals(e.kind, kind, e.message);
    for (const text of texts) assert(e.message.includes(text), `message "${e.message}" lacks "${text}"`);
    return true;
  });
}

/** The served model: tiny-gpt2 re-stored as F16 in two shards, removed when the process ends. */
const MODEL_DIR = await Deno.makeTempDir({ prefix: "gradmm-hub-model-" });
globalThis.addEventListener("unload", () => Deno.removeSync(MODEL_DIR, { recursive: true }));
await writeShardedCopy(fixtureModel("tiny-gpt2"), MODEL_DIR, { dtype: "F16", shards: 2 });
const REPO = "test-org/tiny-gpt2-sharded";
const SHARD1 = "model-00001-of-00002.safetensors";
const SHARD2 = "model-00002-of-00002.safetensors";
const sizeOf = (file: string) => Deno.statSync(join(MODEL_DIR, file)).size;
const shaOf = (file: string) =>
  createHash("sha256").update(Deno.readFileSync(join(MODEL_DIR, file))).digest("hex");
/** The commit `main` points to on the test hub. */
const COMMIT = "0123456789abcdef0123456789abcdef01234567";
/** Where the test hub's model lands under a cache root. */
const repoDirIn = (cacheDir: string) => join(cacheDir, "models--test-org--tiny-gpt2-sharded");

/** Faults and checks the test hub applies; tests change them between calls. */
interface HubBehaviour {
  requireToken?: string;
  wrongLinkedSize?: string;
  wrongSha?: string;
}

interface LoggedRequest {
  method: string;
  path: string;
  range: string | null;
  auth: string | null;
}

function startHub(behaviour: HubBehaviour) {
  const files = new Map<string, Uint8Array<ArrayBuffer>>();
  for (const entry of Deno.readDirSync(MODEL_DIR)) {
    files.set(entry.name, Deno.readFileSync(join(MODEL_DIR, entry.name)));
  }
  const sha = new Map([...files].map(([n, b]) => [n, createHash("sha256").update(b).digest("hex")]));
  const log: LoggedRequest[] = [];

  const serveBytes = (name: string, req: Request, headers: Record<string, string>): Response => {
    const bytes = files.get(name)!;
    const range = req.headers.get("range")?.match(/^bytes=(\d+)-$/);
    let start = 0;
    let status = 200;
    if (range) {
      start = Number(range[1]);
      if (start >= bytes.length) return new Response(null, { status: 416 });
      status = 206;
      headers["content-range"] = `bytes ${start}-${bytes.length - 1}/${bytes.length}`;
    }
    const body = bytes.subarray(start);
    return new Response(body, { status, headers });
  };

  const record = (req: Request) => {
    const url = new URL(req.url);
    log.push({
      method: req.method,
      path: url.pathname,
      range: req.headers.get("range"),
      auth: req.headers.get("authorization"),
    });
    return url;
  };
  // The weights come from another origin, as the real hub's CDN: the token must not follow them.
  const cdnServer = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => {
    const cdn = record(req).pathname.match(/^\/cdn\/([^/]+)$/);
    if (cdn && files.has(cdn[1])) return serveBytes(cdn[1], req, { etag: `"${"0".repeat(32)}"` });
    return new Response(null, { status: 404 });
  });
  const cdnOrigin = `http://127.0.0.1:${cdnServer.addr.port}`;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => {
    const url = record(req);
    const m = url.pathname.match(/^\/([^/]+)\/([^/]+)\/resolve\/([^/]+)\/([^/]+)$/);
    if (!m || `${m[1]}/${m[2]}` !== REPO) {
      return new Response("Repository not found", {
        status: 404,
        headers: { "x-error-code": "RepoNotFound" },
      });
    }
    if (behaviour.requireToken && req.headers.get("authorization") !== `Bearer ${behaviour.requireToken}`) {
      return new Response("Unauthorized", { status: 401 });
    }
    if (!["main", COMMIT].includes(decodeURIComponent(m[3]))) {
      return new Response("Invalid rev", { status: 404, headers: { "x-error-code": "RevisionNotFound" } });
    }
    const file = m[4];
    if (!files.has(file)) {
      return new Response("Entry not found", {
        status: 404,
        headers: { "x-error-code": "EntryNotFound", "x-repo-commit": COMMIT },
      });
    }
    if (file.endsWith(".safetensors")) {
      const size = files.get(file)!.length + (behaviour.wrongLinkedSize === file ? 1 : 0);
      const digest = behaviour.wrongSha === file ? "f".repeat(64) : sha.get(file)!;
      return new Response(null, {
        status: 302,
        headers: {
          location: `${cdnOrigin}/cdn/${file}`,
          "x-linked-etag": `"${digest}"`,
          "x-linked-size": String(size),
          "x-repo-commit": COMMIT,
        },
      });
    }
    // Small files: a git-blob-like ETag, as the hub sends (one per file, so blobs stay distinct).
    const gitEtag = createHash("sha1").update(files.get(file)!).digest("hex");
    return serveBytes(file, req, { etag: `"${gitEtag}"`, "x-repo-commit": COMMIT });
  });
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    log,
    close: () => Promise.all([server.shutdown(), cdnServer.shutdown()]),
  };
}

/** A fetch whose response bodies for `file` break after `bytes` bytes (a dropped connection). */
function fetchDroppingAfter(file: string, bytes: number): typeof fetch {
  return async (input, init) => {
    const response = await fetch(input, init);
    if (!String(input).endsWith(`/${file}`) || !response.body) return response;
    const reader = response.body.getReader();
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent === bytes) {
          // Erroring discards queued chunks, so the cut-off chunk went out on the previous pull.
          await reader.cancel();
          return controller.error(new TypeError("connection reset (simulated)"));
        }
        const { done, value } = await reader.read();
        if (done) return controller.close();
        if (sent + value.length >= bytes) {
          controller.enqueue(value.subarray(0, bytes - sent));
          sent = bytes;
          return;
        }
        sent += value.length;
        controller.enqueue(value);
      },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
}

function sameBytes(a: string, b: string): boolean {
  const x = Deno.readFileSync(a), y = Deno.readFileSync(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

Deno.test("hub: download, reuse, resume, integrity, auth and not-found against a local hub", async (t) => {
  const behaviour: HubBehaviour = { requireToken: "hf_test_token" };
  const hub = startHub(behaviour);
  const cacheDir = await Deno.makeTempDir();
  const options = { cacheDir, endpoint: hub.endpoint, token: "hf_test_token" };
  const repoDir = repoDirIn(cacheDir);
  const dir = join(repoDir, "snapshots", COMMIT);
  const blobOf = (file: string) => join(repoDir, "blobs", shaOf(file));
  /** Removes a weights file from the cache: its snapshot link and its blob. */
  const evict = async (file: string) => {
    await Deno.remove(join(dir, file));
    await Deno.remove(blobOf(file));
  };
  const gets = () => hub.log.filter((r) => r.method === "GET");
  try {
    await t.step(
      "fresh download of a sharded model into the HF layout, token sent, files byte-identical",
      async () => {
        const progress: DownloadProgress[] = [];
        const resolved = await resolveModel(REPO, { ...options, onProgress: (p) => progress.push(p) });
        assertEquals([resolved.dir, resolved.commit, resolved.origin], [dir, COMMIT, "hub"]);
        assertEquals(resolved.files, [
          "config.json",
          "tokenizer.json",
          "tokenizer_config.json",
          "special_tokens_map.json",
          "generation_config.json",
          "model.safetensors.index.json",
          SHARD1,
          SHARD2,
        ]);
        for (const file of resolved.files) assert(sameBytes(join(dir, file), join(MODEL_DIR, file)), file);
        // Python's layout: refs/main names the commit; snapshot entries are relative links to blobs,
        // LFS blobs named by their sha256.
        assertEquals(Deno.readTextFileSync(join(repoDir, "refs", "main")), COMMIT);
        for (const shard of [SHARD1, SHARD2]) {
          assertEquals(Deno.readLinkSync(join(dir, shard)), join("..", "..", "blobs", shaOf(shard)));
        }
        assertEquals(Deno.readDirSync(join(repoDir, "blobs")).toArray().length, resolved.files.length);
        assert(
          hub.log.filter((r) => !r.path.startsWith("/cdn/")).every((r) => r.auth === "Bearer hf_test_token"),
        );
        const cdn = hub.log.filter((r) => r.path.startsWith("/cdn/"));
        assert(cdn.length === 2 && cdn.every((r) => r.auth === null), "the token must not go to the CDN");
        // After the first answer named the commit, every file is asked for at that commit.
        assert(
          gets().filter((r) => !r.path.startsWith("/cdn/")).every((r) => r.path.includes(`/${COMMIT}/`)),
        );
        const last = progress.filter((p) => p.file === SHARD1).at(-1)!;
        assertEquals([last.loaded, last.total], [sizeOf(SHARD1), sizeOf(SHARD1)]);
        assert(![...Deno.readDirSync(join(repoDir, "blobs"))].some((e) => e.name.endsWith(".incomplete")));
        // The snapshot is a working model folder.
        const config = await loadModelConfig(dir);
        using checkpoint = await openCheckpoint(dir);
        assertEquals(checkpoint.tensors.size, 28); // tiny-gpt2: 2 layers × 12 + 4, tied output
        assertEquals(config.hiddenSize, 2);
        assertEquals((await loadTokenizer(dir)).encode("Hello world"), [15496, 995]);
      },
    );

    await t.step(
      "a complete snapshot is reused without any request; a present blob is not fetched again",
      async () => {
        hub.log.length = 0;
        const resolved = await resolveModel(REPO, options);
        assertEquals([hub.log.length, resolved.downloaded], [0, []]);
        await Deno.remove(join(dir, SHARD1)); // the link is gone, the blob is still there
        const relinked = await resolveModel(REPO, options);
        assertEquals([gets(), relinked.downloaded], [[], []]);
        assert(sameBytes(join(dir, SHARD1), join(MODEL_DIR, SHARD1)));
      },
    );

    await t.step("a partial blob resumes with a Range request", async () => {
      const full = Deno.readFileSync(join(MODEL_DIR, SHARD1));
      const half = Math.floor(full.length / 2);
      await evict(SHARD1);
      await Deno.writeFile(`${blobOf(SHARD1)}.incomplete`, full.subarray(0, half));
      hub.log.length = 0;
      const resolved = await resolveModel(REPO, options);
      assertEquals(resolved.downloaded, [SHARD1]);
      const cdn = hub.log.filter((r) => r.path.startsWith("/cdn/"));
      assertEquals(cdn, [{ method: "GET", path: `/cdn/${SHARD1}`, range: `bytes=${half}-`, auth: null }]);
      assert(sameBytes(join(dir, SHARD1), join(MODEL_DIR, SHARD1)));
    });

    await t.step("an interrupted download fails with a resumable error, then resumes", async () => {
      await evict(SHARD2);
      const cut = Math.floor(sizeOf(SHARD2) / 3);
      await assertHubError(
        resolveModel(REPO, { ...options, fetch: fetchDroppingAfter(SHARD2, cut) }),
        "network",
        `interrupted at ${cut} of ${sizeOf(SHARD2)} bytes`,
        "run again to resume",
      );
      const partialSize = Deno.statSync(`${blobOf(SHARD2)}.incomplete`).size;
      assertEquals(partialSize, cut);
      hub.log.length = 0;
      await resolveModel(REPO, options);
      assertEquals(hub.log.find((r) => r.path === `/cdn/${SHARD2}`)?.range, `bytes=${partialSize}-`);
      assert(sameBytes(join(dir, SHARD2), join(MODEL_DIR, SHARD2)));
    });

    await t.step("a size mismatch and a sha256 mismatch are detected; no blob or link is left", async () => {
      await evict(SHARD2);
      behaviour.wrongLinkedSize = SHARD2;
      await assertHubError(
        resolveModel(REPO, options),
        "integrity",
        SHARD2,
        `announced ${sizeOf(SHARD2) + 1} bytes`,
      );
      await Deno.remove(`${blobOf(SHARD2)}.incomplete`).catch(() => {}); // a short partial may stay, to resume
      behaviour.wrongLinkedSize = undefined;
      behaviour.wrongSha = SHARD2;
      await assertHubError(resolveModel(REPO, options), "integrity", "sha256", "run again");
      const blobs = Deno.readDirSync(join(repoDir, "blobs")).toArray().map((e) => e.name);
      assert(
        !blobs.some((n) => n.startsWith(shaOf(SHARD2)) || n.startsWith("ffff")),
        `left behind: ${blobs}`,
      );
      assert(!Deno.readDirSync(dir).some((e) => e.name === SHARD2), "a link to a corrupt shard");
      behaviour.wrongSha = undefined;
      await resolveModel(REPO, options);
      assert(sameBytes(join(dir, SHARD2), join(MODEL_DIR, SHARD2)));
    });

    await t.step("missing or wrong tokens, unknown repos and revisions give clear errors", async () => {
      const fresh = { endpoint: hub.endpoint, cacheDir: join(cacheDir, "other") };
      await assertHubError(resolveModel(REPO, { ...fresh, token: "" }), "auth", "set HF_TOKEN");
      await assertHubError(resolveModel(REPO, { ...fresh, token: "wrong" }), "auth", "rejected");
      behaviour.requireToken = undefined;
      await assertHubError(
        resolveModel("test-org/missing", fresh),
        "not-found",
        "test-org/missing not found",
      );
      await assertHubError(resolveModel(`${REPO}@v9`, fresh), "not-found", `revision "v9"`);
      await assertHubError(
        resolveModel(REPO, { ...fresh, offline: true }),
        "offline",
        "not fully in the cache",
      );
      await assertHubError(
        resolveModel(REPO, { cacheDir: fresh.cacheDir, endpoint: "http://127.0.0.1:9" }),
        "network",
        "cannot reach",
      );
    });

    await t.step("HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE and HF_HOME from the environment", async () => {
      behaviour.requireToken = "env-token";
      await withEnv(
        { HF_ENDPOINT: hub.endpoint, HF_TOKEN: "env-token", HF_HUB_CACHE: cacheDir },
        async () => {
          hub.log.length = 0;
          const resolved = await resolveModel(REPO); // served from the cache filled above
          assertEquals([resolved.dir, hub.log.length], [dir, 0]);
          await Deno.remove(join(repoDir, "refs", "main")); // main must be asked for again
          await resolveModel(REPO);
          assertEquals(hub.log.at(-1)?.auth, "Bearer env-token");
        },
      );
      const home = join(cacheDir, "hf-home");
      await withEnv({ HF_HUB_CACHE: undefined, HF_HOME: home }, () => {
        assertEquals(defaultHubCacheDir(), join(home, "hub"));
        return Promise.resolve();
      });
      await withEnv(
        { HF_HUB_CACHE: undefined, HF_HOME: undefined, XDG_CACHE_HOME: undefined, HOME: "/h" },
        () => {
          assertEquals(defaultHubCacheDir(), join("/h", ".cache", "huggingface", "hub"));
          return Promise.resolve();
        },
      );
    });
  } finally {
    await hub.close().catch(() => {});
    await Deno.remove(cacheDir, { recursive: true });
  }
});

/** Runs `body` with environment variables set (undefined: unset), then restores them. */
async function withEnv(vars: Record<string, string | undefined>, body: () => Promise<void>): Promise<void> {
  const saved = Object.keys(vars).map((k) => [k, Deno.env.get(k)] as const);
  try {
    for (const [k, v] of Object.entries(vars)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
    await body();
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  }
}

/**
 * Lays out MODEL_DIR the way Python's huggingface_hub leaves a download: blobs named by ETag
 * (sha256 for LFS files, git blob sha1 for the others), relative links from the snapshot, and
 * refs/main holding the commit.
 */
async function writePythonCache(cacheDir: string): Promise<string> {
  const repoDir = repoDirIn(cacheDir);
  const snapshot = join(repoDir, "snapshots", COMMIT);
  await Deno.mkdir(join(repoDir, "blobs"), { recursive: true });
  await Deno.mkdir(join(repoDir, "refs"), { recursive: true });
  await Deno.mkdir(snapshot, { recursive: true });
  for (const entry of Deno.readDirSync(MODEL_DIR)) {
    const bytes = Deno.readFileSync(join(MODEL_DIR, entry.name));
    const lfs = entry.name.endsWith(".safetensors");
    const header = new TextEncoder().encode(`blob ${bytes.length}\0`);
    const etag = lfs
      ? createHash("sha256").update(bytes).digest("hex")
      : createHash("sha1").update(header).update(bytes).digest("hex");
    await Deno.writeFile(join(repoDir, "blobs", etag), bytes);
    await Deno.symlink(join("..", "..", "blobs", etag), join(snapshot, entry.name));
  }
  await Deno.writeTextFile(join(repoDir, "refs", "main"), COMMIT);
  return snapshot;
}

Deno.test("hub: a cache in Python's layout is used with the hub down; a missing ref needs the network", async () => {
  const cacheDir = await Deno.makeTempDir();
  try {
    const snapshot = await writePythonCache(cacheDir);
    const down = { cacheDir, endpoint: "http://127.0.0.1:9" }; // nothing listens there
    for (const spec of [REPO, `${REPO}@${COMMIT}`]) {
      const resolved = await resolveModel(spec, { ...down, offline: true });
      assertEquals([resolved.dir, resolved.commit, resolved.downloaded], [snapshot, COMMIT, []]);
    }
    const resolved = await resolveModel(REPO, down);
    assert(resolved.files.includes(SHARD2) && resolved.files.includes("tokenizer_config.json"));
    assertEquals((await loadTokenizer(resolved.dir)).encode("Hello world"), [15496, 995]);
    await assertHubError(resolveModel(`${REPO}@v2`, { ...down, offline: true }), "offline", "not fully");
    await assertHubError(resolveModel(`${REPO}@v2`, down), "network", "cannot reach");
    // A snapshot whose blob is gone is incomplete, not "found".
    await Deno.remove(join(repoDirIn(cacheDir), "blobs", shaOf(SHARD2)));
    await assertHubError(resolveModel(REPO, { ...down, offline: true }), "offline", "not fully");
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("hub: the earlier private cache (GRADMM_CACHE, org--name/revision + marker) is still read", async () => {
  const root = await Deno.makeTempDir();
  try {
    const legacy = join(root, "gradmm", "test-org--tiny-gpt2-sharded", "main");
    await Deno.mkdir(legacy, { recursive: true });
    const files = [...Deno.readDirSync(MODEL_DIR)].map((e) => e.name).sort();
    for (const f of files) await Deno.copyFile(join(MODEL_DIR, f), join(legacy, f));
    const marker = {
      repo: REPO,
      revision: "main",
      files: files.map((name) => ({ name, size: sizeOf(name) })),
    };
    await Deno.writeTextFile(join(legacy, ".gradmm-complete.json"), JSON.stringify(marker));
    const vars = { GRADMM_CACHE: join(root, "gradmm"), HF_HUB_CACHE: join(root, "hf"), HF_HUB_OFFLINE: "1" };
    await withEnv(vars, async () => {
      const resolved = await resolveModel(REPO);
      assertEquals([resolved.dir, resolved.files], [legacy, files]);
      // A truncated file invalidates the old marker: the model is then not in any cache.
      await Deno.truncate(join(legacy, SHARD1), 10);
      await assertHubError(resolveModel(REPO), "offline", join(root, "hf"));
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("hub: local folders are used as is; malformed specs are refused", async () => {
  const local = await resolveModel(MODEL_DIR);
  assertEquals([local.origin, local.dir, local.downloaded], ["local", MODEL_DIR, []]);
  assert(local.files.includes("config.json"));
  for (
    const bad of [
      "a/b/c",
      "./missing-folder",
      "/no/such/dir",
      "org/na--me",
      "org/..",
      "org/name@",
      "org/name@a/../b",
    ]
  ) {
    await assertHubError(resolveModel(bad, { cacheDir: "/nonexistent" }), "spec", "neither a model folder");
  }
  assertEquals(parseRepoSpec("openai-community/gpt2"), {
    org: "openai-community",
    name: "gpt2",
    revision: "main",
  });
  assertEquals(parseRepoSpec("org/name@refs/pr/1")?.revision, "refs/pr/1");
});

/**
 * A hub whose file server sends no Content-Length (a streamed body) and, when `cut` names a file,
 * closes that body cleanly after half its bytes: the truncation is invisible to HTTP. The listing
 * (`/api/models/{repo}/tree/main`) gives sizes and the LFS sha256 of the weights, unless `listing`
 * is false. Files are small fakes: resolveModel does not parse them.
 */
function startUnsizedHub(behaviour: { cut?: string; listing: boolean }) {
  const files = new Map<string, Uint8Array>([
    ["config.json", new TextEncoder().encode('{"model_type": "gpt2"}')],
    ["tokenizer.json", new TextEncoder().encode('{"model": {}}')],
    ["model.safetensors", Uint8Array.from({ length: 200_000 }, (_, i) => (i * 7919) % 251)],
  ]);
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/api/models/test-org/unsized/tree/main") {
      if (!behaviour.listing) return new Response("not here", { status: 404 });
      return Response.json([...files].map(([name, bytes]) => ({
        type: "file",
        path: name,
        size: name.endsWith(".safetensors") ? 134 : bytes.length, // an LFS pointer's own size
        ...(name.endsWith(".safetensors")
          ? { lfs: { oid: createHash("sha256").update(bytes).digest("hex"), size: bytes.length } }
          : {}),
      })));
    }
    const m = path.match(/^\/test-org\/unsized\/resolve\/main\/([^/]+)$/);
    const bytes = m ? files.get(m[1]) : undefined;
    if (!bytes) {
      return new Response("Entry not found", { status: 404, headers: { "x-error-code": "EntryNotFound" } });
    }
    const sent = behaviour.cut === m![1] ? bytes.subarray(0, bytes.length >> 1) : bytes;
    // A stream has no known length, so no Content-Length header is sent (chunked encoding).
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < sent.length; i += 16_384) controller.enqueue(sent.slice(i, i + 16_384));
        controller.close();
      },
    });
    return new Response(body, { status: 200 });
  });
  return { endpoint: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

Deno.test("hub: a download with no length is verified against the hub's listing before it is kept", async (t) => {
  const behaviour: { cut?: string; listing: boolean } = { cut: "model.safetensors", listing: true };
  const hub = startUnsizedHub(behaviour);
  const cacheDir = await Deno.makeTempDir();
  const options = { cacheDir, endpoint: hub.endpoint };
  // This server names no commit: the snapshot is named after the revision.
  const repoDir = join(cacheDir, "models--test-org--unsized");
  const dir = join(repoDir, "snapshots", "main");
  const present = (p: string) => Deno.stat(p).then(() => true, () => false);
  /** Blobs with their final name: only verified downloads get one. */
  const finalBlobs = async () =>
    (await Array.fromAsync(Deno.readDir(join(repoDir, "blobs"))).catch(() => [])).map((e) => e.name)
      .filter((n) => !n.endsWith(".incomplete"));
  const weightsSha = createHash("sha256")
    .update(Uint8Array.from({ length: 200_000 }, (_, i) => (i * 7919) % 251)).digest("hex");
  try {
    await t.step("a body that closes early gets no blob name and no snapshot link", async () => {
      await assertHubError(
        resolveModel("test-org/unsized", options),
        "integrity",
        "model.safetensors",
        "received 100000 bytes but the hub lists 200000",
      );
      assert(
        !(await present(join(dir, "model.safetensors"))),
        "truncated weights were linked into the snapshot",
      );
      // config.json and tokenizer.json were whole and got their blobs; the weights got none.
      assertEquals((await finalBlobs()).length, 2);
    });
    await t.step("without a listing the download cannot be verified and is not kept", async () => {
      behaviour.listing = false;
      behaviour.cut = undefined;
      await assertHubError(resolveModel("test-org/unsized", options), "integrity", "cannot be verified");
      assert(!(await present(join(dir, "model.safetensors"))));
    });
    await t.step(
      "a whole body that matches the listing's size and sha256 is kept, named by its sha256",
      async () => {
        behaviour.listing = true;
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        const resolved = await resolveModel("test-org/unsized", options);
        assertEquals((await Deno.stat(join(dir, "model.safetensors"))).size, 200_000);
        assert(resolved.files.includes("model.safetensors"));
        assert((await finalBlobs()).includes(weightsSha));
        assertEquals(Deno.readTextFileSync(join(repoDir, "refs", "main")), "main");
        await hub.close(); // the snapshot is now found without the server
        assertEquals((await resolveModel("test-org/unsized", { ...options, offline: true })).dir, dir);
      },
    );
  } finally {
    await hub.close().catch(() => {});
    await Deno.remove(cacheDir, { recursive: true });
  }
});
