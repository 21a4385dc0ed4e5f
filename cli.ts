/**
 * gradmm-ts command line. `deno run -A cli.ts <command> [flags]`; every command has --help.
 * This file and cli/ are the only places that read flags or print.
 */
import type { Command } from "./cli/args.ts";
import { describeError } from "./cli/errors.ts";
import { infoCommand } from "./cli/info.ts";
import { synthCommand } from "./cli/synth.ts";
import { evalCommand } from "./cli/eval.ts";
import { generateCommand } from "./cli/generate.ts";
import { pplCommand } from "./cli/ppl.ts";
import { finetuneCommand } from "./cli/finetune.ts";
import { filterCommand } from "./cli/filter.ts";
import { experimentCommand } from "./cli/experiment.ts";
import { tuneCommand } from "./cli/tune.ts";
import { mergeCommand } from "./cli/merge.ts";
import { VERSION } from "./version.ts";

const COMMANDS: Command[] = [
  synthCommand,
  mergeCommand,
  evalCommand,
  generateCommand,
  pplCommand,
  finetuneCommand,
  filterCommand,
  experimentCommand,
  tuneCommand,
  infoCommand,
];

/** The version printed by --version and written into manifests (re-exported from version.ts). */
export { VERSION };

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `gradmm-ts ${VERSION}: synthetic training text by gradient matching (GRADMM), on WebGPU

Usage: deno run -A cli.ts <command> [flags]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join("\n")}

Run 'cli.ts <command> --help' for a command's flags.`;
}

/** Runs the CLI with `argv`; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name ? 0 : 1;
  }
  if (name === "--version") {
    console.log(VERSION);
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    console.error(`unknown command '${name}'.\n\n${usage()}`);
    return 2;
  }
  // The one error boundary: expected failures become one line and an exit code (cli/errors.ts);
  // anything else is a bug and keeps its stack.
  try {
    return await cmd.run(rest);
  } catch (e) {
    const known = describeError(e);
    if (!known) throw e;
    console.error(`error: ${known.message}`);
    return known.exitCode;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
