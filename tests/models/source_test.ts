/**
 * Model sources: the bundled gpt2-d128 loaded from bytes in memory and from a local HTTP server
 * gives the same logits as from its folder; a sharded checkpoint works from every source; and a
 * corrupt or incomplete folder gives the same error over HTTP as on disk (only the file's label
 * differs: a path or a URL).
 */
import assert from "node:assert";
import { join } from "node:path";
import { scope, Tensor } from "../../autograd/tensor.ts";
import { noGrad } from "../../autograd/grad_mode.ts";
import { folderSource, loadModel, loadTokenizer, openCheckpoint } from "../../host/files.ts";
import type { CausalLM } from "../../models/model.ts";
import { encodeSafetensors, type TensorToWrite } from "../../models/safetensors.ts";
import { bytesSource, type ModelSource, openSafetensorsFile, urlSource } from "../../models/source.ts";
import { ctx, gpuTest } from "../helpers.ts";

const MODEL_DIR = new URL("../../assets/gpt2-d128", import.meta.url).pathname;
const MODEL_FILES = [
  "config.json",
  "generation_config.json",
  "model.safetensors",
  "special_tokens_map.json",
  "tokenizer.json",
  "tokenizer_config.json",
];

/** Serves `dir`'s files at http://127.0.0.1:port/m/ (GET and HEAD; 404 for anything else). */
function serveFolder(dir: string): { url: string; requests: string[]; close: () => Promise<void> } {
  const requests: string[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    requests.push(`${req.method} ${path}`);
    const m = path.match(/^\/m\/([^/]+)$/);
    if (!m) return new Response(null, { status: 404 });
    try {
      const bytes = await Deno.readFile(join(dir, decodeURIComponent(m[1])));
      return new Response(req.method === "HEAD" ? null : bytes, {
        headers: { "content-length": String(bytes.length) },
      });
    } catch {
      return new Response(null, { status: 404 });
    }
  });
  return { url: `http://127.0.0.1:${server.addr.port}/m/`, requests, close: () => server.shutdown() };
}

/** Last-position logits of two short prompts (one left-padded). */
function logitsOf(model: CausalLM): Promise<Float32Array> {
  const c = model.ctx;
  return scope(c, () =>
    noGrad(c, () =>
      model.forward({
        ids: Tensor.from(c, [50256, 50256, 1212, 3807, 318, 464, 3290, 3332], [2, 4]),
        attentionMask: Tensor.from(c, [0, 0, 1, 1, 1, 1, 1, 1], [2, 4]),
        logits: "last",
      }).logits!.read()));
}

async function readFolder(dir: string, names: string[]): Promise<Map<string, Uint8Array>> {
  return new Map(await Promise.all(names.map(async (n) => [n, await Deno.readFile(join(dir, n))] as const)));
}

Deno.test({
  name: "source: gpt2-d128 from bytes and from an HTTP URL gives the folder's logits and tokens",
  ...gpuTest,
  async fn() {
    const c = await ctx();
    const http = serveFolder(MODEL_DIR);
    try {
      const fromDisk = await loadModel(c, MODEL_DIR);
      const expected = await logitsOf(fromDisk);
      fromDisk.dispose();
      assert.ok(expected.every(Number.isFinite) && expected.some((x) => x !== 0));
      const sources: [string, ModelSource][] = [
        ["bytes", bytesSource(await readFolder(MODEL_DIR, MODEL_FILES))],
        [
          "blobs",
          bytesSource(Object.fromEntries(
            [...await readFolder(MODEL_DIR, MODEL_FILES)].map((
              [n, b],
            ) => [n, new Blob([b as Uint8Array<ArrayBuffer>])]),
          )),
        ],
        ["url", urlSource(http.url)],
      ];
      for (const [what, source] of sources) {
        const model = await loadModel(c, source);
        try {
          assert.deepStrictEqual(await logitsOf(model), expected, `${what}: logits differ from the folder's`);
        } finally {
          model.dispose();
        }
        const tok = await loadTokenizer(source);
        assert.deepStrictEqual(tok.encode("Hello world"), [15496, 995], what);
      }
      assert.ok(http.requests.includes("GET /m/model.safetensors"));
    } finally {
      await http.close();
    }
  },
});

Deno.test({
  name: "source: a sharded checkpoint (index.json + two shards) loads alike from disk, bytes and URL",
  ...gpuTest,
  async fn() {
    const c = await ctx();
    const dir = await Deno.makeTempDir();
    const http = serveFolder(dir);
    try {
      // Split gpt2-d128's tensors over two BF16 shards (its stored type: values stay exact).
      using whole = await openCheckpoint(MODEL_DIR);
      const names = [...whole.tensors.keys()].sort();
      const shards: Map<string, TensorToWrite>[] = [new Map(), new Map()];
      const weightMap: Record<string, string> = {};
      for (const [i, name] of names.entries()) {
        const info = whole.info(name);
        assert.strictEqual(info.dtype, "BF16");
        shards[i % 2].set(name, { data: await whole.read(name), shape: info.shape, dtype: "BF16" });
        weightMap[name] = `model-0000${(i % 2) + 1}-of-00002.safetensors`;
      }
      const files = new Map<string, Uint8Array>(await readFolder(MODEL_DIR, MODEL_FILES));
      files.delete("model.safetensors");
      files.set("model-00001-of-00002.safetensors", encodeSafetensors(shards[0]));
      files.set("model-00002-of-00002.safetensors", encodeSafetensors(shards[1]));
      files.set(
        "model.safetensors.index.json",
        new TextEncoder().encode(JSON.stringify({ weight_map: weightMap })),
      );
      for (const [name, bytes] of files) await Deno.writeFile(join(dir, name), bytes);

      const reference = await loadModel(c, MODEL_DIR);
      const expected = await logitsOf(reference);
      reference.dispose();
      for (
        const [what, source] of [["disk", dir], ["bytes", bytesSource(files)], [
          "url",
          urlSource(http.url),
        ]] as const
      ) {
        using checkpoint = await openCheckpoint(source);
        assert.strictEqual(checkpoint.tensors.size, names.length, what);
        const model = await loadModel(c, source);
        try {
          assert.deepStrictEqual(await logitsOf(model), expected, `${what}: sharded logits differ`);
        } finally {
          model.dispose();
        }
      }
      assert.ok(http.requests.includes("GET /m/model-00002-of-00002.safetensors"));
    } finally {
      await http.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * The error `load` rejects with, its message with the folder's label (`folder/` before a file
 * name, `folder` alone) replaced, so that a path and a URL compare equal.
 */
async function errorOf(
  load: () => Promise<unknown>,
  folder: string,
): Promise<{ name: string; message: string }> {
  try {
    await load();
  } catch (e) {
    // A URL folder's label ends in "/", a path's does not.
    const message = (e as Error).message.replaceAll(`${folder}/:`, "<FOLDER>:").replaceAll(
      folder,
      "<FOLDER>",
    );
    return { name: (e as Error).name, message };
  }
  throw new Error("expected an error");
}

Deno.test({
  name: "source: corrupt and missing files give the same errors over HTTP as from disk",
  ...gpuTest,
  async fn() {
    const c = await ctx();
    const dir = await Deno.makeTempDir();
    const http = serveFolder(dir);
    try {
      for (const name of ["config.json", "generation_config.json", "tokenizer.json"]) {
        await Deno.copyFile(join(MODEL_DIR, name), join(dir, name));
      }
      const disk = folderSource(dir);
      const web = urlSource(http.url);
      const same = async (what: string, load: (s: ModelSource) => Promise<unknown>, expect: RegExp) => {
        const a = await errorOf(() => load(disk), dir);
        const b = await errorOf(() => load(web), http.url.replace(/\/$/, ""));
        assert.deepStrictEqual(b, a, `${what}: the URL error differs from the disk error`);
        assert.match(a.message, expect, what);
      };
      // No weights at all.
      await same(
        "no weights",
        (s) => loadModel(c, s),
        /no model\.safetensors or model\.safetensors\.index\.json/,
      );
      // A header length that runs past the end of the file.
      const good = await Deno.readFile(join(MODEL_DIR, "model.safetensors"));
      await Deno.writeFile(join(dir, "model.safetensors"), good.subarray(0, 4096));
      await same("truncated", (s) => loadModel(c, s), /SafetensorsError|header|bytes/);
      // A header that is not JSON.
      const bad = good.slice(0, 4096);
      bad.fill(0x7b, 8, 40);
      await Deno.writeFile(join(dir, "model.safetensors"), bad);
      await same("bad header", (s) => openSafetensorsFile(s, "model.safetensors"), /header/);
      // A broken config.json.
      await Deno.writeFile(join(dir, "model.safetensors"), good);
      await Deno.writeTextFile(join(dir, "config.json"), "{ not json");
      await same("bad config", (s) => loadModel(c, s), /config\.json: not valid JSON/);
      // A shard index naming a missing shard.
      await Deno.copyFile(join(MODEL_DIR, "config.json"), join(dir, "config.json"));
      await Deno.remove(join(dir, "model.safetensors"));
      await Deno.writeTextFile(
        join(dir, "model.safetensors.index.json"),
        JSON.stringify({ weight_map: { "transformer.wte.weight": "gone.safetensors" } }),
      );
      await same("missing shard", (s) => openCheckpoint(s), /shard "gone\.safetensors".*file not found/);
    } finally {
      await http.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("source: bytesSource does not see prototype names; urlSource refuses a non-URL", async () => {
  const s = bytesSource({ "config.json": "{}" });
  assert.strictEqual(await s.open("constructor"), null);
  assert.strictEqual(await s.has("toString"), false);
  assert.ok(await s.has("config.json"));
  assert.throws(() => urlSource("not a url"), /not a URL/);
});

Deno.test({
  name: "source: an HTTP error other than 404 is reported, not taken for a missing file",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      () => new Response("no", { status: 503, statusText: "Service Unavailable" }),
    );
    try {
      const source = urlSource(`http://127.0.0.1:${server.addr.port}/m`);
      await assert.rejects(
        () => openCheckpoint(source),
        /model\.safetensors: cannot open: HTTP 503 Service Unavailable/,
      );
    } finally {
      await server.shutdown();
    }
  },
});
