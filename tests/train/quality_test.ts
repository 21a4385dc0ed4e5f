import {
  distinctN,
  longestCommonRun,
  longestCopiedRuns,
  mean,
  nearestReferenceSimilarity,
  repetitionRate,
  sparseCosine,
  TfIdf,
  words,
} from "../../train/quality.ts";

function near(got: number, want: number, what: string, tol = 1e-12) {
  if (Math.abs(got - want) > tol) throw new Error(`${what}: got ${got}, expected ${want}`);
}

Deno.test("quality: words are lower-cased letter/digit runs", () => {
  const w = words("It's a GREAT film, 10/10!");
  if (w.join("|") !== "it's|a|great|film|10|10") throw new Error(w.join("|"));
  if (words("  ... ").length !== 0) throw new Error("punctuation-only text has words");
});

Deno.test("quality: distinct-n counts over the whole set", () => {
  // Unigrams: a b a | a c → 5 total, 3 distinct.
  near(distinctN(["a b a", "a c"], 1), 3 / 5, "distinct-1");
  // Bigrams: "a b", "b a" | "a c" → 3 total, 3 distinct.
  near(distinctN(["a b a", "a c"], 2), 1, "distinct-2");
  near(distinctN(["x x x x"], 2), 1 / 3, "distinct-2 of a repeat");
  near(distinctN([""], 2), 0, "empty");
});

Deno.test("quality: repetition rate of trigrams inside a text", () => {
  // "the congress of the congress of the congress": 6 trigrams, 3 distinct.
  near(repetitionRate(["the Congress of the Congress of the Congress"]), 0.5, "congress");
  near(repetitionRate(["a fine film about love"]), 0, "no repeats");
  // Averaged over texts with at least one trigram; the two-word text is skipped.
  near(
    repetitionRate(["the Congress of the Congress of the Congress", "a fine film about love", "too short"]),
    0.25,
    "mean",
  );
});

Deno.test("quality: longest common word run and copy check", () => {
  near(longestCommonRun(words("a b c d e"), words("x b c d y")), 3, "run");
  near(longestCommonRun(words("a b"), words("c d")), 0, "none");
  const runs = longestCopiedRuns(["one two three four", "nothing here"], [
    "zero one two three",
    "here we go",
  ]);
  if (runs.join() !== "3,1") throw new Error(`runs ${runs}`);
});

Deno.test("quality: TF-IDF nearest-reference similarity", () => {
  const refs = ["a wonderful moving film", "a dull tedious film"];
  const sims = nearestReferenceSimilarity(["a wonderful moving film", "tax law congress"], refs);
  near(sims[0], 1, "identical text", 1e-9);
  near(sims[1], 0, "no shared word");
  // Shared rare words weigh more than shared common ones ("a", "film" occur in both references).
  const t = new TfIdf(refs);
  const rare = sparseCosine(t.vector("wonderful"), t.vector(refs[0]));
  const common = sparseCosine(t.vector("film"), t.vector(refs[0]));
  if (!(rare > common)) throw new Error(`rare ${rare} <= common ${common}`);
  near(mean([1, NaN, 3]), 2, "mean skips NaN");
});
