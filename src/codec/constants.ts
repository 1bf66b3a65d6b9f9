/**
 * Constants of the coded stream (spec/eqz.md §6), shared by the encoder, the decoder and the GPU
 * upload code. assembly/constants.ts mirrors the arithmetic ones for the WASM codec.
 */

/** Bytes of the stream header: u8 mode, u8 symbol_bits, u8 lane_log2, u8 chunk_log2, u32 0, u64 count, u64 body. */
export const STREAM_HEADER_SIZE = 24;
/** Stream mode byte: symbols stored as they are. */
export const MODE_STORED = 0;
/** Stream mode byte: rANS-coded. */
export const MODE_RANS = 1;

/** Probabilities are 12-bit. */
export const PROB_BITS = 12;
/** Frequency tables sum to 4096 = M. */
export const PROB_SCALE = 1 << PROB_BITS;
/** Every lane state starts (encoder) and must end (decoder) at L = 2^16. */
export const STATE_LOW = 0x10000;
/** lane_log2 of every rANS stream. */
export const LANE_LOG2 = 5;
/** 32 interleaved lanes (rANS states) per chunk. */
export const LANES = 1 << LANE_LOG2;
/** Smallest chunk_log2: 2^12 symbols per chunk. */
export const MIN_CHUNK_LOG2 = 12;
/** Largest chunk_log2: 2^24 symbols per chunk. */
export const MAX_CHUNK_LOG2 = 24;
/** Per-chunk fixed cost: 32 u32 final states + one u32 word count. */
export const CHUNK_OVERHEAD_BYTES = LANES * 4 + 4;
