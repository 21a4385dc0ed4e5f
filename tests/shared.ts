/** Where tests find the team's shared fixtures (../shared beside the repository). */
import { fileURLToPath } from "node:url";
import { dirname, join, resolve } from "node:path";

/** The repository root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** ../shared beside the repository (override with GRADMM_SHARED). */
export const SHARED = Deno.env.get("GRADMM_SHARED") ?? resolve(ROOT, "..", "shared");

/** Path of a shared fixture; throws a clear error when ../shared is missing. */
export function shared(...parts: string[]): string {
  const p = join(SHARED, ...parts);
  try {
    Deno.statSync(p);
  } catch {
    throw new Error(
      `test fixture ${p} is missing: the tests expect the team's shared folder beside the repository ` +
        "(../shared), or its path in GRADMM_SHARED",
    );
  }
  return p;
}
