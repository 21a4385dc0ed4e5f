/**
 * Flag parsing shared by the subcommands: a thin layer over node:util's parseArgs that turns
 * unknown flags and bad values into one-line errors (with a pointer to --help) instead of stack
 * traces.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { UserError } from "./errors.ts";

/** An error in the user's command line; printed without a stack trace (exit code 2). */
export class UsageError extends UserError {
  override name = "UsageError";
}

/** One subcommand: its name, one-line summary, full help text and runner. */
export interface Command {
  name: string;
  summary: string;
  help: string;
  run(args: string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * Parses `args` against `options`; `--help` is always accepted. Positional arguments are refused
 * (a stray `synth my.jsonl` would otherwise be silently ignored) unless the command takes them
 * (`merge` takes its shard files so): `acceptPositionals`.
 */
export function parseFlags<O extends Options>(
  command: string,
  args: string[],
  options: O,
  acceptPositionals = false,
) {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new UsageError(`${command}: ${(e as Error).message.split("\n")[0]} (see '${command} --help')`);
  }
  if (!acceptPositionals && parsed.positionals.length > 0) {
    const stray = parsed.positionals[0];
    const hint = stray.endsWith(".jsonl") || stray.includes("/")
      ? " (files are given with flags, e.g. --data)"
      : "";
    throw new UsageError(`${command}: unexpected argument '${stray}'${hint}; see '${command} --help'`);
  }
  return parsed;
}

/** Reads a numeric flag, checking it is a finite number within [min, max]. */
export function numberFlag(
  command: string,
  name: string,
  value: unknown,
  fallback: number,
  { min = -Infinity, max = Infinity, integer = false } = {},
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    const kind = integer ? "an integer" : "a number";
    throw new UsageError(`${command}: --${name} must be ${kind} in [${min}, ${max}], got '${value}'`);
  }
  return n;
}
