/**
 * Exact conversions between the floating-point dtypes of the spec (§"dtypes") and f32: BF16/F16 with
 * round-to-nearest-even (F16 subnormals exact, overflow to ±Inf), FP8 E4M3/E5M2 decoding tables, and typed views
 * of little-endian tensor bytes. These are the reference definitions the WASM and WGSL decoders must match.
 */
import { EqzError } from '../errors.js';
import type { Dtype } from '../container/format.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The IEEE binary32 bit pattern of `value` (after rounding it to f32). */
export function f32Bits(value: number): number {
  f32[0] = value;
  return u32[0]!;
}

export function f32FromBits(bits: number): number {
  u32[0] = bits;
  return f32[0]!;
}

/** BF16 bits of an f32 with round-to-nearest-even; NaN stays a quiet NaN with its sign. */
export function f32ToBf16Bits(value: number): number {
  const bits = f32Bits(value);
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  const roundingBias = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + roundingBias) >>> 16) & 0xffff;
}

export function bf16BitsToF32(bits: number): number {
  return f32FromBits((bits << 16) >>> 0);
}

/** F16 bits of an f32 with round-to-nearest-even, subnormals exact, overflow to ±Inf. */
export function f32ToF16Bits(value: number): number {
  const bits = f32Bits(value);
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 | (mantissa >>> 13) : 0);
  // Rebias 127 → 15; below F16's normal range the significand (with its implicit 1) is shifted right.
  const halfExponent = exponent - 112;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    if (halfExponent < -10) return sign;
    const significand = mantissa | 0x800000;
    const shift = 14 - halfExponent;
    const half = significand >>> shift;
    const remainder = significand & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    const roundUp = remainder > halfway || (remainder === halfway && (half & 1) === 1);
    return sign | (half + (roundUp ? 1 : 0));
  }
  const half = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  const roundUp = remainder > 0x1000 || (remainder === 0x1000 && (half & 1) === 1);
  // A carry out of the mantissa correctly bumps the exponent, up to Inf.
  return sign | (half + (roundUp ? 1 : 0));
}

export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1024 + mantissa) * 2 ** (exponent - 25);
}

function fp8Table(exponentBits: number, mantissaBits: number, hasInfinity: boolean): Float32Array {
  const table = new Float32Array(256);
  const bias = (1 << (exponentBits - 1)) - 1;
  const maxExponent = (1 << exponentBits) - 1;
  for (let code = 0; code < 256; code++) {
    const sign = code & 0x80 ? -1 : 1;
    const exponent = (code >>> mantissaBits) & maxExponent;
    const mantissa = code & ((1 << mantissaBits) - 1);
    let value: number;
    if (exponent === maxExponent && hasInfinity) value = mantissa ? NaN : sign * Infinity;
    else if (exponent === maxExponent && mantissa === (1 << mantissaBits) - 1 && !hasInfinity) value = NaN;
    else if (exponent === 0) value = sign * mantissa * 2 ** (1 - bias - mantissaBits);
    else value = sign * (1 + mantissa / (1 << mantissaBits)) * 2 ** (exponent - bias);
    table[code] = value;
  }
  return table;
}

/** Value of every FP8 E4M3 ("fn": no infinities, NaN = S.1111.111, max 448) code. */
export const E4M3_VALUES = fp8Table(4, 3, false);
/** Value of every FP8 E5M2 code (IEEE-like: infinities and NaNs). */
export const E5M2_VALUES = fp8Table(5, 2, true);

export const FLOAT_DTYPES: readonly Dtype[] = ['F32', 'F16', 'BF16', 'F64', 'F8_E4M3', 'F8_E5M2'];

/** Decodes little-endian tensor bytes of a floating-point dtype to f32 values. */
export function toFloat32(bytes: Uint8Array, dtype: Dtype): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32': {
      if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4).slice();
      const out = new Float32Array(bytes.byteLength / 4);
      for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    }
    case 'F64': {
      const out = new Float32Array(bytes.byteLength / 8);
      for (let i = 0; i < out.length; i++) out[i] = view.getFloat64(i * 8, true);
      return out;
    }
    case 'BF16': {
      const out = new Float32Array(bytes.byteLength / 2);
      const outBits = new Uint32Array(out.buffer);
      for (let i = 0; i < out.length; i++) outBits[i] = view.getUint16(i * 2, true) << 16;
      return out;
    }
    case 'F16': {
      const out = new Float32Array(bytes.byteLength / 2);
      for (let i = 0; i < out.length; i++) out[i] = f16BitsToF32(view.getUint16(i * 2, true));
      return out;
    }
    case 'F8_E4M3':
    case 'F8_E5M2': {
      const table = dtype === 'F8_E4M3' ? E4M3_VALUES : E5M2_VALUES;
      const out = new Float32Array(bytes.length);
      for (let i = 0; i < out.length; i++) out[i] = table[bytes[i]!]!;
      return out;
    }
    default:
      throw new EqzError('UnsupportedDtype', `${dtype} is not a floating-point dtype`);
  }
}

/** Encodes f32 values as little-endian bytes of F32, F16 or BF16 (round-to-nearest-even). */
export function fromFloat32(values: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  const out = new Uint16Array(values.length);
  const convert = dtype === 'BF16' ? f32ToBf16Bits : f32ToF16Bits;
  for (let i = 0; i < values.length; i++) out[i] = convert(values[i]!);
  return new Uint8Array(out.buffer);
}
