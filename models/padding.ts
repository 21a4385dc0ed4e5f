/**
 * Batching token sequences of different lengths: left padding, so that every row's last token
 * sits in the last column (where generation continues and GRADMM reads the last hidden state).
 *
 * @module
 */

/** A left-padded batch as flat [B, L] arrays. */
export interface LeftPadded {
  /** Token ids, `padId` in the padding. */
  ids: Float32Array;
  /** 1 for real tokens, 0 for padding. */
  mask: Float32Array;
  /** Position ids counted from each row's first real token (0 in the padding). */
  positions: Float32Array;
  /** L, the longest row's length. */
  length: number;
}

/** Left-pads `rows` to the longest row's length. */
export function leftPad(rows: readonly (readonly number[])[], padId: number): LeftPadded {
  const L = Math.max(...rows.map((r) => r.length));
  const ids = new Float32Array(rows.length * L).fill(padId);
  const mask = new Float32Array(rows.length * L);
  const positions = new Float32Array(rows.length * L);
  rows.forEach((r, b) => {
    const off = b * L + (L - r.length);
    for (let i = 0; i < r.length; i++) {
      ids[off + i] = r[i];
      mask[off + i] = 1;
      positions[off + i] = i;
    }
  });
  return { ids, mask, positions, length: L };
}
