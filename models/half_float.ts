/**
 * Half-precision floats in plain JavaScript: IEEE binary16 (F16) and bfloat16 (BF16) bits to and
 * from numbers, one value or whole arrays. Widening is exact (every half and bfloat16 is a float32);
 * narrowing rounds to nearest with ties to even, as PyTorch does. Used to load F16/BF16 weights
 * (WGSL compute is f32) and to write checkpoints in those formats.
 *
 * @module
 */

let halfTable: Float32Array | undefined;

/** The float value of IEEE binary16 bits (exact: every half is a float32). */
export function float16BitsToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

// A 65536-entry table (256 KB) turns F16 widening into one lookup per element.
function halfToFloatTable(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) halfTable[i] = float16BitsToNumber(i);
  }
  return halfTable;
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** IEEE binary16 bits of a number rounded first to float32, then to half with ties to even. */
export function numberToFloat16Bits(value: number): number {
  scratchF32[0] = value;
  const bits = scratchU32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const halfExponent = exponent - 112; // rebias 127 → 15
  if (halfExponent >= 31) return sign | 0x7c00;
  if (halfExponent <= 0) {
    if (halfExponent < -10) return sign; // below half of the smallest subnormal: ±0
    mantissa |= 0x800000;
    const shift = 14 - halfExponent;
    const kept = mantissa >>> shift;
    const rest = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    const rounded = rest > halfway || (rest === halfway && (kept & 1)) ? kept + 1 : kept;
    return sign | rounded; // a carry into the exponent field is the correct next value
  }
  const kept = (halfExponent << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  const rounded = rest > 0x1000 || (rest === 0x1000 && (kept & 1)) ? kept + 1 : kept;
  return sign | rounded; // may carry into infinity, which is right for values past 65504
}

/** bfloat16 bits of a number rounded first to float32, then to bfloat16 with ties to even. */
export function numberToBfloat16Bits(value: number): number {
  scratchF32[0] = value;
  const bits = scratchU32[0];
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) return (bits >>> 16) | 0x40; // quiet NaN
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/** Widens an array of binary16 bits to float32 (one table lookup per element). */
export function float16ToFloat32(bits: Uint16Array): Float32Array {
  const table = halfToFloatTable();
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  return out;
}

/** Widens an array of bfloat16 bits to float32: bfloat16 is the top half of a float32. */
export function bfloat16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) outBits[i] = bits[i] << 16;
  return out;
}

/** Rounds numbers to binary16 bits (ties to even). */
export function float32ToFloat16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = numberToFloat16Bits(values[i]);
  return out;
}

/** Rounds numbers to bfloat16 bits (ties to even). */
export function float32ToBfloat16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = numberToBfloat16Bits(values[i]);
  return out;
}
