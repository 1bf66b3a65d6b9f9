// Fixed scratch areas in linear memory. Everything the caller streams (symbols, states, words) lives above
// __heap_base in regions the TypeScript side allocates; these are the small tables every call reuses.

import { PROB_SCALE } from './constants';

/** One decode table per byte plane of a 4-byte dtype, so a tensor's planes can be decoded batch by batch together. */
export const DECODE_TABLE_SLOTS: u32 = 4;
export const DECODE_TABLE_BYTES: usize = <usize>PROB_SCALE << 2;
export const DECODE_TABLES: usize = memory.data(<i32>DECODE_TABLE_SLOTS * <i32>DECODE_TABLE_BYTES, 64);

/** 16 bytes per symbol (see rans-encode.ts), 256 symbols. */
export const ENCODE_TABLE_ENTRY_BYTES: usize = 16;
export const ENCODE_TABLE: usize = memory.data(256 * 16, 64);

/** Sub-histograms of u32 × 256: consecutive equal bytes increment different counters, not one dependency chain. */
export const HISTOGRAM_TABLES: usize = 8;
export const HISTOGRAM_SCRATCH: usize = memory.data(<i32>HISTOGRAM_TABLES * 1024, 64);

/** Symbol frequencies handed over by the caller (u32 per symbol). */
export const FREQUENCIES: usize = memory.data(256 * 4, 64);

/** Per-lane-mask byte shuffles for the SIMD decoder's word refill (16 masks × 16 bytes), filled at start. */
export const REFILL_SHUFFLES: usize = memory.data(16 * 16, 16);

/** Per-lane-mask byte shuffles for the SIMD encoder's word pushes (16 masks × 16 bytes), filled at start. */
export const PUSH_SHUFFLES: usize = memory.data(16 * 16, 16);
