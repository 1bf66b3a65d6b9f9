// rANS encoder for the chunks of one batch of symbols (spec/eqz.md §6.7).
//
// READ ME FIRST
// - rANS is last-in, first-out: each chunk is encoded from its last symbol back to its first, so the decoder
//   meets the symbols in order. Within a row the lanes therefore go 31 → 0.
// - Words are pushed onto a stack that grows downward in memory. Reading that memory upward gives the
//   words in the order the decoder consumes them, so no reversal pass is needed; and encoding the batch's
//   chunks from last to first leaves them back to back in chunk order.
// - Every lane starts at x = 2^16 (the decoder requires it to end there), and x stays in [2^16, 2^32).
// - Full rows run four lanes to a v128 (8 quads per row, quad 7 first); the partial last row of a chunk, coded
//   first, runs lane by lane. Both compute x div f with the same multiply-and-shift (see buildEncodeTable).

import { ENCODE_RENORM_SHIFT, LANE_BYTES, LANES, PROB_SCALE, STATE_LOW } from './constants';
import { ENCODE_TABLE, ENCODE_TABLE_ENTRY_BYTES, PUSH_SHUFFLES } from './layout';

// Encode-table entry, 16 bytes per symbol: four u32 so that four entries transpose into four field vectors.
const ENTRY_MULTIPLIER = 0; //  u32 m
const ENTRY_THRESHOLD = 4; //   u32 f << 20: push a word first when x reaches it
const ENTRY_START = 8; //       u16 cum[s], then u16 4096 − f
const ENTRY_ROUNDING = 12; //   u16 b (0 or 1), then u16 p = 2^(44 − k)

/**
 * Builds the encode table for `frequencies` (u32 per symbol summing to 4096, each ≤ 4095; a stream with one
 * symbol of frequency 4096 never changes its states and is encoded by the caller without this table).
 *
 * x div f without a division, for every x the encoder divides (x < f·2^20 after renormalization):
 * q = ((hi32((x + b)·m) · p) >> 12 with m < 2^32, p = 2^(44 − k), for a k in 32..44 and b ∈ {0, 1} chosen per f:
 * - b = 0, m = ⌈2^k / f⌉, e = m·f − 2^k: (x·m)/2^k = x/f + x·e/(f·2^k), exact after flooring when
 *   (f·2^20 − 1)·e < 2^k;
 * - b = 1, m = ⌊(2^k − 1)/f⌋, e = 2^k − m·f ∈ [1, f]: ((x + 1)·m)/2^k = q + (r + 1)/f − (x + 1)·e/(f·2^k),
 *   exact when f·2^20·e ≤ 2^k.
 * Every f in 1..4095 has such a k (checked exhaustively when this was written; test/rans-bitstream checks the
 * coded bytes for every f). hi32(·)·p < 2^32 because the quotient is below 2^20, so the last step is 32-bit.
 */
export function buildEncodeTable(frequencies: usize, alphabetSize: u32): void {
  let start: u32 = 0;
  for (let symbol: u32 = 0; symbol < alphabetSize; symbol++) {
    const frequency = load<u32>(frequencies + (<usize>symbol << 2));
    const entry = ENCODE_TABLE + <usize>symbol * ENCODE_TABLE_ENTRY_BYTES;
    let multiplier: u64 = 0;
    let rounding: u32 = 0;
    let shift: u64 = 32;
    if (frequency > 0) {
      const f = <u64>frequency;
      for (; shift <= 44; shift++) {
        const power: u64 = <u64>1 << shift;
        const up = (power + f - 1) / f;
        if (up < <u64>0x100000000 && ((f << 20) - 1) * (up * f - power) < power) {
          multiplier = up;
          rounding = 0;
          break;
        }
        const down = (power - 1) / f;
        if (down < <u64>0x100000000 && (f << 20) * (power - down * f) <= power) {
          multiplier = down;
          rounding = 1;
          break;
        }
      }
    }
    store<u32>(entry, <u32>multiplier, ENTRY_MULTIPLIER);
    store<u32>(entry, frequency << ENCODE_RENORM_SHIFT, ENTRY_THRESHOLD);
    store<u32>(entry, start | ((PROB_SCALE - frequency) << 16), ENTRY_START);
    store<u32>(entry, rounding | (<u32>(1 << <u32>(44 - shift)) << 16), ENTRY_ROUNDING);
    start += frequency;
  }
}

/** Fills the push shuffles: for lane mask m, the low halves of the set lanes, ascending, end an 8-byte block. */
export function initPushShuffles(): void {
  for (let mask: u32 = 0; mask < 16; mask++) {
    const at = PUSH_SHUFFLES + (mask << 4);
    memory.fill(at, 0x80, 16);
    let byte: u32 = 8 - 2 * <u32>popcnt(mask);
    for (let lane: u32 = 0; lane < 4; lane++) {
      if (mask & (1 << lane)) {
        store<u8>(at + byte, <u8>(4 * lane));
        store<u8>(at + byte + 1, <u8>(4 * lane + 1));
        byte += 2;
      }
    }
  }
}

/**
 * Encodes one symbol into the lane state at `lane`. `next` is where the next pushed word goes (the stack grows
 * down); returns it moved past a push if there was one.
 * C(s, x) = (x div f)·2^12 + (x mod f) + cum = x + (x div f)·(2^12 − f) + cum.
 */
// @ts-ignore: decorator
@inline function encodeSymbol(lane: usize, symbol: u32, next: usize): usize {
  let x = load<u32>(lane);
  // The table's address is a constant, so it folds into the loads' offsets.
  const entry = ENCODE_TABLE + (<usize>symbol << 4);
  const push = <u32>(x >= load<u32>(entry, ENTRY_THRESHOLD));
  // Store unconditionally and keep the word only if it was due: no unpredictable branch, no select.
  store<u16>(next, <u16>x);
  x >>= push << 4;
  const high = <u32>((<u64>(x + <u32>load<u16>(entry, ENTRY_ROUNDING)) * <u64>load<u32>(entry, ENTRY_MULTIPLIER)) >> 32);
  const quotient = (high * <u32>load<u16>(entry, ENTRY_ROUNDING + 2)) >> 12;
  store<u32>(lane, x + quotient * <u32>load<u16>(entry, ENTRY_START + 2) + <u32>load<u16>(entry, ENTRY_START));
  return next - (<usize>push << 1);
}

/** Encodes four symbols (bytes of `symbols`) into the quad of lane states at `lanes`, lane 3 first. */
// @ts-ignore: decorator
@inline function encodeQuad(lanes: usize, symbols: u32, next: usize): usize {
  let x = v128.load(lanes);
  const e0 = v128.load(ENCODE_TABLE + (<usize>(symbols & 0xff) << 4));
  const e1 = v128.load(ENCODE_TABLE + (<usize>(symbols >> 4) & 0xff0));
  const e2 = v128.load(ENCODE_TABLE + (<usize>(symbols >> 12) & 0xff0));
  const e3 = v128.load(ENCODE_TABLE + (<usize>(symbols >> 20) & 0xff0));
  // Transpose the four entries into one vector per field.
  const low01 = v128.shuffle<u32>(e0, e1, 0, 4, 1, 5);
  const low23 = v128.shuffle<u32>(e2, e3, 0, 4, 1, 5);
  const high01 = v128.shuffle<u32>(e0, e1, 2, 6, 3, 7);
  const high23 = v128.shuffle<u32>(e2, e3, 2, 6, 3, 7);
  const multiplier = v128.shuffle<u64>(low01, low23, 0, 2);
  const threshold = v128.shuffle<u64>(low01, low23, 1, 3);
  const start = v128.shuffle<u64>(high01, high23, 0, 2);
  const rounding = v128.shuffle<u64>(high01, high23, 1, 3);

  const push = i32x4.ge_u(x, threshold);
  const mask = i32x4.bitmask(push);
  // The pushed words, lane 3's on top: the low halves of the pushing lanes, ascending, at the top of 8 bytes.
  v128.store64_lane(next - 6, i8x16.swizzle(x, v128.load(PUSH_SHUFFLES + (<usize>mask << 4))), 0);
  x = v128.bitselect(i32x4.shr_u(x, 16), x, push);

  const dividend = i32x4.add(x, v128.and(rounding, i32x4.splat(0xffff)));
  const productLow = i64x2.extmul_low_i32x4_u(dividend, multiplier);
  const productHigh = i64x2.extmul_high_i32x4_u(dividend, multiplier);
  const high = v128.shuffle<u32>(productLow, productHigh, 1, 3, 5, 7);
  const quotient = i32x4.shr_u(i32x4.mul(high, i32x4.shr_u(rounding, 16)), 12);
  x = i32x4.add(i32x4.add(x, i32x4.mul(quotient, i32x4.shr_u(start, 16))), v128.and(start, i32x4.splat(0xffff)));
  v128.store(lanes, x);
  return next - (<usize>popcnt(mask) << 1);
}

/**
 * Encodes `count` symbols (one byte each, every one with a nonzero frequency in the table) as chunks of
 * 2^chunkLog2 symbols (the last may be shorter) with the table buildEncodeTable made. Writes 32 final states
 * per chunk to `states` (16-byte aligned) and each chunk's word count to `wordCounts`; pushes the words downward
 * from `wordsEnd` (room for one word per symbol plus 8 bytes below is needed: each step stores its words into
 * the stack's next 8 bytes before it knows how many to keep). Returns the address of the first word: the words
 * occupy [returned, wordsEnd) in stream order.
 */
export function encodeChunks(
  symbols: usize, count: usize, chunkLog2: u32, states: usize, wordCounts: usize, wordsEnd: usize,
): usize {
  const chunkSymbols: usize = <usize>1 << chunkLog2;
  const chunkCount = (count + chunkSymbols - 1) >> chunkLog2;
  let next = wordsEnd - 2;
  for (let chunk = chunkCount; chunk-- > 0;) {
    const first = symbols + (chunk << chunkLog2);
    const symbolCount = min(chunkSymbols, count - (chunk << chunkLog2));
    const lanes = states + chunk * LANE_BYTES;
    const nextBefore = next;
    for (let lane: usize = 0; lane < LANES; lane++) store<u32>(lanes + (lane << 2), STATE_LOW);

    // Only the chunk's last row can be partial, and it is the first one encoded.
    const tailLanes = symbolCount & 31;
    const rowsEnd = first + (symbolCount & ~31);
    for (let lane = tailLanes; lane-- > 0;) {
      next = encodeSymbol(lanes + (lane << 2), load<u8>(rowsEnd + lane), next);
    }
    for (let row = rowsEnd; row > first;) {
      row -= LANES;
      next = encodeQuad(lanes + 112, load<u32>(row, 28), next);
      next = encodeQuad(lanes + 96, load<u32>(row, 24), next);
      next = encodeQuad(lanes + 80, load<u32>(row, 20), next);
      next = encodeQuad(lanes + 64, load<u32>(row, 16), next);
      next = encodeQuad(lanes + 48, load<u32>(row, 12), next);
      next = encodeQuad(lanes + 32, load<u32>(row, 8), next);
      next = encodeQuad(lanes + 16, load<u32>(row, 4), next);
      next = encodeQuad(lanes, load<u32>(row), next);
    }
    store<u32>(wordCounts + (chunk << 2), <u32>((nextBefore - next) >> 1));
  }
  return next + 2;
}
