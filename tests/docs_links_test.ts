/**
 * Code comments and docs explain themselves by linking to sections of docs/algorithm.md
 * (`docs/algorithm.md#z-step`). Those anchors must exist, and nothing may cite the team's
 * specification file outside the repository (`gradmm-spec.md`), which a clone does not have.
 */
import assert from "node:assert";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SKIP = new Set(["node_modules", ".git", ".gpu", "out"]);
const ALGORITHM = join(ROOT, "docs", "algorithm.md");

/** The explicit anchors (`<a id="…">`) of a markdown text. */
export function anchorsOf(markdown: string): Set<string> {
  return new Set([...markdown.matchAll(/<a id="([^"]+)"><\/a>/g)].map((m) => m[1]));
}

/** Anchors a text links to in algorithm.md; `self` also counts in-page links `](#id)`. */
export function citedAnchors(text: string, self = false): string[] {
  const cited = [...text.matchAll(/algorithm\.md#([A-Za-z0-9_-]+)/g)].map((m) => m[1]);
  if (self) cited.push(...[...text.matchAll(/\]\(#([A-Za-z0-9_-]+)\)/g)].map((m) => m[1]));
  return cited;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    if (SKIP.has(name)) return [];
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return name.endsWith(".ts") || name.endsWith(".md") ? [path] : [];
  });
}

Deno.test("docs links: anchors and citations are found", () => {
  assert.deepStrictEqual([...anchorsOf('<a id="z-step"></a>\n\n## z\n<a id="dp"></a>')], ["z-step", "dp"]);
  assert.deepStrictEqual(citedAnchors("see docs/algorithm.md#x-step and [it](#dp), ../algorithm.md#tasks"), [
    "x-step",
    "tasks",
  ]);
  assert.deepStrictEqual(citedAnchors("[it](#dp)", true), ["dp"]);
});

Deno.test("docs links: every link to a section of docs/algorithm.md names an anchor it has", () => {
  const anchors = anchorsOf(readFileSync(ALGORITHM, "utf8"));
  assert.ok(anchors.size >= 10, `docs/algorithm.md has only ${anchors.size} anchors`);
  const broken = sourceFiles(ROOT).flatMap((file) => {
    const text = readFileSync(file, "utf8");
    return citedAnchors(text, file === ALGORITHM)
      .filter((a) => !anchors.has(a))
      .map((a) => `${relative(ROOT, file)}: #${a}`);
  });
  assert.deepStrictEqual(broken, [], `links to missing sections of docs/algorithm.md:\n${broken.join("\n")}`);
});

Deno.test("docs links: nothing cites gradmm-spec.md, which a clone does not have", () => {
  const citing = sourceFiles(ROOT)
    .filter((file) => file !== fileURLToPath(import.meta.url))
    .filter((file) => readFileSync(file, "utf8").includes("gradmm-spec"))
    .map((file) => relative(ROOT, file));
  assert.deepStrictEqual(
    citing,
    [],
    `cite the matching section of docs/algorithm.md instead (docs/algorithm.md#…):\n${citing.join("\n")}`,
  );
});
