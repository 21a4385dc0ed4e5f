/** File helpers for the CLI: atomic writes (temp file + rename), JSONL, hashing. */
import { basename, dirname, join, resolve } from "node:path";
import type { AssetFile } from "../host/assets.ts";
import { UserError } from "./errors.ts";

export { writeFileAtomic } from "../host/atomic.ts";
export { sha256File } from "../host/synth_job.ts";

/** Reads a text file with an error that names it. */
export async function readText(path: string, what = "file"): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CliFileError(`${what} '${path}' does not exist`);
    throw new CliFileError(`cannot read ${what} '${path}': ${(e as Error).message}`);
  }
}

/** A file problem reported to the user without a stack trace (exit code 2). */
export class CliFileError extends UserError {
  override name = "CliFileError";
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

/** What {@link checkOutput} needs to know about one `--out`. */
export interface OutputSpec {
  /** The command, for the message ("synth"). */
  command: string;
  /** The flag that named the output ("--out"). */
  flag?: string;
  /** A file the command replaces, or a folder it writes files into. */
  kind: "file" | "dir";
  /** Every input path of the run (data, model folder, ...): the output must be none of them. */
  inputs: (string | undefined)[];
  /** Other files written beside the output (a manifest): they must not be inputs either. */
  companions?: string[];
  /** True when an existing output was written by this command (its manifest is there). */
  isOurs: () => Promise<boolean>;
  /** The value of `--overwrite`, or undefined when the command has no such flag. */
  overwrite: boolean | undefined;
}

/**
 * Checks, before any compute, that `path` is a safe output: not empty, of the right kind, none of
 * the run's inputs, not someone else's file (unless --overwrite), and writable (a probe file is
 * created beside it and removed). Creates the folder the output goes into.
 */
export async function checkOutput(path: string, spec: OutputSpec): Promise<void> {
  const { command } = spec;
  const flag = spec.flag ?? "--out";
  const fail = (problem: string) => new UserError(`${command}: ${flag} ${problem}`);
  if (path.trim() === "") throw fail("is empty; give a " + (spec.kind === "file" ? "file name" : "folder"));
  const info = await Deno.stat(path).catch(() => null);
  if (info && spec.kind === "file" && info.isDirectory) {
    throw fail(`'${path}' is a folder; give a file path inside it, e.g. '${join(path, "synthetic.jsonl")}'`);
  }
  if (info && spec.kind === "dir" && !info.isDirectory) throw fail(`'${path}' is a file; give a folder`);
  for (const output of [path, ...(spec.companions ?? [])]) {
    const outReal = await realPathOrResolved(output);
    for (const input of spec.inputs) {
      if (input === undefined) continue;
      if (outReal === (await realPathOrResolved(input))) {
        const named = input === output ? "" : ` ('${input}')`;
        throw fail(
          `'${output}' is also an input of this run${named}: writing it would destroy it; choose another ${flag}`,
        );
      }
    }
  }
  if (info && !spec.overwrite) {
    const occupied = info.isFile || (await firstEntry(path)) !== null;
    if (occupied && !(await spec.isOurs())) {
      const remedy = spec.overwrite === undefined
        ? `choose another ${flag}`
        : `pass --overwrite to replace it or choose another ${flag}`;
      throw fail(`'${path}' already exists and is not an output of ${command} (no manifest); ${remedy}`);
    }
  }
  const folder = spec.kind === "dir" ? path : dirname(resolve(path));
  const probe = join(folder, `.${basename(path)}.probe-${Deno.pid}-${Date.now()}`);
  try {
    await Deno.mkdir(folder, { recursive: true });
    await Deno.writeTextFile(probe, "", { createNew: true });
    await Deno.remove(probe);
  } catch (e) {
    throw fail(
      `'${path}' cannot be written (${(e as Error).message.split("\n")[0]}); choose a writable location`,
    );
  }
}

/** The canonical path of `path` (links resolved) when it exists, else its absolute form. */
async function realPathOrResolved(path: string): Promise<string> {
  try {
    return await Deno.realPath(path);
  } catch {
    return resolve(path);
  }
}

async function firstEntry(dir: string): Promise<string | null> {
  try {
    for await (const e of Deno.readDir(dir)) return e.name;
  } catch {
    // not a folder or unreadable: treated as empty, the write probe reports the real problem
  }
  return null;
}

/** Says on stderr that a bundled default is being fetched (first use when run from a URL). */
export function announceFetch(file: AssetFile, url: string): void {
  console.error(`fetching the bundled ${file.path} (${(file.size / 1e6).toFixed(1)} MB) from ${url}`);
}
