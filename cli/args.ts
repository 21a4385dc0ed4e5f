/**
 * Flag parsing shared by the subcommands: a thin layer over node:util's parseArgs that turns
 * unknown flags (with a "did you mean" from edit distance), missing values and bad numbers into
 * one-line errors instead of stack traces, and keeps renamed flags working as deprecated aliases.
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
  /** The full --help text; ends with an "Examples" section of real invocations. */
  help: string;
  run(args: string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/** How {@link parseFlags} treats what is not a declared flag. */
export interface FlagRules<O extends Options> {
  /** Old spellings still accepted (old name → new name); each use prints one "note:" line. */
  aliases?: Record<string, keyof O & string>;
  /** Whether bare arguments are allowed (merge's shard files); refused otherwise. */
  positionals?: boolean;
}

/** The parsed flags: the declared options (aliases folded into their new names) and `help`. */
export interface ParsedFlags<O extends Options> {
  values: ReturnType<typeof parseArgs<{ options: O; strict: true }>>["values"] & { help?: boolean };
  positionals: string[];
}

/**
 * Parses `args` against `options`; `--help` is always accepted. Unless `rules.positionals`, a
 * stray argument (`synth my.jsonl`) is refused rather than silently ignored. Flags named in
 * `rules.aliases` are read as their new names, with a note on stderr.
 */
export function parseFlags<O extends Options>(
  command: string,
  args: string[],
  options: O,
  rules: FlagRules<O> = {},
): ParsedFlags<O> {
  const aliases = rules.aliases ?? {};
  const all: Options = { ...options, help: { type: "boolean", short: "h" } };
  for (const [old, now] of Object.entries(aliases)) all[old] = { type: options[now].type };
  checkTokens(command, args, all, aliases);
  let parsed;
  try {
    parsed = parseArgs({ args, options: all, allowPositionals: true, strict: true });
  } catch (e) {
    // checkTokens reports the usual mistakes; this is the fallback for anything else.
    throw new UsageError(`${command}: ${(e as Error).message.split("\n")[0]} (see '${command} --help')`);
  }
  if (!rules.positionals && parsed.positionals.length > 0) {
    const stray = parsed.positionals[0];
    const hint = stray.endsWith(".jsonl") || stray.includes("/")
      ? " (files are given with flags, e.g. --data)"
      : "";
    throw new UsageError(`${command}: unexpected argument '${stray}'${hint}; see '${command} --help'`);
  }
  const values = parsed.values as Record<string, unknown>;
  for (const [old, now] of Object.entries(aliases)) {
    if (values[old] === undefined) continue;
    if (values[now] !== undefined) {
      throw new UsageError(`${command}: --${old} is the old name of --${now}; give only --${now}`);
    }
    console.error(`note: --${old} is now --${now}`);
    values[now] = values[old];
    delete values[old];
  }
  return parsed as unknown as ParsedFlags<O>;
}

/**
 * Finds the first unknown flag, missing value or value given to a switch, and reports it in
 * our words (node's messages name neither the command nor the likely intended flag).
 */
function checkTokens(command: string, args: string[], options: Options, aliases: Record<string, string>) {
  const { tokens } = parseArgs({ args, options, allowPositionals: true, strict: false, tokens: true });
  const help = `(see '${command} --help')`;
  for (const t of tokens) {
    if (t.kind !== "option") continue;
    const known = options[t.name];
    if (!known) {
      const guess = suggestFlag(t.name, Object.keys(options).filter((n) => n !== "help"), aliases);
      const hint = guess ? `; did you mean --${guess}?` : "";
      throw new UsageError(`${command}: unknown flag '${t.rawName}'${hint} ${help}`);
    }
    if (known.type === "string" && (t.value === undefined || (!t.inlineValue && t.value.startsWith("-")))) {
      // A value that starts with a dash is taken as the next flag unless glued on with '='.
      const glue = t.value === undefined
        ? ""
        : `; a value starting with '-' is written --${t.name}=${t.value}`;
      throw new UsageError(`${command}: --${t.name} needs a value${glue} ${help}`);
    }
    if (known.type === "boolean" && t.inlineValue) {
      throw new UsageError(`${command}: --${t.name} is a switch and takes no value ${help}`);
    }
  }
}

/**
 * The known flag `name` was most likely meant to be: one a typo away (optimal string alignment
 * distance ≤ 1 for short names, ≤ 2 from five letters on), else the only flag that contains it
 * or that it contains (`--epsilon` → `--dp-epsilon`). An old alias answers with its new name.
 * Null when nothing is close.
 */
export function suggestFlag(
  name: string,
  known: string[],
  aliases: Record<string, string> = {},
): string | null {
  const limit = name.length >= 5 ? 2 : 1;
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(name, k);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  const resolve = (k: string) => aliases[k] ?? k;
  if (best !== null && bestDistance <= limit) return resolve(best);
  if (name.length >= 3) {
    const near = [...new Set(known.filter((k) => k.includes(name) || name.includes(k)).map(resolve))];
    if (near.length === 1) return near[0];
  }
  return null;
}

/** Edit distance with adjacent transpositions counted as one edit ("modle" → "model": 1). */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
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

/**
 * Where a command's results go: with `--json`, one JSON object on stdout and every human line on
 * stderr; without, the human lines on stdout and no JSON.
 */
export interface ResultPrinter {
  /** A line of the human-readable result. */
  text(line: string): void;
  /** The result as one JSON object (printed only with --json). */
  json(result: Record<string, unknown>): void;
}

/** The {@link ResultPrinter} for a command run with (`json` true) or without --json. */
export function resultPrinter(json: boolean | undefined): ResultPrinter {
  return {
    text: (line) => (json ? console.error(line) : console.log(line)),
    json: (result) => {
      if (json) console.log(JSON.stringify(result));
    },
  };
}

/** The help line of --json, shared by every command that prints results. */
export const JSON_HELP =
  "  --json                  print the result as one JSON object on stdout (progress, notes on stderr)";
