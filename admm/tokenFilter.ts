/**
 * The token filter of the official code (docs/algorithm.md#token-filter): the decoder may only pick purely
 * alphabetic word pieces. We also ban every id at or above the tokenizer's vocabulary size
 * (unused embedding rows, added tokens), which the official code forgets (docs/gradmm-decisions.md, quirk 9).
 */

/** Characters whose presence bans a token. */
const BANNED_CHARS = new Set([..."*;:_\n-'<>{}[]()/\\|=+%@~`^#$&"]);
const MAX_TOKEN_CHARS = 17;
// Python's \W: anything that is not a letter, digit or underscore (Unicode-aware).
const LEADING_NON_WORD = /^[^\p{L}\p{N}_]+/u;
const TRAILING_NON_WORD = /[^\p{L}\p{N}_]+$/u;
const WORD = /^[a-z]+(?:['-][a-z]+)*$/;

/** True when the decoded string of one token passes the filter. */
export function tokenAllowed(s: string): boolean {
  for (const ch of s) if (BANNED_CHARS.has(ch)) return false;
  // Python's len counts code points.
  if ([...s].length > MAX_TOKEN_CHARS) return false;
  const core = s.trim().toLowerCase().replace(LEADING_NON_WORD, "").replace(TRAILING_NON_WORD, "");
  return WORD.test(core);
}

/**
 * Returns a 0/1 array over `rows` embedding rows: 1 where the decoder may not pick the id.
 * `decode` turns one id into its text; ids ≥ `vocabSize` are always banned.
 */
export function bannedTokenMask(rows: number, vocabSize: number, decode: (id: number) => string): Uint8Array {
  const banned = new Uint8Array(rows).fill(1);
  const n = Math.min(rows, vocabSize);
  for (let id = 0; id < n; id++) banned[id] = tokenAllowed(decode(id)) ? 0 : 1;
  return banned;
}
