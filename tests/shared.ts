/**
 * The old fixture lookup, kept so a test written against `shared("models", "tiny-gpt2")` still
 * works: it now resolves to the in-repository fixtures of tests/fixtures.ts. New tests import
 * from fixtures.ts directly. Paths that only the team's ../shared folder has (gpt2-d256, the other
 * data sets) belong in tests/shared/ and use `sharedFixture` there.
 */
import { join } from "node:path";
import { fixture, fixtureModel, fixtureSst2 } from "./fixtures.ts";

/** In-repository path for a path that used to be relative to ../shared. */
export function shared(...parts: string[]): string {
  const [top, name, file] = parts;
  if (top === "golden") return fixture(...parts);
  if (top === "models" && (name === "tiny-gpt2" || name === "tinystories-656k" || name === "gpt2-d128")) {
    return join(fixtureModel(name), ...parts.slice(2));
  }
  if (top === "data" && name === "sst2" && parts.length === 3) {
    if (file === "train.jsonl") return fixtureSst2("train");
    if (file === "validation.jsonl") return fixtureSst2("validation");
  }
  throw new Error(
    `test fixture ${parts.join("/")} is not in the repository: a test that needs it belongs in ` +
      "tests/shared/ (deno task test:shared) and uses sharedFixture from tests/fixtures.ts",
  );
}
