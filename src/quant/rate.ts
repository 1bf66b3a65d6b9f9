/**
 * How many bits a quantized tensor costs once stored (spec/eqz.md, encodings 2/3): the payload header and the
 * raw scales, plus the coded stream of codes — its header, frequency table, per-chunk states and the rANS
 * words, whose size is the ideal code length under the table the encoder builds (normalizeFrequencies, the
 * codec's own rule; rANS with 32-bit states stays within a few bits per chunk of it).
 *
 * Also the code-length model the search optimizer uses inside its decisions: integer lengths in 1/32 bit from
 * a histogram, computed with integer arithmetic only so that every machine derives the same table.
 */
import { CHUNK_OVERHEAD_BYTES, LANES, STREAM_HEADER_SIZE } from '../codec/constants.js';
import { chooseChunkLog2, codedSizeBits, normalizeFrequencies } from '../codec/frequencies.js';
import { scaleBytes, type ScaleDtype } from './grid.js';

/** Bytes before the scales in an encoding-2/3 payload: u32 scale_dtype + u32 reserved. */
const PAYLOAD_HEADER_BYTES = 8;
/** Coded bits an rANS lane's final state carries on average (states lie in [2^16, 2^32)). */
const STATE_PAYLOAD_BITS = 8;
/** Code lengths of the search's rate model are integers in units of 1/LENGTH_UNIT bit. */
export const LENGTH_UNIT = 32;
/** No code is modelled as longer than this many bits (also bounds a row's summed length below 2^31). */
const MAX_CODE_LENGTH_BITS = 24;

/** Occurrences of each code byte. */
export function histogram(codes: Uint8Array): Float64Array {
  const counts = new Uint32Array(256);
  for (let i = 0; i < codes.length; i++) counts[codes[i]!]!++;
  return Float64Array.from(counts);
}

function align4(bytes: number): number {
  return Math.ceil(bytes / 4) * 4;
}

/**
 * Bytes of one coded stream of `symbolCount` byte symbols with these counts: rANS (header, table, chunk
 * states and word counts, words) or stored, whichever the encoder would pick (the smaller).
 */
export function codedStreamBytes(counts: ArrayLike<number>, symbolCount: number): number {
  const stored = STREAM_HEADER_SIZE + align4(symbolCount);
  if (symbolCount === 0) return stored;
  const frequencies = normalizeFrequencies(counts);
  let tableBytes = 32;
  for (let s = 0; s < 256; s++) {
    if (frequencies[s]! > 0) tableBytes += frequencies[s]! - 1 < 128 ? 1 : 2;
  }
  const bits = codedSizeBits(counts, frequencies);
  const chunkLog2 = chooseChunkLog2(symbolCount, bits / symbolCount);
  const chunks = Math.ceil(symbolCount / 2 ** chunkLog2);
  // Each lane's final state, stored in full, holds on average half of its 16 bits above L of coded data.
  const wordBits = Math.max(0, bits - chunks * LANES * STATE_PAYLOAD_BITS);
  const wordBytes = align4(2 * Math.ceil(wordBits / 16));
  const rans = STREAM_HEADER_SIZE + align4(tableBytes) + chunks * CHUNK_OVERHEAD_BYTES + wordBytes;
  return Math.min(rans, stored);
}

/** Bytes of a whole encoding-2/3 payload: header, `rows` scales of `scaleDtype` (padded to 4), the code stream. */
export function payloadBytes(counts: ArrayLike<number>, symbolCount: number, rows: number, scaleDtype: ScaleDtype): number {
  return PAYLOAD_HEADER_BYTES + align4(rows * scaleBytes(scaleDtype)) + codedStreamBytes(counts, symbolCount);
}

/** Everything stored for a quantized [rows, cols] tensor, in bits per parameter. */
export function bitsPerParam(counts: ArrayLike<number>, rows: number, cols: number, scaleDtype: ScaleDtype): number {
  return (8 * payloadBytes(counts, rows * cols, rows, scaleDtype)) / (rows * cols);
}

/** Bit length of a positive integer below 2^53. */
function bitLength(x: number): number {
  return x >= 2 ** 32 ? 32 + bitLength(Math.floor(x / 2 ** 32)) : 32 - Math.clz32(x);
}

/** Fraction bits of the fixed-point log2 and the precision of its mantissa (squares stay below 2^53). */
const LOG_FRACTION_BITS = 7;
const LOG_MANTISSA_BITS = 24;

/**
 * ⌊log2(x) · 2^7⌋ for an integer 1 ≤ x < 2^53, by repeated squaring on a 24-bit mantissa — integer operations
 * only, so it is the same on every machine (Math.log2 is not specified to the last bit).
 */
function log2Fixed(x: number): number {
  const exponent = bitLength(x) - 1;
  let mantissa = exponent <= LOG_MANTISSA_BITS
    ? x * 2 ** (LOG_MANTISSA_BITS - exponent)
    : Math.floor(x / 2 ** (exponent - LOG_MANTISSA_BITS));
  let result = exponent;
  for (let bit = 0; bit < LOG_FRACTION_BITS; bit++) {
    mantissa = Math.floor((mantissa * mantissa) / 2 ** LOG_MANTISSA_BITS);
    result *= 2;
    if (mantissa >= 2 ** (LOG_MANTISSA_BITS + 1)) {
      result += 1;
      mantissa = Math.floor(mantissa / 2);
    }
  }
  return result;
}

/**
 * Code lengths (1/{@link LENGTH_UNIT} bit) of the 256 code bytes under the order-0 model of `counts`, each
 * count smoothed by ½ so a code not yet seen costs a little more than the rarest one: len(c) =
 * log2((N + 128) / (count(c) + ½)), capped at 24 bits. Deterministic (integer arithmetic only).
 */
export function codeLengths(counts: ArrayLike<number>): Uint32Array {
  let total = 0;
  for (let c = 0; c < 256; c++) total += counts[c]!;
  const totalLog = log2Fixed(2 * total + 256);
  const shift = LOG_FRACTION_BITS - Math.log2(LENGTH_UNIT);
  const lengths = new Uint32Array(256);
  for (let c = 0; c < 256; c++) {
    const fixed = totalLog - log2Fixed(2 * counts[c]! + 1);
    const rounded = Math.floor((fixed + 2 ** (shift - 1)) / 2 ** shift);
    lengths[c] = Math.min(Math.max(rounded, 0), MAX_CODE_LENGTH_BITS * LENGTH_UNIT);
  }
  return lengths;
}
