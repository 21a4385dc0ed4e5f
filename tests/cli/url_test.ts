/**
 * The CLI run from a URL, as `deno run -A https://…/cli.ts` would: the repository is served on
 * 127.0.0.1 and run in a subprocess with fresh, temporary Deno and hub caches, from a folder with
 * no deno.json. The npm dependency comes from a small registry on the same server (packed from
 * node_modules/), so nothing beyond 127.0.0.1 is needed. The bundled model must be fetched only
 * by a command that uses it, once, into the hub cache.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { gpuTest } from "../helpers.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const TOKENIZERS = "@huggingface/tokenizers";

const TYPES: Record<string, string> = {
  ".ts": "application/typescript; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".jsonl": "application/jsonl",
};

/** Packs node_modules' copy of the tokenizer package as an npm tarball; returns it and its integrity. */
async function packTokenizers(
  dir: string,
): Promise<{ tarball: Uint8Array<ArrayBuffer>; integrity: string; version: string }> {
  const pkg = await Deno.realPath(join(ROOT, "node_modules", TOKENIZERS));
  const { version } = JSON.parse(await Deno.readTextFile(join(pkg, "package.json")));
  const staging = join(dir, "staging");
  await Deno.mkdir(staging);
  await Deno.symlink(pkg, join(staging, "package"));
  const tgz = join(dir, "tokenizers.tgz");
  const tar = await new Deno.Command("tar", { args: ["-czhf", tgz, "-C", staging, "package"] }).output();
  assert.ok(tar.success, new TextDecoder().decode(tar.stderr));
  const tarball = await Deno.readFile(tgz);
  const integrity = `sha512-${createHash("sha512").update(tarball).digest("base64")}`;
  return { tarball, integrity, version };
}

/** Serves the repository's files, and the npm registry's answers for the tokenizer package. */
async function serveRepository(dir: string) {
  const npm = await packTokenizers(dir);
  const log: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    log.push(path);
    const origin = new URL(req.url).origin;
    if (path === `/npm/${TOKENIZERS}`) {
      const dist = { tarball: `${origin}/npm/tokenizers.tgz`, integrity: npm.integrity };
      return Response.json({
        name: TOKENIZERS,
        "dist-tags": { latest: npm.version },
        versions: { [npm.version]: { name: TOKENIZERS, version: npm.version, dist } },
      });
    }
    if (path === "/npm/tokenizers.tgz") return new Response(npm.tarball);
    const file = normalize(join(ROOT, path));
    if (!file.startsWith(ROOT) || file.split(sep).some((p) => p === ".git" || p === "node_modules")) {
      return new Response("no", { status: 403 });
    }
    try {
      const type = TYPES[file.slice(file.lastIndexOf("."))] ?? "application/octet-stream";
      return new Response(await Deno.readFile(file), { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return { origin: `http://127.0.0.1:${server.addr.port}`, log, close: () => server.shutdown() };
}

/** Runs deno with `args` in `cwd`; returns its exit code and output. */
async function deno(args: string[], cwd: string, env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), { args, cwd, env, stdout: "piped", stderr: "piped" })
    .output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

Deno.test(
  "cli from a URL: info, then generate on the bundled model fetched once into the hub cache",
  gpuTest,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "gradmm-url-" });
    const repo = await serveRepository(dir);
    try {
      const work = join(dir, "work");
      await Deno.mkdir(work);
      const hubCache = join(dir, "hf");
      const env = {
        DENO_DIR: join(dir, "deno"),
        HF_HUB_CACHE: hubCache,
        GRADMM_CACHE: join(dir, "gradmm"),
        NPM_CONFIG_REGISTRY: `${repo.origin}/npm/`,
        NO_COLOR: "1",
      };
      const cli = `${repo.origin}/cli.ts`;
      const assetRequests = () => repo.log.filter((p) => p.startsWith("/assets/"));

      const info = await deno(["run", "-A", cli, "info"], work, env);
      assert.equal(info.code, 0, info.stderr);
      assert.match(info.stdout, /adapter:/);
      assert.deepEqual(assetRequests(), [], "info fetched the bundled assets");
      assert.ok(repo.log.includes("/cli.ts") && repo.log.includes(`/npm/${TOKENIZERS}`));

      const args = ["run", "-A", cli, "generate", "--prompt", "This movie is", "--max-new-tokens", "3"];
      const remote = await deno(args, work, env);
      assert.equal(remote.code, 0, remote.stderr);
      assert.ok(assetRequests().includes("/assets/gpt2-d128/model.safetensors"), "the model was not fetched");
      assert.ok(!assetRequests().includes("/assets/sst2-validation.jsonl"), "generate needs no data");
      // The same continuation as from the checkout, which reads assets/ in place.
      const local = await deno(["run", "-A", join(ROOT, "cli.ts"), ...args.slice(3)], ROOT, {
        NO_COLOR: "1",
      });
      assert.equal(local.code, 0, local.stderr);
      assert.ok(remote.stdout.trim().length > 0);
      assert.equal(remote.stdout, local.stdout);

      const snapshots = join(hubCache, "models--gradmm-ts--assets", "snapshots");
      const [snapshot] = await Array.fromAsync(Deno.readDir(snapshots));
      const cached = join(snapshots, snapshot.name, "gpt2-d128", "model.safetensors");
      assert.equal(
        (await Deno.stat(cached)).size,
        (await Deno.stat(join(ROOT, "assets/gpt2-d128/model.safetensors"))).size,
      );

      const before = assetRequests().length;
      const again = await deno(args, work, env);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(again.stdout, local.stdout);
      assert.equal(assetRequests().length, before, "the second run fetched the assets again");
    } finally {
      await repo.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
