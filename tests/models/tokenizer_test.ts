/**
 * Tokenizer: GPT-2 ids known from the original tokenizer, the TinyStories Llama tokenizer's
 * special tokens, decoding edge cases, and padded batches.
 */
import nodeAssert from "node:assert";
import { join } from "node:path";
import { loadTokenizer } from "../../host/files.ts";
import { createTokenizer, type Tokenizer } from "../../models/tokenizer.ts";
import { TokenizerError } from "../../models/errors.ts";
import { fixtureModel } from "../fixtures.ts";

const assert: (condition: unknown, message?: string) => asserts condition = nodeAssert.ok;
const assertEquals: <T>(actual: unknown, expected: T, message?: string) => asserts actual is T =
  nodeAssert.deepStrictEqual;

function assertThrows(fn: () => unknown, text: string): void {
  nodeAssert.throws(fn, (e: Error) => {
    assert(e instanceof TokenizerError, `expected TokenizerError, got ${e}`);
    assert(e.message.includes(text), `message "${e.message}" lacks "${text}"`);
    return true;
  });
}

let gpt2: Promise<Tokenizer> | undefined;
let stories: Promise<Tokenizer> | undefined;
const gpt2Tokenizer = () => gpt2 ??= loadTokenizer(fixtureModel("gpt2-d128"));
const storiesTokenizer = () => stories ??= loadTokenizer(fixtureModel("tinystories-656k"));

Deno.test("tokenizer: GPT-2 ids match the reference tokenizer", async () => {
  const t = await gpt2Tokenizer();
  assertEquals(t.encode("Hello world"), [15496, 995]);
  assertEquals(t.encode("Hello, my dog is cute"), [15496, 11, 616, 3290, 318, 13779]);
  assertEquals(t.encode(" the"), [262]);
  assertEquals(t.encode("<|endoftext|>"), [50256]);
  assertEquals(t.encode(""), []);
  assertEquals(t.encode("Hello world", { addSpecialTokens: true }), [15496, 995]); // GPT-2 adds nothing
  // The package's own vocabulary count leaves <|endoftext|> out; ours counts it (as config.json does).
  assertEquals(t.vocabSize, 50257);
  assertEquals([t.eosId, t.bosId, t.padId, t.padIsEos], [50256, 50256, 50256, true]);
  assert(t.isSpecial(50256) && !t.isSpecial(995));
  assertEquals(t.tokenToId("Ġthe"), 262);
  assertEquals(t.idToToken(15496), "Hello");
});

Deno.test("tokenizer: decode round trips, guards [] and skips special and unknown ids", async () => {
  const t = await gpt2Tokenizer();
  const text = " héllo\n wörld 😀 tabs\tand  spaces";
  assertEquals(t.decode(t.encode(text)), text);
  assertEquals(t.decode([]), "");
  assertEquals(t.decode([15496, 50256, 995]), "Hello<|endoftext|> world");
  assertEquals(t.decode([15496, 50256, 995], { skipSpecialTokens: true }), "Hello world");
  assertEquals(t.decode([15496, 60000, 995]), "Hello world"); // padded embedding rows decode to nothing
  assertThrows(() => t.decode([-1]), "non-negative integers");
  assertThrows(() => t.decode([1.5]), "non-negative integers");
});

Deno.test("tokenizer: TinyStories (Llama BPE) adds BOS and has its own pad", async () => {
  const t = await storiesTokenizer();
  assertEquals(t.vocabSize, 2048);
  assertEquals([t.bosId, t.eosId, t.padId, t.padIsEos], [1, 2, 0, false]);
  const ids = t.encode("Once upon a time, there was a little girl.");
  assertEquals(ids[0], 1);
  assertEquals(
    t.encode("Once upon a time, there was a little girl.", { addSpecialTokens: false }),
    ids.slice(1),
  );
  assertEquals(t.decode(ids, { skipSpecialTokens: true }), "Once upon a time, there was a little girl.");
  assert(t.decode(ids).startsWith("<|start_story|>"));
  assert(ids.every((id) => id < t.vocabSize));
});

Deno.test("tokenizer: batchEncode pads left or right with a mask, truncates on request", async () => {
  const t = await gpt2Tokenizer();
  const texts = ["Hello world", "Hello, my dog is cute", ""];
  const left = t.batchEncode(texts);
  assertEquals(left.ids, [
    [50256, 50256, 50256, 50256, 15496, 995],
    [15496, 11, 616, 3290, 318, 13779],
    [50256, 50256, 50256, 50256, 50256, 50256],
  ]);
  assertEquals(left.attentionMask[0], [0, 0, 0, 0, 1, 1]);
  assertEquals(left.attentionMask[2], [0, 0, 0, 0, 0, 0]);
  assertEquals(left.lengths, [2, 6, 0]);
  const right = t.batchEncode(texts.slice(0, 2), { padding: "right", padId: 0 });
  assertEquals(right.ids[0], [15496, 995, 0, 0, 0, 0]);
  assertEquals(right.attentionMask[0], [1, 1, 0, 0, 0, 0]);
  assertEquals(t.batchEncode(texts.slice(1, 2), { maxLength: 2 }).ids, [[15496, 11]]);
  assertEquals(t.batchEncode(texts.slice(1, 2), { maxLength: 2, truncation: "left" }).ids, [[318, 13779]]);
  assertEquals(t.batchEncode([]).ids, []);
  assertThrows(() => t.batchEncode(texts, { maxLength: 0 }), "maxLength");
});

Deno.test("tokenizer: special ids fall back to config ids; bad files are TokenizerErrors", async () => {
  const tokenizerJson = JSON.parse(
    await Deno.readTextFile(join(fixtureModel("tinystories-656k"), "tokenizer.json")),
  );
  const bare = createTokenizer({ tokenizerJson, modelConfig: { eos_token_id: 2, bos_token_id: 1 } });
  assertEquals([bare.eosId, bare.bosId, bare.padId, bare.padIsEos], [2, 1, 2, true]);
  const none = createTokenizer({ tokenizerJson });
  assertEquals([none.eosId, none.padId], [null, null]);
  assertThrows(() => none.batchEncode(["a"]), "pad id");
  assertThrows(() => createTokenizer({ tokenizerJson: { vocab: {} }, source: "bad" }), `"model"`);
  const dir = await Deno.makeTempDir();
  try {
    await nodeAssert.rejects(
      () => loadTokenizer(dir),
      (e: Error) => e instanceof TokenizerError && e.message.includes("no tokenizer.json"),
    );
    await Deno.writeTextFile(join(dir, "tokenizer.json"), "{ not json");
    await nodeAssert.rejects(
      () => loadTokenizer(dir),
      (e: Error) => e instanceof TokenizerError && e.message.includes("not valid JSON"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
