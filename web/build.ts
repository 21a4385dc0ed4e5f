/**
 * Bundles the demo page for the browser: web/main.ts (and through it mod.ts) into
 * web/dist/app.js with `deno bundle --platform browser`. The bundle is a build output
 * (git-ignored): `deno task web` and the browser test build it first.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (the parent of web/). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Where the bundle goes. */
export const BUNDLE_PATH = join(REPO_ROOT, "web", "dist", "app.js");

/** Runs `deno bundle`; throws with its output when it fails. Returns the bundle's size in bytes. */
export async function buildDemo(): Promise<number> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--platform",
      "browser",
      "--sourcemap",
      "linked",
      join(REPO_ROOT, "web", "main.ts"),
      "-o",
      BUNDLE_PATH,
    ],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  if (!out.success) {
    throw new Error(
      `deno bundle of web/main.ts failed (exit ${out.code}):\n${dec.decode(out.stderr)}${
        dec.decode(out.stdout)
      }`,
    );
  }
  return (await Deno.stat(BUNDLE_PATH)).size;
}

if (import.meta.main) {
  const size = await buildDemo();
  console.log(`wrote ${BUNDLE_PATH} (${(size / 1024).toFixed(0)} KiB)`);
}
