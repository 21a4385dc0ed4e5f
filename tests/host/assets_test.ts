/**
 * The bundled-asset list matches assets/ on disk, and bundledAsset reads them in place from a
 * file: URL but fetches, verifies and caches them from an http: one (a server on 127.0.0.1).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { ASSET_FILES, bundledAsset, bundledData, bundledModel } from "../../host/assets.ts";
import { HubError } from "../../models/errors.ts";

const ASSETS = fileURLToPath(new URL("../../assets/", import.meta.url));

function filesUnder(dir: string): string[] {
  return [...Deno.readDirSync(dir)].flatMap((e) =>
    e.isDirectory ? filesUnder(join(dir, e.name)) : [relative(ASSETS, join(dir, e.name))]
  );
}

Deno.test("assets: ASSET_FILES lists every bundled file with its size and sha256", () => {
  const onDisk = filesUnder(ASSETS).filter((f) => !f.endsWith("README.md")).sort();
  assert.deepEqual(ASSET_FILES.map((f) => f.path).sort(), onDisk, "update ASSET_FILES in host/assets.ts");
  for (const f of ASSET_FILES) {
    const bytes = Deno.readFileSync(join(ASSETS, f.path));
    const actual = { size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") };
    assert.deepEqual(actual, { size: f.size, sha256: f.sha256 }, `${f.path} changed: update ASSET_FILES`);
  }
});

Deno.test("assets: from a checkout the bundled files are read in place", async () => {
  assert.equal(await bundledModel(), join(ASSETS, "gpt2-d128"));
  assert.equal(await bundledData(), join(ASSETS, "sst2-validation.jsonl"));
});

Deno.test("assets: from a URL they are fetched once, verified, and kept in the hub cache", async () => {
  const requests: string[] = [];
  let corrupt = false;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    requests.push(path);
    if (path === "/missing/sst2-validation.jsonl") return new Response("no", { status: 404 });
    const bytes = await Deno.readFile(join(ASSETS, path.replace(/^\/assets\//, "")));
    if (corrupt) bytes[0] ^= 1;
    return new Response(bytes);
  });
  const cacheDir = await Deno.makeTempDir();
  const origin = `http://127.0.0.1:${server.addr.port}`;
  try {
    const options = { base: `${origin}/assets/`, cacheDir };
    corrupt = true;
    await assert.rejects(bundledData(options), (e: Error) => e instanceof HubError && e.kind === "integrity");
    corrupt = false;
    const data = await bundledData(options);
    assert.ok(data.startsWith(join(cacheDir, "models--gradmm-ts--assets", "snapshots")));
    assert.deepEqual(Deno.readFileSync(data), Deno.readFileSync(join(ASSETS, "sst2-validation.jsonl")));
    const model = await bundledAsset("gpt2-d128", options);
    assert.ok(Deno.statSync(join(model, "model.safetensors")).isFile);
    const count = requests.length;
    assert.equal(await bundledData(options), data);
    assert.equal(requests.length, count, "a cached asset was fetched again");
    await assert.rejects(
      bundledData({ base: `${origin}/missing/`, cacheDir: join(cacheDir, "other") }),
      (e: Error) => e instanceof HubError && e.kind === "not-found" && e.message.includes("--data"),
    );
  } finally {
    await server.shutdown();
    await Deno.remove(cacheDir, { recursive: true });
  }
});
