/**
 * Text-quality measures of a synthetic set, pure functions of strings: diversity (distinct-n),
 * degeneration (repeated n-grams inside a text), on-topic-ness (TF-IDF cosine to the nearest real
 * example of the same class) and copying (longest common word sequence with any real example).
 * Words are lower-cased runs of letters, digits and apostrophes.
 */

/** Lower-cased words of a text. */
export function words(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}']+/gu) ?? [];
}

function ngrams(ws: readonly string[], n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i + n <= ws.length; i++) out.push(ws.slice(i, i + n).join(" "));
  return out;
}

/** Distinct n-grams over all n-grams of the whole set (0 when the set has none). */
export function distinctN(texts: readonly string[], n: number): number {
  const all = texts.flatMap((t) => ngrams(words(t), n));
  return all.length === 0 ? 0 : new Set(all).size / all.length;
}

/**
 * Repetition rate: the share of a text's word n-grams (default trigrams) that repeat an earlier
 * n-gram of the same text, averaged over texts that have any ("the Congress of the Congress of the
 * Congress" scores 3/6 = 0.5; text without repeats scores 0).
 */
export function repetitionRate(texts: readonly string[], n = 3): number {
  const rates: number[] = [];
  for (const t of texts) {
    const grams = ngrams(words(t), n);
    if (grams.length === 0) continue;
    rates.push((grams.length - new Set(grams).size) / grams.length);
  }
  return rates.length === 0 ? 0 : rates.reduce((a, b) => a + b, 0) / rates.length;
}

/** Length of the longest run of consecutive words shared by `a` and `b` (dynamic programming). */
export function longestCommonRun(a: readonly string[], b: readonly string[]): number {
  let best = 0;
  let prev = new Int32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    const row = new Int32Array(b.length + 1);
    for (let j = 1; j <= b.length; j++) {
      if (a[i - 1] === b[j - 1]) {
        row[j] = prev[j - 1] + 1;
        if (row[j] > best) best = row[j];
      }
    }
    prev = row;
  }
  return best;
}

/** For each text, the longest word run it shares with any of the reference texts. */
export function longestCopiedRuns(texts: readonly string[], references: readonly string[]): number[] {
  const refWords = references.map(words);
  return texts.map((t) => {
    const w = words(t);
    return refWords.reduce((m, r) => Math.max(m, longestCommonRun(w, r)), 0);
  });
}

/** Sparse TF-IDF vectors (unit norm) with IDF fitted on `corpus` (smoothed: ln((1+N)/(1+df)) + 1). */
export class TfIdf {
  private readonly idf = new Map<string, number>();
  private readonly defaultIdf: number;

  constructor(corpus: readonly string[]) {
    const df = new Map<string, number>();
    for (const t of corpus) for (const w of new Set(words(t))) df.set(w, (df.get(w) ?? 0) + 1);
    const n = corpus.length;
    for (const [w, c] of df) this.idf.set(w, Math.log((1 + n) / (1 + c)) + 1);
    this.defaultIdf = Math.log(1 + n) + 1;
  }

  /** Unit-norm TF-IDF vector of a text (empty map for a text without words). */
  vector(text: string): Map<string, number> {
    const v = new Map<string, number>();
    for (const w of words(text)) v.set(w, (v.get(w) ?? 0) + 1);
    let norm = 0;
    for (const [w, c] of v) {
      const x = c * (this.idf.get(w) ?? this.defaultIdf);
      v.set(w, x);
      norm += x * x;
    }
    norm = Math.sqrt(norm);
    if (norm > 0) { for (const [w, x] of v) v.set(w, x / norm); }
    return v;
  }
}

/** Cosine of two unit-norm sparse vectors. */
export function sparseCosine(a: Map<string, number>, b: Map<string, number>): number {
  const [small, large] = a.size <= b.size ? [a, b] : [b, a];
  let s = 0;
  for (const [w, x] of small) s += x * (large.get(w) ?? 0);
  return s;
}

/**
 * On-topic-ness: for each text, the largest TF-IDF cosine to any reference text (IDF fitted on
 * the references, so that words every review shares count little).
 */
export function nearestReferenceSimilarity(
  texts: readonly string[],
  references: readonly string[],
): number[] {
  const tfidf = new TfIdf(references);
  const refs = references.map((r) => tfidf.vector(r));
  return texts.map((t) => {
    const v = tfidf.vector(t);
    return refs.reduce((m, r) => Math.max(m, sparseCosine(v, r)), 0);
  });
}

/** Mean of the finite numbers in `xs` (NaN when there are none). */
export function mean(xs: readonly number[]): number {
  const f = xs.filter(Number.isFinite);
  return f.length === 0 ? NaN : f.reduce((a, b) => a + b, 0) / f.length;
}
