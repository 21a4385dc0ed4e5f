import { bannedTokenMask, tokenAllowed } from "../../admm/tokenFilter.ts";
import { loadTokenizer } from "../../host/files.ts";
import { fixtureModel } from "../fixtures.ts";

Deno.test("token filter: the official rules on single strings", () => {
  for (const s of [" great", "bad", " film", ".com", '"The', " movie!", "Hello"]) {
    if (!tokenAllowed(s)) throw new Error(`'${s}' should be allowed`);
  }
  for (
    const s of [
      "!",
      " don't",
      "\n",
      " 1990",
      " ",
      "<|endoftext|>",
      " self-made",
      "a_b",
      " (",
      " café",
      "x".repeat(18),
    ]
  ) {
    if (tokenAllowed(s)) throw new Error(`'${JSON.stringify(s)}' should be banned`);
  }
});

Deno.test("token filter on the real GPT-2 vocabulary: counts and the ids ≥ tokenizer size", async () => {
  const tok = await loadTokenizer(fixtureModel("gpt2-d128"));
  const rows = 50304; // a padded embedding: rows above the tokenizer's size must be banned
  const banned = bannedTokenMask(rows, tok.vocabSize, (id) => tok.decode([id]));
  const allowed = banned.length - banned.reduce((a, b) => a + b, 0);
  console.log(`GPT-2: ${allowed} of ${tok.vocabSize} token ids allowed by the filter`);
  for (let id = tok.vocabSize; id < rows; id++) {
    if (!banned[id]) throw new Error(`id ${id} ≥ vocab size not banned`);
  }
  const great = tok.encode(" great")[0];
  if (banned[great]) throw new Error("' great' banned");
  if (!banned[tok.encode("!")[0]] || !banned[50256]) throw new Error("'!' (pad) or <|endoftext|> allowed");
  // Most GPT-2 ids are alphabetic word pieces; digits, punctuation and byte fragments are not.
  if (allowed < 40000 || allowed > 48000) throw new Error(`implausible allowed count ${allowed}`);
});
