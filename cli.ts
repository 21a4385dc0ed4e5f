/**
 * gradmm-ts command line. `deno run -A cli.ts <command> [flags]`; every command has --help.
 * This file and cli/ are the only places that read flags or print.
 */
import { type Command, suggestFlag } from "./cli/args.ts";
import { describeError } from "./cli/errors.ts";
import { clearProgressLine } from "./cli/progress.ts";
import { VERSION } from "./version.ts";

/**
 * The commands, each loaded only when it runs (or when the list is printed): `info` does not
 * load the GRADMM engine, and a command whose module cannot load does not take the others down.
 */
const COMMANDS: [name: string, load: () => Promise<Command>][] = [
  ["synth", async () => (await import("./cli/synth.ts")).synthCommand],
  ["merge", async () => (await import("./cli/merge.ts")).mergeCommand],
  ["eval", async () => (await import("./cli/eval.ts")).evalCommand],
  ["generate", async () => (await import("./cli/generate.ts")).generateCommand],
  ["ppl", async () => (await import("./cli/ppl.ts")).pplCommand],
  ["finetune", async () => (await import("./cli/finetune.ts")).finetuneCommand],
  ["filter", async () => (await import("./cli/filter.ts")).filterCommand],
  ["experiment", async () => (await import("./cli/experiment.ts")).experimentCommand],
  ["tune", async () => (await import("./cli/tune.ts")).tuneCommand],
  ["info", async () => (await import("./cli/info.ts")).infoCommand],
];

/** The version printed by --version and written into manifests (re-exported from version.ts). */
export { VERSION };

/** Loads every command, in the order the usage lists them (for the usage text and tests). */
export function loadCommands(): Promise<Command[]> {
  return Promise.all(COMMANDS.map(([, load]) => load()));
}

async function usage(): Promise<string> {
  const commands = await loadCommands();
  const width = Math.max(...commands.map((c) => c.name.length));
  return `gradmm-ts ${VERSION}: synthetic training text by gradient matching (GRADMM), on WebGPU

Usage: deno run -A cli.ts <command> [flags]

Commands:
${commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join("\n")}

Run 'cli.ts <command> --help' for a command's flags and examples.`;
}

/** Runs the CLI with `argv`; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(await usage());
    return name ? 0 : 1;
  }
  if (name === "--version") {
    console.log(VERSION);
    return 0;
  }
  const load = COMMANDS.find(([n]) => n === name)?.[1];
  if (!load) {
    const guess = suggestFlag(name, COMMANDS.map(([n]) => n));
    console.error(
      `error: unknown command '${name}'${guess ? `; did you mean ${guess}?` : ""}\n\n${await usage()}`,
    );
    return 2;
  }
  const cmd = await load();
  // The one error boundary: expected failures become one line and an exit code (cli/errors.ts);
  // anything else is a bug and keeps its stack.
  try {
    return await cmd.run(rest);
  } catch (e) {
    clearProgressLine();
    const known = describeError(e);
    if (!known) throw e;
    console.error(`error: ${known.message}`);
    return known.exitCode;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
