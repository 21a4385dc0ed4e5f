/**
 * Seeds derived from a run's seed and the coordinates of one random choice (a class, a round, a
 * split), so that each choice is reproducible on its own: a resumed or sharded run draws the same
 * numbers for the same coordinates as an uninterrupted one.
 *
 * @module
 */

/** A 32-bit seed derived from several integers (FNV-1a over their decimal forms). */
export function deriveSeed(...parts: (number | string)[]): number {
  let h = 0x811c9dc5;
  for (const ch of parts.join("/")) {
    h ^= ch.charCodeAt(0);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
