/**
 * Bad input across every command, as a table: flags × commands, broken model folders × commands,
 * data files and outputs. Each case runs `main(argv)` in-process and asserts the exit code (2 bad
 * input, 1 runtime failure), exactly one `error:` line on stderr matching a pattern (and, for the
 * cases that fail before any compute, nothing else on stderr), no stack trace, that every input
 * file's bytes are unchanged, and that no output was left behind where none should be.
 * Uses only in-repo fixtures (assets/gpt2-d128, assets/sst2-validation.jsonl) and temp folders.
 */
import nodeAssert from "node:assert";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { gpuTest } from "../helpers.ts";
import { runCli } from "./capture.ts";
import { synthFlags } from "../synth_flags.ts";

const assert: (condition: unknown, message?: string) => asserts condition = nodeAssert.ok;

const ROOT = new URL("../../", import.meta.url).pathname;
const MODEL = join(ROOT, "assets", "gpt2-d128");
const DATA = join(ROOT, "assets", "sst2-validation.jsonl");
const TMP = await Deno.makeTempDir({ prefix: "gradmm-bad-input-" });
const tmp = (...p: string[]) => join(TMP, ...p);

/** Small synth settings, so the cases that do reach the GPU stay short. */
const TINY = synthFlags({
  perClass: 2,
  batch: 2,
  outerSteps: 1,
  innerSteps: 1,
  initCandidates: 1,
  realPool: 8,
  realN: 4,
  topK: 8,
  length: 8,
  maxRounds: 1,
});

function sha256(path: string): string | null {
  try {
    return createHash("sha256").update(Deno.readFileSync(path)).digest("hex");
  } catch {
    return null;
  }
}

function lines(n: number, make: (i: number) => unknown): string {
  return Array.from({ length: n }, (_, i) => JSON.stringify(make(i))).join("\n") + "\n";
}

// ---- fixtures: data files
const dataLines = Deno.readTextFileSync(DATA).split("\n").filter((l) => l.trim()).slice(0, 40);
const COPY = tmp("data-copy.jsonl");
Deno.writeTextFileSync(COPY, dataLines.join("\n") + "\n");
const SYN = tmp("synthetic-in.jsonl");
Deno.writeTextFileSync(SYN, lines(4, (i) => ({ text: `a synthetic text ${i}`, label: i % 2 })));
const NOT_JSON = tmp("not-json.jsonl");
Deno.writeTextFileSync(NOT_JSON, dataLines.slice(0, 3).join("\n") + '\n{"text": "cut off\n');
const NO_TEXT = tmp("no-text.jsonl");
Deno.writeTextFileSync(NO_TEXT, lines(6, (i) => ({ sentence: `s ${i}`, label: i % 2 })));
const BAD_LABEL = tmp("bad-label.jsonl");
Deno.writeTextFileSync(BAD_LABEL, lines(6, (i) => ({ text: `t ${i}`, label: "positive" + i })));
const EMPTY = tmp("empty.jsonl");
Deno.writeTextFileSync(EMPTY, "");
const LONG = tmp("long-texts.jsonl");
Deno.writeTextFileSync(LONG, lines(8, (i) => ({ text: "a very long review . ".repeat(80), label: i % 2 })));
const MISSING = tmp("no-such-file.jsonl");

// ---- fixtures: outputs that must be refused
const USER_FILE = tmp("user-results.jsonl"); // someone's file, no manifest beside it
Deno.writeTextFileSync(USER_FILE, '{"mine": true}\n');
const USER_DIR = tmp("user-folder"); // someone's folder with a file in it
Deno.mkdirSync(USER_DIR);
Deno.writeTextFileSync(join(USER_DIR, "config.json"), '{"mine": true}\n');
const A_FILE = tmp("a-plain-file");
Deno.writeTextFileSync(A_FILE, "x");
const UNDER_FILE = join(A_FILE, "out.jsonl"); // its parent is a file: cannot be created
const CORRUPT_OUT = tmp("corrupt-run.jsonl"); // an output whose manifest is damaged
Deno.writeTextFileSync(CORRUPT_OUT, '{"text": "x", "label": 0}\n');
Deno.writeTextFileSync(tmp("corrupt-run.manifest.json"), '{"tool": "gradmm-ts synth", "sett');

// ---- fixtures: broken model folders (small files copied, weights linked unless broken)
const SMALL = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];
function brokenModel(name: string, edit: (dir: string) => void): string {
  const dir = tmp("models", name);
  Deno.mkdirSync(dir, { recursive: true });
  for (const f of SMALL) Deno.copyFileSync(join(MODEL, f), join(dir, f));
  Deno.symlinkSync(join(MODEL, "model.safetensors"), join(dir, "model.safetensors"));
  edit(dir);
  return dir;
}
const truncate = (path: string, keep: number) => {
  const bytes = Deno.readFileSync(path);
  Deno.removeSync(path);
  Deno.writeFileSync(path, bytes.subarray(0, keep));
};
const editConfig = (dir: string, patch: Record<string, unknown>) => {
  const cfg = JSON.parse(Deno.readTextFileSync(join(dir, "config.json")));
  Deno.writeTextFileSync(join(dir, "config.json"), JSON.stringify({ ...cfg, ...patch }));
};
const BROKEN_MODELS: { name: string; dir: string; pattern: RegExp }[] = [
  {
    name: "missing folder",
    dir: tmp("models", "nowhere"),
    pattern: /model folder '.*nowhere' does not exist/,
  },
  {
    name: "no config.json",
    dir: brokenModel("no-config", (d) => Deno.removeSync(join(d, "config.json"))),
    pattern: /cannot load model .*config\.json/,
  },
  {
    name: "truncated config.json",
    dir: brokenModel("cut-config", (d) => truncate(join(d, "config.json"), 100)),
    pattern: /cannot load model .*(JSON|config)/,
  },
  {
    name: "architectures [constructor]",
    dir: brokenModel("arch-constructor", (d) => editConfig(d, { architectures: ["constructor"] })),
    pattern: /unsupported architecture "constructor"/,
  },
  {
    name: "model_type toString",
    dir: brokenModel(
      "type-tostring",
      (d) => editConfig(d, { architectures: undefined, model_type: "toString" }),
    ),
    pattern: /unsupported model_type "toString"/,
  },
  {
    name: "no tokenizer.json",
    dir: brokenModel("no-tokenizer", (d) => Deno.removeSync(join(d, "tokenizer.json"))),
    pattern: /cannot load model .*tokenizer/,
  },
  {
    name: "truncated tokenizer.json",
    dir: brokenModel("cut-tokenizer", (d) => truncate(join(d, "tokenizer.json"), 5000)),
    pattern: /cannot load model .*(tokenizer|JSON)/,
  },
  {
    name: "truncated weights",
    dir: brokenModel("cut-weights", (d) => truncate(join(d, "model.safetensors"), 1 << 20)),
    pattern: /cannot load model .*model\.safetensors/,
  },
  {
    name: "weights not safetensors",
    dir: brokenModel("garbage-weights", (d) => {
      Deno.removeSync(join(d, "model.safetensors"));
      Deno.writeTextFileSync(join(d, "model.safetensors"), "this is not a checkpoint");
    }),
    pattern: /cannot load model .*model\.safetensors/,
  },
  {
    name: "no weights",
    dir: brokenModel("no-weights", (d) => Deno.removeSync(join(d, "model.safetensors"))),
    pattern: /cannot load model .*safetensors/,
  },
  { name: "a data file as model", dir: COPY, pattern: /neither a model folder nor/ },
];

// ---- the commands, each with arguments that are fine apart from what a case changes
const OUT = {
  synth: tmp("out", "synth.jsonl"),
  finetune: tmp("out", "finetune"),
  filter: tmp("out", "filtered.jsonl"),
  experiment: tmp("out", "experiment"),
};
function base(command: string, model = MODEL): string[] {
  switch (command) {
    case "synth":
      return ["synth", "--model", model, "--data", COPY, "--out", OUT.synth, ...TINY];
    case "eval":
      return ["eval", "--model", model, "--data", COPY, "--limit", "4"];
    case "generate":
      return ["generate", "--model", model, "--prompt", "It was", "--max-new-tokens", "2"];
    case "ppl":
      return ["ppl", "--model", model, "--data", COPY];
    case "finetune":
      return ["finetune", "--model", model, "--data", COPY, "--out-dir", OUT.finetune, "--steps", "1"];
    case "filter":
      return ["filter", "--model", model, "--data", SYN, "--real-data", COPY, "--out", OUT.filter];
    case "experiment":
      return [
        "experiment",
        "--model",
        model,
        "--train-data",
        COPY,
        "--test-data",
        DATA,
        "--out-dir",
        OUT.experiment,
        "--conditions",
        "real",
        "--sizes",
        "4",
        "--valid-size",
        "4",
        "--real-pool",
        "8",
        "--real-n",
        "4",
        "--filter-real-n",
        "4",
      ];
    case "tune":
      return ["tune", "--model", model];
    case "info":
      return ["info"];
  }
  throw new Error(command);
}
const MODEL_COMMANDS = ["synth", "eval", "generate", "ppl", "finetune", "filter", "experiment", "tune"];
const ALL_COMMANDS = [...MODEL_COMMANDS, "info"];
const TASK_COMMANDS = ["synth", "eval", "finetune", "filter", "experiment"];

interface Case {
  name: string;
  argv: string[];
  code: 1 | 2;
  pattern: RegExp;
  /** The error line is the only line on stderr (the case fails before any progress is printed). */
  alone?: boolean;
  /** Files the case must leave absent (outputs that must not be written). */
  absent?: string[];
}

const cases: Case[] = [];
const without = (argv: string[], flag: string) => {
  const i = argv.indexOf(flag);
  return i < 0 ? argv : [...argv.slice(0, i), ...argv.slice(i + 2)];
};
const withFlag = (argv: string[], flag: string, value: string) => [...without(argv, flag), flag, value];

// flags × commands
for (const c of ALL_COMMANDS) {
  cases.push({
    name: `${c}: stray positional argument`,
    argv: [...base(c), "my-data.jsonl"],
    code: 2,
    pattern: new RegExp(`^error: ${c}: unexpected argument 'my-data\\.jsonl'`),
    alone: true,
  });
  cases.push({
    name: `${c}: unknown flag`,
    argv: [...base(c), "--no-such-flag"],
    code: 2,
    pattern: new RegExp(`^error: ${c}: unknown flag '--no-such-flag' \\(see '${c} --help'\\)$`),
    alone: true,
  });
}
// A typo of one of the command's flags: the error names the flag it most likely meant.
const typos: Record<string, [string, string]> = {
  synth: ["--per-clas", "--per-class"],
  eval: ["--shot", "--shots"],
  generate: ["--promt", "--prompt"],
  ppl: ["--max-lenght", "--max-length"],
  finetune: ["--out-dri", "--out-dir"],
  filter: ["--real-dat", "--real-data"],
  experiment: ["--seed", "--seeds"],
  tune: ["--budgt", "--budget"],
  info: ["--jsno", "--json"],
};
for (const c of ALL_COMMANDS) {
  const [typo, meant] = typos[c];
  cases.push({
    name: `${c}: ${typo} suggests ${meant}`,
    argv: [...base(c), typo, "1"],
    code: 2,
    pattern: new RegExp(
      `^error: ${c}: unknown flag '${typo}'; did you mean ${meant}\\? \\(see '${c} --help'\\)$`,
    ),
    alone: true,
  });
}
// An old flag name given together with its new one: which to believe is not guessed.
const oldAndNew: [string, string, string][] = [
  ["ppl", "--file", "--data"],
  ["finetune", "--out", "--out-dir"],
  ["filter", "--in", "--data"],
  ["experiment", "--train", "--train-data"],
];
for (const [c, old, now] of oldAndNew) {
  cases.push({
    name: `${c}: ${old} together with ${now}`,
    argv: [...base(c), old, COPY],
    code: 2,
    pattern: new RegExp(`^error: ${c}: ${old} is the old name of ${now}; give only ${now}$`),
    alone: true,
  });
}
for (const c of MODEL_COMMANDS) {
  cases.push({
    name: `${c}: --model without a value`,
    argv: [...without(base(c), "--model"), "--model"],
    code: 2,
    pattern: /^error: \w+: --model needs a value \(see '\w+ --help'\)$/,
    alone: true,
  });
}
for (const c of TASK_COMMANDS) {
  for (const name of ["constructor", "toString", "__proto__"]) {
    cases.push({
      name: `${c}: --task ${name}`,
      argv: [...base(c), "--task", name],
      code: 2,
      pattern: new RegExp(`^error: unknown task '${name}'; presets: sst2`),
      alone: true,
    });
  }
}
const badNumbers: [string, string, string][] = [
  ["synth", "--per-class", "0"],
  ["synth", "--rho", "-1"],
  ["synth", "--lr", "abc"],
  ["synth", "--seed", "1.5"],
  ["eval", "--shots", "999"],
  ["generate", "--max-new-tokens", "-3"],
  ["generate", "--temperature", "0"],
  ["ppl", "--batch", "0"],
  ["finetune", "--steps", "0"],
  ["finetune", "--lr", "NaN"],
  ["filter", "--per-class", "x"],
  ["experiment", "--seeds", "0"],
  ["tune", "--batch", "-1"],
];
for (const [c, flag, value] of badNumbers) {
  cases.push({
    name: `${c}: ${flag} ${value}`,
    argv: [...without(base(c), flag), `${flag}=${value}`],
    code: 2,
    pattern: new RegExp(`^error: ${c}: ${flag}`),
    alone: c !== "synth",
  });
}
// refine-lm's own flags: a bad λ, and λ without the method that uses it.
cases.push({
  name: "synth: --refine-lambda -1 with --method refine-lm",
  argv: [...base("synth"), "--method", "refine-lm", "--refine-lambda=-1"],
  code: 2,
  pattern: /^error: synth: --refine-lambda/,
  alone: false,
}, {
  name: "synth: --refine-lambda with --official",
  argv: [...base("synth"), "--official", "--refine-lambda", "0.1"],
  code: 2,
  pattern: /^error: synth: --refine-lambda needs --method lm-guided or refine-lm/,
  alone: false,
}, {
  name: "synth: --refine-nll-target not a number or real(+X)",
  argv: [...base("synth"), "--method", "refine-lm", "--refine-nll-target", "realish"],
  code: 2,
  pattern: /^error: synth: --refine-nll-target must be nats\/token, 'real' or 'real\+X'/,
  alone: false,
}, {
  name: "synth: --refine-nll-target real with DP",
  argv: [...base("synth"), "--method", "refine-lm", "--refine-nll-target", "real", "--dp-epsilon", "4"],
  code: 2,
  pattern: /reads the real examples, which a DP run may not/,
  alone: false,
}, {
  name: "experiment: --synth-refine-nll-target not a number or real(+X)",
  argv: [...base("experiment"), "--synth-refine-nll-target", "4.5x"],
  code: 2,
  pattern:
    /^error: experiment: --synth-refine-nll-target must be nats\/token, 'real' or 'real\+X', got '4.5x'/,
  alone: false,
});
const missingRequired: [string, string][] = [
  ["eval", "--data"],
  ["ppl", "--data"],
  ["generate", "--prompt"],
  ["finetune", "--out-dir"],
  ["filter", "--data"],
  ["experiment", "--train-data"],
];
for (const [c, flag] of missingRequired) {
  cases.push({
    name: `${c}: no ${flag}`,
    argv: without(base(c), flag),
    code: 2,
    pattern: new RegExp(`^error: ${c}: ${flag} is required`),
    alone: true,
  });
}

// broken model folders × commands
for (const m of BROKEN_MODELS) {
  for (const c of MODEL_COMMANDS) {
    cases.push({
      name: `${c}: ${m.name}`,
      argv: base(c, m.dir),
      code: 2,
      pattern: new RegExp(`^error: .*${m.pattern.source}`),
      alone: c !== "synth" && c !== "experiment" && c !== "tune",
      absent: c === "synth"
        ? [OUT.synth]
        : c === "filter"
        ? [OUT.filter]
        : [join(OUT.finetune, "config.json")],
    });
  }
}

// data files × commands
const dataFlag: Record<string, string> = {
  synth: "--data",
  eval: "--data",
  ppl: "--data",
  finetune: "--data",
  filter: "--real-data",
  experiment: "--train-data",
};
const badData: { name: string; path: string; pattern: RegExp; commands?: string[] }[] = [
  { name: "missing data file", path: MISSING, pattern: /'.*no-such-file\.jsonl' does not exist/ },
  { name: "truncated JSON line", path: NOT_JSON, pattern: /not-json\.jsonl:4: .*JSON/ },
  {
    name: "no text field",
    path: NO_TEXT,
    pattern: /no-text\.jsonl:1: (field 'text' is missing|no "text" field).*--text-field/,
  },
  {
    name: "empty data file",
    path: EMPTY,
    pattern: /(empty\.jsonl.*no (examples|lines)|no (examples|lines).*empty\.jsonl)/,
  },
  {
    name: "labels that are not integers",
    path: BAD_LABEL,
    pattern: /bad-label\.jsonl:1: .*label/,
    commands: ["synth", "eval", "finetune", "filter", "experiment"],
  },
];
for (const d of badData) {
  for (const c of d.commands ?? Object.keys(dataFlag)) {
    cases.push({
      name: `${c}: ${d.name}`,
      argv: withFlag(base(c), dataFlag[c], d.path),
      code: 2,
      pattern: new RegExp(`^error: .*${d.pattern.source}`),
      alone: true,
      absent: c === "synth" ? [OUT.synth] : c === "filter" ? [OUT.filter] : [],
    });
  }
}
cases.push({
  name: "filter: truncated JSON line in --data",
  argv: withFlag(base("filter"), "--data", NOT_JSON),
  code: 2,
  pattern: /^error: filter: .*not-json\.jsonl:4: not valid JSON/,
  alone: true,
  absent: [OUT.filter],
});

// outputs × commands
const outputCases: [string, string, string, RegExp][] = [
  ["synth", "empty --out", "", /--out is empty/],
  ["synth", "--out is a folder", TMP, /--out '.*' is a folder/],
  ["synth", "--out cannot be created", UNDER_FILE, /--out '.*' cannot be written/],
  ["synth", "--out equal to --data", COPY, /is also an input of this run/],
  [
    "synth",
    "--out someone else's file",
    USER_FILE,
    /already exists and is not an output of synth.*--overwrite/,
  ],
  [
    "synth",
    "--out with a damaged manifest",
    CORRUPT_OUT,
    /manifest '.*corrupt-run\.manifest\.json' is damaged/,
  ],
  ["filter", "--out equal to --data", SYN, /is also an input of this run/],
  ["filter", "--out equal to --real-data", COPY, /is also an input of this run/],
  ["filter", "--out someone else's file", USER_FILE, /already exists and is not an output of filter/],
  ["filter", "--out is a folder", TMP, /is a folder/],
  ["filter", "--out cannot be created", UNDER_FILE, /cannot be written/],
  ["filter", "empty --out", "", /--out is required/],
  ["finetune", "--out-dir is the model folder", MODEL, /is also an input of this run/],
  ["finetune", "--out-dir is a file", A_FILE, /--out-dir '.*' is a file; give a folder/],
  [
    "finetune",
    "--out-dir someone else's folder",
    USER_DIR,
    /already exists and is not an output of finetune/,
  ],
  ["finetune", "--out-dir cannot be created", join(A_FILE, "ft"), /cannot be written/],
  ["experiment", "--out-dir is a file", A_FILE, /--out-dir '.*' is a file; give a folder/],
  [
    "experiment",
    "--out-dir someone else's folder",
    USER_DIR,
    /not an output of experiment.*another --out-dir/,
  ],
  ["experiment", "--out-dir cannot be created", join(A_FILE, "exp"), /cannot be written/],
];
for (const [c, name, out, pattern] of outputCases) {
  const outFlag = c === "finetune" || c === "experiment" ? "--out-dir" : "--out";
  cases.push({
    name: `${c}: ${name}`,
    argv: withFlag(base(c), outFlag, out),
    code: 2,
    pattern: new RegExp(`^error: ${c}: .*${pattern.source}`),
    alone: c !== "synth",
  });
}
cases.push({
  name: "synth: --model equal to --out's folder is fine, --out equal to the model's config is not",
  argv: withFlag(base("synth"), "--out", join(MODEL, "config.json")),
  code: 2,
  pattern: /^error: synth: --out '.*config\.json' already exists and is not an output of synth/,
  alone: true,
});

// cases that reach the model (and, for the last ones, the optimisation)
cases.push(
  {
    name: "synth: --top-k larger than the allowed vocabulary",
    argv: withFlag(base("synth"), "--top-k", "60000"),
    code: 2,
    pattern: /^error: synth: --top-k 60000 exceeds the \d+ token ids/,
    absent: [OUT.synth],
  },
  {
    name: "synth: real texts longer than the model's context",
    argv: withFlag(withFlag(base("synth"), "--data", LONG), "--length", "0"),
    code: 2,
    pattern: /^error: class \d \('\w+'\): a sequence of \d+ tokens .* exceeds the model's 256 positions/,
    absent: [OUT.synth],
  },
  {
    name: "synth: --length longer than the model's context",
    argv: withFlag(base("synth"), "--length", "300"),
    code: 2,
    pattern: /^error: synth: --length 300 exceeds the model's 256 positions/,
    absent: [OUT.synth],
  },
  {
    name: "generate: prompt longer than the model's context",
    argv: withFlag(base("generate"), "--prompt", "word ".repeat(300)),
    code: 2,
    pattern: /^error: generate: the prompt has \d+ tokens, more than the model's 256 positions/,
    alone: true,
  },
  {
    name: "synth: --rho 1e39 diverges",
    argv: withFlag(base("synth"), "--rho", "1e39"),
    code: 1,
    pattern: /^error: class 0 ρ=1e\+39 round 1: the optimisation diverged .*lower --rho or --lr/,
    absent: [OUT.synth, OUT.synth.replace(/\.jsonl$/, ".manifest.json")],
  },
  {
    name: "synth: --lr 1e20 diverges",
    // Two inner steps: the loss of the second sees the diverged x.
    argv: withFlag(withFlag(base("synth"), "--lr", "1e20"), "--inner-steps", "2"),
    code: 1,
    pattern: /^error: class 0 .*the optimisation diverged/,
    absent: [OUT.synth, OUT.synth.replace(/\.jsonl$/, ".manifest.json")],
  },
);

// Every input the cases read, hashed before and after each case.
const INPUTS = [
  DATA,
  COPY,
  SYN,
  NOT_JSON,
  NO_TEXT,
  BAD_LABEL,
  EMPTY,
  LONG,
  USER_FILE,
  join(USER_DIR, "config.json"),
  A_FILE,
  CORRUPT_OUT,
  tmp("corrupt-run.manifest.json"),
  ...SMALL.map((f) => join(MODEL, f)),
];
const MODEL_WEIGHTS_SHA = sha256(join(MODEL, "model.safetensors"));

for (const c of cases) {
  Deno.test({ name: `bad input: ${c.name}`, ...gpuTest }, async () => {
    const before = INPUTS.map(sha256);
    const r = await runCli(c.argv);
    const err = r.stderr.split("\n").filter((l) => l.trim());
    const errorLines = err.filter((l) => l.startsWith("error:"));
    const context = `argv ${JSON.stringify(c.argv.map((a) => a.replace(TMP, "$TMP")))}\nstderr:\n${r.stderr}`;
    assert(r.code === c.code, `exit code ${r.code}, expected ${c.code}\n${context}`);
    assert(errorLines.length === 1 && err.at(-1) === errorLines[0], `not one final error line\n${context}`);
    assert(c.pattern.test(errorLines[0]), `error line does not match ${c.pattern}\n${context}`);
    if (c.alone ?? false) assert(err.length === 1, `other lines on stderr\n${context}`);
    assert(!/Uncaught|\n\s+at /.test(r.stderr), `stack trace on stderr\n${context}`);
    const after = INPUTS.map(sha256);
    INPUTS.forEach((p, i) => assert(before[i] === after[i], `input ${p} changed\n${context}`));
    for (const p of c.absent ?? []) assert(sha256(p) === null, `${p} was written\n${context}`);
  });
}

Deno.test("bad input: the bundled model's weights are unchanged after all cases", () => {
  assert(sha256(join(MODEL, "model.safetensors")) === MODEL_WEIGHTS_SHA);
  console.log(`bad input: ${cases.length} table cases`);
});

Deno.test({
  name: "bad input: resume refuses other field names, and a truncated last line, without touching the run",
  ...gpuTest,
  fn: async () => {
    // Two text fields in one file: the data hash cannot tell which one a run read.
    const data = tmp("two-fields.jsonl");
    Deno.writeTextFileSync(
      data,
      dataLines.map((l) => {
        const row = JSON.parse(l);
        return JSON.stringify({ ...row, sentence: "other " + row.text });
      }).join("\n") + "\n",
    );
    const out = tmp("resume", "run.jsonl");
    const manifest = tmp("resume", "run.manifest.json");
    const args = ["synth", "--model", MODEL, "--data", data, "--out", out, ...TINY];
    const first = await runCli(args);
    assert(first.code === 0, first.stderr);
    const saved = [sha256(out), sha256(manifest)];
    assert(saved.every((h) => h !== null));

    const other = await runCli([...args, "--text-field", "sentence"]);
    assert(other.code === 2, other.stderr);
    assert(/^error: synth: .*run\.jsonl holds a run with other settings/m.test(other.stderr), other.stderr);
    assert(sha256(out) === saved[0] && sha256(manifest) === saved[1], "the run changed");

    const whole = Deno.readTextFileSync(out);
    Deno.writeTextFileSync(out, whole.slice(0, whole.length - 12)); // the last line loses its end
    const cut = sha256(out);
    const truncated = await runCli(args);
    assert(truncated.code === 2, truncated.stderr);
    const errors = truncated.stderr.split("\n").filter((l) => l.startsWith("error:"));
    assert(
      errors.length === 1 && /run\.jsonl:2 is not a complete JSON line/.test(errors[0]),
      truncated.stderr,
    );
    assert(sha256(out) === cut && sha256(manifest) === saved[1], "the damaged run was rewritten");

    Deno.writeTextFileSync(out, whole);
    const resumed = await runCli(args);
    assert(resumed.code === 0 && /resuming: 1 completed round/.test(resumed.stderr), resumed.stderr);
  },
});

Deno.test({
  name: "bad input: generate says when it stopped at the end of the model's context",
  ...gpuTest,
  fn: async () => {
    // 51 × "the movie was great and": 255 GPT-2 tokens, leaving one of the 256 positions (the model
    // trained on short reviews would soon end a sentence with EOS; after "and" it continues).
    const r = await runCli([
      "generate",
      "--model",
      MODEL,
      "--prompt",
      Array(51).fill("the movie was great and").join(" "),
      "--max-new-tokens",
      "20",
    ]);
    assert(r.code === 0, r.stderr);
    assert(
      /note: stopped after 1 new token\(s\): the model's context of 256 positions is full/.test(r.stderr),
      r.stderr,
    );
  },
});
