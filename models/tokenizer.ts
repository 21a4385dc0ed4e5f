/**
 * Text ↔ token ids, from a model's `tokenizer.json` (run by `@huggingface/tokenizers`, a pure-JS
 * port of the Rust tokenizers), with the special tokens resolved the way transformers does and
 * batching with left or right padding.
 *
 * Platform-neutral: it takes the parsed JSON files; `files.ts` reads them from a folder.
 *
 * Notes on the package (seen in 0.1.3 and 0.2.0; 0.2.0 is pinned because 0.1.3's type
 * declarations import a path it does not ship): its `get_vocab(false)` leaves out added tokens (GPT-2's
 * `<|endoftext|>` among them), so {@link Tokenizer.vocabSize} counts them itself; `decode([])`
 * throws, and ids it does not know are skipped silently, as the Rust tokenizers do.
 *
 * @module
 */
// A full npm: specifier, not a bare name mapped in deno.json: a module run from a URL
// (`deno run https://…/cli.ts`) gets no import map.
// deno-lint-ignore no-import-prefix -- see above: the CLI must run from a URL
import { Tokenizer as HfTokenizer } from "npm:@huggingface/tokenizers@0.2.0";
import { TokenizerError } from "./errors.ts";

/** The parsed files a tokenizer is built from; only `tokenizerJson` is required. */
export interface TokenizerFiles {
  /** tokenizer.json. */
  readonly tokenizerJson: unknown;
  /** tokenizer_config.json (special tokens, add_bos_token, ...). */
  readonly tokenizerConfig?: unknown;
  /** special_tokens_map.json (older repos keep special tokens only here). */
  readonly specialTokensMap?: unknown;
  /** generation_config.json (eos/bos/pad ids as generation uses them). */
  readonly generationConfig?: unknown;
  /** config.json (last resort for eos/bos/pad ids). */
  readonly modelConfig?: unknown;
  /** A label for error messages (usually the model folder). */
  readonly source?: string;
}

/** Options for {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Add the tokenizer's special tokens (e.g. Llama's BOS), as transformers does by default. Default true. */
  readonly addSpecialTokens?: boolean;
}

/** Options for {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /** Drop special tokens (BOS, EOS, pad) from the text. Default false. */
  readonly skipSpecialTokens?: boolean;
}

/** Options for {@link Tokenizer.batchEncode}. */
export interface BatchEncodeOptions extends EncodeOptions {
  /**
   * Which side gets the padding. Default "left": a causal LM then reads every row's last real
   * token at the same (last) position, which is where GRADMM takes its loss.
   */
  readonly padding?: "left" | "right";
  /** Id written at padded positions; default {@link Tokenizer.padId}. */
  readonly padId?: number;
  /** Truncate rows longer than this. */
  readonly maxLength?: number;
  /** Which end truncation removes tokens from. Default "right" (keep the start), as transformers. */
  readonly truncation?: "left" | "right";
}

/** A padded batch: rows of equal length and a mask that is 1 on real tokens, 0 on padding. */
export interface EncodedBatch {
  /** Token ids, one row per text, all the same length. */
  readonly ids: number[][];
  /** 1 for a real token, 0 for padding. */
  readonly attentionMask: number[][];
  /** Number of real tokens in each row. */
  readonly lengths: number[];
}

type Json = Record<string, unknown>;

function asObject(value: unknown): Json {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? value as Json : {};
}

/** A special token is written either as its text or as {content: text, ...}. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  const content = asObject(value).content;
  return typeof content === "string" ? content : undefined;
}

function firstId(value: unknown): number | undefined {
  const id = Array.isArray(value) ? value[0] : value;
  return typeof id === "number" && Number.isSafeInteger(id) && id >= 0 ? id : undefined;
}

/** A loaded tokenizer with its special-token ids. */
export class Tokenizer {
  /** Size of the id space: one more than the largest id, added tokens included. */
  readonly vocabSize: number;
  /** End-of-sequence id, or null if the tokenizer defines none. */
  readonly eosId: number | null;
  /** Beginning-of-sequence id, or null. */
  readonly bosId: number | null;
  /** Padding id; falls back to {@link eosId} when the model has none (GPT-2), as HF generation does. */
  readonly padId: number | null;
  /** True when {@link padId} is the EOS fallback rather than a pad token of the model's own. */
  readonly padIsEos: boolean;
  /** Ids of all special tokens. */
  readonly specialIds: ReadonlySet<number>;
  readonly #hf: HfTokenizer;
  readonly #source: string;

  /** Builds a tokenizer from parsed files; prefer {@link createTokenizer}. */
  constructor(files: TokenizerFiles) {
    const source = files.source ?? "tokenizer";
    this.#source = source;
    const json = files.tokenizerJson;
    if (typeof json !== "object" || json === null || !("model" in json)) {
      throw new TokenizerError(
        `${source}: tokenizer.json must be an object with a "model" key (a Hugging Face fast-tokenizer file)`,
      );
    }
    const tokenizerConfig = asObject(files.tokenizerConfig);
    try {
      this.#hf = new HfTokenizer(json, tokenizerConfig);
    } catch (e) {
      throw new TokenizerError(
        `${source}: could not build the tokenizer from tokenizer.json: ${(e as Error).message}`,
      );
    }
    let maxId = -1;
    for (const id of this.#hf.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    const special = new Set<number>();
    for (const [id, token] of this.#hf.get_added_tokens_decoder()) if (token.special) special.add(id);
    this.specialIds = special;

    // Special tokens, first source that names a known token wins: the tokenizer's own config,
    // then special_tokens_map.json, then the ids in generation_config.json and config.json.
    const specialMap = asObject(files.specialTokensMap);
    const generation = asObject(files.generationConfig);
    const model = asObject(files.modelConfig);
    const resolve = (key: "eos" | "bos" | "pad"): number | null => {
      for (const value of [tokenizerConfig[`${key}_token`], specialMap[`${key}_token`]]) {
        const text = tokenText(value);
        const id = text === undefined ? undefined : this.#hf.token_to_id(text);
        if (id !== undefined) return id;
      }
      return firstId(generation[`${key}_token_id`]) ?? firstId(model[`${key}_token_id`]) ?? null;
    };
    this.eosId = resolve("eos");
    this.bosId = resolve("bos");
    const pad = resolve("pad");
    this.padIsEos = pad === null && this.eosId !== null;
    this.padId = pad ?? this.eosId;
  }

  /** Token ids of `text`. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== "string") {
      throw new TokenizerError(`${this.#source}: encode needs a string, got ${typeof text}`);
    }
    try {
      return this.#hf.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
    } catch (e) {
      throw new TokenizerError(`${this.#source}: could not encode the text: ${(e as Error).message}`);
    }
  }

  /**
   * Text of token ids. An empty list gives "" (the package throws on it); ids beyond the
   * tokenizer's vocabulary (a model's padded embedding rows) decode to nothing.
   */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    for (const id of ids) {
      if (!Number.isSafeInteger(id) || id < 0) {
        throw new TokenizerError(`${this.#source}: cannot decode ${id}: token ids are non-negative integers`);
      }
    }
    if (ids.length === 0) return "";
    try {
      return this.#hf.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false });
    } catch (e) {
      throw new TokenizerError(`${this.#source}: could not decode ids: ${(e as Error).message}`);
    }
  }

  /** Encodes several texts into one padded batch with an attention mask. */
  batchEncode(texts: readonly string[], options: BatchEncodeOptions = {}): EncodedBatch {
    const side = options.padding ?? "left";
    const padId = options.padId ?? this.padId;
    if (padId === null || !Number.isSafeInteger(padId) || padId < 0) {
      throw new TokenizerError(
        `${this.#source}: batchEncode needs a pad id: this tokenizer has neither a pad nor an EOS token; pass { padId }`,
      );
    }
    const maxLength = options.maxLength;
    if (maxLength !== undefined && (!Number.isSafeInteger(maxLength) || maxLength < 1)) {
      throw new TokenizerError(`${this.#source}: maxLength must be a positive integer, got ${maxLength}`);
    }
    const rows = texts.map((text) => {
      const ids = this.encode(text, options);
      if (maxLength === undefined || ids.length <= maxLength) return ids;
      return options.truncation === "left" ? ids.slice(ids.length - maxLength) : ids.slice(0, maxLength);
    });
    const width = rows.reduce((m, r) => Math.max(m, r.length), 0);
    const ids: number[][] = [];
    const attentionMask: number[][] = [];
    for (const row of rows) {
      const padding = new Array<number>(width - row.length).fill(padId);
      const ones = new Array<number>(row.length).fill(1);
      const zeros = new Array<number>(width - row.length).fill(0);
      ids.push(side === "left" ? [...padding, ...row] : [...row, ...padding]);
      attentionMask.push(side === "left" ? [...zeros, ...ones] : [...ones, ...zeros]);
    }
    return { ids, attentionMask, lengths: rows.map((r) => r.length) };
  }

  /** Id of a token string (as it appears in the vocabulary, e.g. "Ġthe"), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.#hf.token_to_id(token);
  }

  /** Token string of an id, or undefined. */
  idToToken(id: number): string | undefined {
    return this.#hf.id_to_token(id);
  }

  /** Whether `id` is a special token (BOS, EOS, pad, unk, ...). */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }
}

/** Builds a {@link Tokenizer} from parsed tokenizer files; throws {@link TokenizerError}. */
export function createTokenizer(files: TokenizerFiles): Tokenizer {
  return new Tokenizer(files);
}
