// Byte histogram: the symbol counts a stream's frequency table is normalized from.

import { HISTOGRAM_SCRATCH, HISTOGRAM_TABLES } from './layout';

/**
 * Adds the byte counts of `symbols[0..count)` to `counts` (u32 × 256). The eight bytes of each 64-bit load go
 * to eight sub-histograms, so a run of one value (the common case: low-entropy data is mostly one symbol)
 * does not serialize on one counter's load-add-store.
 */
export function histogram(symbols: usize, count: usize, counts: usize): void {
  memory.fill(HISTOGRAM_SCRATCH, 0, HISTOGRAM_TABLES * 1024);
  const wholeEnd = symbols + (count & ~7);
  for (let at = symbols; at < wholeEnd; at += 8) {
    const eight = load<u64>(at);
    const low = <u32>eight;
    const high = <u32>(eight >> 32);
    increment(0, low & 0xff);
    increment(1, (low >> 8) & 0xff);
    increment(2, (low >> 16) & 0xff);
    increment(3, low >> 24);
    increment(4, high & 0xff);
    increment(5, (high >> 8) & 0xff);
    increment(6, (high >> 16) & 0xff);
    increment(7, high >> 24);
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
