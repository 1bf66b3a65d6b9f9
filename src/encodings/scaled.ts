/**
 * Encodings 2 (fp8-e4m3) and 3 (int8): per-output-channel scales + one coded stream of 8-bit codes
 * (spec/eqz.md §7.5). The payload layout both ways, its checks, and the exact dequantization. No Node imports.
 */
import { ByteReader, ByteWriter } from '../container/binary.js';
import type { Dtype } from '../container/format.js';
import { EqzError } from '../errors.js';
import { decodeStream, encodeStream } from '../codec/index.js';
import { bf16BitsToF32, E4M3_VALUES, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, fromFloat32 } from '../tensor/dtype.js';

export type ScaledEncoding = 'fp8-e4m3' | 'int8';
export type ScaleDtype = 'F32' | 'F16' | 'BF16';

const SCALE_DTYPES: readonly ScaleDtype[] = ['F32', 'F16', 'BF16'];
const SCALE_SIZE: Record<ScaleDtype, number> = { F32: 4, F16: 2, BF16: 2 };
const MIN_SCALE = 2 ** -64;
const MAX_SCALE = 2 ** 64;

/** rows and row length of a tensor stored with a scaled encoding (rank ≥ 2, else Malformed). */
export function scaledGeometry(shape: readonly number[]): { rows: number; rowLength: number } {
  if (shape.length < 2) throw new EqzError('Malformed', `fp8-e4m3/int8 need rank ≥ 2, the shape is [${shape.join(', ')}]`);
  return { rows: shape[0]!, rowLength: shape.slice(1).reduce((a, b) => a * b, 1) };
}

/** The value of every code under `encoding` as f32 (NaN for the E4M3 NaN codes, rejected before use). */
function codeValues(encoding: ScaledEncoding): Float32Array {
  if (encoding === 'fp8-e4m3') return E4M3_VALUES;
  return Float32Array.from({ length: 256 }, (_, code) => (code << 24) >> 24);
}
const CODE_VALUES: Record<ScaledEncoding, Float32Array> = { 'fp8-e4m3': codeValues('fp8-e4m3'), int8: codeValues('int8') };

function checkScale(value: number, row: number): void {
  if (!(value >= MIN_SCALE && value <= MAX_SCALE)) {
    throw new EqzError('InvalidValue', `scale of row ${row} is ${value}, not finite, positive and in [2^-64, 2^64]`);
  }
}

/**
 * The payload of a scaled encoding. `scales` must already be representable in `scaleDtype` (they are written
 * rounded to it) and within [2^-64, 2^64]; `codes` holds one byte per element, row-major.
 */
export function encodeScaledPayload(codes: Uint8Array, scales: Float32Array, scaleDtype: ScaleDtype): Uint8Array[] {
  const writer = new ByteWriter().u32(SCALE_DTYPES.indexOf(scaleDtype)).u32(0);
  for (let row = 0; row < scales.length; row++) {
    const value = scales[row]!;
    checkScale(value, row);
    if (scaleDtype === 'F32') writer.f32(value);
    else writer.u16(scaleDtype === 'BF16' ? f32ToBf16Bits(value) : f32ToF16Bits(value));
  }
  writer.pad(4);
  return [writer.finish(), encodeStream(codes, { symbolBits: 8 })];
}

export interface ScaledPayload {
  scaleDtype: ScaleDtype;
  /** One f32 scale per row (widened exactly from scaleDtype). */
  scales: Float32Array;
  /** One code byte per element. */
  codes: Uint8Array;
}

/** The part of a scaled payload before its code stream: the scales, checked, and where the stream starts. */
export interface ScaledHeader {
  scaleDtype: ScaleDtype;
  rows: number;
  rowLength: number;
  /** One f32 scale per row (widened exactly from scaleDtype). */
  scales: Float32Array;
  /** Payload offset of the code stream. */
  streamOffset: number;
}

/**
 * Parses and checks everything of a scaled payload before its code stream (spec §7.5): scale_dtype, the
 * reserved field, every scale, the padding. Error offsets count from the payload's first byte.
 */
export function parseScaledHeader(payload: Uint8Array, shape: readonly number[]): ScaledHeader {
  const { rows, rowLength } = scaledGeometry(shape);
  const reader = new ByteReader(payload);
  const malformed = (message: string, at: number): never => reader.fail('Malformed', message, at);
  if (payload.length < 8) malformed(`payload of ${payload.length} bytes is shorter than its 8-byte header`, 0);
  const scaleDtype = SCALE_DTYPES[reader.u32('scale_dtype')];
  if (scaleDtype === undefined) malformed('unknown scale_dtype', 0);
  if (reader.u32('reserved') !== 0) malformed('reserved field is not zero', 4);
  const scaleBytes = rows * SCALE_SIZE[scaleDtype!];
  if (scaleBytes > reader.remaining) malformed(`${rows} scales do not fit in the payload`, 8);
  const scales = new Float32Array(rows);
  for (let row = 0; row < rows; row++) {
    const at = reader.offset;
    scales[row] = scaleDtype === 'F32' ? reader.f32() : scaleDtype === 'BF16' ? bf16BitsToF32(reader.u16()) : f16BitsToF32(reader.u16());
    try {
      checkScale(scales[row]!, row);
    } catch (error) {
      throw (error as EqzError).locate({ offsetBase: at });
    }
  }
  while (reader.position % 4 !== 0) if (reader.u8('padding') !== 0) malformed('padding after the scales is not zero', reader.offset - 1);
  return { scaleDtype: scaleDtype!, rows, rowLength, scales, streamOffset: reader.position };
}

/** Parses and checks a scaled payload (spec §7.5): layout, scales, padding, the code stream, NaN codes. */
export function decodeScaledPayload(payload: Uint8Array, encoding: ScaledEncoding, shape: readonly number[]): ScaledPayload {
  const { scaleDtype, rows, rowLength, scales, streamOffset } = parseScaledHeader(payload, shape);
  const elements = rows * rowLength;
  let decoded;
  try {
    decoded = decodeStream(payload.subarray(streamOffset), { expectedSymbols: elements, expectedSymbolBits: 8, maxSymbols: elements });
  } catch (error) {
    throw error instanceof EqzError ? error.locate({ offsetBase: streamOffset }) : error;
  }
  if (streamOffset + decoded.byteLength !== payload.length) {
    throw new EqzError('Malformed', 'bytes after the code stream', { offset: streamOffset + decoded.byteLength });
  }
  const codes = decoded.symbols;
  if (encoding === 'fp8-e4m3') {
    for (let i = 0; i < codes.length; i++) {
      if ((codes[i]! & 0x7f) === 0x7f) throw new EqzError('InvalidValue', `E4M3 NaN code 0x${codes[i]!.toString(16)} at element ${i}`);
    }
  }
  return { scaleDtype, scales, codes };
}

/** Dequantized values as f32: mul32(f32(value(code)), f32(scale[row])), spec §7.5. */
export function dequantizeScaled(payload: ScaledPayload, encoding: ScaledEncoding, shape: readonly number[]): Float32Array {
  const { rows, rowLength } = scaledGeometry(shape);
  const values = CODE_VALUES[encoding];
  const out = new Float32Array(rows * rowLength);
  for (let row = 0; row < rows; row++) {
    const scale = payload.scales[row]!;
    const base = row * rowLength;
    // A Float32Array store rounds the f64 product to binary32 with ties to even: exactly mul32.
    for (let c = 0; c < rowLength; c++) out[base + c] = values[payload.codes[base + c]!]! * scale;
  }
  return out;
}

/** Decodes a scaled payload to little-endian bytes of `output` (F32, F16 or BF16). */
export function decodeScaled(payload: Uint8Array, encoding: ScaledEncoding, shape: readonly number[], output: Dtype): Uint8Array {
  if (output !== 'F32' && output !== 'F16' && output !== 'BF16') {
    throw new EqzError('UnsupportedDtype', `${encoding} decodes to F32, F16 or BF16, not ${output}`);
  }
  return fromFloat32(dequantizeScaled(decodeScaledPayload(payload, encoding, shape), encoding, shape), output);
}
