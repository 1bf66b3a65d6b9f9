/**
 * The NVFP4 element format (spec/eqz.md §7.6): 4-bit E2M1 codes `sign << 3 | magnitude index`, magnitudes
 * 0, 0.5, 1, 1.5, 2, 3, 4, 6, in blocks of 16 consecutive elements of a row, two codes per byte in the
 * compressed-tensors `weight_packed` layout (element 2j in the low nibble of byte j, 2j + 1 in the high one).
 *
 * The rounding of a scaled value to E2M1 is compressed-tensors' `FP4_E2M1_DATA.cast_to_fp4` exactly: round to
 * the nearest magnitude, a tie going to the even magnitude index (0.25 → 0, 0.75 → 1, 1.25 → 1, 1.75 → 2,
 * 2.5 → 2, 3.5 → 4, 5 → 4), everything above 5 to 6; the result takes the sign of the input, so a negative
 * value that rounds to 0 is the code for −0 (0x8) while ±0 itself gives +0 — unless positive zeros are asked
 * for, which is what eqz's own optimizer emits (one code for zero, lower entropy; spec §7.2).
 */

/** Elements per block: one E4M3 block scale covers 16 consecutive elements of a row. */
export const NVFP4_BLOCK = 16;

/** Largest E2M1 magnitude. */
export const E2M1_MAX = 6;

/** Magnitude of each 3-bit magnitude index. */
export const E2M1_MAGNITUDES: readonly number[] = [0, 0.5, 1, 1.5, 2, 3, 4, 6];

/** Value of each 4-bit code (0x8 is −0). */
export const E2M1_VALUES: Float32Array = Float32Array.from({ length: 16 }, (_, code) =>
  (code & 8 ? -1 : 1) * E2M1_MAGNITUDES[code & 7]!);

/**
 * Upper ends of the rounding intervals: magnitude index i covers (bound[i − 1], bound[i]] when i is even
 * (ties come to it) and [bound[i − 1], bound[i]) when i is odd.
 */
const ROUNDING_BOUNDS = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5];

/** Magnitude index of |x| rounded to E2M1 with ties to the even index, saturating at 6 (x finite). */
export function roundE2M1Magnitude(magnitude: number): number {
  let index = 0;
  while (index < 7) {
    const bound = ROUNDING_BOUNDS[index]!;
    // An even index takes the tie at its upper bound; an odd one leaves it to the next (even) index.
    if (index % 2 === 0 ? magnitude <= bound : magnitude < bound) break;
    index++;
  }
  return index;
}

/**
 * The E2M1 code of a scaled value `x` (finite) as compressed-tensors casts it; with `positiveZero` a value
 * that rounds to zero gets +0 whatever its sign.
 */
export function castE2M1(x: number, positiveZero = false): number {
  const magnitude = roundE2M1Magnitude(Math.abs(x));
  const negative = x < 0 && !(positiveZero && magnitude === 0);
  return (negative ? 8 : 0) | magnitude;
}

/** One code per element (values 0..15) from packed bytes [rows, cols/2], low nibble first. */
export function unpackCodes(packed: Uint8Array, into = new Uint8Array(packed.length * 2)): Uint8Array {
  for (let j = 0; j < packed.length; j++) {
    const pair = packed[j]!;
    into[2 * j] = pair & 15;
    into[2 * j + 1] = pair >> 4;
  }
  return into;
}

/** Packed bytes (two codes per byte, element 2j in the low nibble) from one code per element. */
export function packCodes(codes: Uint8Array, into = new Uint8Array(codes.length >> 1)): Uint8Array {
  for (let j = 0; j < into.length; j++) into[j] = (codes[2 * j]! & 15) | ((codes[2 * j + 1]! & 15) << 4);
  return into;
}
