/**
 * The documentation and reports in the repository must read the same in a clone: no absolute paths
 * of the machine they were written on (a checkout under /work/, temp files, home folders), which
 * mean nothing elsewhere and leak user names. Paths belong relative to the repository root
 * (`assets/gpt2-d128`, `out/exp-sst2`).
 */
import assert from "node:assert";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** Files checked: everything with these endings under docs/, and the top-level README. */
const EXTENSIONS = [".md", ".json", ".jsonl", ".txt"];

// A path segment that starts one of these folders, preceded by something that cannot continue a
// relative path (so "docs/tmp/x" or "out/work/y" would not match, "/work/main" or "file:///home/a" does).
const MACHINE_PATH = /(?:^|[\s"'`(=:,[])(?:file:\/\/)?(\/(?:work|tmp|home|root|Users)\/[^\s"'`)\],]*)/g;
const WINDOWS_HOME = /[A-Za-z]:\\(?:Users|Documents and Settings)\\[^\s"'`]*/g;

/** The machine-specific paths in a text, in order of appearance. */
export function machinePaths(text: string): string[] {
  const found = [...text.matchAll(MACHINE_PATH)].map((m) => m[1]);
  return [...found, ...[...text.matchAll(WINDOWS_HOME)].map((m) => m[0])];
}

function docFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return docFiles(path);
    return EXTENSIONS.some((e) => name.endsWith(e)) ? [path] : [];
  });
}

Deno.test("docs paths: the scanner finds machine paths and leaves repository paths alone", () => {
  assert.deepStrictEqual(
    machinePaths('model /work/main/assets/gpt2-d128, "out": "/tmp/run1/x.json", see file:///home/ann/a.md'),
    ["/work/main/assets/gpt2-d128", "/tmp/run1/x.json", "/home/ann/a.md"],
  );
  assert.deepStrictEqual(machinePaths("--model=/root/models/m and C:\\Users\\bob\\x.jsonl"), [
    "/root/models/m",
    "C:\\Users\\bob\\x.jsonl",
  ]);
  assert.deepStrictEqual(
    machinePaths("assets/gpt2-d128, out/exp-sst2/data/real-used.jsonl, docs/tmp/x, ../shared/data, /runs/a"),
    [],
  );
});

Deno.test("docs paths: docs/ and README.md name no absolute paths of the machine they were written on", () => {
  const files = [...docFiles(join(ROOT, "docs")), join(ROOT, "README.md")];
  assert.ok(files.length > 10, `expected the docs folder, found ${files.length} files`);
  const offending = files.flatMap((file) =>
    readFileSync(file, "utf8").split("\n").flatMap((line, i) =>
      machinePaths(line).map((p) => `${relative(ROOT, file)}:${i + 1}: ${p}`)
    )
  );
  assert.deepStrictEqual(
    offending,
    [],
    `replace these with paths relative to the repository root:\n${offending.join("\n")}`,
  );
});
