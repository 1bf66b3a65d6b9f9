// rANS decoder for one or more chunks of a coded stream (spec/eqz.md §6).
//
// READ ME FIRST
// - A chunk's 32 lanes decode row by row: symbol j belongs to lane j % 32, and within a row the lanes read
//   their refill words from the chunk's single word stream in lane order 0..31.
// - Lanes are kept four to a v128, in memory between rows. A row is eight quads; each quad reads its four slots
//   with scalar loads of the states' low halves and gathers the table entries into a vector with lane loads
//   (WASM has no gather; lane extractions cost more than loads), updates the four states at once, and refills
//   exactly the lanes that fell below 2^16 from the next words, expanded into place by one byte shuffle chosen
//   by the lanes' mask.
// - Corrupt input cannot push reads past the caller's slack: the word pointer is checked against the chunk's
//   end once per row (a row consumes at most 32 words) and before every read in the scalar tail.

import { LANE_BYTES, SLOT_MASK, STATE_LOW } from './constants';
import { REFILL_SHUFFLES } from './layout';

/** Decode failures, returned as chunk × 4 + reason. */
const STATE_OUT_OF_RANGE: i32 = 1;
const WORDS_EXHAUSTED: i32 = 2;
const END_STATE_MISMATCH: i32 = 3;

/**
 * Bytes a caller must keep readable after the last word of a batch: a row may overrun its chunk by 32 words
 * before the per-row check catches it, and the quad refill loads 4 words (8 bytes) at a time.
 */
export const WORD_SLACK_BYTES: usize = 128;

/**
 * Builds the decode table for `frequencies` (u32 per symbol, summing to 4096, each ≤ 4095).
 * One u32 per slot packs what a decode step needs into a single load:
 * bits 0..7 the symbol, 8..19 its frequency, 20..31 the slot's offset within the symbol's range.
 * (A frequency of 4096 — one symbol owns every slot — does not fit 12 bits; such a stream never changes its
 * states, and the caller decodes it without a table.)
 */
export function buildDecodeTable(table: usize, frequencies: usize, alphabetSize: u32): void {
  let slot: usize = 0;
  for (let symbol: u32 = 0; symbol < alphabetSize; symbol++) {
    const frequency = load<u32>(frequencies + (<usize>symbol << 2));
    const fields = symbol | (frequency << 8);
    for (let offset: u32 = 0; offset < frequency; offset++) {
      store<u32>(table + ((slot + offset) << 2), fields | (offset << 20));
    }
    slot += frequency;
  }
}

/** Fills the refill shuffles: for lane mask m, lane i (bit i set) takes the next word number popcnt(m & (2^i − 1)). */
export function initRefillShuffles(): void {
  for (let mask: u32 = 0; mask < 16; mask++) {
    let word: u32 = 0;
    for (let lane: u32 = 0; lane < 4; lane++) {
      const at = REFILL_SHUFFLES + (mask << 4) + (lane << 2);
      if (mask & (1 << lane)) {
        store<u8>(at, <u8>(2 * word));
        store<u8>(at + 1, <u8>(2 * word + 1));
        word++;
      } else {
        store<u8>(at, 0x80);
        store<u8>(at + 1, 0x80);
      }
      store<u8>(at + 2, 0x80);
      store<u8>(at + 3, 0x80);
    }
  }
}

/**
 * Decodes one quad (lanes 4q..4q+3) of one row: four symbols to `out`, states updated in place.
 * Returns the word pointer advanced past the words this quad consumed.
 */
// @ts-ignore: decorator
@inline function decodeQuad(lanes: usize, out: usize, words: usize, table: usize): usize {
  let x = v128.load(lanes);
  // The slots come from the states' low halves in memory: scalar loads are cheaper than lane extractions.
  let entries = v128.load32_zero(table + (<usize>(load<u16>(lanes) & SLOT_MASK) << 2));
  entries = v128.load32_lane(table + (<usize>(load<u16>(lanes, 4) & SLOT_MASK) << 2), entries, 1);
  entries = v128.load32_lane(table + (<usize>(load<u16>(lanes, 8) & SLOT_MASK) << 2), entries, 2);
  entries = v128.load32_lane(table + (<usize>(load<u16>(lanes, 12) & SLOT_MASK) << 2), entries, 3);
  const frequency = v128.and(i32x4.shr_u(entries, 8), i32x4.splat(SLOT_MASK));
  x = i32x4.add(i32x4.mul(frequency, i32x4.shr_u(x, 12)), i32x4.shr_u(entries, 20));
  v128.store32_lane(out, i8x16.swizzle(entries, i8x16(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1)), 0);
  // x < 2^16 exactly when its upper half is zero (cheaper than an unsigned compare).
  const refill = i32x4.eq(i32x4.shr_u(x, 16), i32x4.splat(0));
  const mask = i32x4.bitmask(refill);
  const fresh = i8x16.swizzle(v128.load64_zero(words), v128.load(REFILL_SHUFFLES + (<usize>mask << 4)));
  // Lanes that refill are below 2^16, so x + x·0xFFFF = x << 16 exactly: a multiply instead of a blend.
  x = v128.or(i32x4.add(x, v128.and(i32x4.mul(x, i32x4.splat(0xffff)), refill)), fresh);
  v128.store(lanes, x);
  return words + (<usize>popcnt(mask) << 1);
}

/**
 * Decodes `chunkCount` consecutive chunks. `states` holds 32 u32 per chunk (16-byte aligned; overwritten),
 * `wordCounts` one u32 per chunk, `words` the chunks' words back to back followed by WORD_SLACK_BYTES readable
 * bytes. Every chunk has `chunkSymbols` symbols except the last, which has `lastChunkSymbols`
 * (only it may end in a partial row). Symbols go to `out`, one byte each.
 * Returns −1 on success, else chunk × 4 + reason (1: a state below 2^16, 2: more words needed than the chunk
 * has, 3: words left over or a final state ≠ 2^16).
 */
export function decodeChunks(
  table: usize, states: usize, wordCounts: usize, words: usize, out: usize,
  chunkCount: u32, chunkSymbols: u32, lastChunkSymbols: u32,
): i32 {
  for (let chunk: u32 = 0; chunk < chunkCount; chunk++) {
    const lanes = states + <usize>chunk * LANE_BYTES;
    const symbolCount = chunk + 1 == chunkCount ? lastChunkSymbols : chunkSymbols;
    const wordsEnd = words + (<usize>load<u32>(wordCounts + (<usize>chunk << 2)) << 1);
    if (anyLaneBelow(lanes, STATE_LOW)) return <i32>chunk * 4 + STATE_OUT_OF_RANGE;

    const rowsEnd = out + (<usize>symbolCount & ~31);
    while (out < rowsEnd) {
      // Unrolled by hand (binaryen does not unroll): the loop's own bookkeeping cost about 15 % here.
      words = decodeQuad(lanes, out, words, table);
      words = decodeQuad(lanes + 16, out + 4, words, table);
      words = decodeQuad(lanes + 32, out + 8, words, table);
      words = decodeQuad(lanes + 48, out + 12, words, table);
      words = decodeQuad(lanes + 64, out + 16, words, table);
      words = decodeQuad(lanes + 80, out + 20, words, table);
      words = decodeQuad(lanes + 96, out + 24, words, table);
      words = decodeQuad(lanes + 112, out + 28, words, table);
      out += 32;
      if (words > wordsEnd) return <i32>chunk * 4 + WORDS_EXHAUSTED;
    }

    const tailLanes = <usize>symbolCount & 31;
    for (let lane: usize = 0; lane < tailLanes; lane++) {
      const at = lanes + (lane << 2);
      let x = load<u32>(at);
      const entry = load<u32>(table + (<usize>(x & SLOT_MASK) << 2));
      x = ((entry >> 8) & SLOT_MASK) * (x >> 12) + (entry >> 20);
      store<u8>(out + lane, <u8>entry);
      if (x < STATE_LOW) {
        if (words >= wordsEnd) return <i32>chunk * 4 + WORDS_EXHAUSTED;
        x = (x << 16) | <u32>load<u16>(words);
        words += 2;
      }
      store<u32>(at, x);
    }
    out += tailLanes;

    if (words != wordsEnd || !allLanesEqual(lanes, STATE_LOW)) return <i32>chunk * 4 + END_STATE_MISMATCH;
  }
  return -1;
}

// @ts-ignore: decorator
@inline function anyLaneBelow(lanes: usize, bound: u32): bool {
  let below = i32x4.splat(0);
  for (let offset: usize = 0; offset < LANE_BYTES; offset += 16) {
    below = v128.or(below, i32x4.lt_u(v128.load(lanes + offset), i32x4.splat(bound)));
  }
  return v128.any_true(below);
}

// @ts-ignore: decorator
@inline function allLanesEqual(lanes: usize, value: u32): bool {
  let differ = i32x4.splat(0);
  for (let offset: usize = 0; offset < LANE_BYTES; offset += 16) {
    differ = v128.or(differ, v128.xor(v128.load(lanes + offset), i32x4.splat(value)));
  }
  return !v128.any_true(differ);
}
