/**
 * The two code grids of the EntQuant encodings (spec/eqz.md, encodings 2 and 3) and the scale grid.
 *
 * Codes: FP8 E4M3 ("fn": max 448, no infinities, 0x7F/0xFF are NaN and never produced) or INT8 (two's
 * complement). Both are sign–magnitude symmetric for what we produce: a magnitude index i ∈ [0, maxIndex]
 * whose value grows with i, plus a sign (−0 is stored as +0). The search optimizer works on magnitude
 * indices; {@link codeByte} turns (index, sign) into the stored byte.
 *
 * Scales: a scale is stored in BF16, F16 or F32 and must lie in [2^-64, 2^64] (so every decoded product
 * is a normal f32 or zero). The search optimizer only tries scales on the BF16 grid — 8 significant bits —
 * which every scale dtype represents exactly inside its range; that keeps value × scale exact in f32 (at
 * most 4 + 8 bits for E4M3, 8 + 8 for INT8), the property its exact decisions rest on (search.ts).
 */
import { E4M3_VALUES, bf16BitsToF32, f16BitsToF32, f32Bits, f32FromBits, f32ToBf16Bits, f32ToF16Bits } from '../tensor/dtype.js';

/** Code formats of encodings 2 (`fp8-e4m3`) and 3 (`int8`). */
export type QuantFormat = 'fp8-e4m3' | 'int8';
/** How scales are stored (the payload's scale_dtype). */
export type ScaleDtype = 'BF16' | 'F16' | 'F32';

/** Largest finite E4M3 magnitude. */
export const E4M3_MAX = 448;
/** Smallest scale (spec: every decoded product stays a normal f32 or zero). */
export const MIN_SCALE = 2 ** -64;
/** Largest scale. */
export const MAX_SCALE = 2 ** 64;

/**
 * The magnitude grid of a format, as exact f32 tables indexed by magnitude index i:
 * `values[i]` (increasing, values[0] = 0), `midpoints[i]` = (values[i] + values[i+1]) / 2 and
 * `doubledGaps[i]` = 2·(values[i+1] − values[i]) — all exactly representable with few significant bits
 * (E4M3: 5, INT8: 9), so their products with an 8-bit scale mantissa are exact in f32.
 */
export interface MagnitudeGrid {
  format: QuantFormat;
  /** Largest magnitude index: 126 (E4M3, 448) or 127 (INT8). */
  maxIndex: number;
  values: Float32Array;
  midpoints: Float32Array;
  doubledGaps: Float32Array;
  /** values[maxIndex]: the absmax initialisation divides by it. */
  maxValue: number;
}

function magnitudeGrid(format: QuantFormat): MagnitudeGrid {
  const maxIndex = format === 'fp8-e4m3' ? 126 : 127;
  const values = new Float32Array(128);
  for (let i = 0; i <= maxIndex; i++) values[i] = format === 'fp8-e4m3' ? E4M3_VALUES[i]! : i;
  const midpoints = new Float32Array(128);
  const doubledGaps = new Float32Array(128);
  for (let i = 0; i < maxIndex; i++) {
    midpoints[i] = (values[i]! + values[i + 1]!) / 2;
    doubledGaps[i] = 2 * (values[i + 1]! - values[i]!);
  }
  return { format, maxIndex, values, midpoints, doubledGaps, maxValue: values[maxIndex]! };
}

const GRIDS: Record<QuantFormat, MagnitudeGrid> = { 'fp8-e4m3': magnitudeGrid('fp8-e4m3'), int8: magnitudeGrid('int8') };

/** The magnitude grid of `format` (shared, do not modify). */
export function gridOf(format: QuantFormat): MagnitudeGrid {
  return GRIDS[format];
}

/** The stored byte for magnitude index `index` with sign `negative` (zero is always +0). */
export function codeByte(format: QuantFormat, index: number, negative: boolean): number {
  if (!negative || index === 0) return index;
  return format === 'fp8-e4m3' ? 0x80 | index : (256 - index) & 0xff;
}

/** The value of a stored code byte (NaN for the E4M3 NaN codes 0x7F/0xFF). */
export function codeValue(format: QuantFormat, code: number): number {
  return format === 'fp8-e4m3' ? E4M3_VALUES[code & 0xff]! : (code << 24) >> 24;
}

/** Round half to even of a finite double. */
function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const fraction = x - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * cast(x) to E4M3 as the spec defines it: round to nearest, ties to even, on the E4M3 grid; saturate to
 * ±448; −0 → +0; `x` must be finite. Returns the code byte.
 */
export function castE4M3(x: number): number {
  const bits = f32Bits(x);
  const negative = bits >>> 31 === 1;
  const magnitude = Math.abs(f32FromBits(bits));
  let index: number;
  if (magnitude >= E4M3_MAX) {
    index = 126;
  } else if (magnitude < 2 ** -6) {
    // Subnormal range: a uniform grid of step 2^-9 (index = count of steps, 8 = the first normal 2^-6).
    index = roundHalfEven(magnitude * 512);
  } else {
    // Round the f32 mantissa to 3 bits (ties to even); a carry correctly moves to the next binade.
    const magnitudeBits = bits & 0x7fffffff;
    const rounded = (magnitudeBits + 0x7ffff + ((magnitudeBits >>> 20) & 1)) >>> 20;
    const exponent = (rounded >>> 3) - 127 + 7;
    index = Math.min((exponent << 3) | (rounded & 7), 126);
  }
  return codeByte('fp8-e4m3', index, negative);
}

/** cast(x) to INT8: round half to even, clamp to [−128, 127]; returns the code byte (two's complement). */
export function castInt8(x: number): number {
  const q = Math.min(127, Math.max(-128, roundHalfEven(Math.fround(x))));
  return q & 0xff;
}

/** cast(x) in `format` (see {@link castE4M3}, {@link castInt8}). */
export function castCode(format: QuantFormat, x: number): number {
  return format === 'fp8-e4m3' ? castE4M3(x) : castInt8(x);
}

/** Bytes one scale takes in the payload. */
export function scaleBytes(dtype: ScaleDtype): number {
  return dtype === 'F32' ? 4 : 2;
}

/**
 * `s` rounded (to nearest even) to `dtype` and clamped to the representable part of [2^-64, 2^64]
 * (F16: its largest finite value and smallest subnormal bound the range further).
 */
export function roundScale(s: number, dtype: ScaleDtype): number {
  const clamped = Math.min(Math.max(s, MIN_SCALE), MAX_SCALE);
  if (dtype === 'F32') return Math.min(Math.max(Math.fround(clamped), MIN_SCALE), MAX_SCALE);
  if (dtype === 'BF16') {
    const rounded = bf16BitsToF32(f32ToBf16Bits(clamped));
    return Math.min(Math.max(rounded, MIN_SCALE), bf16BitsToF32(f32ToBf16Bits(MAX_SCALE)));
  }
  const rounded = f16BitsToF32(f32ToF16Bits(clamped));
  return Math.min(Math.max(rounded, 2 ** -24), 65504);
}

/**
 * The scale with grid index k. The search optimizer's scale grid is the positive BF16 values, indexed by their
 * 16-bit pattern k = (biased exponent << 7) | 7-bit mantissa: consecutive k are consecutive values, 128 per octave.
 */
export function scaleOfIndex(k: number): number {
  return f32FromBits((k << 16) >>> 0);
}

/** Grid index of the largest BF16 value ≤ s (s positive and normal). */
export function indexAtOrBelow(s: number): number {
  return f32Bits(s) >>> 16;
}

/** [lowest, highest] grid index a scale of `dtype` may take: BF16/F32 2^-64..2^64, F16 its normal range. */
export function scaleIndexRange(dtype: ScaleDtype): [number, number] {
  if (dtype === 'F16') return [indexAtOrBelow(2 ** -14), indexAtOrBelow(65504)];
  return [indexAtOrBelow(MIN_SCALE), indexAtOrBelow(MAX_SCALE)];
}
