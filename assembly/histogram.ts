// Byte histogram: the symbol counts a stream's frequency table is normalized from.

import { HISTOGRAM_SCRATCH, HISTOGRAM_TABLES } from './layout';

/**
 * Adds the byte counts of `symbols[0..count)` to `counts` (u32 × 256). Each run of eight bytes goes to eight
 * sub-histograms, so a run of one value (the common case: low-entropy data is mostly one symbol)
 * does not serialize on one counter's load-add-store.
 */
export function histogram(symbols: usize, count: usize, counts: usize): void {
  memory.fill(HISTOGRAM_SCRATCH, 0, HISTOGRAM_TABLES * 1024);
  const wholeEnd = symbols + (count & ~7);
  for (let at = symbols; at < wholeEnd; at += 8) {
    // Byte loads, not shifts of one wide load: fewer instructions per symbol.
    increment(0, load<u8>(at));
    increment(1, load<u8>(at, 1));
    increment(2, load<u8>(at, 2));
    increment(3, load<u8>(at, 3));
    increment(4, load<u8>(at, 4));
    increment(5, load<u8>(at, 5));
    increment(6, load<u8>(at, 6));
    increment(7, load<u8>(at, 7));
  }
  for (let at = wholeEnd; at < symbols + count; at++) increment(0, load<u8>(at));
  for (let symbol: usize = 0; symbol < 256; symbol++) {
    let total = load<u32>(counts + (symbol << 2));
    for (let table: usize = 0; table < HISTOGRAM_TABLES; table++) {
      total += load<u32>(HISTOGRAM_SCRATCH + (table << 10) + (symbol << 2));
    }
    store<u32>(counts + (symbol << 2), total);
  }
}

// @ts-ignore: decorator
@inline function increment(table: usize, symbol: u32): void {
  // The scratch address is a constant, so table and base fold into the access's offset.
  const at = HISTOGRAM_SCRATCH + (table << 10) + (<usize>symbol << 2);
  store<u32>(at, load<u32>(at) + 1);
}
