/**
 * Where tests find their fixtures: all inside the repository, so `deno task test` passes in a
 * clone alone. Small files live in tests/fixtures/ (see its README); the bundled gpt2-d128 and the
 * SST-2 validation split are the ones under assets/. The large checkpoints that only the team's
 * ../shared folder has are reached from tests/shared/ (`deno task test:shared`) through
 * {@link sharedFixture}.
 */
import { fileURLToPath } from "node:url";
import { dirname, join, resolve } from "node:path";

/** The repository root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** tests/fixtures/ in the repository. */
export const FIXTURES = join(ROOT, "tests", "fixtures");

function mustExist(path: string, hint: string): string {
  try {
    Deno.statSync(path);
  } catch {
    throw new Error(`test fixture ${path} is missing: ${hint}`);
  }
  return path;
}

const REPO_HINT = "it ships with the repository (tests/fixtures/, assets/); restore it with git checkout";

/** Path of a file or folder under tests/fixtures/ (e.g. `fixture("golden", "gpt2")`). */
export function fixture(...parts: string[]): string {
  return mustExist(join(FIXTURES, ...parts), REPO_HINT);
}

/** The GPT-2 tokenizer files tiny-gpt2 shares with the bundled gpt2-d128 (identical bytes). */
const GPT2_TOKENIZER_FILES = ["tokenizer.json"];
let tinyGpt2: string | undefined;

/**
 * tiny-gpt2 as a complete model folder: its own small files from tests/fixtures/models/tiny-gpt2
 * plus the real GPT-2 tokenizer.json from assets/gpt2-d128 (3.5 MB, not stored twice), copied
 * once per test process into a temp folder that is removed when the process ends.
 */
function assembledTinyGpt2(): string {
  if (tinyGpt2) return tinyGpt2;
  const own = fixture("models", "tiny-gpt2");
  const dir = Deno.makeTempDirSync({ prefix: "gradmm-tiny-gpt2-" });
  for (const entry of Deno.readDirSync(own)) {
    if (entry.isFile) Deno.copyFileSync(join(own, entry.name), join(dir, entry.name));
  }
  for (const name of GPT2_TOKENIZER_FILES) {
    Deno.copyFileSync(mustExist(join(ROOT, "assets", "gpt2-d128", name), REPO_HINT), join(dir, name));
  }
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* already gone */ }
  });
  return tinyGpt2 = dir;
}

/**
 * A model folder the tests load: "tiny-gpt2" (random weights, real GPT-2 tokenizer),
 * "tinystories-656k" (trained Llama, own tokenizer) or "gpt2-d128" (the bundled default model).
 */
export function fixtureModel(name: "tiny-gpt2" | "tinystories-656k" | "gpt2-d128"): string {
  switch (name) {
    case "tiny-gpt2":
      return assembledTinyGpt2();
    case "tinystories-656k":
      return fixture("models", name);
    case "gpt2-d128":
      return mustExist(join(ROOT, "assets", "gpt2-d128"), REPO_HINT);
    default:
      throw new Error(`unknown test model "${name}": expected tiny-gpt2, tinystories-656k or gpt2-d128`);
  }
}

/**
 * An SST-2 split as JSONL `{text, label}`: "train" is the first 300 lines of the GLUE train split
 * (balanced 149/151), "validation" the full split bundled in assets/.
 */
export function fixtureSst2(split: "train" | "validation"): string {
  return split === "validation"
    ? mustExist(join(ROOT, "assets", "sst2-validation.jsonl"), REPO_HINT)
    : fixture("data", "sst2", "train.jsonl");
}

/** The team's shared folder: GRADMM_SHARED, or ../shared beside the repository. */
export const SHARED = Deno.env.get("GRADMM_SHARED") ?? resolve(ROOT, "..", "shared");

/** Whether the team's shared folder is there (tests/shared/ skips its tests when it is not). */
export function haveShared(): boolean {
  try {
    return Deno.statSync(SHARED).isDirectory;
  } catch {
    return false;
  }
}

/** Path of a file in the team's shared folder, for tests/shared/ only (large checkpoints). */
export function sharedFixture(...parts: string[]): string {
  return mustExist(
    join(SHARED, ...parts),
    "the large-fixture tests (deno task test:shared) need the team's shared folder beside the " +
      "repository (../shared), or its path in GRADMM_SHARED",
  );
}
