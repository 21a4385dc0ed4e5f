/**
 * What `deno publish` would ship: the dry run passes offline (type check, slow types), lists the
 * three exports' sources and no tests, benches, bundled assets, raw GPU logs or data files, and
 * the lock file names only the npm packages the code imports.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const config = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8"));

/** The package's files (relative paths) and sizes in bytes, from the dry run's listing. */
function parseListing(text: string): Map<string, number> {
  const units: Record<string, number> = { B: 1, KB: 1024, MB: 1024 ** 2 };
  const files = new Map<string, number>();
  for (const m of text.matchAll(/^\s+file:\/\/(\S+) \(([\d.]+)(B|KB|MB)\)$/gm)) {
    const path = m[1].startsWith(ROOT) ? m[1].slice(ROOT.length) : m[1];
    files.set(path, Number(m[2]) * units[m[3]]);
  }
  return files;
}

Deno.test("package: deno publish --dry-run passes and ships sources and docs only", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["publish", "--dry-run", "--allow-dirty"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `deno publish --dry-run failed:\n${text.slice(-4000)}`);
  const files = parseListing(text);
  for (const entry of Object.values(config.exports) as string[]) {
    assert.ok(files.has(entry.replace(/^\.\//, "")), `export ${entry} is not in the package`);
  }
  const unwanted = [...files.keys()].filter((f) =>
    /^(tests|bench|assets|web|tools|node_modules|\.git|\.gpu|\.ci|docs\/gpu)(\/|$)/.test(f) ||
    /^docs\/.*\.(json|jsonl|txt|err)$/.test(f)
  );
  assert.deepEqual(unwanted, [], "publish.exclude in deno.json should keep these out");
  const total = [...files.values()].reduce((a, b) => a + b, 0);
  assert.ok(total < 2 * 1024 ** 2, `the package holds ${(total / 1024 ** 2).toFixed(1)} MiB: what grew?`);
});

/** The `npm:` specifiers the repository's own modules import (tests, benches and tools included). */
function npmSpecifiers(dir: string): Set<string> {
  const found = new Set<string>();
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) {
      if (![".git", ".gpu", "node_modules", "out", "dist"].includes(e.name)) {
        for (const s of npmSpecifiers(join(dir, e.name))) found.add(s);
      }
    } else if (e.name.endsWith(".ts")) {
      const code = readFileSync(join(dir, e.name), "utf8");
      for (const m of code.matchAll(/\bfrom\s*["'](npm:[^"']+)["']/g)) found.add(m[1]);
    }
  }
  return found;
}

Deno.test("package: deno.lock pins exactly the npm packages the code imports", () => {
  const lock = JSON.parse(readFileSync(join(ROOT, "deno.lock"), "utf8"));
  const used = [...npmSpecifiers(ROOT)].sort();
  assert.ok(used.length > 0, "found no npm: import at all: the scan is broken");
  assert.deepEqual(Object.keys(lock.specifiers ?? {}).sort(), used, "stale or missing lock entries");
});
