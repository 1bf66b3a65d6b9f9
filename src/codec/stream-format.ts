/**
 * The coded stream's format (spec/eqz.md §6): a 24-byte header, then either the symbols stored as
 * they are or an rANS body — frequency table, 32 final states and a word count per chunk, the chunks' 16-bit
 * words. Parsing checks every field and length before anything is allocated; the decoders and the GPU upload
 * code read streams through {@link parseStreamHeader} and {@link parseRansLayout}.
 */
import { EqzError, type EqzErrorCode } from '../errors.js';
import {
  LANE_LOG2, LANES, MAX_CHUNK_LOG2, MIN_CHUNK_LOG2, MODE_RANS, MODE_STORED, PROB_SCALE, STREAM_HEADER_SIZE,
} from './constants.js';

/** The largest typed array this runtime allocates (2^32 bytes in V8). */
export const MAX_OUTPUT_BYTES = 2 ** 32;

/** A zeroed output of `size` bytes, or LimitExceeded (spec §8.2) when this runtime cannot allocate it. */
export function allocateOutput(size: number, context: StreamContext = {}): Uint8Array {
  if (size > MAX_OUTPUT_BYTES) {
    throw new EqzError('LimitExceeded', `decoded size ${size} bytes exceeds this decoder's ${MAX_OUTPUT_BYTES}`, { tensor: context.tensor });
  }
  return new Uint8Array(size);
}

/** Bytes of one chunk's final states (32 u32). */
export const STATE_BYTES = LANES * 4;

/** A stream's mode: symbols stored as they are, or rANS-coded. */
export type StreamMode = 'stored' | 'rans';
/** Bits per symbol: bytes or nibbles. */
export type SymbolBits = 8 | 4;

/** The 24-byte header of a coded stream. */
export interface StreamHeader {
  mode: StreamMode;
  /** 8: byte symbols; 4: nibble symbols (values 0..15). */
  symbolBits: SymbolBits;
  /** 5 for rANS (32 lanes), 0 for stored. */
  laneLog2: number;
  /** rANS: each chunk holds 2^chunkLog2 symbols (the last may hold fewer); 0 for stored. */
  chunkLog2: number;
  symbolCount: number;
  /** Bytes after the header (a multiple of 4). */
  bodyLength: number;
  /** The whole stream: 24 + bodyLength. */
  byteLength: number;
}

/** Where the parts of an rANS body lie (byte offsets from the stream's first byte), for the CPU and GPU decoders. */
export interface RansLayout {
  header: StreamHeader;
  /** Frequency of each symbol (2^symbolBits entries), summing to 4096. */
  frequencies: Uint32Array;
  chunkCount: number;
  /** Symbols in every chunk but the last (2^chunkLog2). */
  chunkSymbols: number;
  /** Symbols in the last chunk. */
  lastChunkSymbols: number;
  /** chunkCount × 32 u32 final encoder states, chunk-major. */
  statesOffset: number;
  /** chunkCount u32 word counts. */
  wordCountsOffset: number;
  /** The u16 words of all chunks, back to back. */
  wordsOffset: number;
  wordCounts: Uint32Array;
  /** Index of each chunk's first word; entry chunkCount is the total. */
  wordStarts: Uint32Array;
}

/**
 * Where a stream sits, for error reports. Errors carry `offset` counted from the first byte of the payload the
 * stream is in (the container's EqzError.locate adds the payload's file offset).
 */
export interface StreamContext {
  /** Offset of the stream's first byte within its payload (default 0). */
  streamOffset?: number;
  tensor?: string;
}

/** An EqzError about byte `at` of a stream (offset relative to the payload, see {@link StreamContext}). */
export function streamError(code: EqzErrorCode, message: string, at: number, context: StreamContext): EqzError {
  return new EqzError(code, message, { offset: (context.streamOffset ?? 0) + at, tensor: context.tensor });
}

/** A DataView over exactly `bytes`. */
export function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A u64 field as a number (exact below 2^53; larger values only ever fail the checks they meet). */
function readU64(view: DataView, at: number): number {
  return view.getUint32(at + 4, true) * 2 ** 32 + view.getUint32(at, true);
}

/** `n` rounded up to a multiple of 4. */
export const pad4 = (n: number): number => (n + 3) & ~3;

/**
 * Reads and checks (all Malformed, spec §6.1) the header of the stream that starts at `bytes[0]`; `bytes` ends
 * where the payload ends: known mode and symbol width, the lane and chunk fields the mode requires, reserved
 * zero, a body length that is a multiple of 4 and fits, at least one symbol for rANS.
 */
export function parseStreamHeader(bytes: Uint8Array, context: StreamContext = {}): StreamHeader {
  if (bytes.length < STREAM_HEADER_SIZE) {
    throw streamError('Malformed', `coded stream needs a ${STREAM_HEADER_SIZE}-byte header, ${bytes.length} bytes left`, 0, context);
  }
  const view = dataView(bytes);
  const modeByte = bytes[0]!;
  const symbolBits = bytes[1]!;
  const laneLog2 = bytes[2]!;
  const chunkLog2 = bytes[3]!;
  if (modeByte !== MODE_STORED && modeByte !== MODE_RANS) throw streamError('Malformed', `unknown stream mode ${modeByte}`, 0, context);
  if (symbolBits !== 8 && symbolBits !== 4) throw streamError('Malformed', `symbol_bits ${symbolBits} is not 8 or 4`, 1, context);
  if (modeByte === MODE_RANS) {
    if (laneLog2 !== LANE_LOG2) throw streamError('Malformed', `lane_log2 ${laneLog2} is not ${LANE_LOG2}`, 2, context);
    if (chunkLog2 < MIN_CHUNK_LOG2 || chunkLog2 > MAX_CHUNK_LOG2) {
      throw streamError('Malformed', `chunk_log2 ${chunkLog2} is outside ${MIN_CHUNK_LOG2}..${MAX_CHUNK_LOG2}`, 3, context);
    }
  } else if (laneLog2 !== 0 || chunkLog2 !== 0) {
    throw streamError('Malformed', 'stored stream with nonzero lane_log2 or chunk_log2', 2, context);
  }
  if (view.getUint32(4, true) !== 0) throw streamError('Malformed', 'reserved header field is not 0', 4, context);
  const symbolCount = readU64(view, 8);
  const bodyLength = readU64(view, 16);
  if (bodyLength % 4 !== 0) throw streamError('Malformed', `body_length ${bodyLength} is not a multiple of 4`, 16, context);
  if (bodyLength > bytes.length - STREAM_HEADER_SIZE) {
    throw streamError('Malformed', `body_length ${bodyLength} but ${bytes.length - STREAM_HEADER_SIZE} bytes left in the payload`, 16, context);
  }
  if (modeByte === MODE_RANS && symbolCount === 0) throw streamError('Malformed', 'rANS stream with no symbols', 8, context);
  return {
    mode: modeByte === MODE_RANS ? 'rans' : 'stored',
    symbolBits,
    laneLog2,
    chunkLog2,
    symbolCount,
    bodyLength,
    byteLength: STREAM_HEADER_SIZE + bodyLength,
  };
}

/** Bytes of a stored body for `count` symbols. */
export function storedBodyLength(count: number, symbolBits: SymbolBits): number {
  return pad4(symbolBits === 8 ? count : Math.ceil(count / 2));
}

/**
 * Reads and checks the layout of an rANS stream: a canonical frequency table summing to 4096, zero padding,
 * every word count within its chunk's symbol count, and a body exactly as long as its parts.
 */
export function parseRansLayout(
  bytes: Uint8Array, header: StreamHeader = parseStreamHeader(bytes), context: StreamContext = {},
): RansLayout {
  if (header.mode !== 'rans') throw streamError('Malformed', 'not an rANS stream', 0, context);
  const end = header.byteLength;
  const alphabetSize = 1 << header.symbolBits;
  const frequencies = new Uint32Array(alphabetSize);
  let at = STREAM_HEADER_SIZE;
  const bitmapEnd = at + alphabetSize / 8;
  if (bitmapEnd > end) throw streamError('Malformed', 'body too short for the frequency table', at, context);
  let total = 0;
  let varintAt = bitmapEnd;
  for (let symbol = 0; symbol < alphabetSize; symbol++) {
    if (((bytes[at + (symbol >> 3)]! >> (symbol & 7)) & 1) === 0) continue;
    if (varintAt >= end) throw streamError('Malformed', 'frequency table runs past the body', varintAt, context);
    let value = bytes[varintAt++]!;
    if (value & 0x80) {
      if (varintAt >= end) throw streamError('Malformed', 'frequency table runs past the body', varintAt, context);
      const high = bytes[varintAt++]!;
      if (high === 0) throw streamError('Malformed', `non-canonical two-byte frequency of symbol ${symbol}`, varintAt - 2, context);
      value = (value & 0x7f) | (high << 7);
    }
    frequencies[symbol] = value + 1;
    total += value + 1;
  }
  if (total !== PROB_SCALE) {
    throw streamError('Malformed', `frequencies sum to ${total}, not ${PROB_SCALE}`, STREAM_HEADER_SIZE, context);
  }
  at = pad4(varintAt);
  if (at > end) throw streamError('Malformed', 'body too short for the frequency table', varintAt, context);
  checkZero(bytes, varintAt, at, 'frequency table padding', context);

  const chunkSymbols = 2 ** header.chunkLog2;
  const chunkCount = Math.ceil(header.symbolCount / chunkSymbols);
  const statesOffset = at;
  const wordCountsOffset = statesOffset + chunkCount * STATE_BYTES;
  const wordsOffset = wordCountsOffset + chunkCount * 4;
  if (wordsOffset > end) {
    throw streamError('Malformed', `body too short for the states of ${chunkCount} chunks`, statesOffset, context);
  }
  const lastChunkSymbols = header.symbolCount - (chunkCount - 1) * chunkSymbols;
  const view = dataView(bytes);
  const wordCounts = new Uint32Array(chunkCount);
  const wordStarts = new Uint32Array(chunkCount + 1);
  let words = 0;
  for (let chunk = 0; chunk < chunkCount; chunk++) {
    const count = view.getUint32(wordCountsOffset + chunk * 4, true);
    // A decode step reads at most one word, so a chunk never has more words than symbols.
    if (count > (chunk + 1 === chunkCount ? lastChunkSymbols : chunkSymbols)) {
      throw streamError('CorruptStream', `chunk ${chunk} claims ${count} words for fewer symbols`, wordCountsOffset + chunk * 4, context);
    }
    wordCounts[chunk] = count;
    words += count;
    wordStarts[chunk + 1] = words;
  }
  const wordsEnd = wordsOffset + 2 * words;
  if (pad4(wordsEnd) !== end) {
    throw streamError('Malformed', `body_length ${header.bodyLength} does not match its ${words} words`, 16, context);
  }
  checkZero(bytes, wordsEnd, end, 'word padding', context);
  return {
    header, frequencies, chunkCount, chunkSymbols, lastChunkSymbols, statesOffset, wordCountsOffset, wordsOffset,
    wordCounts, wordStarts,
  };
}

/** Throws Malformed unless bytes [from, to) are all zero. */
export function checkZero(bytes: Uint8Array, from: number, to: number, what: string, context: StreamContext): void {
  for (let i = from; i < to; i++) {
    if (bytes[i] !== 0) throw streamError('Malformed', `nonzero ${what}`, i, context);
  }
}

/** Checks a stored stream's body: exactly the packed symbols plus zero padding. */
export function checkStoredBody(bytes: Uint8Array, header: StreamHeader, context: StreamContext = {}): void {
  const count = header.symbolCount;
  if (header.bodyLength !== storedBodyLength(count, header.symbolBits)) {
    throw streamError('Malformed', `stored body of ${header.bodyLength} bytes for ${count} symbols`, 16, context);
  }
  const packed = header.symbolBits === 8 ? count : Math.ceil(count / 2);
  if (header.symbolBits === 4 && count % 2 === 1 && bytes[STREAM_HEADER_SIZE + packed - 1]! >> 4 !== 0) {
    throw streamError('Malformed', 'nonzero stored padding nibble', STREAM_HEADER_SIZE + packed - 1, context);
  }
  checkZero(bytes, STREAM_HEADER_SIZE + packed, header.byteLength, 'stored padding', context);
}

/** Writes a stream header. */
export function writeHeader(
  out: Uint8Array, mode: number, symbolBits: number, laneLog2: number, chunkLog2: number, count: number,
  bodyLength: number,
): void {
  const view = dataView(out);
  out[0] = mode;
  out[1] = symbolBits;
  out[2] = laneLog2;
  out[3] = chunkLog2;
  view.setUint32(4, 0, true);
  view.setUint32(8, count % 2 ** 32, true);
  view.setUint32(12, Math.floor(count / 2 ** 32), true);
  view.setUint32(16, bodyLength % 2 ** 32, true);
  view.setUint32(20, Math.floor(bodyLength / 2 ** 32), true);
}

/** Bytes of the serialized frequency table, padding included. */
export function frequencyTableLength(frequencies: ArrayLike<number>): number {
  let length = frequencies.length / 8;
  for (let s = 0; s < frequencies.length; s++) {
    if (frequencies[s]! > 0) length += frequencies[s]! - 1 < 128 ? 1 : 2;
  }
  return pad4(length);
}

/** Serializes the frequency table (presence bitmap, then freq − 1 as 1–2 byte varints) at `out[at]`; returns its end. */
export function writeFrequencyTable(out: Uint8Array, at: number, frequencies: ArrayLike<number>): number {
  let varintAt = at + frequencies.length / 8;
  for (let s = 0; s < frequencies.length; s++) {
    const f = frequencies[s]!;
    if (f === 0) continue;
    out[at + (s >> 3)]! |= 1 << (s & 7);
    const value = f - 1;
    if (value < 128) {
      out[varintAt++] = value;
    } else {
      out[varintAt++] = 0x80 | (value & 0x7f);
      out[varintAt++] = value >> 7;
    }
  }
  return at + frequencyTableLength(frequencies);
}

/** The parts of an rANS body the encoder produces for a run of chunks. */
export interface EncodedChunks {
  states: Uint8Array;
  wordCounts: Uint8Array;
  words: Uint8Array;
}

/** Lays out header, table, states, word counts and words (parts in chunk order) as one stream. */
export function assembleRansStream(
  symbolBits: SymbolBits, chunkLog2: number, count: number, frequencies: Uint32Array, parts: EncodedChunks[],
): Uint8Array {
  const tableLength = frequencyTableLength(frequencies);
  let statesLength = 0;
  let wordsLength = 0;
  for (const part of parts) {
    statesLength += part.states.length;
    wordsLength += part.words.length;
  }
  const bodyLength = tableLength + statesLength + statesLength / STATE_BYTES * 4 + pad4(wordsLength);
  const out = new Uint8Array(STREAM_HEADER_SIZE + bodyLength);
  writeHeader(out, MODE_RANS, symbolBits, LANE_LOG2, chunkLog2, count, bodyLength);
  let statesAt = writeFrequencyTable(out, STREAM_HEADER_SIZE, frequencies);
  let countsAt = statesAt + statesLength;
  let wordsAt = countsAt + statesLength / STATE_BYTES * 4;
  for (const part of parts) {
    out.set(part.states, statesAt);
    statesAt += part.states.length;
    out.set(part.wordCounts, countsAt);
    countsAt += part.wordCounts.length;
    out.set(part.words, wordsAt);
    wordsAt += part.words.length;
  }
  return out;
}
