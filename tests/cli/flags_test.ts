/**
 * The command line's flag layer, without a GPU: edit distance and "did you mean", deprecated
 * aliases, missing values; and, for every command, that its --help has runnable examples (each
 * is parsed by the command itself) and that every old flag name its help lists still works.
 */
import assert from "node:assert/strict";
import { loadCommands } from "../../cli.ts";

const COMMANDS = await loadCommands();
import { editDistance, parseFlags, suggestFlag, UsageError } from "../../cli/args.ts";
import { runCli } from "./capture.ts";

Deno.test("flags: edit distance counts a swap of neighbours as one edit", () => {
  assert.equal(editDistance("model", "model"), 0);
  assert.equal(editDistance("modle", "model"), 1);
  assert.equal(editDistance("topk", "top-k"), 1);
  assert.equal(editDistance("per-clas", "per-class"), 1);
  assert.equal(editDistance("", "abc"), 3);
  assert.equal(editDistance("kitten", "sitting"), 3);
});

Deno.test("flags: suggestions come from typos, then from containment, else none", () => {
  const known = ["model", "data", "out", "per-class", "dp-epsilon", "top-k", "text-field", "label-field"];
  assert.equal(suggestFlag("modle", known), "model");
  assert.equal(suggestFlag("per-clas", known), "per-class");
  assert.equal(suggestFlag("dat", known), "data");
  assert.equal(suggestFlag("epsilon", known), "dp-epsilon");
  assert.equal(suggestFlag("field", known), null, "two flags contain 'field': no guess");
  assert.equal(suggestFlag("no-such-flag", known), null);
  assert.equal(suggestFlag("ot", ["out", "lr"]), "out");
  // An old spelling close to the typo answers with its new name.
  assert.equal(suggestFlag("fiel", ["data", "field"], { field: "text-field" }), "text-field");
});

const OPTIONS = {
  data: { type: "string" },
  "text-field": { type: "string" },
  overwrite: { type: "boolean" },
} as const;
const ALIASES = { file: "data", field: "text-field" } as const;

/** parseFlags with console.error captured. */
function parse(args: string[], positionals = false) {
  const notes: string[] = [];
  const error = console.error;
  console.error = (...a: unknown[]) => notes.push(a.join(" "));
  try {
    return { ...parseFlags("demo", args, OPTIONS, { aliases: ALIASES, positionals }), notes };
  } finally {
    console.error = error;
  }
}

function refusal(args: string[]): string {
  try {
    parse(args);
  } catch (e) {
    assert.ok(e instanceof UsageError, `not a UsageError: ${e}`);
    return (e as Error).message;
  }
  throw new Error(`accepted: ${args.join(" ")}`);
}

Deno.test("flags: old names are read as the new ones, with one note each", () => {
  const r = parse(["--file", "a.jsonl", "--field=sentence", "--overwrite"]);
  assert.equal(r.values.data, "a.jsonl");
  assert.equal(r.values["text-field"], "sentence");
  assert.equal(r.values.overwrite, true);
  assert.ok(!("file" in r.values) && !("field" in r.values));
  assert.deepEqual(r.notes, ["note: --file is now --data", "note: --field is now --text-field"]);
  assert.deepEqual(parse(["--data", "b.jsonl"]).notes, []);
  assert.match(
    refusal(["--file", "a", "--data", "b"]),
    /^demo: --file is the old name of --data; give only --data$/,
  );
});

Deno.test("flags: unknown flags, missing values and switch values get one line in our words", () => {
  assert.equal(
    refusal(["--dta", "x"]),
    "demo: unknown flag '--dta'; did you mean --data? (see 'demo --help')",
  );
  // "feild" is one swap from the old "field": the answer is its new name.
  assert.equal(
    refusal(["--feild", "x"]),
    "demo: unknown flag '--feild'; did you mean --text-field? (see 'demo --help')",
  );
  assert.equal(refusal(["--zzz"]), "demo: unknown flag '--zzz' (see 'demo --help')");
  assert.match(refusal(["-x"]), /^demo: unknown flag '-x'/);
  assert.equal(refusal(["--data"]), "demo: --data needs a value (see 'demo --help')");
  assert.match(refusal(["--data", "--overwrite"]), /^demo: --data needs a value; .* --data=--overwrite/);
  assert.equal(parse(["--data=-weird.jsonl"]).values.data, "-weird.jsonl");
  assert.match(refusal(["--overwrite=yes"]), /^demo: --overwrite is a switch and takes no value/);
  assert.match(
    refusal(["stray.jsonl"]),
    /^demo: unexpected argument 'stray\.jsonl' \(files are given with flags/,
  );
  assert.deepEqual(parse(["a.jsonl", "--data", "b"], true).positionals, ["a.jsonl"]);
});

/** Splits a shell command line of the help's examples: quotes, `\` continuations, env assignments. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  for (const m of line.matchAll(re)) words.push(m[1] ?? m[2] ?? m[3]);
  return words;
}

/** The example invocations of a help text: each `deno run -A cli.ts <cmd> …`, continuations joined. */
function examples(help: string, command: string): string[][] {
  const section = help.split(/^Examples$/m)[1];
  if (section === undefined) return [];
  const joined = section.replace(/\\\n\s*/g, " ");
  return joined.split("\n")
    .map((l) => l.replace(/\s#\s.*$/, "").trim())
    .filter((l) => l.includes(`cli.ts ${command}`))
    .map((l) => {
      const words = shellWords(l);
      return words.slice(words.indexOf("cli.ts") + 1);
    });
}

for (const cmd of COMMANDS) {
  Deno.test(`flags: ${cmd.name} --help has examples that the command itself accepts`, async () => {
    const help = await runCli([cmd.name, "--help"]);
    assert.equal(help.code, 0);
    assert.equal(help.stdout, cmd.help);
    const list = examples(cmd.help, cmd.name);
    assert.ok(list.length >= 2, `${cmd.name}: ${list.length} example(s) in\n${cmd.help}`);
    for (const argv of list) {
      assert.equal(argv[0], cmd.name);
      // --help after the example's flags: every flag is parsed and checked, nothing runs.
      const r = await runCli([...argv, "--help"]);
      assert.equal(r.code, 0, `${argv.join(" ")}: ${r.stderr}`);
      assert.equal(r.stderr, "", `${argv.join(" ")} uses an old flag name or prints: ${r.stderr}`);
    }
  });
}

/** "--old (now --new)" pairs of a help text's "Old flag names still accepted" paragraph. */
function listedAliases(help: string): [string, string][] {
  const para = help.split(/^Old flag names? still accepted:/m)[1] ?? "";
  return [...para.replace(/\n/g, " ").matchAll(/--([\w-]+) \(now --([\w-]+)\)/g)].map((m) => [m[1], m[2]]);
}

Deno.test("flags: every old name a help lists is still accepted, with a note naming the new one", async () => {
  let count = 0;
  for (const cmd of COMMANDS) {
    for (const [old, now] of listedAliases(cmd.help)) {
      count++;
      const r = await runCli([cmd.name, `--${old}`, "x", "--help"]);
      assert.equal(r.code, 0, `${cmd.name} --${old}: ${r.stderr}`);
      assert.equal(r.stderr, `note: --${old} is now --${now}`);
      const documented = cmd.help.split(/^Old flag names? still accepted:/m)[0];
      assert.match(
        documented,
        new RegExp(`^ .*\\s--${now} `, "m"),
        `${cmd.name}: --${now} is not documented`,
      );
      // The old name is not a flag of its own any more: no help line starts with it.
      assert.doesNotMatch(cmd.help, new RegExp(`^  --${old} `, "m"));
    }
  }
  // synth 2, eval 2, ppl 2, finetune 3, filter 3, experiment 5, tune 1.
  assert.equal(count, 18);
});

Deno.test("flags: an unknown command or flag suggests the near one and exits 2", async () => {
  const cmd = await runCli(["synht"]);
  assert.equal(cmd.code, 2);
  assert.match(cmd.stderr, /^error: unknown command 'synht'; did you mean synth\?/);
  const flag = await runCli(["synth", "--per-clas", "4"]);
  assert.equal(flag.code, 2);
  assert.equal(
    flag.stderr,
    "error: synth: unknown flag '--per-clas'; did you mean --per-class? (see 'synth --help')",
  );
  const other = await runCli(["eval", "--topk", "3"]);
  assert.equal(other.code, 2);
  assert.match(other.stderr, /^error: eval: unknown flag '--topk' \(see 'eval --help'\)$/);
});
