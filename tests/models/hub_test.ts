/**
 * Hub download against a local imitation of the Hugging Face hub on 127.0.0.1 (no test touches
 * the internet). It serves an F16 two-shard copy of tiny-gpt2 (written for the test, standing in for
 * gpt2-d256's layout) like the real hub: weights
 * through a redirect to a "CDN" path, with X-Linked-Etag (sha256) and X-Linked-Size on the
 * redirect, Range support, X-Error-Code on errors, and optional token checks and faults.
 */
import nodeAssert from "node:assert";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { type DownloadProgress, parseRepoSpec, resolveModel } from "../../host/hub.ts";
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

/** Faults and checks the test hub applies; tests change them between calls. */
interface HubBehaviour {
  requireToken?: string;
  wrongLinkedSize?: string;
  wrongSha?: string;
}

interface LoggedRequest {
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
    log.push({ path: url.pathname, range: req.headers.get("range"), auth: req.headers.get("authorization") });
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
    if (decodeURIComponent(m[3]) !== "main") {
      return new Response("Invalid rev", { status: 404, headers: { "x-error-code": "RevisionNotFound" } });
    }
    const file = m[4];
    if (!files.has(file)) {
      return new Response("Entry not found", { status: 404, headers: { "x-error-code": "EntryNotFound" } });
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
        },
      });
    }
    return serveBytes(file, req, { etag: `"${"a".repeat(40)}"` });
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
  const dir = join(cacheDir, "test-org--tiny-gpt2-sharded", "main");
  const forget = () => Deno.remove(join(dir, ".gradmm-complete.json")).catch(() => {});
  try {
    await t.step("fresh download of a sharded model, token sent, files byte-identical", async () => {
      const progress: DownloadProgress[] = [];
      const resolved = await resolveModel(REPO, { ...options, onProgress: (p) => progress.push(p) });
      assertEquals(resolved.dir, dir);
      assertEquals(resolved.origin, "hub");
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
      assert(
        hub.log.filter((r) => !r.path.startsWith("/cdn/")).every((r) => r.auth === "Bearer hf_test_token"),
      );
      const cdn = hub.log.filter((r) => r.path.startsWith("/cdn/"));
      assert(cdn.length === 2 && cdn.every((r) => r.auth === null), "the token must not go to the CDN");
      const last = progress.filter((p) => p.file === SHARD1).at(-1)!;
      assertEquals([last.loaded, last.total], [sizeOf(SHARD1), sizeOf(SHARD1)]);
      assert(![...Deno.readDirSync(dir)].some((e) => e.name.endsWith(".partial")));
      // The cached folder is a working model folder.
      const config = await loadModelConfig(dir);
      using checkpoint = await openCheckpoint(dir);
      assertEquals(checkpoint.tensors.size, 28); // tiny-gpt2: 2 layers × 12 + 4, tied output
      assertEquals(config.hiddenSize, 2);
      assertEquals((await loadTokenizer(dir)).encode("Hello world"), [15496, 995]);
    });

    await t.step("a complete cache is reused without any request", async () => {
      hub.log.length = 0;
      const resolved = await resolveModel(REPO, options);
      assertEquals([hub.log.length, resolved.downloaded], [0, []]);
      hub.log.length = 0;
      await forget(); // without the marker: complete files are still not fetched again
      await resolveModel(REPO, options);
      assertEquals(hub.log.map((r) => r.path), [`/${REPO}/resolve/main/model.safetensors`]);
    });

    await t.step("a partial file resumes with a Range request", async () => {
      await forget();
      const full = Deno.readFileSync(join(MODEL_DIR, SHARD1));
      const half = Math.floor(full.length / 2);
      await Deno.remove(join(dir, SHARD1));
      await Deno.writeFile(join(dir, `${SHARD1}.partial`), full.subarray(0, half));
      hub.log.length = 0;
      const resolved = await resolveModel(REPO, options);
      assertEquals(resolved.downloaded, [SHARD1]);
      const cdn = hub.log.filter((r) => r.path.startsWith("/cdn/"));
      assertEquals(cdn, [{ path: `/cdn/${SHARD1}`, range: `bytes=${half}-`, auth: null }]);
      assert(sameBytes(join(dir, SHARD1), join(MODEL_DIR, SHARD1)));
    });

    await t.step("an interrupted download fails with a resumable error, then resumes", async () => {
      await forget();
      await Deno.remove(join(dir, SHARD2));
      const cut = Math.floor(sizeOf(SHARD2) / 3);
      await assertHubError(
        resolveModel(REPO, { ...options, fetch: fetchDroppingAfter(SHARD2, cut) }),
        "network",
        `interrupted at ${cut} of ${sizeOf(SHARD2)} bytes`,
        "run again to resume",
      );
      const partialSize = Deno.statSync(join(dir, `${SHARD2}.partial`)).size;
      assertEquals(partialSize, cut);
      hub.log.length = 0;
      await resolveModel(REPO, options);
      assertEquals(hub.log.find((r) => r.path === `/cdn/${SHARD2}`)?.range, `bytes=${partialSize}-`);
      assert(sameBytes(join(dir, SHARD2), join(MODEL_DIR, SHARD2)));
    });

    await t.step("a size mismatch and a sha256 mismatch are detected; no final file is left", async () => {
      await forget();
      await Deno.remove(join(dir, SHARD2));
      behaviour.wrongLinkedSize = SHARD2;
      await assertHubError(
        resolveModel(REPO, options),
        "integrity",
        SHARD2,
        `announced ${sizeOf(SHARD2) + 1} bytes`,
      );
      behaviour.wrongLinkedSize = undefined;
      behaviour.wrongSha = SHARD2;
      await assertHubError(resolveModel(REPO, options), "integrity", "sha256", "run again");
      assert(
        !Deno.readDirSync(dir).some((e) => e.name.startsWith(SHARD2)),
        "shard 2 or its partial left behind",
      );
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

    await t.step("HF_ENDPOINT, HF_TOKEN and GRADMM_CACHE from the environment", async () => {
      behaviour.requireToken = "env-token";
      const saved = ["HF_ENDPOINT", "HF_TOKEN", "GRADMM_CACHE"].map((k) => [k, Deno.env.get(k)] as const);
      try {
        Deno.env.set("HF_ENDPOINT", hub.endpoint);
        Deno.env.set("HF_TOKEN", "env-token");
        Deno.env.set("GRADMM_CACHE", cacheDir);
        hub.log.length = 0;
        const resolved = await resolveModel(REPO); // served from the cache filled above
        assertEquals(resolved.dir, dir);
        await forget();
        await resolveModel(REPO);
        assertEquals(hub.log.at(-1)?.auth, "Bearer env-token");
      } finally {
        for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
      }
    });
  } finally {
    await hub.close();
    await Deno.remove(cacheDir, { recursive: true });
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
  const dir = join(cacheDir, "test-org--unsized", "main");
  const marker = join(dir, ".gradmm-complete.json");
  const present = (p: string) => Deno.stat(p).then(() => true, () => false);
  try {
    await t.step("a body that closes early is not renamed into place nor marked complete", async () => {
      await assertHubError(
        resolveModel("test-org/unsized", options),
        "integrity",
        "model.safetensors",
        "received 100000 bytes but the hub lists 200000",
      );
      assert(
        !(await present(join(dir, "model.safetensors"))),
        "truncated weights were kept under their name",
      );
      assert(!(await present(marker)), "an incomplete download was marked complete");
    });
    await t.step("without a listing the download cannot be verified and is not marked complete", async () => {
      behaviour.listing = false;
      behaviour.cut = undefined;
      await assertHubError(resolveModel("test-org/unsized", options), "integrity", "cannot be verified");
      assert(!(await present(marker)));
    });
    await t.step("a whole body that matches the listing's size and sha256 is kept", async () => {
      behaviour.listing = true;
      await Deno.remove(dir, { recursive: true });
      const resolved = await resolveModel("test-org/unsized", options);
      assertEquals((await Deno.stat(join(dir, "model.safetensors"))).size, 200_000);
      assert(resolved.files.includes("model.safetensors"));
      assert(await present(marker));
    });
  } finally {
    await hub.close();
    await Deno.remove(cacheDir, { recursive: true });
  }
});
