// The flat ABI for non-JavaScript hosts (spec/eqz.md §11): one call decodes one complete coded stream (§6) that
// the host has copied into linear memory. Everything the TypeScript bindings do around decodeChunks — header,
// frequency table and layout checks — happens here too, so a host needs no parser of its own.

import { LANE_BYTES, PROB_SCALE } from './constants';
import { DECODE_TABLES, FREQUENCIES } from './layout';
import { buildDecodeTable, decodeChunks, WORD_SLACK_BYTES } from './rans-decode';

/** Results below zero: the spec's error classes (§9) a stream can produce. */
export const EQZ_MALFORMED: i64 = -1;
export const EQZ_CORRUPT_STREAM: i64 = -2;
export const EQZ_LIMIT_EXCEEDED: i64 = -3;

/** decodeChunks wants a chunk's states 16-byte aligned and overwrites them: each chunk's are copied here first. */
const CHUNK_STATES: usize = memory.data(<i32>LANE_BYTES, 16);

const STREAM_HEADER: usize = 24;

function pad4(n: u64): u64 {
  return (n + 3) & ~(<u64>3);
}

/** Stored mode: symbols as bytes, or two nibbles per byte (low first); padding must be zero. */
function decodeStored(body: usize, bodyLength: u64, bits: u32, count: u64, out: usize): i64 {
  const packedBytes = bits == 8 ? count : (count + 1) >> 1;
  if (bodyLength != pad4(packedBytes)) return EQZ_MALFORMED;
  for (let i: u64 = packedBytes; i < bodyLength; i++) if (load<u8>(body + <usize>i) != 0) return EQZ_MALFORMED;
  if (bits == 4 && (count & 1) == 1 && (load<u8>(body + <usize>(packedBytes - 1)) >> 4) != 0) return EQZ_MALFORMED;
  if (bits == 8) {
    memory.copy(out, body, <usize>count);
  } else {
    for (let i: u64 = 0; i < count; i++) store<u8>(out + <usize>i, (load<u8>(body + <usize>(i >> 1)) >> (<u8>(i & 1) << 2)) & 15);
  }
  return <i64>count;
}

/**
 * Decodes the coded stream of exactly `length` bytes at `stream` into `out` (one byte per symbol, at most
 * `capacity`). WORD_SLACK_BYTES (128) bytes after the stream must lie inside linear memory (the vector decoder reads
 * ahead; their contents do not matter); the
 * decode table and scratch below __heap_base are used. Returns the symbol count, or EQZ_MALFORMED,
 * EQZ_CORRUPT_STREAM or EQZ_LIMIT_EXCEEDED.
 */
export { WORD_SLACK_BYTES };

export function eqz_decode_stream(stream: usize, length: usize, out: usize, capacity: usize): i64 {
  if (length < STREAM_HEADER) return EQZ_MALFORMED;
  const mode = load<u8>(stream);
  const bits = <u32>load<u8>(stream, 1);
  const laneLog2 = <u32>load<u8>(stream, 2);
  const chunkLog2 = <u32>load<u8>(stream, 3);
  const count = load<u64>(stream, 8);
  const bodyLength = load<u64>(stream, 16);
  if (load<u32>(stream, 4) != 0 || (bits != 8 && bits != 4)) return EQZ_MALFORMED;
  if (bodyLength != <u64>(length - STREAM_HEADER)) return EQZ_MALFORMED;
  if (count > <u64>capacity) return EQZ_LIMIT_EXCEEDED;
  const body = stream + STREAM_HEADER;
  if (mode == 0) {
    if (laneLog2 != 0 || chunkLog2 != 0) return EQZ_MALFORMED;
    return decodeStored(body, bodyLength, bits, count, out);
  }
  if (mode != 1 || laneLog2 != 5 || chunkLog2 < 12 || chunkLog2 > 24 || count == 0) return EQZ_MALFORMED;

  // Frequency table: presence bitmap, then freq − 1 of each present symbol as a 1–2 byte varint.
  const alphabet: u32 = 1 << bits;
  const bitmapBytes = <usize>(alphabet >> 3);
  let at: usize = bitmapBytes;
  let total: u32 = 0;
  let present: u32 = 0;
  for (let symbol: u32 = 0; symbol < alphabet; symbol++) {
    let freq: u32 = 0;
    if ((load<u8>(body + <usize>(symbol >> 3)) >> (symbol & 7)) & 1) {
      if (<u64>at >= bodyLength) return EQZ_MALFORMED;
      let v = <u32>load<u8>(body + at++);
      if (v >= 0x80) {
        if (<u64>at >= bodyLength) return EQZ_MALFORMED;
        const high = <u32>load<u8>(body + at++);
        if (high == 0) return EQZ_MALFORMED;
        v = (v & 0x7f) | (high << 7);
      }
      freq = v + 1;
      if (freq > PROB_SCALE) return EQZ_MALFORMED;
      present++;
    }
    store<u32>(FREQUENCIES + (<usize>symbol << 2), freq);
    total += freq;
  }
  if (present == 0 || total != PROB_SCALE) return EQZ_MALFORMED;
  const tableEnd = <usize>pad4(<u64>(STREAM_HEADER + at)) - STREAM_HEADER;
  for (let i = at; i < tableEnd; i++) if (<u64>i >= bodyLength || load<u8>(body + i) != 0) return EQZ_MALFORMED;

  // Layout: states, word counts, words; the body must end exactly after the words' padding.
  const chunkSymbols: u64 = <u64>1 << chunkLog2;
  const chunks = (count + chunkSymbols - 1) >> chunkLog2;
  const states = body + tableEnd;
  const fixed = <u64>tableEnd + chunks * (<u64>LANE_BYTES + 4);
  if (fixed > bodyLength) return EQZ_MALFORMED;
  const wordCounts = states + <usize>(chunks * <u64>LANE_BYTES);
  let words: u64 = 0;
  for (let c: u64 = 0; c < chunks; c++) words += <u64>load<u32>(wordCounts + <usize>(c << 2));
  const wordsStart = wordCounts + <usize>(chunks << 2);
  if (fixed + pad4(words << 1) != bodyLength) return EQZ_MALFORMED;
  for (let p = wordsStart + <usize>(words << 1); p < body + <usize>bodyLength; p++) if (load<u8>(p) != 0) return EQZ_MALFORMED;

  if (present == 1) {
    // freq = 4096 leaves every state unchanged (and does not fit the packed table entry): the chunk is valid
    // exactly when it holds no words and all its states are 2^16.
    let only: u32 = 0;
    while (load<u32>(FREQUENCIES + (<usize>only << 2)) == 0) only++;
    if (words != 0) return EQZ_CORRUPT_STREAM;
    for (let p = states; p < wordCounts; p += 4) if (load<u32>(p) != 1 << 16) return EQZ_CORRUPT_STREAM;
    memory.fill(out, <u8>only, <usize>count);
    return <i64>count;
  }
  buildDecodeTable(DECODE_TABLES, FREQUENCIES, alphabet);
  let chunkWords = wordsStart;
  for (let c: u64 = 0; c < chunks; c++) {
    const symbols = c + 1 == chunks ? count - c * chunkSymbols : chunkSymbols;
    const wordCount = load<u32>(wordCounts + <usize>(c << 2));
    if (<u64>wordCount > symbols) return EQZ_CORRUPT_STREAM;
    memory.copy(CHUNK_STATES, states + <usize>(c * <u64>LANE_BYTES), LANE_BYTES);
    const result = decodeChunks(DECODE_TABLES, CHUNK_STATES, wordCounts + <usize>(c << 2), chunkWords,
      out + <usize>(c * chunkSymbols), 1, <u32>chunkSymbols, <u32>symbols);
    if (result != -1) return EQZ_CORRUPT_STREAM;
    chunkWords += <usize>wordCount << 1;
  }
  return <i64>count;
}
