/** File helpers for the CLI: atomic writes (temp file + rename), JSONL, hashing. */
import { createHash } from "node:crypto";

export { writeFileAtomic } from "../host/atomic.ts";

/** Reads a text file with an error that names it. */
export async function readText(path: string, what = "file"): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CliFileError(`${what} '${path}' does not exist`);
    throw new CliFileError(`cannot read ${what} '${path}': ${(e as Error).message}`);
  }
}

/** A file problem reported to the user without a stack trace. */
export class CliFileError extends Error {
  override name = "CliFileError";
  readonly userFacing = true;
}

/** sha256 of a file's bytes, hex (streamed, so big weights are not held twice). */
export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  using f = await Deno.open(path, { read: true });
  const buf = new Uint8Array(1 << 20);
  while (true) {
    const n = await f.read(buf);
    if (n === null) break;
    h.update(buf.subarray(0, n));
  }
  return h.digest("hex");
}

/** True when a path exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Seconds as "1h 02m", "3m 05s" or "12.3s". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const whole = Math.round(seconds);
  const m = Math.floor(whole / 60);
  if (m < 60) return `${m}m ${String(whole % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}
