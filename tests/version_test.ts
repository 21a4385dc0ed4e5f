/**
 * One version source: version.ts. deno.json's `version` (what `deno publish` uses) must equal it,
 * and no other source file may spell the version out (each copy drifts at the next bump).
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { VERSION } from "../version.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Every .ts file of the repository outside folders that are not ours (dependencies, build output). */
function sourceFiles(dir: string): string[] {
  const skip = new Set(["node_modules", ".git", ".gpu", "out", "dist", "tests"]);
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.isDirectory()) return skip.has(e.name) ? [] : sourceFiles(join(dir, e.name));
    return e.name.endsWith(".ts") ? [join(dir, e.name)] : [];
  });
}

Deno.test("version: deno.json's version is version.ts's VERSION", () => {
  const config = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8"));
  assert.match(VERSION, /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/, "VERSION is not semver");
  assert.equal(config.version, VERSION);
});

Deno.test("version: no source file but version.ts spells the version out", () => {
  const literal = new RegExp(`["'\`]${VERSION.replaceAll(".", "\\.")}["'\`]`);
  const copies = sourceFiles(ROOT)
    .map((f) => relative(ROOT, f))
    .filter((f) => f !== "version.ts" && literal.test(readFileSync(join(ROOT, f), "utf8")));
  assert.deepEqual(copies, [], "import VERSION from version.ts instead");
});
