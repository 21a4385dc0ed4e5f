/**
 * The fence between the engine and its host: nothing under kernels/, autograd/, models/, data/, admm/, api/,
 * train/, nor anything mod.ts imports (transitively), may import `node:` modules, npm packages
 * other than the allowed tokenizer, or reference `Deno.` — those belong in host/ and cli/. Then
 * the real proof: `deno bundle --platform browser mod.ts` has neither, and the bundle loads and
 * runs (tokenizer, safetensors, config) with the `Deno` global deleted.
 */
import assert from "node:assert";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const NEUTRAL_DIRS = ["kernels", "autograd", "models", "data", "admm", "train", "api"];
/** Package specifiers the core may import; each must bundle for a browser. */
const ALLOWED_BARE = new Set(["npm:@huggingface/tokenizers@0.2.0"]);

/** The source with comments blanked out (strings kept), so that prose about `Deno.` is not flagged. */
function stripComments(src: string): string {
  let out = "";
  let i = 0;
  let quote: string | null = null;
  while (i < src.length) {
    const c = src[i];
    if (quote) {
      out += c;
      if (c === "\\") {
        out += src[i + 1] ?? "";
        i += 2;
        continue;
      }
      if (c === quote) quote = null;
      i++;
    } else if (c === "/" && src[i + 1] === "/") {
      while (i < src.length && src[i] !== "\n") i++;
    } else if (c === "/" && src[i + 1] === "*") {
      const end = src.indexOf("*/", i + 2);
      const stop = end < 0 ? src.length : end + 2;
      out += src.slice(i, stop).replace(/[^\n]/g, " "); // keep line numbers
      i = stop;
    } else {
      if (c === '"' || c === "'" || c === "`") quote = c;
      out += c;
      i++;
    }
  }
  return out;
}

const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s*)(["'`])([^"'`\n]+)\1/gm;

/** Every problem in one file, as "path:line: what", and the relative modules it imports. */
function scanFile(path: string): { problems: string[]; imports: string[] } {
  const code = stripComments(Deno.readTextFileSync(path));
  const rel = relative(ROOT, path);
  const lineOf = (index: number) => code.slice(0, index).split("\n").length;
  const problems: string[] = [];
  const imports: string[] = [];
  for (const m of code.matchAll(SPECIFIER)) {
    const spec = m[2];
    if (spec.startsWith("./") || spec.startsWith("../")) imports.push(resolve(dirname(path), spec));
    else if (!ALLOWED_BARE.has(spec)) problems.push(`${rel}:${lineOf(m.index!)}: imports "${spec}"`);
  }
  for (const m of code.matchAll(/\bDeno\s*\./g)) problems.push(`${rel}:${lineOf(m.index!)}: uses Deno.*`);
  return { problems, imports };
}

function tsFilesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) out.push(...tsFilesUnder(path));
    else if (entry.isFile && entry.name.endsWith(".ts")) out.push(path);
  }
  return out;
}

Deno.test("fence: the checker finds what it must (node:, npm:, Deno. outside comments)", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const bad = join(dir, "bad.ts");
    Deno.writeTextFileSync(
      bad,
      [
        `// Deno.env in a comment is fine; so is "node:fs" in prose`,
        `import { join } from "node:path";`,
        `const url = "https://example.com"; const v = Deno.env.get("X");`,
        `const m = await import("npm:left-pad");`,
        `import "./side.ts";`,
        `/* Deno.exit() in a block comment */ const ok = "Deno. in a string";`,
        `import { Tokenizer } from "npm:@huggingface/tokenizers@0.2.0";`,
      ].join("\n"),
    );
    const { problems, imports } = scanFile(bad);
    const rel = relative(ROOT, bad);
    // A string literal "Deno. in a string" is flagged too: the check is textual and strict.
    assert.deepStrictEqual(problems, [
      `${rel}:2: imports "node:path"`,
      `${rel}:4: imports "npm:left-pad"`,
      `${rel}:3: uses Deno.*`,
      `${rel}:6: uses Deno.*`,
    ]);
    assert.deepStrictEqual(imports, [join(dir, "side.ts")]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("fence: no node:, npm: or Deno. below the host (engine folders and mod.ts's import graph)", () => {
  const files = new Set(NEUTRAL_DIRS.flatMap((d) => tsFilesUnder(join(ROOT, d))));
  const problems: string[] = [];
  const seen = new Set<string>();
  const queue = [join(ROOT, "mod.ts"), ...files];
  while (queue.length) {
    const path = queue.pop()!;
    if (seen.has(path)) continue;
    seen.add(path);
    const scan = scanFile(path);
    problems.push(...scan.problems);
    queue.push(...scan.imports);
  }
  assert.ok(seen.size > 50, `scanned only ${seen.size} files`);
  assert.ok(![...seen].some((p) => relative(ROOT, p).startsWith("host")), "mod.ts must not import host/");
  assert.deepStrictEqual(problems, [], `host concerns below the host:\n${problems.join("\n")}`);
});

Deno.test({
  name: "fence: mod.ts bundles for a browser without node: or Deno., and the bundle runs without Deno",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const bundle = join(dir, "gradmm.js");
      const built = await new Deno.Command(Deno.execPath(), {
        args: ["bundle", "--platform", "browser", "-o", bundle, join(ROOT, "mod.ts")],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(built.success, `deno bundle failed:\n${new TextDecoder().decode(built.stderr)}`);
      const code = await Deno.readTextFile(bundle);
      const lines = code.split("\n");
      const hits = lines.flatMap((l, i) =>
        /["'`]node:|\bDeno\s*\.|\brequire\s*\(/.test(l) ? [`${i + 1}: ${l.trim().slice(0, 120)}`] : []
      );
      assert.deepStrictEqual(hits, [], "the browser bundle still has host references");

      // Load the bundle in a process whose Deno global is gone, as in a page: tokenizer, safetensors
      // and config parsing from bytes must work (no GPU needed for these).
      const model = join(ROOT, "assets", "gpt2-d128");
      const probe = join(dir, "probe.mjs");
      await Deno.writeTextFile(
        probe,
        `
const files = {};
for (const f of ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
  "special_tokens_map.json", "model.safetensors"]) {
  files[f] = await Deno.readFile(${JSON.stringify(model)} + "/" + f);
}
delete globalThis.Deno;
if (typeof Deno !== "undefined") throw new Error("could not remove Deno");
const m = await import(${JSON.stringify(new URL(`file://${bundle}`).href)});
const source = m.bytesSource(files);
const tok = await m.loadTokenizer(source);
const config = await m.loadModelConfig(source);
const ckpt = await m.openCheckpoint(source);
const wte = await ckpt.read("transformer.wte.weight");
console.log(JSON.stringify({ ids: tok.encode("Hello world"), family: config.family, vocab: config.vocabSize,
  wte: wte.length, first: wte[0] }));
`,
      );
      const ran = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-read", probe],
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(ran.stderr);
      assert.ok(ran.success, `the bundle failed without Deno:\n${err}`);
      const got = JSON.parse(new TextDecoder().decode(ran.stdout).trim().split("\n").pop()!);
      assert.deepStrictEqual(got.ids, [15496, 995]);
      assert.strictEqual(got.family, "gpt2");
      assert.strictEqual(got.wte, got.vocab * 128);
      assert.ok(Number.isFinite(got.first) && got.first !== 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
