/**
 * A quantized tensor as the quantizers return it, its decoding (spec/eqz.md encodings 2/3:
 * f32(value(code)) × f32(scale), one IEEE binary32 multiply) and its errors against the original.
 */
import { castCode, codeValue, type QuantFormat, type ScaleDtype } from './grid.js';
import { bitsPerParam, histogram } from './rate.js';

/** A quantized tensor: what an encoding-2/3 payload stores, with its rate and errors. */
export interface QuantizedTensor {
  format: QuantFormat;
  /** rows × cols code bytes: E4M3 bytes or int8 two's complement. */
  codes: Uint8Array;
  /** One scale per row, exactly representable in the scale dtype, each in [2^-64, 2^64]. */
  scales: Float32Array;
  /** Everything stored (payload header, scales, coded codes) per parameter. */
  bitsPerParam: number;
  /** ‖deq − W‖₁ / ‖W‖₁ and ‖deq − W‖₂ / ‖W‖₂ (0 for an all-zero tensor). */
  relL1: number;
  relL2: number;
}

/**
 * Decoded weights: f32(value(code)) × f32(scale) per element, an IEEE binary32 product (round to nearest even).
 */
export function dequantize(codes: Uint8Array, scales: Float32Array, rows: number, cols: number, format: QuantFormat): Float32Array {
  const out = new Float32Array(rows * cols);
  const table = new Float32Array(256);
  for (let c = 0; c < 256; c++) table[c] = codeValue(format, c);
  for (let r = 0; r < rows; r++) {
    const scale = scales[r]!;
    for (let i = r * cols; i < (r + 1) * cols; i++) out[i] = Math.fround(table[codes[i]!]! * scale);
  }
  return out;
}

/** Relative L1 and L2 errors of `decoded` against `weights` (f64 sums). */
export function relativeErrors(weights: Float32Array, decoded: Float32Array): { relL1: number; relL2: number } {
  let l1 = 0;
  let l2 = 0;
  let norm1 = 0;
  let norm2 = 0;
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i]!;
    const e = decoded[i]! - w;
    l1 += Math.abs(e);
    l2 += e * e;
    norm1 += Math.abs(w);
    norm2 += w * w;
  }
  return { relL1: norm1 > 0 ? l1 / norm1 : 0, relL2: norm2 > 0 ? Math.sqrt(l2 / norm2) : 0 };
}

/** Packages codes and scales with their rate and errors. */
export function describeQuantized(
  weights: Float32Array, rows: number, cols: number, format: QuantFormat, codes: Uint8Array, scales: Float32Array,
  counts: ArrayLike<number>, scaleDtype: ScaleDtype,
): QuantizedTensor {
  const errors = relativeErrors(weights, dequantize(codes, scales, rows, cols, format));
  return { format, codes, scales, bitsPerParam: bitsPerParam(counts, rows, cols, scaleDtype), ...errors };
}

/**
 * Codes for given scales the way the spec states the cast: q = cast(w / s) with the f32 quotient (E4M3: round
 * to nearest even on its grid, saturating at ±448; INT8: round half to even, clamp to [−128, 127]).
 */
export function castWithScales(weights: Float32Array, rows: number, cols: number, scales: Float32Array, format: QuantFormat): Uint8Array {
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const scale = scales[r]!;
    for (let i = r * cols; i < (r + 1) * cols; i++) codes[i] = castCode(format, Math.fround(weights[i]! / scale));
  }
  return codes;
}

/** Packages codes cast at `scales` (see {@link castWithScales}) with their rate and errors. */
export function describeCast(
  weights: Float32Array, rows: number, cols: number, format: QuantFormat, scales: Float32Array, scaleDtype: ScaleDtype,
): QuantizedTensor {
  const codes = castWithScales(weights, rows, cols, scales, format);
  return describeQuantized(weights, rows, cols, format, codes, scales, histogram(codes), scaleDtype);
}
